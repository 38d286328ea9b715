"""Scoped API keys: one-time secrets, scopes, revocation, expiry, IP ranges and rotation."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import PASSWORD, add_user, assert_error, login, register, unique_email
from tests.livesrv import start_server


def make_key(api, owner, **body):
    body = {"name": "sync", "permissions": ["users:read"], **body}
    response = api.post("/v1/keys", json=body, headers=owner.headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def new_user():
    return {"email": unique_email(), "password": PASSWORD, "first_name": "K", "last_name": "Ey"}


def test_secret_is_shown_once_and_stored_only_as_a_hash(api, owner):
    data = make_key(api, owner, mode="test")
    secret, key = data["secret"], data["key"]
    assert secret.startswith("sk_test_") and len(secret) == 48
    assert key["prefix"] == secret[:12] and key["permissions"] == ["user:read"] and key["status"] == "active"
    shown = api.get(f"/v1/keys/{key['id']}", headers=owner.headers).json()["data"]
    listed = api.get("/v1/keys", headers=owner.headers).json()["data"]
    assert secret not in str(shown) and secret not in str(listed) and shown["id"] == key["id"]
    assert make_key(api, owner)["secret"].startswith("sk_live_")


def test_a_read_scope_lists_users_and_is_refused_writes_naming_the_scope(api, owner):
    secret = make_key(api, owner)["secret"]
    headers = {"X-API-Key": secret}
    listed = api.get("/v1/users", headers=headers)
    assert listed.status_code == 200 and listed.json()["data"][0]["id"] == owner.user["id"]
    error = assert_error(api.post("/v1/users", json=new_user(), headers=headers), 403, "PERMISSION_DENIED")
    assert "user:create" in error["message"]
    assert_error(api.get("/v1/keys", headers=headers), 403, "PERMISSION_DENIED")
    # An API key has no account: the bearer-only operations do not accept it.
    assert_error(api.get("/v1/auth/me", headers=headers), 401, "AUTHENTICATION_FAILED")


def test_admin_scope_and_seed_spellings_are_normalised(api, owner):
    data = make_key(api, owner, permissions=["admin", "users:write", "user.read"])
    assert data["key"]["permissions"] == ["admin", "user:write", "user:read"]
    headers = {"X-API-Key": data["secret"]}
    assert api.post("/v1/users", json=new_user(), headers=headers).status_code == 201
    assert api.get("/v1/keys", headers=headers).status_code == 200


def test_nobody_grants_a_permission_they_do_not_hold(api, owner):
    member = add_user(api, owner, role="member")
    assert_error(
        api.post("/v1/keys", json={"name": "x", "permissions": ["user:read"]}, headers=member.headers),
        403,
        "PERMISSION_DENIED",
    )
    reader = {"X-API-Key": make_key(api, owner, permissions=["user:read", "key:create"])["secret"]}
    error = assert_error(
        api.post("/v1/keys", json={"name": "x", "permissions": ["user:delete"]}, headers=reader),
        403,
        "PERMISSION_DENIED",
    )
    assert "user:delete" in error["message"]
    # A permission the tenant has not defined is no "not held" 403 but a 400 naming it (issue 13).
    error = assert_error(
        api.post("/v1/keys", json={"name": "x", "permissions": ["booking:cancel"]}, headers=owner.headers),
        400,
        "VALIDATION_ERROR",
    )
    assert error["details"] == [
        {"field": "permissions[0]", "message": "names no permission of this tenant (booking:cancel)"}
    ]


def test_an_unknown_permission_is_400_naming_each_before_the_not_held_check(api, owner):
    reader = {"X-API-Key": make_key(api, owner, permissions=["user:read", "key:create"])["secret"]}
    before = [k["id"] for k in api.get("/v1/keys", headers=owner.headers).json()["data"]]
    body = {"name": "x", "permissions": ["user:read", "users:frobnicate", "invoice.pay", "user:delete"]}
    # For the owner, who holds every known one, and for a key that does not hold user:delete alike.
    for headers in (owner.headers, reader):
        error = assert_error(api.post("/v1/keys", json=body, headers=headers), 400, "VALIDATION_ERROR")
        assert error["details"] == [
            {"field": "permissions[1]", "message": "names no permission of this tenant (user:frobnicate)"},
            {"field": "permissions[2]", "message": "names no permission of this tenant (invoice:pay)"},
        ]
    assert [k["id"] for k in api.get("/v1/keys", headers=owner.headers).json()["data"]] == before
    # Once the tenant defines it, it is a permission like the others: the owner may grant it.
    assert api.post("/v1/permissions", json={"name": "invoice:pay"}, headers=owner.headers).status_code == 201
    made = api.post(
        "/v1/keys", json={"name": "x", "permissions": ["invoice.pay", "user:write", "admin"]}, headers=owner.headers
    )
    assert made.status_code == 201, made.text
    # Known but not held stays the 403 it was.
    assert_error(
        api.post("/v1/keys", json={"name": "x", "permissions": ["invoice:pay"]}, headers=reader),
        403,
        "PERMISSION_DENIED",
    )


def test_revoked_expired_and_unknown_keys_are_401(api, owner):
    data = make_key(api, owner)
    headers = {"X-API-Key": data["secret"]}
    assert api.get("/v1/users", headers=headers).status_code == 200
    assert api.delete(f"/v1/keys/{data['key']['id']}", headers=owner.headers).status_code == 204
    assert api.delete(f"/v1/keys/{data['key']['id']}", headers=owner.headers).status_code == 204  # harmless again
    assert_error(api.get("/v1/users", headers=headers), 401, "AUTHENTICATION_FAILED")
    assert api.get(f"/v1/keys/{data['key']['id']}", headers=owner.headers).json()["data"]["status"] == "revoked"
    expired = make_key(api, owner, expires_at="2020-01-01T00:00:00Z")
    assert expired["key"]["status"] == "expired"
    assert_error(api.get("/v1/users", headers={"X-API-Key": expired["secret"]}), 401, "AUTHENTICATION_FAILED")
    assert_error(api.get("/v1/users", headers={"X-API-Key": "sk_live_" + "A" * 40}), 401, "AUTHENTICATION_FAILED")
    assert_error(api.get("/v1/users", headers={"X-API-Key": "not-a-key"}), 401, "AUTHENTICATION_FAILED")


def test_a_key_from_outside_its_ranges_is_403_and_a_spoofed_forwarded_for_does_not_help(api, owner):
    outside = {"X-API-Key": make_key(api, owner, allowed_ips=["203.0.113.0/24"])["secret"]}
    assert_error(api.get("/v1/users", headers=outside), 403, "PERMISSION_DENIED")
    spoofed = {**outside, "X-Forwarded-For": "203.0.113.7"}
    assert_error(api.get("/v1/users", headers=spoofed), 403, "PERMISSION_DENIED")
    inside = {"X-API-Key": make_key(api, owner, allowed_ips=["127.0.0.0/8", "::1"])["secret"]}
    assert api.get("/v1/users", headers=inside).status_code == 200


def test_behind_a_trusted_proxy_the_forwarded_client_address_counts(shared_server):
    from tests.api.test_limits import STRICT, from_address

    # The rate-limit tests' server, which trusts the tests' client (127.0.0.1) as its proxy; the
    # account is made from an address of this test's own, so no other test's budget is spent.
    server = shared_server(**STRICT)
    with from_address(server, "198.51.100.60") as home:
        owner = register(home)
        key = {"X-API-Key": make_key(home, owner, allowed_ips=["203.0.113.0/24"])["secret"]}
    with server.client() as client:
        assert client.get("/v1/users", headers={**key, "X-Forwarded-For": "203.0.113.7"}).status_code == 200
        # The client's own prefix cannot smuggle an address past the real one.
        smuggled = {**key, "X-Forwarded-For": "203.0.113.7, 198.51.100.1"}
        assert_error(client.get("/v1/users", headers=smuggled), 403, "PERMISSION_DENIED")


def test_rotation_with_and_without_grace(api, owner):
    data = make_key(api, owner)
    key_id, old = data["key"]["id"], data["secret"]
    rotated = api.post(f"/v1/keys/{key_id}/rotate", json={"grace_period_seconds": 3600}, headers=owner.headers)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["data"]["secret"]
    assert new != old and rotated.json()["data"]["key"]["prefix"] == new[:12]
    for secret in (old, new):
        assert api.get("/v1/users", headers={"X-API-Key": secret}).status_code == 200
    again = api.post(f"/v1/keys/{key_id}/rotate", headers=owner.headers).json()["data"]["secret"]
    for secret in (old, new):
        assert_error(api.get("/v1/users", headers={"X-API-Key": secret}), 401, "AUTHENTICATION_FAILED")
    assert api.get("/v1/users", headers={"X-API-Key": again}).status_code == 200
    api.delete(f"/v1/keys/{key_id}", headers=owner.headers)
    assert_error(api.post(f"/v1/keys/{key_id}/rotate", headers=owner.headers), 409, "CONFLICT")


def test_another_tenants_key_is_404_and_a_key_stays_in_its_tenant(api, owner):
    data = make_key(api, owner, permissions=["admin"])
    other = register(api, tenant_name="Other")
    assert_error(api.get(f"/v1/keys/{data['key']['id']}", headers=other.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(api.delete(f"/v1/keys/{data['key']['id']}", headers=other.headers), 404, "RESOURCE_NOT_FOUND")
    headers = {"X-API-Key": data["secret"], "X-Tenant-ID": other.tenant["id"]}
    assert_error(api.get("/v1/users", headers=headers), 403, "PERMISSION_DENIED")
    assert_error(
        api.get(f"/v1/users/{other.user['id']}", headers={"X-API-Key": data["secret"]}), 404, "RESOURCE_NOT_FOUND"
    )


def test_last_used_at_is_kept_without_a_write_per_request(api, owner):
    data = make_key(api, owner)
    assert data["key"]["last_used_at"] is None
    for _ in range(3):
        api.get("/v1/users", headers={"X-API-Key": data["secret"]})
    shown = api.get(f"/v1/keys/{data['key']['id']}", headers=owner.headers).json()["data"]
    assert shown["last_used_at"] is not None


def test_key_lookups_do_not_serialise_requests_on_a_slow_database():
    """With 40 ms added to every database round trip, 8 concurrent key requests take about as long as one."""
    import pytest

    from tests.livesrv import LatencyProxy, backend, postgres_reachable

    if backend() != "postgres" or not postgres_reachable():
        pytest.skip("needs PostgreSQL behind a latency proxy; runs in the postgres environment")
    proxy = LatencyProxy(5432, delay=0.04)
    server = start_server(url_transform=lambda url: url.replace(":5432/", f":{proxy.port}/"))
    try:
        with server.client() as client:
            owner = register(client)
            secret = make_key(client, owner)["secret"]

            def call(_):
                with server.client() as each:
                    start = time.perf_counter()
                    assert each.get("/v1/users", headers={"X-API-Key": secret}).status_code == 200
                    return time.perf_counter() - start

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(call, range(8)))  # every server thread opens its connection
            single = min(call(0) for _ in range(2))
            with ThreadPoolExecutor(8) as pool:
                durations = list(pool.map(call, range(8)))
        # Serialised, the eighth request would wait for the seven before it (~8x one).
        assert max(durations) < single * 3, (single, durations)
    finally:
        server.stop()
        proxy.close()


def test_a_key_expiring_in_year_148_is_answered_in_rfc_3339(api, owner):
    data = make_key(api, owner, expires_at="0148-02-29T01:31:39Z")
    assert data["key"]["expires_at"] == "0148-02-29T01:31:39.000Z" and data["key"]["status"] == "expired"
    listed = api.get("/v1/keys", headers=owner.headers)
    assert listed.status_code == 200 and listed.json()["data"][0]["expires_at"] == "0148-02-29T01:31:39.000Z"


# A key acts for its creator: never with more authority than they hold at the moment of use.


def _member_with(api, owner, name, permissions):
    """A member given a custom role with `permissions`."""
    member = add_user(api, owner, role="member")
    role = api.post(
        "/v1/roles", json={"name": name, "role_family": "Internal", "permissions": permissions}, headers=owner.headers
    )
    assert role.status_code == 201, role.text
    given = api.post(
        f"/v1/users/{member.user['id']}/roles", json={"role_id": role.json()["data"]["id"]}, headers=owner.headers
    )
    assert given.status_code == 200, given.text
    return member


def test_a_members_key_cannot_create_an_admin_its_creator_could_not(api, owner):
    member = _member_with(api, owner, "Recruiter", ["user:create", "key:create"])
    admin_body = {**new_user(), "role": "admin"}
    assert_error(api.post("/v1/users", json=admin_body, headers=member.headers), 403, "PERMISSION_DENIED")
    key = make_key(api, member, permissions=["user:create"])
    headers = {"X-API-Key": key["secret"]}
    error = assert_error(api.post("/v1/users", json=admin_body, headers=headers), 403, "PERMISSION_DENIED")
    assert "admin" in error["message"]
    assert_error(
        api.post("/v1/auth/login", json={"email": admin_body["email"], "password": PASSWORD}),
        401,
        "AUTHENTICATION_FAILED",
    )
    # What the member may do, their key may do.
    made = api.post("/v1/users", json=new_user(), headers=headers)
    assert made.status_code == 201 and made.json()["data"]["role"] == "member", made.text


def test_a_members_key_follows_the_members_self_change_and_rank_rules(api, owner):
    admin = add_user(api, owner, role="admin")
    peer = add_user(api, owner, role="member")
    member = _member_with(api, owner, "Editor", ["user:update", "key:create"])
    headers = {"X-API-Key": make_key(api, member, permissions=["user:update"])["secret"]}
    error = assert_error(
        api.patch(f"/v1/users/{member.user['id']}", json={"role": "admin"}, headers=headers), 403, "PERMISSION_DENIED"
    )
    assert "role admin" in error["message"]
    error = assert_error(
        api.patch(f"/v1/users/{member.user['id']}", json={"email": unique_email()}, headers=headers),
        403,
        "PERMISSION_DENIED",
    )
    assert "your own email" in error["message"]
    assert_error(
        api.patch(f"/v1/users/{admin.user['id']}", json={"password": "taken-over-123456"}, headers=headers),
        403,
        "PERMISSION_DENIED",
    )
    assert api.get(f"/v1/users/{member.user['id']}", headers=owner.headers).json()["data"]["role"] == "member"
    login(api, admin.email, tenant_id=owner.tenant["id"])  # the admin's password is unchanged
    renamed = api.patch(f"/v1/users/{peer.user['id']}", json={"first_name": "Renamed"}, headers=headers)
    assert renamed.status_code == 200 and renamed.json()["data"]["first_name"] == "Renamed", renamed.text


def test_a_key_loses_at_once_what_its_creator_loses(api, owner):
    admin = add_user(api, owner, role="admin")
    headers = {"X-API-Key": make_key(api, admin, permissions=["user:read", "user:create"])["secret"]}
    assert api.post("/v1/users", json=new_user(), headers=headers).status_code == 201
    demoted = api.patch(f"/v1/users/{admin.user['id']}", json={"role": "member"}, headers=owner.headers)
    assert demoted.status_code == 200, demoted.text
    error = assert_error(api.post("/v1/users", json=new_user(), headers=headers), 403, "PERMISSION_DENIED")
    assert "user:create" in error["message"]
    assert api.get("/v1/users", headers=headers).status_code == 200  # a member still reads users
    suspended = api.patch(f"/v1/users/{admin.user['id']}", json={"status": "suspended"}, headers=owner.headers)
    assert suspended.status_code == 200, suspended.text
    error = assert_error(api.get("/v1/users", headers=headers), 401, "AUTHENTICATION_FAILED")
    assert "creator" in error["message"]
    api.patch(f"/v1/users/{admin.user['id']}", json={"status": "active"}, headers=owner.headers)
    assert api.get("/v1/users", headers=headers).status_code == 200
    assert api.delete(f"/v1/users/{admin.user['id']}", headers=owner.headers).status_code == 204
    assert_error(api.get("/v1/users", headers=headers), 401, "AUTHENTICATION_FAILED")


def test_a_key_made_by_a_key_answers_to_both(api, owner):
    admin = add_user(api, owner, role="admin")
    parent = make_key(api, admin, permissions=["user:read", "user:create", "key:create"])
    child = api.post(
        "/v1/keys",
        json={"name": "child", "permissions": ["user:read", "user:create"]},
        headers={"X-API-Key": parent["secret"]},
    )
    assert child.status_code == 201, child.text
    headers = {"X-API-Key": child.json()["data"]["secret"]}
    assert api.post("/v1/users", json=new_user(), headers=headers).status_code == 201
    # Bound by the human behind the parent ...
    api.patch(f"/v1/users/{admin.user['id']}", json={"role": "member"}, headers=owner.headers)
    assert_error(api.post("/v1/users", json=new_user(), headers=headers), 403, "PERMISSION_DENIED")
    assert api.get("/v1/users", headers=headers).status_code == 200
    # ... and by the parent key itself: revoked, its keys stop too.
    assert api.delete(f"/v1/keys/{parent['key']['id']}", headers=owner.headers).status_code == 204
    assert_error(api.get("/v1/users", headers=headers), 401, "AUTHENTICATION_FAILED")
    # Chains stop at two: a key made by a key makes no keys.
    api.patch(f"/v1/users/{admin.user['id']}", json={"role": "admin"}, headers=owner.headers)
    parent = make_key(api, admin, permissions=["admin"])
    child = api.post(
        "/v1/keys",
        json={"name": "child", "permissions": ["key:create", "user:read"]},
        headers={"X-API-Key": parent["secret"]},
    )
    assert child.status_code == 201, child.text
    error = assert_error(
        api.post(
            "/v1/keys",
            json={"name": "grandchild", "permissions": ["user:read"]},
            headers={"X-API-Key": child.json()["data"]["secret"]},
        ),
        403,
        "PERMISSION_DENIED",
    )
    assert "made by another key" in error["message"]


def test_an_operators_key_acts_as_an_admin_at_most(api, owner, operator):
    headers = {**operator, "X-Tenant-ID": owner.tenant["id"]}
    made = api.post("/v1/keys", json={"name": "ops", "permissions": ["admin"]}, headers=headers)
    assert made.status_code == 201, made.text
    key = {"X-API-Key": made.json()["data"]["secret"]}
    assert api.post("/v1/users", json=new_user(), headers=key).status_code == 201
    assert_error(api.post("/v1/users", json={**new_user(), "role": "owner"}, headers=key), 403, "PERMISSION_DENIED")
    assert_error(
        api.patch(f"/v1/users/{owner.user['id']}", json={"first_name": "X"}, headers=key), 403, "PERMISSION_DENIED"
    )


def test_rotating_a_key_hands_out_no_more_than_the_rotator_holds(api, owner):
    """Review (issue 12): rotation answers the key's new secret, so it hands the key's authority to
    whoever rotates it. A member given `key:rotate` took an admin-scoped key's secret that way and
    acted as an admin. Rotating a key is handing out its permissions: only what one holds."""
    member = _member_with(api, owner, "Rotator", ["key:rotate", "key:read", "key:create"])
    key = make_key(api, owner, permissions=["admin"])
    error = assert_error(
        api.post(f"/v1/keys/{key['key']['id']}/rotate", json={}, headers=member.headers), 403, "PERMISSION_DENIED"
    )
    assert "do not hold" in error["message"]
    # The old secret still works (nothing rotated), and the member's own narrower key rotates.
    assert api.get("/v1/users", headers={"X-API-Key": key["secret"]}).status_code == 200
    own = make_key(api, member, permissions=["key:read"])
    assert api.post(f"/v1/keys/{own['key']['id']}/rotate", json={}, headers=member.headers).status_code == 200


def test_rotating_a_key_made_by_a_higher_rank_is_refused(api, owner):
    """Review (issue 12): holding a key's scopes is not enough to take its secret: the key acts
    with its creator's rank, so a member who rotated an admin's `user:update` key could then
    change an admin's password, which the member's own rank forbids."""
    admin = add_user(api, owner, role="admin")
    member = _member_with(api, owner, "Rotator", ["key:rotate", "key:create", "user:update"])
    key = make_key(api, admin, permissions=["user:update"])
    assert_error(
        api.post(f"/v1/keys/{key['key']['id']}/rotate", json={}, headers=member.headers), 403, "PERMISSION_DENIED"
    )
    # What the member's rotation would have allowed: the admin key changes another admin.
    other = add_user(api, owner, role="admin")
    assert (
        api.patch(
            f"/v1/users/{other.user['id']}", json={"first_name": "X"}, headers={"X-API-Key": key["secret"]}
        ).status_code
        == 200
    )
    # A key of the member's own rank rotates.
    own = make_key(api, member, permissions=["user:update"])
    assert api.post(f"/v1/keys/{own['key']['id']}/rotate", json={}, headers=member.headers).status_code == 200
