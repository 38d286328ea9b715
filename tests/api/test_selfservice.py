"""A user's own account and the fields provisioning needs (issue 13 item 7, seed 003), on the live server:
mfa_enabled, PATCH /v1/auth/me, POST /v1/auth/password, the session list and revocation, an admin's MFA
reset, and external_id, metadata, phone with the user list's new filters."""

from __future__ import annotations

from tests.api.test_audit import entries
from tests.api.test_mfa import enable, password_login
from tests.conftest import PASSWORD, Account, add_user, assert_error, login, register, unique_email

NEW_PASSWORD = "battery-staple-correct-horse"


def new_user(**extra):
    return {"email": unique_email(), "password": PASSWORD, "first_name": "Grace", "last_name": "Hopper", **extra}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refresh(api, tokens):
    return api.post("/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})


def second_session(api, account: Account) -> dict[str, str]:
    return login(api, account.email, account.password, tenant_id=account.tenant["id"])


# --- mfa_enabled ------------------------------------------------------------------------------------------


def test_mfa_enabled_is_on_the_user_and_on_me(api, owner):
    assert api.get("/v1/auth/me", headers=owner.headers).json()["data"]["mfa_enabled"] is False
    enable(api, owner)
    assert api.get("/v1/auth/me", headers=owner.headers).json()["data"]["mfa_enabled"] is True
    listed = api.get(f"/v1/users/{owner.user['id']}", headers=owner.headers).json()["data"]
    assert listed["mfa_enabled"] is True


# --- PATCH /v1/auth/me ------------------------------------------------------------------------------------


def test_a_member_changes_their_own_name_and_phone_but_nothing_else(api, owner):
    member = add_user(api, owner)
    changed = api.patch("/v1/auth/me", json={"first_name": "Amazing", "phone": "+442071838750"}, headers=member.headers)
    assert changed.status_code == 200, changed.text
    data = changed.json()["data"]
    assert (data["first_name"], data["last_name"], data["phone"]) == ("Amazing", "Hopper", "+442071838750")
    assert api.get("/v1/auth/me", headers=member.headers).json()["data"]["first_name"] == "Amazing"
    assert api.patch("/v1/auth/me", json={"phone": None}, headers=member.headers).json()["data"]["phone"] is None
    for refused in (
        {"role": "owner"},
        {"email": unique_email()},
        {"status": "suspended"},
        {"metadata": {"a": "b"}},
        {"external_id": "x"},
        {},
    ):
        assert_error(api.patch("/v1/auth/me", json=refused, headers=member.headers), 400, "VALIDATION_ERROR")
    assert_error(
        api.patch("/v1/auth/me", json={"phone": "0207 183 8750"}, headers=member.headers), 400, "VALIDATION_ERROR"
    )
    trail = entries(api, owner, action="user.updated")
    assert any(e["resource_id"] == member.user["id"] and e["actor"]["id"] == member.user["id"] for e in trail)


def test_an_api_key_has_no_own_account_to_edit(api, owner):
    key = api.post("/v1/keys", json={"name": "ci", "permissions": ["user:read"]}, headers=owner.headers)
    assert key.status_code == 201, key.text
    headers = {"X-API-Key": key.json()["data"]["secret"]}
    assert_error(api.patch("/v1/auth/me", json={"first_name": "Key"}, headers=headers), 401, "AUTHENTICATION_FAILED")
    assert_error(
        api.post(
            "/v1/auth/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=headers
        ),
        401,
        "AUTHENTICATION_FAILED",
    )


# --- POST /v1/auth/password -------------------------------------------------------------------------------


def test_changing_the_password_needs_the_current_one_and_ends_the_other_sessions(api, owner):
    other = second_session(api, owner)
    wrong = api.post(
        "/v1/auth/password",
        json={"current_password": "not-the-password", "new_password": NEW_PASSWORD},
        headers=owner.headers,
    )
    error = assert_error(wrong, 400, "VALIDATION_ERROR")
    assert error["details"] == [{"field": "current_password", "message": "is incorrect"}]
    assert api.get("/v1/auth/me", headers=bearer(other["access_token"])).status_code == 200  # nothing happened
    short = api.post(
        "/v1/auth/password", json={"current_password": PASSWORD, "new_password": "short"}, headers=owner.headers
    )
    assert_error(short, 400, "VALIDATION_ERROR")

    changed = api.post(
        "/v1/auth/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=owner.headers
    )
    assert changed.status_code == 204, changed.text
    # The other session ended, access and refresh token alike; the caller's own stays.
    assert_error(api.get("/v1/auth/me", headers=bearer(other["access_token"])), 401, "SESSION_REVOKED")
    assert_error(refresh(api, other), 401, "SESSION_REVOKED")
    assert api.get("/v1/auth/me", headers=owner.headers).status_code == 200
    # The old password is refused, the new one logs in.
    assert_error(
        api.post("/v1/auth/login", json={"email": owner.email, "password": PASSWORD, "tenant_id": owner.tenant["id"]}),
        401,
        "AUTHENTICATION_FAILED",
    )
    login(api, owner.email, NEW_PASSWORD, tenant_id=owner.tenant["id"])
    assert [e["resource_id"] for e in entries(api, owner, action="user.password_changed")] == [owner.user["id"]]
    events = api.get("/v1/events", params={"type": "user.password_changed"}, headers=owner.headers).json()["data"]
    assert [e["data"]["object"]["id"] for e in events] == [owner.user["id"]]
    assert "password_hash" not in str(events)


# --- sessions ---------------------------------------------------------------------------------------------


def test_a_user_lists_and_revokes_their_own_sessions_only(api, owner):
    other = second_session(api, owner)
    listed = api.get("/v1/auth/sessions", headers=owner.headers)
    assert listed.status_code == 200, listed.text
    sessions = listed.json()["data"]
    assert len(sessions) == 2 and listed.json()["meta"]["pagination"]["total"] == 2
    assert [s["current"] for s in sessions].count(True) == 1
    assert set(sessions[0]) == {"id", "created_at", "last_used_at", "expires_at", "ip", "user_agent", "current"}
    assert all(s["ip"] for s in sessions)
    theirs = next(
        s for s in api.get("/v1/auth/sessions", headers=bearer(other["access_token"])).json()["data"] if s["current"]
    )
    refreshed = refresh(api, other)
    assert refreshed.status_code == 200
    other = refreshed.json()["data"]
    again = {s["id"]: s for s in api.get("/v1/auth/sessions", headers=owner.headers).json()["data"]}
    assert again[theirs["id"]]["last_used_at"] is not None

    # Someone else, even an owner of the same tenant, cannot end it: 404, as for an unknown id.
    colleague = add_user(api, owner, role="owner")
    assert_error(api.delete(f"/v1/auth/sessions/{theirs['id']}", headers=colleague.headers), 404, "RESOURCE_NOT_FOUND")
    stranger = register(api, tenant_name="Elsewhere")
    assert_error(api.delete(f"/v1/auth/sessions/{theirs['id']}", headers=stranger.headers), 404, "RESOURCE_NOT_FOUND")
    assert api.get("/v1/auth/me", headers=bearer(other["access_token"])).status_code == 200

    assert api.delete(f"/v1/auth/sessions/{theirs['id']}", headers=owner.headers).status_code == 204
    assert_error(api.get("/v1/auth/me", headers=bearer(other["access_token"])), 401, "SESSION_REVOKED")
    assert_error(refresh(api, other), 401, "SESSION_REVOKED")
    assert_error(api.delete(f"/v1/auth/sessions/{theirs['id']}", headers=owner.headers), 404, "RESOURCE_NOT_FOUND")
    remaining = api.get("/v1/auth/sessions", headers=owner.headers).json()["data"]
    assert [s["current"] for s in remaining] == [True]
    assert [e["resource_id"] for e in entries(api, owner, action="session.revoked")] == [theirs["id"]]


# --- admin MFA reset --------------------------------------------------------------------------------------


def test_an_admin_resets_a_members_mfa_but_not_an_owners_nor_their_own(api, owner):
    admin = add_user(api, owner, role="admin")
    member = add_user(api, owner)
    enable(api, member)
    enable(api, owner)
    assert_error(password_login(api, member), 401, "MFA_REQUIRED")

    reset = api.delete(f"/v1/users/{member.user['id']}/mfa", headers=admin.headers)
    assert reset.status_code == 204, reset.text
    # Their sessions ended; they log in with the password alone and can set MFA up again.
    assert_error(api.get("/v1/auth/me", headers=member.headers), 401, "SESSION_REVOKED")
    fresh = password_login(api, member)
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["data"]["user"]["mfa_enabled"] is False
    member_now = bearer(fresh.json()["data"]["access_token"])
    assert api.get(f"/v1/users/{member.user['id']}", headers=admin.headers).json()["data"]["mfa_enabled"] is False
    assert api.delete(f"/v1/users/{member.user['id']}/mfa", headers=admin.headers).status_code == 204  # no MFA: no-op

    assert_error(api.delete(f"/v1/users/{owner.user['id']}/mfa", headers=admin.headers), 403, "PERMISSION_DENIED")
    assert_error(api.delete(f"/v1/users/{admin.user['id']}/mfa", headers=admin.headers), 403, "PERMISSION_DENIED")
    assert_error(api.delete(f"/v1/users/{owner.user['id']}/mfa", headers=member_now), 403, "PERMISSION_DENIED")
    stranger = register(api, tenant_name="Elsewhere")
    assert_error(api.delete(f"/v1/users/{member.user['id']}/mfa", headers=stranger.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(password_login(api, owner), 401, "MFA_REQUIRED")  # the owner's MFA stayed on

    resets = entries(api, owner, action="user.mfa_reset")
    assert [(e["resource_id"], e["actor"]["id"]) for e in resets] == [(member.user["id"], admin.user["id"])] * 2
    events = api.get("/v1/events", params={"type": "user.mfa_disabled"}, headers=owner.headers).json()["data"]
    assert member.user["id"] in {e["data"]["object"]["id"] for e in events}


# --- external_id, metadata, phone -------------------------------------------------------------------------


def test_external_id_metadata_and_phone_are_stored_and_external_id_is_unique_per_tenant(api, owner):
    body = new_user(external_id="crm-1", metadata={"department": "research"}, phone="+442071838750")
    created = api.post("/v1/users", json=body, headers=owner.headers)
    assert created.status_code == 201, created.text
    user = created.json()["data"]
    assert (user["external_id"], user["metadata"], user["phone"]) == (
        "crm-1",
        {"department": "research"},
        "+442071838750",
    )
    assert api.get(f"/v1/users/{user['id']}", headers=owner.headers).json()["data"] == user

    error = assert_error(
        api.post("/v1/users", json=new_user(external_id="crm-1"), headers=owner.headers), 409, "CONFLICT"
    )
    assert error["details"] == [{"field": "external_id", "message": "is already taken"}]
    assert "external_id" in error["message"]
    other = api.post("/v1/users", json=new_user(), headers=owner.headers).json()["data"]
    error = assert_error(
        api.patch(f"/v1/users/{other['id']}", json={"external_id": "crm-1"}, headers=owner.headers), 409, "CONFLICT"
    )
    assert error["details"] == [{"field": "external_id", "message": "is already taken"}]
    batch = {"users": [new_user(external_id="crm-2"), new_user(external_id="crm-2")]}
    error = assert_error(api.post("/v1/users/batch", json=batch, headers=owner.headers), 409, "CONFLICT")
    assert [d["field"] for d in error["details"]] == ["users[1].external_id"]
    elsewhere = register(api, tenant_name="Elsewhere")
    assert api.post("/v1/users", json=new_user(external_id="crm-1"), headers=elsewhere.headers).status_code == 201

    # PATCH replaces metadata; PUT keeps the fields it does not name.
    patched = api.patch(
        f"/v1/users/{user['id']}", json={"metadata": {"team": "a"}, "phone": None}, headers=owner.headers
    ).json()["data"]
    assert patched["metadata"] == {"team": "a"} and patched["phone"] is None and patched["external_id"] == "crm-1"
    replaced = api.put(
        f"/v1/users/{user['id']}",
        json={"email": user["email"], "first_name": "G", "last_name": "H", "role": "member", "status": "active"},
        headers=owner.headers,
    )
    assert replaced.status_code == 200 and replaced.json()["data"]["metadata"] == {"team": "a"}
    cleared = api.patch(f"/v1/users/{user['id']}", json={"metadata": {}}, headers=owner.headers).json()["data"]
    assert cleared["metadata"] == {}


def test_metadata_and_phone_bounds_are_400s_that_write_nothing(api, owner):
    cases = [
        ({"metadata": {"k" * 41: "v"}}, "metadata." + "k" * 40),
        ({"metadata": {"": "v"}}, "metadata."),
        ({"metadata": {str(i): "v" for i in range(51)}}, None),
        ({"metadata": {"k": "v" * 501}}, None),
        ({"metadata": {"k": 1}}, None),
        ({"phone": "+0123"}, "phone"),
        ({"phone": "442071838750"}, "phone"),
        ({"external_id": ""}, "external_id"),
        ({"external_id": "x" * 256}, "external_id"),
    ]
    for extra, field in cases:
        error = assert_error(
            api.post("/v1/users", json=new_user(**extra), headers=owner.headers), 400, "VALIDATION_ERROR"
        )
        if field is not None:
            assert field in [d.get("field") for d in error["details"]], (extra, error)
    assert api.get("/v1/users", headers=owner.headers).json()["meta"]["pagination"]["total"] == 1


def test_list_filters_external_id_email_created_range_and_several_statuses(api, owner):
    a = api.post("/v1/users", json=new_user(external_id="ext-a"), headers=owner.headers).json()["data"]
    b = api.post("/v1/users", json=new_user(status="suspended"), headers=owner.headers).json()["data"]

    def ids(**params):
        response = api.get("/v1/users", params=params, headers=owner.headers)
        assert response.status_code == 200, response.text
        return {u["id"] for u in response.json()["data"]}

    assert ids(external_id="ext-a") == {a["id"]}
    assert ids(external_id="nope") == set()
    assert ids(email=a["email"].upper()) == {a["id"]}
    assert ids(status="suspended") == {b["id"]}
    assert ids(status=["active", "suspended"]) == {owner.user["id"], a["id"], b["id"]}
    assert ids(status="active") == {owner.user["id"], a["id"]}
    assert ids(created_from=b["created_at"]) == {b["id"]}
    assert ids(created_to=a["created_at"]) == {owner.user["id"], a["id"]}
    assert ids(created_from=a["created_at"], created_to=a["created_at"]) == {a["id"]}
    assert_error(api.get("/v1/users", params={"status": "gone"}, headers=owner.headers), 400, "VALIDATION_ERROR")
    assert_error(
        api.get("/v1/users", params={"created_from": "yesterday"}, headers=owner.headers), 400, "VALIDATION_ERROR"
    )


def test_created_to_at_the_end_of_year_9999_is_no_upper_bound_not_a_500(api, owner):
    # RFC 3339 allows it; the inclusive bound (+1 ms) overflowed Python's datetime: a 500.
    for moment in ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59-01:00"):
        response = api.get("/v1/users", params={"created_to": moment}, headers=owner.headers)
        assert response.status_code == 200, response.text
        assert owner.user["id"] in {u["id"] for u in response.json()["data"]}
