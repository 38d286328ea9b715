"""Each tenant's access snapshot: role grants, role assignments, its own permissions, compiled policies.

Decisions read a snapshot instead of the database. A snapshot is keyed by the tenant's
`authz_version`, which every role, assignment, permission or policy change bumps in its own
transaction (models.access); the tenant row is read on every authenticated request anyway, so a
change made through any server process is seen by every other at its next request of that tenant.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models.access import Permission, Policy, Role, load_access_rows
from models.tenant import Tenant
from models.user import User
from policies import BUILTIN_ROLES, CompiledPolicy, ConditionError
from tenantry.spec import builtin_permissions

log = logging.getLogger("tenantry.access")

#: How many tenants' snapshots one process keeps (least recently used go first).
CACHE_SIZE = 1024


@dataclass(frozen=True)
class TenantAccess:
    """What a tenant's access decisions depend on, as of one `authz_version`."""

    tenant_id: str
    version: int
    roles: Mapping[str, Role]  # by id
    role_ids_by_name: Mapping[str, str]  # by case-folded name
    user_roles: Mapping[str, tuple[str, ...]]  # user id -> ids of the tenant's own roles they hold
    permissions: Mapping[str, Permission]  # the tenant's own, by name
    role_grants: Mapping[str, frozenset[str]]  # role name -> what it grants here
    policies: tuple[CompiledPolicy, ...]  # enabled ones
    by_action: Mapping[str, tuple[CompiledPolicy, ...]] = field(default_factory=dict)

    def policies_for(self, action: str) -> tuple[CompiledPolicy, ...]:
        """The enabled policies on `action`."""
        return self.by_action.get(action, ())

    def role_names(self, user: User) -> tuple[str, ...]:
        """The names of every role `user` holds: the built-in one first."""
        own = tuple(self.roles[r].name for r in self.user_roles.get(user.id, ()) if r in self.roles)
        return (user.role, *own)

    def role_refs(self, user: User) -> list[dict[str, Any]]:
        """The user's roles as the API shows them: id, name, is_builtin."""
        refs = []
        builtin_id = self.role_ids_by_name.get(user.role)
        if builtin_id is not None:
            refs.append({"id": builtin_id, "name": user.role, "is_builtin": True})
        refs.extend(
            {"id": r, "name": self.roles[r].name, "is_builtin": False}
            for r in self.user_roles.get(user.id, ())
            if r in self.roles
        )
        return refs


def compile_policy(row: Policy) -> CompiledPolicy:
    """Returns the policy compiled; raises ConditionError when a condition does not parse."""
    return CompiledPolicy.compile(
        row.id, row.name, row.resource, row.action, row.effect, row.conditions or [], row.is_enabled
    )


def _build(tenant_id: str, version: int) -> TenantAccess:
    roles, assignments, permissions, policy_rows = load_access_rows(tenant_id)
    by_id = {r.id: r for r in roles}
    own_permissions = frozenset(p.name for p in permissions)
    grants: dict[str, frozenset[str]] = {}
    for role in roles:
        if role.is_builtin:
            base = BUILTIN_ROLES.get(role.name, frozenset())
            # Owners and admins hold the tenant's own permissions too, so they can hand them out.
            grants[role.name] = base | own_permissions if role.name in {"owner", "admin"} else base
        else:
            grants[role.name] = frozenset(role.permissions or [])
    user_roles: dict[str, list[str]] = {}
    for assignment in assignments:
        user_roles.setdefault(assignment.user_id, []).append(assignment.role_id)
    compiled = []
    for row in policy_rows:
        if not row.is_enabled:
            continue
        try:
            compiled.append(compile_policy(row))
        except ConditionError:
            # Conditions are parsed when saved, so this means a stored row was changed by hand.
            # A deny that cannot be compiled applies (fail closed); an allow does not.
            log.error("policy does not compile", extra={"policy_id": row.id, "tenant_id": tenant_id})
            if row.effect == "deny":
                compiled.append(CompiledPolicy(row.id, row.name, row.resource, row.action, "deny", ()))
    by_action: dict[str, list[CompiledPolicy]] = {}
    for policy in compiled:
        by_action.setdefault(policy.permission, []).append(policy)
    return TenantAccess(
        tenant_id=tenant_id,
        version=version,
        roles=by_id,
        role_ids_by_name={r.name_normalized: r.id for r in roles},
        user_roles={u: tuple(ids) for u, ids in user_roles.items()},
        permissions={p.name: p for p in permissions},
        role_grants=grants,
        policies=tuple(compiled),
        by_action={a: tuple(ps) for a, ps in by_action.items()},
    )


class AccessCache:
    """Per-process snapshots, least recently used first out; safe across the worker threads."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[str, TenantAccess] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tenant: Tenant) -> TenantAccess:
        """Returns the snapshot for the tenant's current `authz_version`, building it when stale."""
        version = tenant.authz_version or 0
        with self._lock:
            snapshot = self._items.get(tenant.id)
            if snapshot is not None and snapshot.version == version:
                self._items.move_to_end(tenant.id)
                return snapshot
        snapshot = _build(tenant.id, version)  # outside the lock: a slow build never blocks other tenants
        with self._lock:
            current = self._items.get(tenant.id)
            if current is None or current.version <= version:
                self._items[tenant.id] = snapshot
                self._items.move_to_end(tenant.id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return snapshot

    def clear(self) -> None:
        """Forgets every snapshot."""
        with self._lock:
            self._items.clear()


_cache = AccessCache()


def access_for(tenant: Tenant) -> TenantAccess:
    """Returns the tenant's current access snapshot (cached per process, keyed by its version)."""
    return _cache.get(tenant)


def access_for_id(tenant_id: str) -> TenantAccess:
    """Returns the access snapshot of the tenant with this id (reads the tenant row for its version)."""
    return access_for(Tenant.get_by_id_or_404(tenant_id))


def user_view(user: User, access: TenantAccess | None = None) -> dict[str, Any]:
    """Returns the user as the API shows it, with the roles they hold."""
    data = user.as_dict()
    if user.tenant_id is None:
        data["roles"] = []
        return data
    data["roles"] = (access or access_for_id(user.tenant_id)).role_refs(user)
    return data


def builtin_catalog() -> dict[str, str]:
    """Returns the built-in permissions (those the served spec's operations require) and their descriptions."""
    from flask import current_app

    state = current_app.extensions["tenantry"]
    catalog = getattr(state, "_builtin_permissions", None)
    if catalog is None:
        catalog = builtin_permissions(state.spec)
        state._builtin_permissions = catalog
    return catalog


def known_permissions(access: TenantAccess) -> frozenset[str]:
    """Returns every permission a role may grant and a policy may target in the tenant."""
    return frozenset(builtin_catalog()) | frozenset(access.permissions)
