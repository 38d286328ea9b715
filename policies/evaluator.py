"""`evaluate(subject, action, resource, context) -> Decision`: default deny, deny overrides allow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from policies.roles import ROLE_RANK, expand_scopes, permissions_for

#: Fields of their own account a user may not change through the users API.
SELF_GUARDED_FIELDS = frozenset({"email", "password", "role", "status"})


@dataclass(frozen=True)
class Subject:
    """Who asks: a user with roles in a tenant, or the platform operator."""

    id: str
    tenant_id: str | None
    roles: tuple[str, ...] = ()
    is_operator: bool = False
    #: For an API key: the permissions its scopes grant, in place of role grants.
    scopes: frozenset[str] | None = None

    @property
    def rank(self) -> int:
        """The subject's highest role rank; above every role for the operator, an admin's for a key."""
        if self.is_operator:
            return 100
        if self.scopes is not None:
            return ROLE_RANK["admin"]  # a key may act as an admin at most: it never manages owners
        return max((ROLE_RANK.get(r, 0) for r in self.roles), default=0)

    @property
    def permissions(self) -> frozenset[str]:
        """Every permission the subject holds."""
        if self.scopes is not None:
            return expand_scopes(self.scopes)
        return permissions_for(self.roles, self.is_operator)


@dataclass(frozen=True)
class Resource:
    """What is acted on: its type, id, tenant and attributes (e.g. a user's current `role`)."""

    type: str
    id: str | None = None
    tenant_id: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """The answer: `allowed`, why, and which grants or rules decided it."""

    allowed: bool
    reason: str
    decided_by: tuple[str, ...] = ()


def _deny_rules(subject: Subject, action: str, resource: Resource | None,
                context: Mapping[str, Any]) -> Decision | None:
    """Returns the first built-in rule that denies, if any."""
    if resource is None:
        return None
    if (resource.tenant_id is not None and not subject.is_operator
            and resource.tenant_id != subject.tenant_id):
        return Decision(False, "The resource belongs to another tenant.", ("rule:tenant-isolation",))
    attrs = resource.attributes
    if resource.type == "user":
        current = ROLE_RANK.get(attrs.get("role", ""), 0)
        wanted = ROLE_RANK.get(attrs.get("new_role") or "", 0)
        if current > subject.rank and action in {"user:update", "user:delete"}:
            return Decision(False, f"Only an {attrs.get('role')} or above may change this user.",
                            ("rule:role-rank",))
        if wanted > subject.rank:
            return Decision(False, f"You cannot grant the role {attrs.get('new_role')}.",
                            ("rule:no-escalation",))
        if action == "user:delete" and resource.id == subject.id:
            return Decision(False, "You cannot delete your own account.", ("rule:no-self-delete",))
        guarded = SELF_GUARDED_FIELDS & set(attrs.get("changes", ()))
        if action == "user:update" and resource.id == subject.id and guarded:
            # An account cannot lock itself out or re-identify itself through the admin API:
            # another owner or admin changes these.
            return Decision(False, f"You cannot change your own {', '.join(sorted(guarded))}.",
                            ("rule:no-self-lockout",))
    if resource.type == "tenant" and "status" in attrs.get("changes", ()) and not subject.is_operator:
        return Decision(False, "Only the platform operator may change a tenant's status.",
                        ("rule:operator-only-status",))
    if resource.type == "domain" and attrs.get("sets_verified") and not subject.is_operator:
        return Decision(False, "Only the platform operator may verify a domain.",
                        ("rule:operator-only-verify",))
    return None


def evaluate(subject: Subject, action: str, resource: Resource | None = None,
             context: Mapping[str, Any] | None = None) -> Decision:
    """Returns whether `subject` may do `action` (a `<resource>:<action>` permission) on `resource`.

    Default deny: allowed only when a role grant (or operator status) covers `action`, and no
    rule denies; a denying rule overrides any grant.
    """
    context = context or {}
    denied = _deny_rules(subject, action, resource, context)
    if denied is not None:
        return denied
    if action in subject.permissions:
        if subject.is_operator:
            source = "operator"
        elif subject.scopes is not None:
            source = "scope:admin" if action not in subject.scopes else f"scope:{action}"
        else:
            source = next((f"role:{r}" for r in subject.roles if action in permissions_for([r])), "role")
        return Decision(True, f"Granted {action} by {source}.", (source,))
    return Decision(False, f"This credential lacks the permission {action}.")


def can_grant(subject: Subject, permissions: frozenset[str]) -> Decision:
    """Returns whether `subject` may hand out `permissions` (to a key): only what it holds itself."""
    missing = sorted(expand_scopes(permissions) - subject.permissions)
    if missing:
        return Decision(False, f"You cannot grant permissions you do not hold: {', '.join(missing)}.",
                        ("rule:no-escalation",))
    return Decision(True, "Every permission is held by the grantor.", ("rule:no-escalation",))
