"""Permissions: the built-in ones the operations require, and the tenant's own."""

from __future__ import annotations

from typing import Any

from flask import Response

from models import Permission
from policies import normalize
from policies.permissions import singular
from tenantry.access import builtin_catalog
from tenantry.authz import acting_tenant, current_access
from tenantry.envelope import no_content, one, page_of
from tenantry.errors import Conflict, Detail, NotFound, ValidationFailed


def _builtin(name: str, description: str) -> dict[str, Any]:
    resource, _, action = name.partition(":")
    return {
        "name": name,
        "resource": resource,
        "action": action,
        "description": description,
        "is_builtin": True,
        "created_at": None,
    }


def _name(raw: str, field: str = "name") -> str:
    try:
        return normalize(raw)
    except ValueError:
        raise ValidationFailed(
            "The request body is invalid.", [Detail("is not a permission (<resource>:<action>)", field)]
        ) from None


def list_permissions(limit: int = 20, offset: int = 0) -> dict[str, Any]:
    """The built-in permissions by name, then the tenant's own by name."""
    builtin = [_builtin(n, d) for n, d in builtin_catalog().items()]
    own = sorted(current_access().permissions.values(), key=lambda p: p.name)
    return page_of([*builtin, *(p.as_dict() for p in own)], limit, offset)


def create_permission(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A permission of the tenant's own (201)."""
    name = _name(body["name"])
    resource, _, action = name.partition(":")
    details = []
    if "resource" in body and singular(body["resource"].lower()) != resource:
        details.append(Detail(f"does not match the name's resource ({resource})", "resource"))
    if "action" in body and body["action"].lower() != action:
        details.append(Detail(f"does not match the name's action ({action})", "action"))
    if details:
        raise ValidationFailed("The request body is invalid.", details)
    if name in builtin_catalog():
        raise Conflict("This is a built-in permission.", [Detail("is already taken", "name")])
    permission = Permission.add(acting_tenant(), name, body.get("description"))
    return one(permission.as_dict(), 201, location=f"/v1/permissions/{name}")


def get_permission(permission_name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One permission, built-in or the tenant's own."""
    name = _name(permission_name, "permission_name")
    catalog = builtin_catalog()
    if name in catalog:
        return one(_builtin(name, catalog[name]))
    own = current_access().permissions.get(name)
    if own is None:
        raise NotFound("No permission with this name.")
    return one(own.as_dict())


def delete_permission(permission_name: str) -> Response:
    """Deletes one of the tenant's own permissions (204)."""
    name = _name(permission_name, "permission_name")
    if name in builtin_catalog():
        raise Conflict("A built-in permission cannot be deleted.")
    rows = Permission.for_tenant(acting_tenant()).where(Permission.name == name)
    permission = rows.first()
    if permission is None:
        raise NotFound("No permission with this name.")
    permission.delete_checked()
    return no_content()
