"""`evaluate(subject, action, resource, context, policies) -> Decision`: default deny, deny overrides allow.

Sources of a decision, in order: the built-in rules (tenant isolation, role rank, no escalation,
...) deny first; then every enabled policy on the action is judged: any applying `deny` refuses,
overriding everything (a deny whose conditions cannot be evaluated applies: fail closed); then a
role grant, an API key's scope or an applying `allow` policy allows; nothing else does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from policies.conditions import Condition, EvaluationError, compile_conditions
from policies.roles import ROLE_RANK, expand_scopes, permissions_for, with_aliases

#: Fields of their own account a user may not change through the users API.
SELF_GUARDED_FIELDS = frozenset({"email", "password", "role", "status", "mfa"})


@dataclass(frozen=True)
class Subject:
    """Who asks: a user with roles in a tenant, or the platform operator."""

    id: str
    tenant_id: str | None
    roles: tuple[str, ...] = ()
    is_operator: bool = False
    #: For an API key: the permissions its scopes grant, in place of role grants.
    scopes: frozenset[str] | None = None
    #: What each role grants in the subject's tenant (its own roles, and owner/admin with its own
    #: permissions); roles missing here grant what the built-in roles do.
    role_grants: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Attributes conditions see as `subject.<name>` (email, status, mfa_enabled, ...).
    attributes: Mapping[str, Any] = field(default_factory=dict)
    #: For an API key: the user who made it (or who made the key that made it), as they stand now.
    #: A key never does more than its creator could: its permissions are its scopes that the
    #: creator holds, its rank is theirs, and the self-change rules see the creator's id. None for
    #: a key with no recorded creator, which keeps the admin ceiling.
    creator: Subject | None = None
    #: For an API key made by another API key: it makes no keys itself (chains stop at two).
    delegated: bool = False

    @property
    def rank(self) -> int:
        """The subject's highest role rank; above every role for the operator; for a key, its creator's,
        an admin's at most."""
        if self.is_operator:
            return 100
        if self.scopes is not None:
            # A key may act as an admin at most: it never manages owners, whoever made it.
            ceiling = ROLE_RANK["admin"]
            return ceiling if self.creator is None else min(ceiling, self.creator.rank)
        return max((ROLE_RANK.get(r, 0) for r in self.roles), default=0)

    @property
    def self_id(self) -> str:
        """The account the self-change rules protect: the user's own, or a key's creator's."""
        return self.creator.id if self.creator is not None else self.id

    @cached_property
    def permissions(self) -> frozenset[str]:
        """Every permission the subject holds (for a key: its scopes that its creator holds too)."""
        if self.scopes is not None:
            scoped = expand_scopes(self.scopes, self.role_grants.get("admin"))
            return scoped if self.creator is None else scoped & self.creator.permissions
        if self.is_operator or not self.role_grants:
            return permissions_for(self.roles, self.is_operator)
        granted: set[str] = set()
        for role in self.roles:
            granted |= self.grants_of(role)
        return frozenset(granted)

    def grants_of(self, role: str) -> frozenset[str]:
        """Returns what one of the subject's roles grants, aliases included."""
        grants = self.role_grants.get(role)
        return permissions_for([role]) if grants is None else with_aliases(grants)

    @cached_property
    def condition_view(self) -> dict[str, Any]:
        """The subject as conditions see it: `subject.id`, `subject.roles`, `subject.type`, attributes."""
        kind = "operator" if self.is_operator else "key" if self.scopes is not None else "user"
        view = {
            "type": kind,
            **self.attributes,
            "id": self.id,
            "tenant_id": self.tenant_id,
            "roles": list(self.roles),
            "role": self.roles[0] if self.roles else None,
        }
        if self.creator is not None:
            view["creator_id"] = self.creator.id
        return view


@dataclass(frozen=True)
class Resource:
    """What is acted on: its type, id, tenant and attributes (e.g. a user's current `role`)."""

    type: str
    id: str | None = None
    tenant_id: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def condition_view(self) -> dict[str, Any]:
        """The resource as conditions see it: its attributes, `type`, `id` and `tenant_id`."""
        return {**self.attributes, "type": self.type, "id": self.id, "tenant_id": self.tenant_id}


