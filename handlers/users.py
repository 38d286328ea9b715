"""Users of the caller's tenant."""

from __future__ import annotations

from typing import Any

from flask import Response

from models import User
from policies import Resource
from tenantry.authz import acting_tenant, authorize
from tenantry.envelope import no_content, one, page
from tenantry.security import hash_password


def _new_user(tenant_id: str, item: dict[str, Any]) -> User:
    role = item.get("role", "member")
    authorize("user:create", Resource("user", None, tenant_id, {"new_role": role}))
    return User.build(tenant_id, item["email"], hash_password(item["password"]), item["first_name"],
                      item["last_name"], role=role, status=item.get("status", "active"))


def _change(user_id: str, body: dict[str, Any], action: str) -> User:
    """Applies `body` to the user once the owner rules allow it."""
    tenant_id = acting_tenant()
    user = User.get_for_tenant(tenant_id, user_id)
    changes = tuple(k for k, v in body.items() if getattr(user, k, None) != v)
    authorize(action, Resource("user", user.id, tenant_id,
                               {"role": user.role, "new_role": body.get("role"), "changes": changes}))
    password_hash = hash_password(body["password"]) if "password" in body else None
    user.apply_changes({k: v for k, v in body.items() if k != "password"}, password_hash)
    return user


def list_users(status: str | None = None, role: str | None = None, search: str | None = None,
               ordering: str = "-created_at", limit: int = 20, offset: int = 0) -> dict[str, Any]:
    """The tenant's users, filtered and ordered."""
    return page(User.search(acting_tenant(), status, role, search, ordering), limit, offset, User.as_dict)


def create_user(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A new user in the tenant (201)."""
    user = _new_user(acting_tenant(), body)
    User.insert_many_checked([user])
    return one(user.as_dict(), 201, location=f"/v1/users/{user.id}")


def create_users_batch(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Up to 100 users, all or none (201)."""
    tenant_id = acting_tenant()
    users = [_new_user(tenant_id, item) for item in body["users"]]
    User.insert_many_checked(users, field_prefix="users")
    return one([u.as_dict() for u in users], 201)


def get_user(user_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One user of the tenant."""
    return one(User.get_for_tenant(acting_tenant(), user_id).as_dict())


def update_user(user_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Changes the given fields."""
    return one(_change(user_id, body, "user:update").as_dict())


def replace_user(user_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Replaces every writable field; the password stays unless given."""
    return one(_change(user_id, body, "user:update").as_dict())


def delete_user(user_id: str) -> Response:
    """Deletes the user and ends their sessions (204)."""
    tenant_id = acting_tenant()
    user = User.get_for_tenant(tenant_id, user_id)
    authorize("user:delete", Resource("user", user.id, tenant_id, {"role": user.role}))
    user.delete_checked()
    return no_content()
