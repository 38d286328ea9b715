"""Test and live mode: a sk_test_ key works on test data only, a sk_live_ key on live data only."""

from __future__ import annotations

from tests.conftest import PASSWORD, assert_error, unique_email


def key(api, owner, mode):
    response = api.post("/v1/keys", json={"name": mode, "permissions": ["admin"], "mode": mode}, headers=owner.headers)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["key"]["livemode"] is (mode == "live")
    return {"X-API-Key": data["secret"]}


def new_user(email=None):
    return {"email": email or unique_email(), "password": PASSWORD, "first_name": "Mode", "last_name": "Tester"}


def ids(response):
    assert response.status_code == 200, response.text
    return {u["id"] for u in response.json()["data"]}


def test_test_and_live_data_never_meet(api, owner):
    test, live = key(api, owner, "test"), key(api, owner, "live")
    test_user = api.post("/v1/users", json=new_user(), headers=test).json()["data"]
    live_user = api.post("/v1/users", json=new_user(), headers=live).json()["data"]
    assert test_user["livemode"] is False and live_user["livemode"] is True
    # Lists never mix the modes; a bearer session works on live data.
    assert ids(api.get("/v1/users", headers=test)) == {test_user["id"]}
    assert ids(api.get("/v1/users", headers=live)) == {owner.user["id"], live_user["id"]}
    assert ids(api.get("/v1/users", headers=owner.headers)) == {owner.user["id"], live_user["id"]}
    # Another mode's id is a 404, for reads and writes alike.
    for headers in (live, owner.headers):
        assert_error(api.get(f"/v1/users/{test_user['id']}", headers=headers), 404, "RESOURCE_NOT_FOUND")
        assert_error(api.delete(f"/v1/users/{test_user['id']}", headers=headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(api.get(f"/v1/users/{live_user['id']}", headers=test), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        api.patch(f"/v1/users/{owner.user['id']}", json={"first_name": "X"}, headers=test), 404, "RESOURCE_NOT_FOUND"
    )
    assert api.get(f"/v1/users/{test_user['id']}", headers=test).json()["data"]["livemode"] is False
    # Test data may reuse a live email; a batch made with a test key is test data too.
    twin = api.post("/v1/users", json=new_user(owner.email), headers=test)
    assert twin.status_code == 201 and twin.json()["data"]["livemode"] is False
    assert_error(api.post("/v1/users", json=new_user(owner.email), headers=live), 409, "CONFLICT")
    batch = api.post("/v1/users/batch", json={"users": [new_user(), new_user()]}, headers=test)
    assert batch.status_code == 201 and {u["livemode"] for u in batch.json()["data"]} == {False}
    assert len(ids(api.get("/v1/users", headers=test))) == 4


def test_test_users_cannot_sign_in_and_audit_entries_keep_their_mode(api, owner):
    test = key(api, owner, "test")
    body = new_user()
    made = api.post("/v1/users", json=body, headers=test).json()["data"]
    assert_error(
        api.post(
            "/v1/auth/login", json={"email": body["email"], "password": PASSWORD, "tenant_id": owner.tenant["id"]}
        ),
        401,
        "AUTHENTICATION_FAILED",
    )
    live_entries = api.get("/v1/audit-logs", params={"action": "user.created"}, headers=owner.headers).json()["data"]
    assert made["id"] not in {e["resource_id"] for e in live_entries}
    test_entries = api.get(
        "/v1/audit-logs", params={"action": "user.created", "livemode": "false"}, headers=owner.headers
    ).json()["data"]
    assert [e["resource_id"] for e in test_entries] == [made["id"]] and test_entries[0]["livemode"] is False
    # The test key's own default is test mode; the chain covers both modes.
    assert {e["livemode"] for e in api.get("/v1/audit-logs", headers=test).json()["data"]} == {False}
    assert api.get("/v1/audit-logs/verify", headers=owner.headers).json()["data"]["valid"] is True
