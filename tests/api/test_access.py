"""Roles, permissions, ABAC policies and the MFA requirement, against the live server."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from tests.api.test_mfa import enable
from tests.conftest import add_user, assert_error, register
from tests.livesrv import eventually

SEED_POLICY = {
    "name": "PremiumCustomerBookingPolicy",
    "description": "Allows premium customers to cancel bookings up to 24 hours before",
    "target": {"resource": "booking", "action": "cancel"},
    "rules": {
        "effect": "allow",
        "conditions": [
            {"user.role": "PremiumCustomer", "booking.scheduled_time": "> now() + 24h"},
        ],
    },
}


def created(response, status=201):
    assert response.status_code == status, response.text
    return response.json()["data"]


def make_role(api, owner, name, permissions, family="Customer"):
    return created(
        api.post(
            "/v1/roles", json={"name": name, "role_family": family, "permissions": permissions}, headers=owner.headers
        )
    )


def make_policy(api, owner, **body):
    return created(api.post("/v1/policies", json=body, headers=owner.headers))


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_builtin_roles_are_seeded_per_tenant_and_cannot_change(api, owner):
    roles = api.get("/v1/roles", headers=owner.headers).json()
    assert [r["name"] for r in roles["data"]] == ["owner", "admin", "member"]
    assert all(r["is_builtin"] and r["role_family"] == "Internal" for r in roles["data"])
    assert "user:delete" in roles["data"][0]["permissions"] and roles["data"][2]["permissions"] == ["user:read"]
    member_role = roles["data"][2]["id"]
    assert_error(
        api.patch(f"/v1/roles/{member_role}", json={"description": "x"}, headers=owner.headers), 409, "CONFLICT"
    )
    assert_error(api.delete(f"/v1/roles/{member_role}", headers=owner.headers), 409, "CONFLICT")
    other = register(api, "Other")
    other_roles = api.get("/v1/roles", headers=other.headers).json()["data"]
    assert {r["id"] for r in other_roles}.isdisjoint({r["id"] for r in roles["data"]})
    # Another tenant's role is a 404, not a 403.
    assert_error(api.get(f"/v1/roles/{member_role}", headers=other.headers), 404, "RESOURCE_NOT_FOUND")
    me = api.get("/v1/auth/me", headers=owner.headers).json()["data"]
    assert me["roles"] == [{"id": roles["data"][0]["id"], "name": "owner", "is_builtin": True}]


def test_permissions_list_builtins_and_the_tenants_own(api, owner):
    listed = api.get("/v1/permissions", params={"limit": 100}, headers=owner.headers).json()
    names = {p["name"]: p for p in listed["data"]}
    assert names["user:read"]["is_builtin"] and names["policy:create"]["is_builtin"]
    assert names["user:read"]["description"].startswith("Required by:")
    perm = created(
        api.post(
            "/v1/permissions",
            json={"name": "bookings.cancel", "description": "Cancel a booking"},
            headers=owner.headers,
        )
    )
    assert perm == {**perm, "name": "booking:cancel", "resource": "booking", "action": "cancel", "is_builtin": False}
    assert api.get("/v1/permissions/booking.cancel", headers=owner.headers).json()["data"]["name"] == "booking:cancel"
    assert_error(api.post("/v1/permissions", json={"name": "booking:cancel"}, headers=owner.headers), 409, "CONFLICT")
    assert_error(api.post("/v1/permissions", json={"name": "user:read"}, headers=owner.headers), 409, "CONFLICT")
    error = assert_error(
        api.post("/v1/permissions", json={"name": "booking:refund", "resource": "invoice"}, headers=owner.headers),
        400,
        "VALIDATION_ERROR",
    )
    assert error["details"][0]["field"] == "resource"
    assert_error(api.delete("/v1/permissions/user:read", headers=owner.headers), 409, "CONFLICT")
    role = make_role(api, owner, "Canceller", ["booking:cancel"])
    error = assert_error(api.delete("/v1/permissions/booking:cancel", headers=owner.headers), 409, "CONFLICT")
    assert "Canceller" in error["message"]
    assert api.delete(f"/v1/roles/{role['id']}", headers=owner.headers).status_code == 204
    assert api.delete("/v1/permissions/booking:cancel", headers=owner.headers).status_code == 204
    assert_error(api.get("/v1/permissions/booking:cancel", headers=owner.headers), 404, "RESOURCE_NOT_FOUND")
    # Another tenant never sees this tenant's permissions.
    other = register(api, "Other")
    created(api.post("/v1/permissions", json={"name": "booking:cancel"}, headers=owner.headers))
    assert_error(api.get("/v1/permissions/booking:cancel", headers=other.headers), 404, "RESOURCE_NOT_FOUND")


def test_a_custom_role_grants_exactly_its_permissions(api, owner):
    member = add_user(api, owner, role="member")
    assert_error(api.get("/v1/keys", headers=member.headers), 403, "PERMISSION_DENIED")
    role = make_role(api, owner, "KeyViewer", ["keys:read"], family="Internal")
    assert role["permissions"] == ["key:read"] and not role["is_builtin"]
    shown = created(
        api.post(f"/v1/users/{member.user['id']}/roles", json={"role_id": role["id"]}, headers=owner.headers), 200
    )
    assert [r["name"] for r in shown["roles"]] == ["member", "KeyViewer"]
    # Giving it again changes nothing.
    again = created(
        api.post(f"/v1/users/{member.user['id']}/roles", json={"role_id": role["id"]}, headers=owner.headers), 200
    )
    assert again["roles"] == shown["roles"]
    assert api.get(f"/v1/users/{member.user['id']}", headers=owner.headers).json()["data"]["roles"] == shown["roles"]
    assert api.get("/v1/keys", headers=member.headers).status_code == 200
    assert_error(
        api.post("/v1/keys", json={"name": "x", "permissions": ["user:read"]}, headers=member.headers),
        403,
        "PERMISSION_DENIED",
    )
    assert_error(api.get("/v1/roles", headers=member.headers), 403, "PERMISSION_DENIED")
    # Widening the role widens every holder at their next request.
    created(
        api.patch(f"/v1/roles/{role['id']}", json={"permissions": ["key:read", "role:read"]}, headers=owner.headers),
        200,
    )
    assert api.get("/v1/roles", headers=member.headers).status_code == 200
    assert api.delete(f"/v1/users/{member.user['id']}/roles/{role['id']}", headers=owner.headers).status_code == 204
    assert api.delete(f"/v1/users/{member.user['id']}/roles/{role['id']}", headers=owner.headers).status_code == 204
    assert_error(api.get("/v1/keys", headers=member.headers), 403, "PERMISSION_DENIED")
    # A built-in role is not given this way.
    builtin = api.get("/v1/roles", headers=owner.headers).json()["data"][1]
    assert_error(
        api.post(f"/v1/users/{member.user['id']}/roles", json={"role_id": builtin["id"]}, headers=owner.headers),
        409,
        "CONFLICT",
    )
    # Deleting a role takes it from its holders.
    created(api.post(f"/v1/users/{member.user['id']}/roles", json={"role_id": role["id"]}, headers=owner.headers), 200)
    assert api.delete(f"/v1/roles/{role['id']}", headers=owner.headers).status_code == 204
    assert [
        r["name"] for r in api.get(f"/v1/users/{member.user['id']}", headers=owner.headers).json()["data"]["roles"]
    ] == ["member"]
    assert_error(api.get("/v1/keys", headers=member.headers), 403, "PERMISSION_DENIED")


def test_roles_are_checked_when_saved(api, owner):
    assert_error(
        api.post(
            "/v1/roles",
            json={"name": "X", "role_family": "Customer", "permissions": ["booking:fly"]},
            headers=owner.headers,
        ),
        400,
        "VALIDATION_ERROR",
    )
    make_role(api, owner, "Support", [])
    assert_error(
        api.post("/v1/roles", json={"name": "support", "role_family": "Internal"}, headers=owner.headers),
        409,
        "CONFLICT",
    )
    assert_error(
        api.post("/v1/roles", json={"name": "Owner", "role_family": "Internal"}, headers=owner.headers), 409, "CONFLICT"
    )
    # Nobody grants what they do not hold: a role manager who lacks user:delete cannot put it in a role,
    # nor give a role that has it.
    manager = add_user(api, owner, role="member")
    maker = make_role(
        api, owner, "RoleMaker", ["role:create", "role:read", "role:assign", "user:read"], family="Internal"
    )
    created(
        api.post(f"/v1/users/{manager.user['id']}/roles", json={"role_id": maker["id"]}, headers=owner.headers), 200
    )
    error = assert_error(
        api.post(
            "/v1/roles",
            json={"name": "Deleter", "role_family": "Internal", "permissions": ["user:delete"]},
            headers=manager.headers,
        ),
        403,
        "PERMISSION_DENIED",
    )
    assert "user:delete" in error["message"]
    deleter = make_role(api, owner, "Deleter", ["user:delete"], family="Internal")
    assert_error(
        api.post(f"/v1/users/{manager.user['id']}/roles", json={"role_id": deleter["id"]}, headers=manager.headers),
        403,
        "PERMISSION_DENIED",
    )
    # An admin cannot change an owner's roles.
    admin = add_user(api, owner, role="admin")
    support = api.get("/v1/roles", params={"role_family": "Customer"}, headers=owner.headers).json()["data"][0]
    assert_error(
        api.post(f"/v1/users/{owner.user['id']}/roles", json={"role_id": support["id"]}, headers=admin.headers),
        403,
        "PERMISSION_DENIED",
    )


def test_the_seed_policy_allows_at_25_hours_and_denies_at_23_with_the_reason(api, owner):
    created(
        api.post(
            "/v1/permissions",
            json={"name": "booking.cancel", "resource": "booking", "action": "cancel"},
            headers=owner.headers,
        )
    )
    premium = make_role(api, owner, "PremiumCustomer", [])
    policy = make_policy(api, owner, **SEED_POLICY)
    assert policy["rules"] == SEED_POLICY["rules"] and policy["is_enabled"] is True
    now = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)

    def ask(hours, subject=None):
        body = {
            "subject": subject or {"role": "PremiumCustomer"},
            "action": "booking.cancel",
            "resource": {"type": "booking", "scheduled_time": iso(now + timedelta(hours=hours))},
            "context": {"now": iso(now)},
        }
        return created(api.post("/v1/policies/evaluate", json=body, headers=owner.headers), 200)

    allowed = ask(25)
    assert allowed["decision"] == "allow"
    assert allowed["decided_by"] == [{"type": "policy", "id": policy["id"], "name": SEED_POLICY["name"]}]
    assert allowed["policies"][0]["applied"] is True
    denied = ask(23)
    assert denied["decision"] == "deny" and denied["decided_by"] == []
    trace = denied["policies"][0]
    assert trace["applied"] is False and trace["failed_condition"].endswith("resource.scheduled_time > now() + 24h")
    assert ask(25, {"role": "Basic"})["decision"] == "deny"
    # A real user of the tenant who holds the role, by id.
    member = add_user(api, owner, role="member")
    created(
        api.post(f"/v1/users/{member.user['id']}/roles", json={"role_id": premium["id"]}, headers=owner.headers), 200
    )
    assert ask(25, member.user["id"])["decision"] == "allow"
    assert ask(25, {"user_id": member.user["id"]})["decision"] == "allow"
    # A role grant decides too, and names the role.
    owner_role = api.get("/v1/roles", headers=owner.headers).json()["data"][0]
    granted = created(
        api.post(
            "/v1/policies/evaluate",
            json={"subject": owner.user["id"], "action": "user:delete", "resource": {"type": "user", "role": "member"}},
            headers=owner.headers,
        ),
        200,
    )
    assert granted["decided_by"] == [{"type": "role", "id": owner_role["id"], "name": "owner"}]
    # A disabled policy is left out unless asked for.
    created(api.patch(f"/v1/policies/{policy['id']}", json={"is_enabled": False}, headers=owner.headers), 200)
    assert ask(25)["decision"] == "deny"
    body = {
        "subject": {"role": "PremiumCustomer"},
        "action": "booking:cancel",
        "include_disabled": True,
        "resource": {"type": "booking", "scheduled_time": iso(now + timedelta(hours=25))},
        "context": {"now": iso(now)},
    }
    tested = created(api.post("/v1/policies/evaluate", json=body, headers=owner.headers), 200)
    assert tested["decision"] == "allow" and tested["policies"][0]["is_enabled"] is False
    assert_error(
        api.post("/v1/policies/evaluate", json={**body, "subject": "usr_" + "0" * 26}, headers=owner.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )


def test_policies_are_checked_when_saved(api, owner):
    bad = {
        **SEED_POLICY,
        "target": {"resource": "user", "action": "read"},
        "rules": {"effect": "deny", "conditions": ["subject.role == 'x' and", "resource.id == 1"]},
    }
    error = assert_error(api.post("/v1/policies", json=bad, headers=owner.headers), 400, "VALIDATION_ERROR")
    assert error["details"][0]["field"] == "rules.conditions[0]" and "position" in error["details"][0]["message"]
    bad["rules"]["conditions"] = [{"user.role": "x", "booking.when": "> now() +"}]
    error = assert_error(api.post("/v1/policies", json=bad, headers=owner.headers), 400, "VALIDATION_ERROR")
    assert error["details"][0]["field"] == "rules.conditions[0].booking.when"
    bad["rules"]["conditions"] = ["os.system == 1"]
    assert_error(api.post("/v1/policies", json=bad, headers=owner.headers), 400, "VALIDATION_ERROR")
    unknown = {**SEED_POLICY}  # booking:cancel is not a permission of this tenant yet
    error = assert_error(api.post("/v1/policies", json=unknown, headers=owner.headers), 400, "VALIDATION_ERROR")
    assert error["details"][0]["field"] == "target"
    created(api.post("/v1/permissions", json={"name": "booking:cancel"}, headers=owner.headers))
    policy = make_policy(api, owner, **SEED_POLICY)
    assert_error(
        api.post("/v1/policies", json={**SEED_POLICY, "name": SEED_POLICY["name"].upper()}, headers=owner.headers),
        409,
        "CONFLICT",
    )
    replaced = created(
        api.put(
            f"/v1/policies/{policy['id']}",
            json={
                "name": "Renamed",
                "target": {"resource": "bookings", "action": "cancel"},
                "rules": {"effect": "deny", "conditions": []},
                "is_enabled": False,
            },
            headers=owner.headers,
        ),
        200,
    )
    assert replaced["description"] is None and replaced["target"] == {"resource": "booking", "action": "cancel"}
    listed = api.get("/v1/policies", params={"is_enabled": "false", "resource": "booking"}, headers=owner.headers)
    assert [p["id"] for p in listed.json()["data"]] == [policy["id"]]
    # Only someone who holds a permission may write an allow policy on it.
    member = add_user(api, owner, role="member")
    writer = make_role(api, owner, "PolicyWriter", ["policy:create", "policy:read"], family="Internal")
    created(
        api.post(f"/v1/users/{member.user['id']}/roles", json={"role_id": writer["id"]}, headers=owner.headers), 200
    )
    grant_self = {
        "name": "MembersDelete",
        "target": {"resource": "user", "action": "delete"},
        "rules": {"effect": "allow", "conditions": ["subject.role == 'member'"]},
    }
    assert_error(api.post("/v1/policies", json=grant_self, headers=member.headers), 403, "PERMISSION_DENIED")
    assert api.delete(f"/v1/policies/{policy['id']}", headers=owner.headers).status_code == 204
    assert_error(api.get(f"/v1/policies/{policy['id']}", headers=owner.headers), 404, "RESOURCE_NOT_FOUND")


def test_a_deny_policy_overrides_a_role_grant_on_a_live_operation(api, owner):
    member = add_user(api, owner, role="member")
    admin = add_user(api, owner, role="admin")
    policy = make_policy(
        api,
        owner,
        name="KeepAdmins",
        target={"resource": "user", "action": "delete"},
        rules={"effect": "deny", "conditions": ["resource.role == 'admin'"]},
    )
    error = assert_error(api.delete(f"/v1/users/{admin.user['id']}", headers=owner.headers), 403, "PERMISSION_DENIED")
    assert "KeepAdmins" in error["message"]
    assert api.delete(f"/v1/users/{member.user['id']}", headers=owner.headers).status_code == 204
    created(api.patch(f"/v1/policies/{policy['id']}", json={"is_enabled": False}, headers=owner.headers), 200)
    assert api.delete(f"/v1/users/{admin.user['id']}", headers=owner.headers).status_code == 204


def test_a_deny_policy_that_cannot_be_evaluated_applies(api, owner):
    make_policy(
        api,
        owner,
        name="Broken",
        target={"resource": "key", "action": "read"},
        rules={"effect": "deny", "conditions": ["resource.no_such_field == 1"]},
    )
    assert_error(api.get("/v1/keys", headers=owner.headers), 403, "PERMISSION_DENIED")
    # Policies on other actions are not involved.
    assert api.get("/v1/users", headers=owner.headers).status_code == 200


def test_allow_policies_grant_users_but_never_widen_an_api_key(api, owner):
    member = add_user(api, owner, role="member")
    make_policy(
        api,
        owner,
        name="MembersSeeKeys",
        target={"resource": "key", "action": "read"},
        rules={"effect": "allow", "conditions": ["subject.role == 'member'", "context.mode == 'live'"]},
    )
    assert api.get("/v1/keys", headers=member.headers).status_code == 200
    key = created(api.post("/v1/keys", json={"name": "reader", "permissions": ["user:read"]}, headers=owner.headers))
    make_policy(
        api,
        owner,
        name="KeysSeeKeys",
        target={"resource": "key", "action": "read"},
        rules={"effect": "allow", "conditions": ["subject.type == 'key'"]},
    )
    assert_error(api.get("/v1/keys", headers={"X-API-Key": key["secret"]}), 403, "PERMISSION_DENIED")
    # A deny binds keys like anyone.
    make_policy(
        api,
        owner,
        name="NoTestKeys",
        target={"resource": "user", "action": "read"},
        rules={"effect": "deny", "conditions": ["context.mode == 'test'"]},
    )
    test_key = created(
        api.post("/v1/keys", json={"name": "t", "permissions": ["user:read"], "mode": "test"}, headers=owner.headers)
    )
    assert api.get("/v1/users", headers={"X-API-Key": key["secret"]}).status_code == 200
    assert_error(api.get("/v1/users", headers={"X-API-Key": test_key["secret"]}), 403, "PERMISSION_DENIED")


def test_a_tenant_can_require_mfa_of_its_owners_and_admins(api, owner):
    admin = add_user(api, owner, role="admin")
    member = add_user(api, owner, role="member")
    require = {"settings": {"require_mfa_for_admins": True}}
    tenant_url = f"/v1/tenants/{owner.tenant['id']}"
    assert_error(api.patch(tenant_url, json=require, headers=owner.headers), 403, "PERMISSION_DENIED")
    enable(api, owner)
    changed = created(api.patch(tenant_url, json=require, headers=owner.headers), 200)
    assert changed["settings"]["require_mfa_for_admins"] is True
    assert api.get("/v1/users", headers=owner.headers).status_code == 200
    assert_error(api.get("/v1/users", headers=admin.headers), 403, "MFA_ENROLLMENT_REQUIRED")
    assert api.get("/v1/users", headers=member.headers).status_code == 200
    assert api.get("/v1/auth/me", headers=admin.headers).status_code == 200
    enable(api, admin)
    assert api.get("/v1/users", headers=admin.headers).status_code == 200


def test_role_and_policy_changes_reach_every_server_process(shared_server):
    """Two worker processes on one database: a change through one is enforced by both at once.

    Each request goes on a fresh connection (one keep-alive connection stays on one worker), and
    the access log's `pid` tells which worker answered: both must have, before and after. The
    two-worker server is shared (its tenant here is this test's own).
    """
    live = shared_server(workers=2)

    def ask(headers: dict[str, str]) -> tuple[int, int]:
        """One request on a new connection; returns its status and the pid of the worker that answered."""
        request_id = f"two-workers-{uuid.uuid4().hex}"
        with live.client(headers={"Connection": "close"}) as client:
            status = client.get("/v1/users", headers={**headers, "X-Request-Id": request_id}).status_code
        line = eventually(
            lambda: next(
                (
                    json.loads(line)
                    for line in live.log().splitlines()
                    if request_id in line and '"msg": "request"' in line
                ),
                None,
            )
        )
        return status, line["pid"]

    def until_both_answered(headers: dict[str, str]) -> dict[int, list[int]]:
        """Asks until both workers have answered (at most 40 requests); returns statuses by pid."""
        seen: dict[int, list[int]] = {}
        for _ in range(40):
            status, pid = ask(headers)
            seen.setdefault(pid, []).append(status)
            if len(seen) == 2:
                break
        return seen

    with live.client(headers={"Connection": "close"}) as api:
        owner = register(api)
        member = add_user(api, owner, role="member")
    before = until_both_answered(member.headers)  # and so both workers cached this tenant's grants
    assert len(before) == 2 and {s for statuses in before.values() for s in statuses} == {200}, before
    with live.client(headers={"Connection": "close"}) as api:
        make_policy(
            api,
            owner,
            name="NoReading",
            target={"resource": "user", "action": "read"},
            rules={"effect": "deny", "conditions": ["subject.role == 'member'"]},
        )
    after = until_both_answered(member.headers)
    assert set(after) == set(before) and {s for statuses in after.values() for s in statuses} == {403}, after
