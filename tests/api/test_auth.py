"""Self-signup, login, refresh rotation, logout and tenant resolution, against the live server."""

from __future__ import annotations

import statistics
import time

import jwt
import pytest

from tests.conftest import PASSWORD, assert_error, login, register, unique_email
from tests.livesrv import start_server


def test_register_creates_tenant_and_owner_without_secrets(api):
    email = unique_email()
    response = api.post(
        "/v1/auth/register",
        json={
            "email": email,
            "password": PASSWORD,
            "first_name": "Ada",
            "last_name": "L",
            "tenant_name": "Acme",
            "tenant_domain": "acme-register.example.com",
        },
    )
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["user"]["role"] == "owner" and data["user"]["tenant_id"] == data["tenant"]["id"]
    assert data["tenant"]["id"].startswith("ten_") and data["user"]["id"].startswith("usr_")
    assert data["tenant"]["settings"] == {"timezone": "UTC", "language": "en"}
    assert "password" not in response.text and "hash" not in response.text


def test_register_duplicate_domain_is_409_and_writes_nothing(api):
    register(api, tenant_domain="taken-domain.example.com")
    email = unique_email()
    response = api.post(
        "/v1/auth/register",
        json={
            "email": email,
            "password": PASSWORD,
            "first_name": "A",
            "last_name": "B",
            "tenant_name": "Second",
            "tenant_domain": "TAKEN-domain.example.com",
        },
    )
    assert_error(response, 409, "CONFLICT")
    # Nothing half-written: the owner account was rolled back with the tenant.
    assert_error(api.post("/v1/auth/login", json={"email": email, "password": PASSWORD}), 401, "AUTHENTICATION_FAILED")


def test_login_answers_tokens_and_me_works(api, owner):
    tokens = login(api, owner.email, tenant_id=owner.tenant["id"])
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 900
    assert tokens["refresh_token"].startswith("rt_")
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 900 and claims["tid"] == owner.tenant["id"]
    me = api.get("/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200 and me.json()["data"]["email"] == owner.email
    assert me.json()["data"]["last_login_at"] is not None


def test_login_finds_the_tenant_from_a_unique_email(api, owner):
    assert login(api, owner.email)["user"]["id"] == owner.user["id"]


def test_wrong_email_and_wrong_password_are_the_same_401(api, owner):
    wrong_pw = api.post("/v1/auth/login", json={"email": owner.email, "password": "wrong-password-1"})
    wrong_email = api.post("/v1/auth/login", json={"email": unique_email(), "password": PASSWORD})
    assert_error(wrong_pw, 401, "AUTHENTICATION_FAILED")
    assert_error(wrong_email, 401, "AUTHENTICATION_FAILED")
    assert wrong_pw.json()["error"] == wrong_email.json()["error"]


def test_wrong_email_costs_the_same_time_as_wrong_password(api, owner):
    def timed(email):
        start = time.perf_counter()
        api.post("/v1/auth/login", json={"email": email, "password": "wrong-password-1"})
        return time.perf_counter() - start

    # Interleaved, so a burst of load from the rest of the machine (the other database's suite runs
    # beside this one) slows both kinds alike instead of one kind's whole sample.
    pairs = [(timed(owner.email), timed(unique_email())) for _ in range(9)]
    known = statistics.median(k for k, _ in pairs)
    unknown = statistics.median(u for _, u in pairs)
    # Both run one argon2id verification; an early return would be several times faster.
    assert unknown > known * 0.5 and known > unknown * 0.5


def test_same_email_in_two_tenants_needs_a_tenant(api):
    first = register(api)
    second_tenant = api.post(
        "/v1/auth/register",
        json={
            "email": first.email.upper(),
            "password": PASSWORD,
            "first_name": "A",
            "last_name": "B",
            "tenant_name": "Other",
        },
    )
    assert second_tenant.status_code == 201
    other_id = second_tenant.json()["data"]["tenant"]["id"]
    assert_error(api.post("/v1/auth/login", json={"email": first.email, "password": PASSWORD}), 400, "TENANT_REQUIRED")
    by_field = login(api, first.email, tenant_id=other_id)
    assert by_field["user"]["tenant_id"] == other_id
    by_header = api.post(
        "/v1/auth/login", json={"email": first.email, "password": PASSWORD}, headers={"X-Tenant-ID": first.tenant["id"]}
    )
    assert by_header.json()["data"]["user"]["tenant_id"] == first.tenant["id"]


def test_login_on_a_verified_domain_picks_its_tenant(api, operator):
    first = register(api)
    second = api.post(
        "/v1/auth/register",
        json={"email": first.email, "password": PASSWORD, "first_name": "A", "last_name": "B", "tenant_name": "Dom"},
    )
    second_id = second.json()["data"]["tenant"]["id"]
    put = api.put(
        f"/v1/tenants/{second_id}/domains", json={"domain": "login.dom.example.com", "verified": True}, headers=operator
    )
    assert put.status_code == 201, put.text
    response = api.post(
        "/v1/auth/login",
        json={"email": first.email, "password": PASSWORD},
        headers={"Host": "login.dom.example.com:8000"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["user"]["tenant_id"] == second_id


def test_refresh_rotates_and_reuse_revokes_the_session(api, owner):
    first = api.post("/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": owner.refresh_token})
    assert first.status_code == 200, first.text
    pair = first.json()["data"]
    assert pair["refresh_token"] != owner.refresh_token
    assert api.get("/v1/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"}).status_code == 200
    # Reusing the spent token is treated as theft: the whole session dies.
    reuse = api.post("/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": owner.refresh_token})
    assert "already used" in assert_error(reuse, 401, "SESSION_REVOKED")["message"]
    assert_error(
        api.get("/v1/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"}), 401, "SESSION_REVOKED"
    )
    again = api.post("/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]})
    assert_error(again, 401, "SESSION_REVOKED")


def test_unknown_refresh_token_is_401(api):
    response = api.post("/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": "rt_nope"})
    assert_error(response, 401, "AUTHENTICATION_FAILED")


