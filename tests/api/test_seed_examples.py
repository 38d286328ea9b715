"""The seed documents' own example requests, sent as the seeds write them to the matching /v1 operation.

Issue 13, "The seeds' own examples". The seeds disagree on paths (`/api/auth/token/`,
`/api/v1/auth/login`, `/auth/login`); each example is sent to the /v1 operation it means, with the
body, query and headers as the seed writes them. The table of examples and the mapping is in
tests/api/seed_examples/README.md. Refusals that keep a guarantee are tested at the end.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import PASSWORD, add_user, assert_error, login, register, unique_email


def _key(api, owner, **body):
    body = {"name": "seed-002-client", "permissions": ["users:read"], **body}
    response = api.post("/v1/keys", json=body, headers=owner.headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]["secret"]


# --- seed 004: auth -----------------------------------------------------------------------------


def test_seed_004_register_with_password_confirm(api):
    # POST /api/auth/register/ -> POST /v1/auth/register
    email = unique_email("seed004")
    body = {
        "email": email,
        "password": "secure_password",
        "password_confirm": "secure_password",
        "first_name": "John",
        "last_name": "Doe",
        "tenant_name": "My Company",
        "tenant_domain": f"{email.split('@')[0]}.mycompany.com",
    }
    response = api.post("/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["user"]["first_name"] == "John" and data["tenant"]["name"] == "My Company"
    assert login(api, email, "secure_password")["user"]["id"] == data["user"]["id"]


def test_seed_004_register_with_a_different_confirmation_is_400_and_writes_nothing(api):
    email = unique_email("seed004")
    body = {
        "email": email,
        "password": "secure_password",
        "password_confirm": "secure_passw0rd",
        "first_name": "John",
        "last_name": "Doe",
        "tenant_name": "My Company",
    }
    error = assert_error(api.post("/v1/auth/register", json=body), 400, "VALIDATION_ERROR")
    assert [d["field"] for d in error["details"]] == ["password_confirm"]
    assert_error(
        api.post("/v1/auth/login", json={"email": email, "password": "secure_password"}), 401, "AUTHENTICATION_FAILED"
    )


def test_seed_004_login_with_username(api, owner):
    # POST /api/auth/token/ {"username", "password"} -> POST /v1/auth/login
    response = api.post(
        "/v1/auth/login",
        json={"username": owner.email, "password": owner.password},
        headers={"X-Tenant-ID": owner.tenant["id"]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["user"]["id"] == owner.user["id"]


def test_username_and_email_that_differ_are_400_naming_both_and_neither_is_400(api, owner):
    body = {"username": owner.email, "email": unique_email(), "password": owner.password}
    error = assert_error(api.post("/v1/auth/login", json=body), 400, "VALIDATION_ERROR")
    assert {d["field"] for d in error["details"]} == {"username", "email"}
    same = api.post("/v1/auth/login", json={**body, "email": owner.email}, headers={"X-Tenant-ID": owner.tenant["id"]})
    assert same.status_code == 200, same.text
    error = assert_error(api.post("/v1/auth/login", json={"password": owner.password}), 400, "VALIDATION_ERROR")
    assert error["details"][0]["field"] == "email" and "username" in error["details"][0]["message"]


def test_a_failed_username_login_is_on_the_audit_trail_with_its_email(api, owner):
    body = {"username": owner.email, "password": "wrong-password-1"}
    response = api.post("/v1/auth/login", json=body, headers={"X-Tenant-ID": owner.tenant["id"]})
    assert_error(response, 401, "AUTHENTICATION_FAILED")
    failed = api.get("/v1/audit-logs", params={"action": "user.login_failed"}, headers=owner.headers).json()["data"]
    assert failed[0]["new_values"] == {"email": owner.email, "reason": "AUTHENTICATION_FAILED"}


def test_seed_004_refresh_with_refresh_and_no_grant_type(api, owner):
    # POST /api/auth/token/refresh/ {"refresh": ...} -> POST /v1/auth/token
    response = api.post("/v1/auth/token", json={"refresh": owner.refresh_token})
    assert response.status_code == 200, response.text
    fresh = response.json()["data"]
    assert fresh["refresh_token"] != owner.refresh_token
    assert api.get("/v1/auth/me", headers={"Authorization": f"Bearer {fresh['access_token']}"}).status_code == 200
    # the spent token is refused as before (replay)
    assert api.post("/v1/auth/token", json={"refresh": owner.refresh_token}).status_code == 401


def test_refresh_and_refresh_token_that_differ_are_400(api, owner):
    body = {"refresh": owner.refresh_token, "refresh_token": "rt_other"}
    error = assert_error(api.post("/v1/auth/token", json=body), 400, "VALIDATION_ERROR")
    assert {d["field"] for d in error["details"]} == {"refresh", "refresh_token"}
    # nothing was spent: the token still works
    assert api.post("/v1/auth/token", json={"refresh_token": owner.refresh_token}).status_code == 200


def test_token_takes_an_oauth_form_body(api, owner, server):
    # RFC 6749 section 6: application/x-www-form-urlencoded
    response = api.post("/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": owner.refresh_token})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["token_type"] == "Bearer"
    # seed 004's alias in a form too (Connexion's form parser once failed on it with a 500)
    aliased = api.post("/v1/auth/token", data={"refresh": response.json()["data"]["refresh_token"]})
    assert aliased.status_code == 200, aliased.text
    bad = api.post("/v1/auth/token", data={"grant_type": "password", "refresh_token": "rt_secret_value"})
    assert assert_error(bad, 400, "VALIDATION_ERROR")["details"] == [
        {"field": "grant_type", "message": "must be one of: refresh_token"}
    ]
    empty = api.post("/v1/auth/token", data={"refresh": "", "extra": "1"})
    assert {d["field"] for d in assert_error(empty, 400, "VALIDATION_ERROR")["details"]} == {"refresh", "extra"}
    # a refused form is not logged with its values (Connexion's own form validator did, at error level)
    assert "rt_secret_value" not in server.log() and "connexion.validators.form_data" not in server.log()


def test_a_form_field_given_twice_is_400_naming_it_and_spends_nothing(api, owner):
    # RFC 6749 section 3.2: parameters MUST NOT be included more than once. Connexion joined the two
    # values with a comma ("rt_a,rt_b", a 401 for a token nobody sent) while the rate limiter keyed the
    # request by the first value only.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    twice = f"refresh_token={owner.refresh_token}&refresh_token={owner.refresh_token}&grant_type=refresh_token"
    error = assert_error(api.post("/v1/auth/token", content=twice, headers=form), 400, "VALIDATION_ERROR")
    assert error["details"] == [{"field": "refresh_token", "message": "must be given once"}]
    # the token was not spent: it still refreshes
    response = api.post("/v1/auth/token", data={"refresh_token": owner.refresh_token})
    assert response.status_code == 200, response.text


def test_seed_004_logout_with_the_refresh_token_body(api, owner):
    # POST /api/auth/logout/ with {"refresh": ...} -> POST /v1/auth/logout
    second = login(api, owner.email, tenant_id=owner.tenant["id"])
    response = api.post("/v1/auth/logout", json={"refresh": second["refresh_token"]}, headers=owner.headers)
    assert response.status_code == 204, response.text
    # that session is over, the caller's own is not
    assert api.post("/v1/auth/token", json={"refresh": second["refresh_token"]}).status_code == 401
    assert api.get("/v1/auth/me", headers={"Authorization": f"Bearer {second['access_token']}"}).status_code == 401
    assert api.get("/v1/auth/me", headers=owner.headers).status_code == 200


def test_logout_with_another_accounts_refresh_token_is_401_and_ends_nothing(api, owner):
    other = register(api)
    response = api.post("/v1/auth/logout", json={"refresh": other.refresh_token}, headers=owner.headers)
    unknown = api.post("/v1/auth/logout", json={"refresh": "rt_unknown"}, headers=owner.headers)
    assert_error(response, 401, "AUTHENTICATION_FAILED")
    assert assert_error(unknown, 401, "AUTHENTICATION_FAILED")["message"] == response.json()["error"]["message"]
    assert api.post("/v1/auth/token", json={"refresh": other.refresh_token}).status_code == 200
    assert api.get("/v1/auth/me", headers=owner.headers).status_code == 200


def test_logout_without_a_body_still_ends_the_callers_session(api, owner):
    assert api.post("/v1/auth/logout", headers=owner.headers).status_code == 204
    assert api.get("/v1/auth/me", headers=owner.headers).status_code == 401


def test_logout_with_an_empty_body_is_400_and_ends_nothing(api, owner):
    response = api.post("/v1/auth/logout", json={}, headers=owner.headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert api.get("/v1/auth/me", headers=owner.headers).status_code == 200


# --- seed 002: auth -----------------------------------------------------------------------------


def test_seed_002_register_with_full_name(api):
    # POST /api/v1/auth/register {"email", "password", "full_name"} (+ the tenant Tenantry needs)
    email = unique_email("seed002")
    body = {"email": email, "password": "securepassword123", "full_name": "John Doe", "tenant_name": "FlowsyAI"}
    response = api.post("/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    user = response.json()["data"]["user"]
    assert (user["first_name"], user["last_name"]) == ("John", "Doe")


def test_full_name_with_first_name_is_400_and_no_name_at_all_is_400(api):
    body = {
        "email": unique_email(),
        "password": PASSWORD,
        "full_name": "John Doe",
        "first_name": "J",
        "tenant_name": "X",
    }
    error = assert_error(api.post("/v1/auth/register", json=body), 400, "VALIDATION_ERROR")
    assert {d["field"] for d in error["details"]} == {"full_name", "first_name"}
    del body["full_name"], body["first_name"]
    error = assert_error(api.post("/v1/auth/register", json={**body, "first_name": "J"}), 400, "VALIDATION_ERROR")
    assert error["details"] == [{"field": "last_name", "message": "is required (or full_name)"}]
    long = {"email": unique_email(), "password": PASSWORD, "full_name": "x" * 150, "tenant_name": "X"}
    error = assert_error(api.post("/v1/auth/register", json=long), 400, "VALIDATION_ERROR")
    assert error["details"][0]["field"] == "full_name"


def test_full_name_of_unicode_spaces_is_split_as_the_names_pattern_reads_it(api):
    # The names' pattern counts only ASCII whitespace as blank, so " Ada" (NBSP) is a name; Python's
    # str.strip() removes NBSP too, and such a full_name left an owner with empty names: written,
    # then answered 500 (response validation) and shown as invalid names ever after.
    for full_name, names in (
        ("\u00a0\u00a0", ("\u00a0\u00a0", "\u00a0\u00a0")),
        ("\u2003Ada Lovelace\u2003", ("\u2003Ada", "Lovelace\u2003")),
    ):
        email = unique_email()
        body = {"email": email, "password": PASSWORD, "full_name": full_name, "tenant_name": "Spaces"}
        response = api.post("/v1/auth/register", json=body)
        assert response.status_code == 201, response.text
        user = response.json()["data"]["user"]
        assert (user["first_name"], user["last_name"]) == names
        tokens = login(api, email, tenant_id=user["tenant_id"])
        me = api.get("/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert me.status_code == 200, me.text


def test_seed_002_api_key_as_a_bearer_token(api, owner):
    secret = _key(api, owner)
    listed = api.get("/v1/users", headers={"Authorization": f"Bearer {secret}"})
    assert listed.status_code == 200, listed.text
    assert owner.user["id"] in [u["id"] for u in listed.json()["data"]]
    # the same checks as X-API-Key: its scopes...
    error = assert_error(
        api.post(
            "/v1/users",
            json={"email": unique_email(), "password": PASSWORD, "first_name": "K", "last_name": "Ey"},
            headers={"Authorization": f"Bearer {secret}"},
        ),
        403,
        "PERMISSION_DENIED",
    )
    assert "user:create" in error["message"]
    # ...its revocation, and a malformed one
    key_id = api.get("/v1/keys", headers=owner.headers).json()["data"][0]["id"]
    assert api.delete(f"/v1/keys/{key_id}", headers=owner.headers).status_code == 204
    assert_error(api.get("/v1/users", headers={"Authorization": f"Bearer {secret}"}), 401, "AUTHENTICATION_FAILED")
    assert_error(api.get("/v1/users", headers={"Authorization": "Bearer sk_live_short"}), 401, "AUTHENTICATION_FAILED")


def test_with_both_headers_authorization_is_used(api, owner):
    secret = _key(api, owner)  # a read-only key
    body = {"email": unique_email(), "password": PASSWORD, "first_name": "K", "last_name": "Ey"}
    both = api.post("/v1/users", json=body, headers={**owner.headers, "X-API-Key": secret})
    assert both.status_code == 201, both.text


def test_a_bearer_api_key_is_refused_where_only_an_access_token_does(api, owner):
    secret = _key(api, owner)
    assert_error(api.get("/v1/auth/me", headers={"Authorization": f"Bearer {secret}"}), 401, "AUTHENTICATION_FAILED")


# --- seeds 003 and 004: tenants -----------------------------------------------------------------


def test_seed_003_create_tenant_with_domain_and_admin(api, operator):
    domain = f"{unique_email('acme').split('@')[0]}.example.com"
    admin = f"admin@{domain}"
    body = {"name": "Acme Corporation", "domain": domain, "admin_email": admin, "admin_password": "securePassword123"}
    response = api.post("/v1/tenants", json=body, headers=operator)
    assert response.status_code == 201, response.text
    tenant = response.json()["data"]
    assert [(d["domain"], d["is_primary"], d["verified"]) for d in tenant["domains"]] == [(domain, True, False)]
    tokens = login(api, admin, "securePassword123", tenant_id=tenant["id"])
    assert tokens["user"]["role"] == "owner" and tokens["user"]["tenant_id"] == tenant["id"]
    # seed 003's GET /tenants/{id} shows the domains
    shown = api.get(f"/v1/tenants/{tenant['id']}", headers=operator).json()["data"]
    assert [d["domain"] for d in shown["domains"]] == [domain]
    own = api.get(f"/v1/tenants/{tenant['id']}", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert own.status_code == 200 and own.json()["data"]["domains"][0]["domain"] == domain


def test_create_tenant_with_a_taken_domain_is_409_and_writes_nothing(api, operator, owner):
    domain = f"{unique_email('taken').split('@')[0]}.example.com"
    assert (
        api.put(f"/v1/tenants/{owner.tenant['id']}/domains", json={"domain": domain}, headers=owner.headers).status_code
        == 201
    )
    name = f"Dup {unique_email('t')}"
    admin = unique_email("admin")
    body = {"name": name, "domain": domain, "admin_email": admin, "admin_password": "securePassword123"}
    assert_error(api.post("/v1/tenants", json=body, headers=operator), 409, "CONFLICT")
    assert api.get("/v1/tenants", params={"search": name}, headers=operator).json()["data"] == []
    assert_error(
        api.post("/v1/auth/login", json={"email": admin, "password": "securePassword123"}), 401, "AUTHENTICATION_FAILED"
    )


def test_create_tenant_with_admin_and_a_name_starting_with_spaces_gives_the_owner_a_valid_name(api, operator):
    # The first owner is named "Admin <tenant name>" cut to 100 characters: a name of 100 leading
    # spaces (the tenant name's pattern allows them) left a last name of spaces only, which the user
    # list then answered with a 500 (response validation) and which no PersonName may be.
    admin = unique_email("admin")
    body = {"name": " " * 120 + "Acme", "admin_email": admin, "admin_password": "securePassword123"}
    response = api.post("/v1/tenants", json=body, headers=operator)
    assert response.status_code == 201, response.text
    tokens = login(api, admin, "securePassword123", tenant_id=response.json()["data"]["id"])
    me = api.get("/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200, me.text
    assert (me.json()["data"]["first_name"], me.json()["data"]["last_name"]) == ("Admin", "Acme")


def test_admin_email_without_admin_password_is_400(api, operator):
    error = assert_error(
        api.post("/v1/tenants", json={"name": "Half", "admin_email": unique_email()}, headers=operator),
        400,
        "VALIDATION_ERROR",
    )
    assert error["details"][0]["field"] == "admin_password"


def test_seed_004_create_tenant_with_domain_and_settings(api, operator):
    domain = f"{unique_email('newco').split('@')[0]}.newcompany.com"
    body = {"name": "New Company", "domain": domain, "settings": {"timezone": "UTC", "language": "en"}}
    response = api.post("/v1/tenants", json=body, headers=operator)
    assert response.status_code == 201, response.text
    tenant = response.json()["data"]
    assert tenant["settings"]["timezone"] == "UTC" and tenant["domains"][0]["domain"] == domain
    bad = {"name": "New Company", "settings": {"theme": "dark"}}
    assert_error(api.post("/v1/tenants", json=bad, headers=operator), 400, "VALIDATION_ERROR")


# --- seeds 002 and 004: pagination and filters --------------------------------------------------


def test_seed_004_page_and_page_size_and_seed_002_size(api, owner):
    for _ in range(3):
        add_user(api, owner)
    everyone = api.get("/v1/users", params={"limit": 100}, headers=owner.headers).json()["data"]
    second = api.get("/v1/users", params={"page": 2, "page_size": 2}, headers=owner.headers)
    assert second.status_code == 200, second.text
    assert [u["id"] for u in second.json()["data"]] == [u["id"] for u in everyone[2:4]]
    assert second.json()["meta"]["pagination"] == {"limit": 2, "offset": 2, "total": len(everyone)}
    sized = api.get("/v1/users", params={"page": 1, "size": 3}, headers=owner.headers).json()["data"]
    assert [u["id"] for u in sized] == [u["id"] for u in everyone[:3]]
    # on another offset list too (roles)
    roles = api.get("/v1/roles", params={"page": 1, "page_size": 1}, headers=owner.headers)
    assert roles.status_code == 200 and len(roles.json()["data"]) == 1


def test_page_mixed_with_limit_or_offset_is_400_naming_them(api, owner):
    error = assert_error(
        api.get("/v1/users", params={"page": 2, "limit": 10}, headers=owner.headers), 400, "VALIDATION_ERROR"
    )
    assert [d["field"] for d in error["details"]] == ["limit"]
    error = assert_error(
        api.get("/v1/users", params={"size": 5, "offset": 0}, headers=owner.headers), 400, "VALIDATION_ERROR"
    )
    assert [d["field"] for d in error["details"]] == ["offset"]
    error = assert_error(
        api.get("/v1/users", params={"page_size": 5, "size": 6}, headers=owner.headers), 400, "VALIDATION_ERROR"
    )
    assert {d["field"] for d in error["details"]} == {"page_size", "size"}
    assert_error(api.get("/v1/users", params={"page": 0}, headers=owner.headers), 400, "VALIDATION_ERROR")
    assert_error(api.get("/v1/users", params={"page_size": 101}, headers=owner.headers), 400, "VALIDATION_ERROR")


def test_seed_004_is_active_filter(api, owner):
    member = add_user(api, owner)
    assert (
        api.patch(f"/v1/users/{member.user['id']}", json={"status": "suspended"}, headers=owner.headers).status_code
        == 200
    )
    # GET /api/users/?role=admin&is_active=true, with the roles Tenantry has
    active = api.get("/v1/users?role=member&is_active=true", headers=owner.headers)
    assert active.status_code == 200 and member.user["id"] not in [u["id"] for u in active.json()["data"]]
    inactive = api.get("/v1/users", params={"is_active": "false"}, headers=owner.headers).json()["data"]
    assert [u["id"] for u in inactive] == [member.user["id"]]
    error = assert_error(
        api.get("/v1/users", params={"is_active": "true", "status": "suspended"}, headers=owner.headers),
        400,
        "VALIDATION_ERROR",
    )
    assert {d["field"] for d in error["details"]} == {"is_active", "status"}
    agreeing = api.get("/v1/users", params={"is_active": "true", "status": "active"}, headers=owner.headers)
    assert agreeing.status_code == 200 and owner.user["id"] in [u["id"] for u in agreeing.json()["data"]]


def test_seed_004_audit_action_as_a_bare_verb_and_date_only_bounds(api, owner):
    member = add_user(api, owner)
    api.patch(f"/v1/users/{member.user['id']}", json={"first_name": "Updated"}, headers=owner.headers)
    created = api.get("/v1/audit-logs", params={"action": "create"}, headers=owner.headers)
    assert created.status_code == 200, created.text
    actions = {e["action"] for e in created.json()["data"]}
    assert "user.created" in actions and all(a.endswith(".created") for a in actions)
    updated = {
        e["action"]
        for e in api.get("/v1/audit-logs", params={"action": "update"}, headers=owner.headers).json()["data"]
    }
    assert updated == {"user.updated"}
    today = datetime.now(UTC).date()
    whole_day = api.get(
        "/v1/audit-logs", params={"date_from": today.isoformat(), "date_to": today.isoformat()}, headers=owner.headers
    )
    assert whole_day.status_code == 200 and "user.updated" in {e["action"] for e in whole_day.json()["data"]}
    yesterday = (today - timedelta(days=1)).isoformat()
    assert api.get("/v1/audit-logs", params={"date_to": yesterday}, headers=owner.headers).json()["data"] == []
    assert_error(
        api.get("/v1/audit-logs", params={"date_from": "2026-02-30"}, headers=owner.headers), 400, "VALIDATION_ERROR"
    )
    assert_error(
        api.get("/v1/audit-logs", params={"date_from": "yesterday"}, headers=owner.headers), 400, "VALIDATION_ERROR"
    )


# --- what stays refused -------------------------------------------------------------------------


def test_put_is_not_a_partial_update(api, owner):
    # seed 004's PUT /api/users/{id}/ {"first_name", "role"}: a replacement needs every field
    member = add_user(api, owner)
    assert_error(
        api.put(
            f"/v1/users/{member.user['id']}", json={"first_name": "Updated", "role": "admin"}, headers=owner.headers
        ),
        400,
        "VALIDATION_ERROR",
    )
    # seed 004's PUT /api/tenants/{id}/ {"name", "settings"}
    assert_error(
        api.put(
            f"/v1/tenants/{owner.tenant['id']}",
            json={"name": "Updated Company Name", "settings": {"timezone": "America/New_York"}},
            headers=owner.headers,
        ),
        400,
        "VALIDATION_ERROR",
    )


def test_a_webhook_addressed_by_a_providers_name_is_not_found(api):
    # seed 004's POST /api/integrations/webhooks/user-service/
    body = {"event_type": "user.created", "event_id": "evt_123", "data": {"user_id": "123"}}
    response = api.post("/v1/integrations/webhooks/user-service", json=body)
    assert response.status_code in (400, 401, 404), response.text


def test_a_provider_secret_under_16_characters_is_400(api, owner):
    # seed 004's "secret_key": "your_secret_key" (15 characters)
    body = {
        "name": "new_service",
        "webhook_url": "https://webhook.newservice.com",
        "api_base_url": "https://api.newservice.com",
        "auth_type": "oauth2",
        "secret_key": "your_secret_key",
    }
    response = api.post("/v1/integrations/providers", json=body, headers=owner.headers)
    assert response.status_code == 400, response.text


def test_a_body_without_a_content_type_is_415(api, owner):
    # seed 003's MFA setup curl has -d without -H Content-Type (curl then says form-urlencoded; none here)
    response = api.post("/v1/auth/token", content=b'{"refresh": "x"}', headers={"Content-Type": ""})
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