@dataclass(frozen=True)
class CompiledPolicy:
    """A tenant's policy, its conditions parsed once, ready to be judged many times."""

    id: str
    name: str
    resource: str
    action: str
    effect: str  # allow | deny
    conditions: tuple[Condition, ...]
    is_enabled: bool = True

    @classmethod
    def compile(
        cls,
        id: str,
        name: str,
        resource: str,
        action: str,
        effect: str,
        conditions: Sequence[Any],
        is_enabled: bool = True,
    ) -> CompiledPolicy:
        """Returns the compiled policy; raises ConditionError for a condition that does not parse.

        Each `attribute: condition` pair of the object form is kept as a condition of its own, so
        "the first condition that failed" names the pair, not the whole object.
        """
        compile_conditions(conditions, resource)  # errors name the item as written
        ordered: list[Any] = []
        for item in conditions:
            if isinstance(item, Mapping):
                ordered.extend({key: value} for key, value in item.items())
            else:
                ordered.append(item)
        return cls(id, name, resource, action, effect, compile_conditions(ordered, resource), is_enabled)

    #: The permission the policy is about, `<resource>:<action>` (computed once: it is compared per decision).
    permission: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "permission", f"{self.resource}:{self.action}")


@dataclass(frozen=True)
class PolicyOutcome:
    """How one policy fared: whether it applied, and if not, the first condition that failed."""

    policy: CompiledPolicy
    applied: bool
    failed_condition: str | None = None
    error: str | None = None


def judge(
    policy: CompiledPolicy, subject: Subject, resource: Resource | None, context: Mapping[str, Any]
) -> PolicyOutcome:
    """Returns whether every condition of `policy` holds.

    A condition that cannot be evaluated (an attribute missing, types that do not compare) makes
    a deny policy apply (fail closed) and an allow policy not apply.
    """
    resource_view = resource.condition_view if resource is not None else None
    for condition in policy.conditions:
        try:
            holds = condition.holds(subject.condition_view, resource_view, context)
        except EvaluationError as exc:
            return PolicyOutcome(policy, policy.effect == "deny", condition.source, str(exc))
        if not holds:
            return PolicyOutcome(policy, False, condition.source)
    return PolicyOutcome(policy, True)


@dataclass(frozen=True)
class Decision:
    """The answer: `allowed`, why, which grants, policies or rules decided it, and how each policy fared."""

    allowed: bool
    reason: str
    decided_by: tuple[str, ...] = ()
    outcomes: tuple[PolicyOutcome, ...] = ()


#: Tenant fields only the platform operator changes: whether it works, and what it pays for.
_OPERATOR_TENANT_FIELDS = frozenset({"status", "plan", "rate_limits"})


def _deny_rules(
    subject: Subject, action: str, resource: Resource | None, context: Mapping[str, Any]
) -> Decision | None:
    """Returns the first built-in rule that denies, if any."""
    if resource is None:
        return None
    if resource.tenant_id is not None and not subject.is_operator and resource.tenant_id != subject.tenant_id:
        return Decision(False, "The resource belongs to another tenant.", ("rule:tenant-isolation",))
    attrs = resource.attributes
    if resource.type == "user":
        current = ROLE_RANK.get(attrs.get("role", ""), 0)
        wanted = ROLE_RANK.get(attrs.get("new_role") or "", 0)
        if current > subject.rank and action in {"user:update", "user:delete", "role:assign"}:
            return Decision(False, f"Only an {attrs.get('role')} or above may change this user.", ("rule:role-rank",))
        if wanted > subject.rank:
            return Decision(False, f"You cannot grant the role {attrs.get('new_role')}.", ("rule:no-escalation",))
        if action == "user:delete" and resource.id == subject.self_id:
            return Decision(False, "You cannot delete your own account.", ("rule:no-self-delete",))
        guarded = SELF_GUARDED_FIELDS & set(attrs.get("changes", ()))
        if action == "user:update" and resource.id == subject.self_id and guarded:
            # An account cannot lock itself out or re-identify itself through the admin API:
            # another owner or admin changes these.
            return Decision(
                False, f"You cannot change your own {', '.join(sorted(guarded))}.", ("rule:no-self-lockout",)
            )
    if resource.type == "key" and action == "key:create" and subject.delegated:
        return Decision(False, "A key made by another key cannot make keys.", ("rule:no-key-chains",))
    operator_fields = _OPERATOR_TENANT_FIELDS & set(attrs.get("changes", ())) if resource.type == "tenant" else set()
    if operator_fields and not subject.is_operator:
        fields = ", ".join(sorted(operator_fields))
        return Decision(
            False, f"Only the platform operator may change a tenant's {fields}.", ("rule:operator-only-status",)
        )
    if (
        resource.type == "tenant"
        and attrs.get("requires_mfa")
        and not subject.is_operator
        and not subject.attributes.get("mfa_enabled")
    ):
        return Decision(
            False,
            "Turn on MFA for your own account before requiring it of owners and admins.",
            ("rule:mfa-before-requiring-it",),
        )
    if resource.type == "domain" and attrs.get("sets_verified") and not subject.is_operator:
        return Decision(False, "Only the platform operator may verify a domain.", ("rule:operator-only-verify",))
    return None


