"""Users of the caller's tenant."""

from __future__ import annotations

from typing import Any

from flask import Response

from models import Role, User, UserRole
from policies import Resource
from tenantry.access import user_view
from tenantry.authz import acting_tenant, authorize, authorize_grant, current_access, target
from tenantry.envelope import no_content, one, page
from tenantry.errors import Conflict, Detail, ValidationFailed
from tenantry.security import hash_password


def _new_user(tenant_id: str, item: dict[str, Any]) -> User:
    role = item.get("role", "member")
    authorize("user:create", Resource("user", None, tenant_id, {"new_role": role}))
    return User.build(tenant_id, item["email"], hash_password(item["password"]), item["first_name"],
                      item["last_name"], role=role, status=item.get("status", "active"))


def _change(body: dict[str, Any], action: str) -> User:
    """Applies `body` to the targeted user once the owner rules allow it."""
    tenant_id = acting_tenant()
    user = target()
    changes = tuple(k for k, v in body.items() if getattr(user, k, None) != v)
    authorize(action, Resource("user", user.id, tenant_id,
                               {"role": user.role, "new_role": body.get("role"), "changes": changes}))
    password_hash = hash_password(body["password"]) if "password" in body else None
    user.apply_changes({k: v for k, v in body.items() if k != "password"}, password_hash)
    return user


def _status_filter(status: str | None, is_active: bool | None) -> str | None:
    """The status the list keeps, from `status` and seed 004's `is_active`; a 400 when they disagree."""
    if is_active is None:
        return status
    wanted = "active" if is_active else "suspended"  # the statuses that are not active
    if status is not None and status != wanted:
        message = f"is_active={str(is_active).lower()} and status={status} select no user together"
        raise ValidationFailed(message + ".", [Detail(message, "is_active"), Detail(message, "status")])
    return wanted


def list_users(status: str | None = None, role: str | None = None, search: str | None = None,
               ordering: str = "-created_at", limit: int = 20, offset: int = 0,
               is_active: bool | None = None) -> dict[str, Any]:
    """The tenant's users, filtered and ordered."""
    status = _status_filter(status, is_active)
    access = current_access()
    return page(User.search(access.tenant_id, status, role, search, ordering), limit, offset,
                lambda user: user_view(user, access))


def create_user(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A new user in the tenant (201)."""
    user = _new_user(acting_tenant(), body)
    User.insert_many_checked([user])
    return one(user_view(user, current_access()), 201, location=f"/v1/users/{user.id}")


def create_users_batch(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Up to 100 users, all or none (201)."""
    tenant_id = acting_tenant()
    users = [_new_user(tenant_id, item) for item in body["users"]]
    User.insert_many_checked(users, field_prefix="users")
    access = current_access()
    return one([user_view(u, access) for u in users], 201)


def get_user(user_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One user of the tenant."""
    return one(user_view(target(), current_access()))


def update_user(user_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Changes the given fields."""
    return one(user_view(_change(body, "user:update"), current_access()))


def replace_user(user_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Replaces every writable field; the password stays unless given."""
    return one(user_view(_change(body, "user:update"), current_access()))


def delete_user(user_id: str) -> Response:
    """Deletes the user and ends their sessions (204)."""
    target().delete_checked()
    return no_content()


def _own_role(role: Role) -> Role:
    if role.is_builtin:
        raise Conflict(f"{role.name} is a built-in role: set it through the user's role field.")
    return role


def add_role(user_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Gives the user one of the tenant's own roles."""
    tenant_id = acting_tenant()
    user = User.get_for_tenant(tenant_id, user_id)
    role = _own_role(Role.get_for_tenant(tenant_id, body["role_id"]))
    authorize("role:assign", Resource("user", user.id, tenant_id, {"role": user.role}))
    authorize_grant(frozenset(role.granted))
    UserRole.assign(tenant_id, user.id, role.id)
    return one(user_view(user))  # read anew: the assignment changed the tenant's snapshot


def remove_role(user_id: str, role_id: str) -> Response:
    """Takes one of the tenant's own roles from the user (204)."""
    tenant_id = acting_tenant()
    role = _own_role(target())
    user = User.get_for_tenant(tenant_id, user_id)
    authorize("role:assign", Resource("user", user.id, tenant_id, {"role": user.role}))
    UserRole.unassign(tenant_id, user.id, role.id)
    return no_content()
