"""Tenants and their domains."""

from __future__ import annotations

from typing import Any

from flask import Response

from models import Domain, Tenant
from policies import Resource
from tenantry.authz import authorize, current_principal
from tenantry.envelope import no_content, one, page
from tenantry.errors import NotFound


def _visible_tenant(tenant_id: str) -> Tenant:
    """Returns the tenant if the caller may see it: the operator any, others only their own."""
    principal = current_principal()
    if not principal.is_operator and principal.home_tenant_id != tenant_id:
        raise NotFound("No tenant with this id.")
    return Tenant.get_by_id_or_404(tenant_id)


def list_tenants(status: str | None = None, search: str | None = None, limit: int = 20,
                 offset: int = 0) -> dict[str, Any]:
    """Every tenant, newest first (operator)."""
    return page(Tenant.search(status, search), limit, offset, Tenant.as_dict)


def create_tenant(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A new, empty tenant (operator)."""
    tenant = Tenant.create_tenant(body["name"], body.get("status", "active"), body.get("settings"))
    return one(tenant.as_dict(), 201, location=f"/v1/tenants/{tenant.id}")


def get_tenant(tenant_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One tenant."""
    return one(_visible_tenant(tenant_id).as_dict())


def update_tenant(tenant_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Changes the given fields; settings merge key by key."""
    tenant = _visible_tenant(tenant_id)
    authorize("tenant:update", Resource("tenant", tenant.id, tenant.id, {"changes": tuple(body)}))
    tenant.apply(body.get("name"), body.get("status"), body.get("settings"))
    return one(tenant.as_dict())


def replace_tenant(tenant_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Replaces every writable field (operator)."""
    tenant = _visible_tenant(tenant_id)
    tenant.apply(body["name"], body["status"], body["settings"], replace_settings=True)
    return one(tenant.as_dict())


def delete_tenant(tenant_id: str) -> Response:
    """Deletes the tenant and everything in it (operator)."""
    _visible_tenant(tenant_id).delete_everything()
    return no_content()


def list_domains(tenant_id: str, limit: int = 20, offset: int = 0) -> dict[str, Any]:
    """The tenant's domains, primary first."""
    tenant = _visible_tenant(tenant_id)
    query = Domain.for_tenant(tenant.id).order_by(Domain.is_primary.desc(), Domain.domain)
    return page(query, limit, offset, Domain.as_dict)


def add_domain(tenant_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Adds (201) or updates (200) one of the tenant's domains."""
    tenant = _visible_tenant(tenant_id)
    authorize("domain:write", Resource("domain", None, tenant.id, {"sets_verified": "verified" in body}))
    domain, created = Domain.upsert(tenant.id, body["domain"], body.get("is_primary"), body.get("verified"))
    return one(domain.as_dict(), 201 if created else 200)


def get_domain(tenant_id: str, domain_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One of the tenant's domains."""
    return one(Domain.get_for_tenant(_visible_tenant(tenant_id).id, domain_id).as_dict())


def delete_domain(tenant_id: str, domain_id: str) -> Response:
    """Removes one of the tenant's domains (204)."""
    Domain.get_for_tenant(_visible_tenant(tenant_id).id, domain_id).delete_instance()
    return no_content()
