"""Built-in roles and the permissions they grant. A permission is `<resource>:<action>`."""

from __future__ import annotations

from collections.abc import Iterable

#: What a tenant's owner and admin may do in their own tenant. They differ only in the rules
#: about owners (see evaluator): an admin cannot make, change or delete an owner.
_TENANT_ADMIN = frozenset(
    {
        "tenant:read",
        "tenant:update",
        "domain:read",
        "domain:write",
        "domain:delete",
        "user:read",
        "user:create",
        "user:update",
        "user:delete",
        "key:read",
        "key:create",
        "key:delete",
        "key:rotate",
        "permission:read",
        "permission:create",
        "permission:delete",
        "role:read",
        "role:create",
        "role:update",
        "role:delete",
        "role:assign",
        "policy:read",
        "policy:create",
        "policy:update",
        "policy:delete",
        "audit:read",
        "usage:read",
        "event:read",
        "job:read",
        "job:manage",
        "webhook:read",
        "webhook:create",
        "webhook:update",
        "webhook:delete",
        "integration:read",
        "integration:create",
        "integration:update",
        "integration:delete",
    }
)

BUILTIN_ROLES: dict[str, frozenset[str]] = {
    "owner": _TENANT_ADMIN,
    "admin": _TENANT_ADMIN,
    "member": frozenset({"user:read"}),
}

#: The platform operator may do everything, in every tenant.
OPERATOR_PERMISSIONS: frozenset[str] = _TENANT_ADMIN | {
    "tenant:list",
    "tenant:create",
    "tenant:replace",
    "tenant:delete",
}

#: Higher outranks lower: nobody grants or touches a role above their own.
ROLE_RANK = {"member": 1, "admin": 2, "owner": 3}


def with_aliases(permissions: Iterable[str]) -> frozenset[str]:
    """Returns `permissions` with their aliases both ways: `<r>:write` is `<r>:create` and `<r>:update`.

    (Seed 001's key scopes say `users:write` for what the operations call `user:create` and
    `user:update`.)
    """
    granted = set(permissions)
    for permission in list(granted):
        resource, _, action = permission.partition(":")
        if action == "write":
            granted |= {f"{resource}:create", f"{resource}:update"}
    for permission in list(granted):
        resource, _, action = permission.partition(":")
        if action == "create" and f"{resource}:update" in granted:
            granted.add(f"{resource}:write")
    return frozenset(granted)


def expand_scopes(scopes: Iterable[str], admin: frozenset[str] | None = None) -> frozenset[str]:
    """Returns the permissions an API key's scopes grant: `admin` stands for all a tenant admin has
    (`admin`, when given: what the admin role grants in the key's tenant, its own permissions included)."""
    granted: set[str] = set()
    for scope in scopes:
        granted |= (admin if admin is not None else _TENANT_ADMIN) if scope == "admin" else {scope}
    return with_aliases(granted)


def permissions_for(roles: Iterable[str], is_operator: bool = False) -> frozenset[str]:
    """Returns the union of the permissions the roles grant (everything for the operator)."""
    if is_operator:
        return with_aliases(OPERATOR_PERMISSIONS)
    granted: set[str] = set()
    for role in roles:
        granted |= BUILTIN_ROLES.get(role, frozenset())
    return with_aliases(granted)
