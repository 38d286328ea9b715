"""The policy evaluator, decided from tables of cases: no server, no database."""

from __future__ import annotations

import pytest

from policies import Resource, Subject, can_grant, evaluate, normalize

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
    (OWNER, "user:update", Resource("user", "usr_owner", "ten_a", {"role": "owner", "changes": ("first_name",)}),
     True, "role:owner"),
    (OWNER, "user:update", Resource("user", "usr_owner", "ten_a", {"role": "owner", "changes": ("password",)}),
     False, "rule:no-self-lockout"),
    (ADMIN, "user:update", Resource("user", "usr_admin", "ten_a", {"role": "admin", "changes": ("role",)}),
     False, "rule:no-self-lockout"),
    (ADMIN, "user:create", Resource("user", None, "ten_a", {"new_role": "owner"}), False, "rule:no-escalation"),
    (OWNER, "user:read", user("member", tenant="ten_b"), False, "rule:tenant-isolation"),
    (OPERATOR, "user:read", user("member", tenant="ten_b"), True, "operator"),
    (OWNER, "tenant:update", Resource("tenant", "ten_a", "ten_a", {"changes": ("name",)}), True, "role:owner"),
    (OWNER, "tenant:update", Resource("tenant", "ten_a", "ten_a", {"changes": ("status",)}), False,
     "rule:operator-only-status"),
    (OPERATOR, "tenant:update", Resource("tenant", "ten_a", "ten_a", {"changes": ("status",)}), True, "operator"),
    (ADMIN, "domain:write", Resource("domain", None, "ten_a", {"sets_verified": True}), False,
     "rule:operator-only-verify"),
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


@pytest.mark.parametrize(("spelling", "canonical"), [
    ("users:read", "user:read"), ("booking.cancel", "booking:cancel"), ("policies:write", "policy:write"),
    ("Admin", "admin"), ("user:read", "user:read"), ("addresses:read", "address:read"),
])
def test_permission_spellings_normalise(spelling, canonical):
    assert normalize(spelling) == canonical


def test_grants_are_limited_to_what_the_grantor_holds():
    assert can_grant(ADMIN, frozenset({"user:write", "key:read"})).allowed
    assert not can_grant(MEMBER, frozenset({"user:write"})).allowed
    assert not can_grant(KEY_READ, frozenset({"admin"})).allowed
    assert not can_grant(OWNER, frozenset({"booking:cancel"})).allowed
