"""Tenants and their domains."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Response, current_app

from models import Domain, Tenant, User, accounts
from models.usage import UsageCounter
from policies import Resource
from tenantry.authz import authorize, target, visible_tenant
from tenantry.context import settings
from tenantry.envelope import no_content, one, page
from tenantry.errors import Detail, ValidationFailed
from tenantry.security import hash_password


def _changes(tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    """The attributes the tenant rules look at: which fields change, and whether MFA becomes required."""
    before = bool((tenant.settings or {}).get("require_mfa_for_admins"))
    after = bool((body.get("settings") or {}).get("require_mfa_for_admins", before))
    return {"changes": tuple(body), "requires_mfa": after and not before}


def list_tenants(
    status: str | None = None, search: str | None = None, limit: int = 20, offset: int = 0
) -> dict[str, Any]:
    """Every tenant, newest first (operator)."""
    return page(Tenant.search(status, search), limit, offset, Tenant.as_dict)


#: What the name patterns count as blank (tenants.yaml#/TenantName, users.yaml#/PersonName).
_BLANK = "\t\n\x0b\x0c\r "


def _first_owner(body: dict[str, Any]) -> User | None:
    """The owner seed 003 makes with the tenant (`admin_email` and `admin_password`), if asked for."""
    given = [name for name in ("admin_email", "admin_password") if name in body]
    if not given:
        return None
    if len(given) == 1:
        missing = "admin_password" if given == ["admin_email"] else "admin_email"
        raise ValidationFailed(f"{given[0]} needs {missing}.", [Detail(f"is required with {given[0]}", missing)])
    # The tenant's name as the last name, without the blanks its pattern allows around it, so a cut
    # to the name's 100 characters still holds a visible one (users.yaml#/PersonName).
    last_name = body["name"].strip(_BLANK)[:100]
    return User.build(
        None, body["admin_email"], hash_password(body["admin_password"]), "Admin", last_name, role="owner"
    )


def _with_domains(tenant: Tenant) -> dict[str, Any]:
    return {**tenant.as_dict(), "domains": [d.as_dict() for d in Domain.of_tenant(tenant.id)]}


def create_tenant(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A new tenant (operator), with its primary domain and first owner when given, all or nothing."""
    tenant, _ = accounts.create_tenant(
        body["name"],
        body.get("domain"),
        _first_owner(body),
        body.get("status", "active"),
        body.get("settings"),
        body.get("plan", settings().default_plan),
        body.get("rate_limits"),
    )
    return one(_with_domains(tenant), 201, location=f"/v1/tenants/{tenant.id}")


def get_tenant(tenant_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One tenant, with its domains (one more query)."""
    return one(_with_domains(target()))


def update_tenant(tenant_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Changes the given fields; settings merge key by key."""
    tenant = target()
    authorize("tenant:update", Resource("tenant", tenant.id, tenant.id, _changes(tenant, body)))
    tenant.apply(
        body.get("name"),
        body.get("status"),
        body.get("settings"),
        plan=body.get("plan"),
        rate_limits=body.get("rate_limits", False),
    )
    return one(tenant.as_dict())


def replace_tenant(tenant_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Replaces every writable field (operator)."""
    tenant = target()
    authorize("tenant:replace", Resource("tenant", tenant.id, tenant.id, _changes(tenant, body)))
    tenant.apply(
        body["name"],
        body["status"],
        body["settings"],
        replace_settings=True,
        plan=body.get("plan"),
        rate_limits=body.get("rate_limits", False),
    )
    return one(tenant.as_dict())


def delete_tenant(tenant_id: str) -> Response:
    """Deletes the tenant and everything in it (operator)."""
    accounts.delete_tenant(target())
    return no_content()


def list_domains(tenant_id: str, limit: int = 20, offset: int = 0) -> dict[str, Any]:
    """The tenant's domains, primary first."""
    tenant = visible_tenant(tenant_id)
    return page(Domain.of_tenant(tenant.id), limit, offset, Domain.as_dict)


def add_domain(tenant_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Adds (201) or updates (200) one of the tenant's domains."""
    tenant = visible_tenant(tenant_id)
    authorize("domain:write", Resource("domain", None, tenant.id, {"sets_verified": "verified" in body}))
    domain, created = Domain.upsert(tenant.id, body["domain"], body.get("is_primary"), body.get("verified"))
    return one(domain.as_dict(), 201 if created else 200)


def get_domain(tenant_id: str, domain_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One of the tenant's domains."""
    return one(target().as_dict())


def delete_domain(tenant_id: str, domain_id: str) -> Response:
    """Removes one of the tenant's domains (204)."""
    target().delete_instance()
    return no_content()


def get_usage(
    tenant_id: str, date_from: str | None = None, date_to: str | None = None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The tenant's request counts per day, per credential and per operation (UTC days, inclusive)."""
    tenant = visible_tenant(tenant_id)
    current_app.extensions["tenantry"].usage.flush(tenant.id)  # this process's latest counts, before reading
    last = _day(date_to, "date_to") if date_to is not None else datetime.now(UTC).date()
    first = _day(date_from, "date_from") if date_from is not None else last - timedelta(days=29)
    return one(UsageCounter.report(tenant.id, first, last))  # date_from after date_to: an empty range


def _day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(details=[Detail("is not a date (YYYY-MM-DD)", name)]) from None
