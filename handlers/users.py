"""Users of the caller's tenant."""

from __future__ import annotations

from typing import Any

from flask import Response

from models import Role, User, UserRole, accounts, mfa
from models.user import checked_metadata
from policies import Resource
from tenantry.access import user_view
from tenantry.authz import acting_tenant, authorize, authorize_grant, current_access, target
from tenantry.envelope import no_content, one, page
from tenantry.errors import Conflict, Detail, ValidationFailed
from tenantry.paging import query_moment
from tenantry.security import hash_password


def _new_user(tenant_id: str, item: dict[str, Any], field: str = "metadata") -> User:
    role = item.get("role", "member")
    authorize("user:create", Resource("user", None, tenant_id, {"new_role": role}))
    return User.build(
        tenant_id,
        item["email"],
        hash_password(item["password"]),
        item["first_name"],
        item["last_name"],
        role=role,
        status=item.get("status", "active"),
        external_id=item.get("external_id"),
        metadata=checked_metadata(item.get("metadata"), field),
        phone=item.get("phone"),
    )


def _change(body: dict[str, Any], action: str) -> User:
    """Applies `body` to the targeted user once the owner rules allow it."""
    tenant_id = acting_tenant()
    user = target()
    changes = tuple(k for k, v in body.items() if getattr(user, k, None) != v)
    authorize(
        action,
        Resource("user", user.id, tenant_id, {"role": user.role, "new_role": body.get("role"), "changes": changes}),
    )
    checked_metadata(body.get("metadata"))
    password_hash = hash_password(body["password"]) if "password" in body else None
    accounts.change_user(user, {k: v for k, v in body.items() if k != "password"}, password_hash)
    return user


def _status_filter(status: list[str] | None, is_active: bool | None) -> list[str] | None:
    """The statuses the list keeps, from `status` and seed 004's `is_active`; a 400 when they allow none."""
    if is_active is None:
        return status
    wanted = ["active"] if is_active else ["suspended"]  # every status that is not active
    if status:
        kept = [value for value in status if value in wanted]
        if not kept:
            message = f"is_active={str(is_active).lower()} and status={','.join(status)} select no user together"
            raise ValidationFailed(message + ".", [Detail(message, "is_active"), Detail(message, "status")])
        return kept
    return wanted


def list_users(
    status: list[str] | None = None,
    role: str | None = None,
    search: str | None = None,
    ordering: str = "-created_at",
    limit: int = 20,
    offset: int = 0,
    external_id: str | None = None,
    email: str | None = None,
    created_from: str | None = None,
    created_to: str | None = None,
    is_active: bool | None = None,
) -> dict[str, Any]:
    """The tenant's users, filtered and ordered."""
    status = _status_filter(status, is_active)
    access = current_access()
    query = User.search(
        access.tenant_id,
        status or None,
        role,
        search,
        ordering,
        external_id=external_id,
        email=email,
        created_from=query_moment(created_from, "created_from"),
        created_to=query_moment(created_to, "created_to"),
    )
    return page(query, limit, offset, lambda user: user_view(user, access))


def create_user(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A new user in the tenant (201)."""
    user = _new_user(acting_tenant(), body)
    User.insert_many_checked([user])
    return one(user_view(user, current_access()), 201, location=f"/v1/users/{user.id}")


def create_users_batch(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Up to 100 users, all or none (201)."""
    tenant_id = acting_tenant()
    users = [_new_user(tenant_id, item, f"users[{i}].metadata") for i, item in enumerate(body["users"])]
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
    accounts.delete_user(target())
    return no_content()


def reset_mfa(user_id: str) -> Response:
    """Turns the user's MFA off without a code and ends their sessions (204); not one's own."""
    user = target()
    authorize("user:update", Resource("user", user.id, acting_tenant(), {"role": user.role, "changes": ("mfa",)}))
    mfa.reset(user)
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
