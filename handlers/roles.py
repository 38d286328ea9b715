"""Roles: the built-in ones and the tenant's own."""

from __future__ import annotations

from typing import Any

from flask import Response

from models import Role
from policies import normalize
from tenantry.access import known_permissions
from tenantry.authz import acting_tenant, authorize_grant, current_access, target
from tenantry.envelope import no_content, one, page
from tenantry.errors import Detail, ValidationFailed


def _permissions(raw: list[str]) -> list[str]:
    """Returns the permissions normalized, each known in the tenant and held by the caller."""
    names, details = [], []
    known = known_permissions(current_access())
    for index, value in enumerate(raw):
        try:
            name = normalize(value)
        except ValueError:
            details.append(Detail("is not a permission (<resource>:<action>)", f"permissions[{index}]"))
            continue
        if name not in known:
            details.append(Detail(f"names no permission of this tenant ({name})", f"permissions[{index}]"))
        names.append(name)
    if details:
        raise ValidationFailed("The request body is invalid.", details)
    names = list(dict.fromkeys(names))
    authorize_grant(frozenset(names))
    return names


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    fields = dict(body)
    if "permissions" in fields:
        fields["permissions"] = _permissions(fields["permissions"])
    return fields


def list_roles(role_family: str | None = None, limit: int = 20, offset: int = 0) -> dict[str, Any]:
    """The tenant's roles, built-in first."""
    return page(Role.search(acting_tenant(), role_family), limit, offset, Role.as_dict)


def create_role(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A role of the tenant's own (201)."""
    fields = _fields(body)
    role = Role.define(
        acting_tenant(), fields["name"], fields["role_family"], fields.get("description"), fields.get("permissions", [])
    )
    return one(role.as_dict(), 201, location=f"/v1/roles/{role.id}")


def get_role(role_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One role."""
    return one(target().as_dict())


def update_role(role_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Changes the fields given."""
    role = target()
    role.change(_fields(body))
    return one(role.as_dict())


def replace_role(role_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Replaces every writable field."""
    role = target()
    role.change(_fields({"description": None, **body}))
    return one(role.as_dict())


def delete_role(role_id: str) -> Response:
    """Deletes the role and its assignments (204)."""
    target().delete_checked()
    return no_content()
