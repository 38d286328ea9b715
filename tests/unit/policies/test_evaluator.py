"""The policy evaluator, decided from tables of cases: no server, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies import CompiledPolicy, Resource, Subject, can_grant, evaluate, may_allow, normalize

OWNER = Subject("usr_owner", "ten_a", ("owner",))
ADMIN = Subject("usr_admin", "ten_a", ("admin",))
MEMBER = Subject("usr_member", "ten_a", ("member",))
OPERATOR = Subject("usr_op", None, (), is_operator=True)
NOBODY = Subject("usr_none", "ten_a", ())


def user(role, id_="usr_target", tenant="ten_a", new_role=None):
    return Resource("user", id_, tenant, {"role": role, "new_role": new_role})


CASES = [
    # subject, action, resource, allowed, decided_by
    (OWNER, "user:read", None, True, "role:owner"),
    (MEMBER, "user:read", None, True, "role:member"),
    (MEMBER, "user:create", None, False, None),
    (NOBODY, "user:read", None, False, None),
    (ADMIN, "tenant:list", None, False, None),
    (OPERATOR, "tenant:list", None, True, "operator"),
    (OPERATOR, "tenant:delete", Resource("tenant", "ten_b", "ten_b"), True, "operator"),
    (OWNER, "tenant:delete", None, False, None),
    (ADMIN, "user:update", user("member", new_role="admin"), True, "role:admin"),
    (ADMIN, "user:update", user("member", new_role="owner"), False, "rule:no-escalation"),
    (ADMIN, "user:update", user("owner"), False, "rule:role-rank"),
    (ADMIN, "user:delete", user("owner"), False, "rule:role-rank"),
    (OWNER, "user:delete", user("owner"), True, "role:owner"),
    (OWNER, "user:delete", user("owner", id_="usr_owner"), False, "rule:no-self-delete"),
    (
        OWNER,
        "user:update",
        Resource("user", "usr_owner", "ten_a", {"role": "owner", "changes": ("first_name",)}),
        True,
        "role:owner",
    ),
    (
        OWNER,
        "user:update",
        Resource("user", "usr_owner", "ten_a", {"role": "owner", "changes": ("password",)}),
        False,
        "rule:no-self-lockout",
    ),
    (
        ADMIN,
        "user:update",
        Resource("user", "usr_admin", "ten_a", {"role": "admin", "changes": ("role",)}),
        False,
        "rule:no-self-lockout",
    ),
    (ADMIN, "user:create", Resource("user", None, "ten_a", {"new_role": "owner"}), False, "rule:no-escalation"),
    (OWNER, "user:read", user("member", tenant="ten_b"), False, "rule:tenant-isolation"),
    (OPERATOR, "user:read", user("member", tenant="ten_b"), True, "operator"),
    (OWNER, "tenant:update", Resource("tenant", "ten_a", "ten_a", {"changes": ("name",)}), True, "role:owner"),
    (
        OWNER,
        "tenant:update",
        Resource("tenant", "ten_a", "ten_a", {"changes": ("status",)}),
        False,
        "rule:operator-only-status",
    ),
    (OPERATOR, "tenant:update", Resource("tenant", "ten_a", "ten_a", {"changes": ("status",)}), True, "operator"),
    (
        ADMIN,
        "domain:write",
        Resource("domain", None, "ten_a", {"sets_verified": True}),
        False,
        "rule:operator-only-verify",
    ),
    (ADMIN, "domain:write", Resource("domain", None, "ten_a", {"sets_verified": False}), True, "role:admin"),
]


@pytest.mark.parametrize(("subject", "action", "resource", "allowed", "decided_by"), CASES)
def test_decisions(subject, action, resource, allowed, decided_by):
    decision = evaluate(subject, action, resource)
    assert decision.allowed is allowed, decision
    if decided_by:
        assert decided_by in decision.decided_by
    assert decision.reason


def test_default_deny_names_the_missing_permission():
    decision = evaluate(MEMBER, "booking:cancel")
    assert not decision.allowed and "booking:cancel" in decision.reason


KEY_READ = Subject("key_r", "ten_a", scopes=frozenset({"user:read"}))
KEY_WRITE = Subject("key_w", "ten_a", scopes=frozenset({"user:write"}))
KEY_ADMIN = Subject("key_a", "ten_a", scopes=frozenset({"admin"}))

SCOPE_CASES = [
    (KEY_READ, "user:read", True),
    (KEY_READ, "user:create", False),
    (KEY_WRITE, "user:create", True),
    (KEY_WRITE, "user:update", True),
    (KEY_WRITE, "user:delete", False),
    (KEY_ADMIN, "key:create", True),
    (KEY_ADMIN, "tenant:delete", False),
]


@pytest.mark.parametrize(("subject", "action", "allowed"), SCOPE_CASES)
def test_key_scopes(subject, action, allowed):
    assert evaluate(subject, action).allowed is allowed


def test_a_key_never_manages_owners():
    assert not evaluate(KEY_ADMIN, "user:delete", Resource("user", "usr_x", "ten_a", {"role": "owner"})).allowed


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("users:read", "user:read"),
        ("booking.cancel", "booking:cancel"),
        ("policies:write", "policy:write"),
        ("Admin", "admin"),
        ("user:read", "user:read"),
        ("addresses:read", "address:read"),
    ],
)
def test_permission_spellings_normalise(spelling, canonical):
    assert normalize(spelling) == canonical


def test_grants_are_limited_to_what_the_grantor_holds():
    assert can_grant(ADMIN, frozenset({"user:write", "key:read"})).allowed
    assert not can_grant(MEMBER, frozenset({"user:write"})).allowed
    assert not can_grant(KEY_READ, frozenset({"admin"})).allowed
    assert not can_grant(OWNER, frozenset({"booking:cancel"})).allowed


# ABAC: tenant policies beside role grants and key scopes.
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
CONTEXT = {"now": NOW, "ip": "203.0.113.7", "mode": "live"}
GRANTS = {
    "PremiumCustomer": frozenset({"booking:create"}),
    "member": frozenset({"user:read"}),
    "owner": frozenset({"user:read", "user:delete", "booking:cancel"}),
}


def policy(name, action, effect, *conditions, resource=None):
    kind, _, verb = action.partition(":")
    return CompiledPolicy.compile(f"pol_{name}", name, kind, verb, effect, list(conditions))


def person(*roles, **attributes):
    return Subject("usr_p", "ten_a", tuple(roles), role_grants=GRANTS, attributes=attributes)


def booking(hours):
    return Resource("booking", "bkg_1", "ten_a", {"scheduled_time": (NOW + timedelta(hours=hours)).isoformat()})


SEED = policy(
    "seed", "booking:cancel", "allow", {"user.role": "PremiumCustomer", "booking.scheduled_time": "> now() + 24h"}
)
DENY_ADMINS = policy("keep-admins", "user:delete", "deny", "resource.role == 'admin'")
DENY_BROKEN = policy("broken", "user:delete", "deny", "resource.missing == 1")
ALLOW_BROKEN = policy("broken-allow", "booking:cancel", "allow", "resource.missing == 1")
DENY_TEST_MODE = policy("no-test", "user:read", "deny", "context.mode == 'test'")
ALLOW_KEYS = policy("keys", "user:delete", "allow", "subject.type == 'key'")

POLICY_CASES = [
    # subject, action, resource, policies, allowed, decided_by (a member, or None), first failed condition
    (person("PremiumCustomer"), "booking:cancel", booking(25), [SEED], True, "policy:pol_seed", None),
    (
        person("PremiumCustomer"),
        "booking:cancel",
        booking(23),
        [SEED],
        False,
        None,
        "resource.scheduled_time > now() + 24h",
    ),
    (person("Basic"), "booking:cancel", booking(25), [SEED], False, None, "subject.role == 'PremiumCustomer'"),
    (
        person("PremiumCustomer"),
        "booking:cancel",
        Resource("booking", "bkg_1", "ten_a", {}),
        [SEED],
        False,
        None,
        "resource.scheduled_time > now() + 24h",
    ),  # the attribute is missing: an allow does not apply
    (
        person("owner"),
        "user:delete",
        Resource("user", "usr_x", "ten_a", {"role": "admin"}),
        [DENY_ADMINS],
        False,
        "policy:pol_keep-admins",
        None,
    ),  # a deny overrides the role grant
    (
        person("owner"),
        "user:delete",
        Resource("user", "usr_x", "ten_a", {"role": "member"}),
        [DENY_ADMINS],
        True,
        "role:owner",
        "resource.role == 'admin'",
    ),
    (
        person("owner"),
        "user:delete",
        Resource("user", "usr_x", "ten_a", {"role": "member"}),
        [DENY_BROKEN],
        False,
        "policy:pol_broken",
        None,
    ),  # fail closed
    (person("owner"), "booking:cancel", booking(25), [ALLOW_BROKEN], True, "role:owner", "resource.missing == 1"),
    (
        person("owner"),
        "user:delete",
        Resource("user", "usr_x", "ten_a", {"role": "admin"}),
        [SEED],
        True,
        "role:owner",
        None,
    ),  # policies on other actions take no part
    (person("member"), "user:read", None, [DENY_TEST_MODE], True, "role:member", "context.mode == 'test'"),
    (
        OPERATOR,
        "user:delete",
        Resource("user", "usr_x", "ten_a", {"role": "admin"}),
        [DENY_ADMINS],
        True,
        "operator",
        None,
    ),  # the platform operator is above a tenant's policies
    (
        Subject("key_r", "ten_a", scopes=frozenset({"user:read"})),
        "user:delete",
        None,
        [ALLOW_KEYS],
        False,
        None,
        None,
    ),  # an allow never widens a key's scopes
]


@pytest.mark.parametrize(("subject", "action", "resource", "policies", "allowed", "decided_by", "failed"), POLICY_CASES)
def test_policy_decisions(subject, action, resource, policies, allowed, decided_by, failed):
    decision = evaluate(subject, action, resource, CONTEXT, policies)
    assert decision.allowed is allowed, decision
    if decided_by:
        assert decided_by in decision.decided_by, decision
    if failed:
        assert any(o.failed_condition == failed for o in decision.outcomes), decision.outcomes


def test_order_does_not_matter_and_any_deny_wins():
    allow = policy("allow", "user:delete", "allow")
    deny = policy("deny", "user:delete", "deny")
    for order in ([allow, deny], [deny, allow]):
        decision = evaluate(person("member"), "user:delete", None, CONTEXT, order)
        assert not decision.allowed and decision.decided_by == ("policy:pol_deny",)
    assert evaluate(person("member"), "user:delete", None, CONTEXT, [allow]).decided_by == ("policy:pol_allow",)


def test_a_deny_on_a_test_mode_key():
    key = Subject("key_t", "ten_a", scopes=frozenset({"user:read"}))
    assert not evaluate(key, "user:read", None, {**CONTEXT, "mode": "test"}, [DENY_TEST_MODE]).allowed
    assert evaluate(key, "user:read", None, CONTEXT, [DENY_TEST_MODE]).allowed


def test_may_allow_is_false_only_when_nothing_could_allow():
    assert may_allow(person("member"), "user:read")
    assert not may_allow(person("member"), "booking:cancel")
    assert may_allow(person("member"), "booking:cancel", [SEED])
    assert not may_allow(Subject("key_r", "ten_a", scopes=frozenset({"user:read"})), "user:delete", [ALLOW_KEYS])


def test_custom_role_grants_replace_the_builtin_table():
    owner = Subject("usr_o", "ten_a", ("owner",), role_grants={"owner": frozenset({"booking:cancel"})})
    assert evaluate(owner, "booking:cancel").allowed
    assert can_grant(owner, frozenset({"booking:cancel"})).allowed


# A key acts for its creator: scopes ∩ the creator's permissions, the creator's rank, the creator's
# self-change rules.

RECRUITER_GRANTS = {"Recruiter": frozenset({"user:create", "key:create"})}
RECRUITER = Subject("usr_rec", "ten_a", ("member", "Recruiter"), role_grants=RECRUITER_GRANTS)


def key_of(creator, scopes, delegated=False):
    return Subject(
        "key_x",
        "ten_a",
        scopes=frozenset(scopes),
        role_grants=creator.role_grants,
        creator=creator,
        delegated=delegated,
    )


CREATOR_CASES = [
    # key, action, resource, allowed, decided_by
    (
        key_of(RECRUITER, {"user:create"}),
        "user:create",
        Resource("user", None, "ten_a", {"new_role": "member"}),
        True,
        "scope:user:create",
    ),
    (
        key_of(RECRUITER, {"user:create"}),
        "user:create",
        Resource("user", None, "ten_a", {"new_role": "admin"}),
        False,
        "rule:no-escalation",
    ),
    (key_of(RECRUITER, {"admin"}), "user:delete", None, False, None),  # the creator does not hold it
    (key_of(MEMBER, {"user:update"}), "user:update", user("admin"), False, None),
    (key_of(ADMIN, {"user:update"}), "user:update", user("member"), True, "scope:user:update"),
    (key_of(ADMIN, {"user:update"}), "user:update", user("owner"), False, "rule:role-rank"),
    (key_of(OWNER, {"admin"}), "user:update", user("owner"), False, "rule:role-rank"),  # still an admin at most
    (
        key_of(ADMIN, {"user:update"}),
        "user:update",
        Resource("user", "usr_admin", "ten_a", {"role": "admin", "changes": ("password",)}),
        False,
        "rule:no-self-lockout",
    ),
    (key_of(ADMIN, {"user:delete"}), "user:delete", user("member", id_="usr_admin"), False, "rule:no-self-delete"),
    (key_of(OPERATOR, {"admin"}), "user:update", user("admin"), True, "scope:admin"),
    (key_of(OPERATOR, {"admin"}), "user:update", user("owner"), False, "rule:role-rank"),
    (key_of(ADMIN, {"key:create"}), "key:create", Resource("key", None, "ten_a", {}), True, "scope:key:create"),
    (
        key_of(ADMIN, {"key:create"}, delegated=True),
        "key:create",
        Resource("key", None, "ten_a", {}),
        False,
        "rule:no-key-chains",
    ),
]


@pytest.mark.parametrize(("subject", "action", "resource", "allowed", "decided_by"), CREATOR_CASES)
def test_a_key_never_does_more_than_its_creator(subject, action, resource, allowed, decided_by):
    decision = evaluate(subject, action, resource)
    assert decision.allowed is allowed, decision
    if decided_by is not None:
        assert decided_by in decision.decided_by, decision


def test_a_keys_permissions_and_grants_are_bounded_by_its_creator():
    key = key_of(MEMBER, {"user:read", "user:create"})
    assert key.permissions == frozenset({"user:read"})
    assert key.rank == 1 and key.self_id == "usr_member"
    assert not may_allow(key, "user:create")
    assert not can_grant(key, frozenset({"user:create"})).allowed
    assert can_grant(key, frozenset({"user:read"})).allowed
    # With no recorded creator, a key keeps the admin ceiling alone.
    legacy = Subject("key_l", "ten_a", scopes=frozenset({"admin"}))
    assert legacy.rank == 2 and legacy.self_id == "key_l" and "user:delete" in legacy.permissions
    assert key.condition_view["creator_id"] == "usr_member" and key.condition_view["type"] == "key"


# Review (issue 12): a deny policy that binds the creator binds their key too, whatever the
# condition looks at (the creator's id, role or attributes): a key never does more than its creator.

DENY_CASES = [
    "subject.role == 'member'",
    "subject.id == 'usr_member'",
    "subject.email == 'm@example.com'",
]


@pytest.mark.parametrize("condition", DENY_CASES)
def test_a_deny_policy_on_the_creator_binds_their_key(condition):
    creator = Subject("usr_member", "ten_a", ("member",), attributes={"email": "m@example.com"})
    deny = CompiledPolicy.compile("pol_d", "no reads for this member", "user", "read", "deny", [condition])
    assert not evaluate(creator, "user:read", None, policies=[deny]).allowed
    key = key_of(creator, {"user:read"})
    decision = evaluate(key, "user:read", None, policies=[deny])
    assert not decision.allowed, decision
