"""The audit trail: every change on the record with its actor, a hash chain that catches edits, purges."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.api.test_mfa import code_at
from tests.conftest import PASSWORD, add_user, assert_error, login, register, unique_email
from tests.livesrv import ROOT, backend


def entries(api, account, **params: Any) -> list[dict[str, Any]]:
    """Every entry of the account's tenant matching `params`, newest first, read page by page."""
    out, cursor = [], None
    while True:
        query = {**params, "limit": 100, **({"starting_after": cursor} if cursor else {})}
        response = api.get("/v1/audit-logs", params=query, headers=account.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        out.extend(body["data"])
        pagination = body["meta"]["pagination"]
        if not pagination["has_more"]:
            return out
        cursor = pagination["next_starting_after"]


def sql(server, statement: str, params: tuple = ()) -> list[tuple]:
    """Runs SQL on the server's database, under the API (to tamper with it)."""
    if backend() == "postgres":
        import psycopg2

        conn = psycopg2.connect(server.env["DATABASE_URL"])
        try:
            with conn, conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()
    import sqlite3

    conn = sqlite3.connect(server.env["DATABASE_URL"].removeprefix("sqlite:///"))
    try:
        with conn:
            return conn.execute(statement.replace("%s", "?"), params).fetchall()
    finally:
        conn.close()


def backdate(server, table: str, tenant_id: str, hours: int) -> None:
    """Moves the `created_at` of every row of `table` in the tenant `hours` into the past (to age
    them for a purge without waiting)."""
    moment = (datetime.now(UTC) - timedelta(hours=hours)).replace(tzinfo=None)  # stored as naive UTC
    sql(server, f"UPDATE {table} SET created_at = %s WHERE tenant_id = %s", (str(moment), tenant_id))


def test_every_change_is_recorded_with_its_actor_and_no_secret(api, owner, operator):
    member = add_user(api, owner, role="member")  # user.created, and member's login
    uid = member.user["id"]
    assert api.patch(f"/v1/users/{uid}", json={"first_name": "Changed"}, headers=owner.headers).status_code == 200
    key = api.post("/v1/keys", json={"name": "ci", "permissions": ["user:read"]}, headers=owner.headers).json()["data"]
    key_id, secret = key["key"]["id"], key["secret"]
    rotated = api.post(f"/v1/keys/{key_id}/rotate", json={}, headers=owner.headers).json()["data"]["secret"]
    assert api.delete(f"/v1/keys/{key_id}", headers=owner.headers).status_code == 204
    role = api.post(
        "/v1/roles",
        json={"name": "Auditor", "role_family": "Internal", "permissions": ["user:read"]},
        headers=owner.headers,
    ).json()["data"]
    assert api.post(f"/v1/users/{uid}/roles", json={"role_id": role["id"]}, headers=owner.headers).status_code == 200
    assert api.delete(f"/v1/users/{uid}/roles/{role['id']}", headers=owner.headers).status_code == 204
    assert api.delete(f"/v1/roles/{role['id']}", headers=owner.headers).status_code == 204
    policy = api.post(
        "/v1/policies",
        json={
            "name": "NoDeletes",
            "target": {"resource": "user", "action": "delete"},
            "rules": {"effect": "deny", "conditions": []},
            "is_enabled": False,
        },
        headers=owner.headers,
    ).json()["data"]
    patched = api.patch(f"/v1/policies/{policy['id']}", json={"description": "x"}, headers=owner.headers)
    assert patched.status_code == 200
    assert api.delete(f"/v1/policies/{policy['id']}", headers=owner.headers).status_code == 204
    setup = api.post("/v1/auth/mfa/setup", json={"type": "totp"}, headers=member.headers).json()["data"]
    assert (
        api.post("/v1/auth/mfa/verify", json={"code": code_at(setup["secret"])}, headers=member.headers).status_code
        == 200
    )
    # The next step's code (the server accepts one step either side): the step verify used is spent.
    disabled = api.request("DELETE", "/v1/auth/mfa", json={"code": code_at(setup["secret"], 1)}, headers=member.headers)
    assert disabled.status_code == 204, disabled.text
    bad = api.post(
        "/v1/auth/login", json={"email": member.email, "password": "wrong-password!", "tenant_id": owner.tenant["id"]}
    )
    assert bad.status_code == 401
    assert api.post("/v1/auth/logout", headers=member.headers).status_code == 204
    tenant_headers = {**operator, "X-Tenant-ID": owner.tenant["id"]}
    assert (
        api.patch(f"/v1/tenants/{owner.tenant['id']}", json={"name": "Renamed"}, headers=tenant_headers).status_code
        == 200
    )
    assert api.delete(f"/v1/users/{uid}", headers=owner.headers).status_code == 204

    trail = entries(api, owner)
    actions = [e["action"] for e in reversed(trail)]
    for expected in [
        "tenant.registered",
        "user.login",
        "user.created",
        "user.updated",
        "key.created",
        "key.rotated",
        "key.revoked",
        "role.created",
        "user.role_assigned",
        "user.role_removed",
        "role.deleted",
        "policy.created",
        "policy.updated",
        "policy.deleted",
        "user.mfa_setup_started",
        "user.mfa_enabled",
        "user.mfa_disabled",
        "user.login_failed",
        "user.logout",
        "tenant.updated",
        "user.deleted",
    ]:
        assert expected in actions, (expected, actions)
    by_action = {e["action"]: e for e in trail}  # the newest of each
    owner_actor = {"type": "user", "id": owner.user["id"]}
    assert by_action["user.updated"]["actor"] == owner_actor
    assert by_action["user.updated"]["old_values"]["first_name"] == "Grace"
    assert by_action["user.updated"]["new_values"]["first_name"] == "Changed"
    assert by_action["user.deleted"]["resource_id"] == uid and by_action["user.deleted"]["new_values"] is None
    assert by_action["user.role_removed"]["new_values"] == {"role_id": role["id"]}
    assert by_action["user.role_removed"]["resource_id"] == uid
    assert by_action["key.created"]["resource_id"] == key_id
    assert by_action["user.login_failed"]["actor"] == {"type": "anonymous", "id": None}
    assert by_action["user.login_failed"]["resource_id"] == uid
    assert by_action["user.login_failed"]["new_values"] == {"email": member.email, "reason": "AUTHENTICATION_FAILED"}
    assert by_action["user.logout"]["actor"] == {"type": "user", "id": uid}
    assert by_action["user.mfa_disabled"]["actor"] == {"type": "user", "id": uid}
    assert by_action["user.mfa_disabled"]["resource_id"] == uid
    assert by_action["tenant.updated"]["actor"]["type"] == "operator"
    assert by_action["tenant.updated"]["old_values"]["name"] == "Acme"
    assert by_action["user.created"]["decided_by"] == ["role:owner"]
    for entry in trail:
        assert entry["request_id"] and entry["created_at"].endswith("Z")
    text = json.dumps(trail)
    for shown_once in (secret, rotated, setup["secret"], PASSWORD, member.token, member.refresh_token):
        assert shown_once not in text
    # Exactly the secret is redacted; the key beside it is recorded as it was answered.
    assert by_action["key.created"]["new_values"] == {"key": key["key"], "secret": "[REDACTED]"}
    one = api.get(f"/v1/audit-logs/{trail[0]['id']}", headers=owner.headers)
    assert one.status_code == 200 and one.json()["data"] == trail[0]
    verified = api.get("/v1/audit-logs/verify", headers=owner.headers).json()["data"]
    assert verified == {"valid": True, "entries_checked": len(trail), "first_sequence": 1, "broken": None}


def test_a_refused_or_failed_change_leaves_no_change_entry_but_a_denial_is_recorded(api, owner):
    admin = add_user(api, owner, role="admin")
    policy = api.post(
        "/v1/policies",
        json={
            "name": "KeepAdmins",
            "target": {"resource": "user", "action": "delete"},
            "rules": {"effect": "deny", "conditions": ["resource.role == 'admin'"]},
        },
        headers=owner.headers,
    ).json()["data"]
    assert api.delete(f"/v1/users/{admin.user['id']}", headers=owner.headers).status_code == 403
    denied = entries(api, owner, action="authz.denied")
    assert len(denied) == 1 and denied[0]["decided_by"] == [f"policy:{policy['id']}"]
    assert denied[0]["resource_id"] == admin.user["id"] and denied[0]["resource_type"] == "user"
    assert denied[0]["new_values"]["operation"] == "delete_user"
    assert "KeepAdmins" in denied[0]["new_values"]["reason"]
    # A create that conflicts writes nothing and records nothing.
    before = len(entries(api, owner, action="user.created"))
    taken = {"email": admin.email, "password": PASSWORD, "first_name": "A", "last_name": "B"}
    assert_error(api.post("/v1/users", json=taken, headers=owner.headers), 409, "CONFLICT")
    assert len(entries(api, owner, action="user.created")) == before
    # A member refused by a role rank rule inside the handler is on the record too.
    member = add_user(api, owner, role="member")
    user = {"email": unique_email(), "password": PASSWORD, "first_name": "A", "last_name": "B"}
    assert api.post("/v1/users", json=user, headers=member.headers).status_code == 403
    denied = entries(api, owner, action="authz.denied", user_id=member.user["id"])
    assert len(denied) == 1 and denied[0]["new_values"]["permission"] == "user:create"


def test_filters_and_the_cursor(api, owner):
    made = [add_user(api, owner).user["id"] for _ in range(5)]
    created = entries(api, owner, action="user.created")
    assert [e["resource_id"] for e in created] == list(reversed(made))
    sequences = [e["sequence"] for e in created]
    assert sequences == sorted(sequences, reverse=True)
    first = api.get("/v1/audit-logs", params={"limit": 2}, headers=owner.headers).json()
    assert len(first["data"]) == 2 and first["meta"]["pagination"]["has_more"] is True
    second = api.get(
        "/v1/audit-logs", params={"limit": 2, "starting_after": first["data"][-1]["id"]}, headers=owner.headers
    ).json()
    assert second["data"][0]["sequence"] == first["data"][-1]["sequence"] - 1
    only = entries(api, owner, resource_type="user", resource_id=made[2])
    assert {e["resource_id"] for e in only} == {made[2]} and "user.created" in {e["action"] for e in only}
    mine = entries(api, owner, user_id=owner.user["id"])
    assert mine and all(e["actor"]["id"] == owner.user["id"] for e in mine)
    assert entries(api, owner, date_from="2999-01-01T00:00:00Z") == []
    assert len(entries(api, owner, date_to="2999-01-01T00:00:00Z")) == len(entries(api, owner))
    other = register(api, "Other")
    foreign = entries(api, other)[0]["id"]
    assert_error(
        api.get("/v1/audit-logs", params={"starting_after": foreign}, headers=owner.headers), 404, "RESOURCE_NOT_FOUND"
    )
    assert_error(api.get(f"/v1/audit-logs/{foreign}", headers=owner.headers), 404, "RESOURCE_NOT_FOUND")
    member = add_user(api, owner, role="member")
    assert_error(api.get("/v1/audit-logs", headers=member.headers), 403, "PERMISSION_DENIED")


def test_an_edited_or_removed_entry_breaks_the_chain_where_it_is(api, owner, server):
    for _ in range(3):
        add_user(api, owner)
    trail = list(reversed(entries(api, owner)))
    assert api.get("/v1/audit-logs/verify", headers=owner.headers).json()["data"]["valid"] is True
    victim = trail[2]
    sql(server, "UPDATE audit_entry SET new_values = %s WHERE id = %s", ('{"role": "owner"}', victim["id"]))
    result = api.get("/v1/audit-logs/verify", headers=owner.headers).json()["data"]
    assert result["valid"] is False
    assert result["broken"] == {"entry_id": victim["id"], "sequence": victim["sequence"], "reason": "hash_mismatch"}
    assert result["entries_checked"] == victim["sequence"]
    # Put it back, then remove one: the gap is named.
    sql(
        server,
        "UPDATE audit_entry SET new_values = %s WHERE id = %s",
        (json.dumps(victim["new_values"], sort_keys=True), victim["id"]),
    )
    assert api.get("/v1/audit-logs/verify", headers=owner.headers).json()["data"]["valid"] is True
    sql(server, "DELETE FROM audit_entry WHERE id = %s", (trail[4]["id"],))
    result = api.get("/v1/audit-logs/verify", headers=owner.headers).json()["data"]
    assert result["broken"] == {"entry_id": None, "sequence": trail[4]["sequence"], "reason": "missing_entry"}


def test_purge_removes_old_entries_and_the_rest_still_verifies(api, server):
    account = register(api)
    add_user(api, account)
    old = entries(api, account)
    # Aged two hours in the database instead of waited for: only this tenant's entries are that
    # old, so the purge below removes exactly them, whatever other tests wrote meanwhile.
    backdate(server, "audit_entry", account.tenant["id"], hours=2)
    run = subprocess.run(
        [sys.executable, "-m", "tenantry.cli", "audit", "purge", "--older-than", "3600s"],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["purged"][account.tenant["id"]] == len(old)
    kept = add_user(api, account).user["id"]
    trail = entries(api, account)
    purged = next(e for e in trail if e["action"] == "audit.purged")
    assert purged["actor"] == {"type": "system", "id": None} and purged["sequence"] == len(old) + 1
    assert purged["new_values"]["removed"] == len(old) and purged["previous_hash"] == old[0]["hash"]
    assert kept in {e["resource_id"] for e in trail} and not {e["id"] for e in old} & {e["id"] for e in trail}
    verified = api.get("/v1/audit-logs/verify", headers=account.headers).json()["data"]
    assert verified["valid"] is True and verified["first_sequence"] > 1
    assert verified["entries_checked"] == len(trail)
    bad = subprocess.run(
        [sys.executable, "-m", "tenantry.cli", "audit", "purge", "--older-than", "soon"],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "90d" in bad.stderr


def test_concurrent_changes_in_one_tenant_get_one_unbroken_chain(api, owner, server):
    from concurrent.futures import ThreadPoolExecutor

    def create(_: int) -> int:
        with server.client() as client:
            body = {"email": unique_email(), "password": PASSWORD, "first_name": "C", "last_name": "C"}
            return client.post("/v1/users", json=body, headers=owner.headers).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert set(pool.map(create, range(32))) == {201}
    verified = api.get("/v1/audit-logs/verify", headers=owner.headers).json()["data"]
    assert verified["valid"] is True and verified["entries_checked"] >= 34
    assert login(api, owner.email, tenant_id=owner.tenant["id"])