def evaluate(
    subject: Subject,
    action: str,
    resource: Resource | None = None,
    context: Mapping[str, Any] | None = None,
    policies: Iterable[CompiledPolicy] = (),
) -> Decision:
    """Returns whether `subject` may do `action` (a `<resource>:<action>` permission) on `resource`.

    `policies` are the tenant's enabled policies (those on other actions are ignored). The platform
    operator is above a tenant's policies; an API key's scopes are its ceiling, so allow policies
    never widen them, while deny policies bind keys like anyone.
    """
    context = context if context is not None else {"now": datetime.now(UTC)}
    denied = _deny_rules(subject, action, resource, context)
    if denied is not None:
        return denied
    outcomes = (
        ()
        if subject.is_operator
        else tuple(_judge_for(p, subject, resource, context) for p in policies if p.permission == action)
    )
    denies = [o.policy for o in outcomes if o.applied and o.policy.effect == "deny"]
    if denies:
        names = ", ".join(p.name for p in denies)
        return Decision(False, f"Denied by policy {names}.", tuple(f"policy:{p.id}" for p in denies), outcomes)
    sources: list[str] = []
    if action in subject.permissions:
        if subject.is_operator:
            sources.append("operator")
        elif subject.scopes is not None:
            sources.append("scope:admin" if action not in subject.scopes else f"scope:{action}")
        else:
            sources.append(next((f"role:{r}" for r in subject.roles if action in subject.grants_of(r)), "role"))
    if subject.scopes is None:
        sources.extend(f"policy:{o.policy.id}" for o in outcomes if o.applied and o.policy.effect == "allow")
    if sources:
        by = ", ".join(_describe(s, outcomes) for s in sources)
        return Decision(True, f"Granted {action} by {by}.", tuple(sources), outcomes)
    return Decision(False, f"This credential lacks the permission {action}.", (), outcomes)


def _judge_for(
    policy: CompiledPolicy, subject: Subject, resource: Resource | None, context: Mapping[str, Any]
) -> PolicyOutcome:
    """Judges `policy` for `subject`; for a key, a deny policy that binds its creator binds it too.

    A key acts for its creator and never does more than they could, so a deny whose conditions
    name the creator (`subject.id`, `subject.role`, ...) applies to the key as well. The platform
    operator is above policies, so a deny never binds them, but it binds their key.
    """
    outcome = judge(policy, subject, resource, context)
    creator = subject.creator
    if policy.effect == "deny" and not outcome.applied and creator is not None and not creator.is_operator:
        on_creator = judge(policy, creator, resource, context)
        if on_creator.applied:
            return on_creator
    return outcome


def may_allow(subject: Subject, action: str, policies: Iterable[CompiledPolicy] = ()) -> bool:
    """Returns False when nothing could allow `action`, whatever the resource: no grant and no allow policy.

    The enforcement point asks this before loading a resource, so a caller without the permission
    gets its 403 without learning whether the resource exists.
    """
    if action in subject.permissions:
        return True
    return (
        subject.scopes is None
        and not subject.is_operator
        and any(p.permission == action and p.effect == "allow" for p in policies)
    )


def _describe(source: str, outcomes: tuple[PolicyOutcome, ...]) -> str:
    if source.startswith("policy:"):
        policy_id = source.removeprefix("policy:")
        return next((f"policy {o.policy.name}" for o in outcomes if o.policy.id == policy_id), source)
    return source


def can_grant(subject: Subject, permissions: frozenset[str]) -> Decision:
    """Returns whether `subject` may hand out `permissions` (to a key): only what it holds itself."""
    missing = sorted(expand_scopes(permissions, subject.role_grants.get("admin")) - subject.permissions)
    if missing:
        return Decision(
            False, f"You cannot grant permissions you do not hold: {', '.join(missing)}.", ("rule:no-escalation",)
        )
    return Decision(True, "Every permission is held by the grantor.", ("rule:no-escalation",))