def test_logout_revokes_access_and_refresh_tokens(api, owner):
    assert api.post("/v1/auth/logout", headers=owner.headers).status_code == 204
    assert_error(api.get("/v1/auth/me", headers=owner.headers), 401, "SESSION_REVOKED")
    assert_error(api.post("/v1/auth/logout", headers=owner.headers), 401, "SESSION_REVOKED")
    response = api.post("/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": owner.refresh_token})
    assert_error(response, 401, "SESSION_REVOKED")


def test_refreshing_after_logout_says_the_session_ended_not_already_used(api, owner):
    """Issue 13, item 3: the refresh token was never used; its session ended. Only a token spent by
    a rotation is "already used" (a replay), as before."""
    rotated = api.post("/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": owner.refresh_token})
    assert rotated.status_code == 200, rotated.text
    pair = rotated.json()["data"]
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    assert api.post("/v1/auth/logout", headers=headers).status_code == 204
    for _ in range(2):  # and again: still no replay
        error = assert_error(
            api.post("/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}),
            401,
            "SESSION_REVOKED",
        )
        assert "ended" in error["message"] and "already used" not in error["message"], error
    # The token spent by the rotation before the logout is a replay, and says so.
    error = assert_error(
        api.post("/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": owner.refresh_token}),
        401,
        "SESSION_REVOKED",
    )
    assert "already used" in error["message"], error


def test_a_forged_token_is_401(api, owner):
    claims = jwt.decode(owner.token, options={"verify_signature": False})
    forged = jwt.encode({**claims, "sub": "usr_01JDQ40B4XK3W0V9C2E5G7H8JM"}, "x" * 48, algorithm="HS256")
    assert_error(api.get("/v1/auth/me", headers={"Authorization": f"Bearer {forged}"}), 401, "AUTHENTICATION_FAILED")
    none_alg = jwt.encode(claims, None, algorithm="none")
    assert_error(api.get("/v1/auth/me", headers={"Authorization": f"Bearer {none_alg}"}), 401, "AUTHENTICATION_FAILED")


def test_expired_access_token_is_token_expired(api, server):
    account = register(api)
    claims = jwt.decode(account.token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 900  # TENANTRY_ACCESS_TOKEN_TTL's default

    # The same token as the server would see it once its lifetime has passed: its times moved back
    # and signed with the server's own key (no waiting out a TTL). Only the expiry is refused: the
    # same claims with a future expiry are accepted, so the signature is not what fails.
    def signed(**times: int) -> dict[str, str]:
        token = jwt.encode({**claims, **times}, server.env["TENANTRY_SECRET_KEY"], algorithm="HS256")
        return {"Authorization": f"Bearer {token}"}

    now = int(time.time())
    assert api.get("/v1/auth/me", headers=signed(iat=now - 60, exp=now + 60)).status_code == 200
    expired = signed(iat=now - 901, exp=now - 1)
    assert_error(api.get("/v1/auth/me", headers=expired), 401, "TOKEN_EXPIRED")


@pytest.fixture(scope="module")
def closed_server():
    server = start_server(TENANTRY_SELF_SIGNUP="false")
    yield server
    server.stop()


def test_self_signup_can_be_turned_off(closed_server):
    with closed_server.client() as client:
        response = client.post(
            "/v1/auth/register",
            json={
                "email": unique_email(),
                "password": PASSWORD,
                "first_name": "A",
                "last_name": "B",
                "tenant_name": "Nope",
            },
        )
        assert_error(response, 403, "SIGNUP_DISABLED")


def test_a_remembered_access_token_still_expires_and_a_changed_one_is_checked_again():
    from tenantry.security import BearerProblem, TokenService

    service = TokenService("k" * 48, 1)
    token = service.issue("usr_1", "ten_1", "ses_1")
    claims = service.verify(token)
    claims["sid"] = "changed by a caller"
    assert service.verify(token)["sid"] == "ses_1"  # remembered, and not shared with callers
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(BearerProblem) as refused:
        service.verify(tampered)
    assert refused.value.error_code == "AUTHENTICATION_FAILED"
    time.sleep(1.05 + service.verify(token)["exp"] - time.time())
    for _ in range(2):  # expired while remembered, then no longer remembered
        with pytest.raises(BearerProblem) as expired:
            service.verify(token)
        assert expired.value.error_code == "TOKEN_EXPIRED"
