"""TOTP MFA against the live server: setup, verify, login with codes, replay, recovery, lockout, off."""

from __future__ import annotations

import time

import pyotp

from tests.conftest import assert_error, login, register


def code_at(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


def enable(api, account):
    setup = api.post("/v1/auth/mfa/setup", json={"type": "totp"}, headers=account.headers)
    assert setup.status_code == 200, setup.text
    data = setup.json()["data"]
    assert data["otpauth_uri"].startswith("otpauth://totp/Tenantry:") and "issuer=Tenantry" in data["otpauth_uri"]
    verified = api.post("/v1/auth/mfa/verify", json={"code": code_at(data["secret"])}, headers=account.headers)
    assert verified.status_code == 200, verified.text
    codes = verified.json()["data"]["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    return data["secret"], codes


def password_login(api, account, **extra):
    return api.post(
        "/v1/auth/login",
        json={"email": account.email, "password": account.password, "tenant_id": account.tenant["id"], **extra},
    )


def test_login_needs_a_fresh_code_and_refuses_a_replayed_one(api, owner):
    secret, _ = enable(api, owner)
    assert_error(password_login(api, owner), 401, "MFA_REQUIRED")
    assert_error(
        password_login(api, owner, mfa_code="000000" if code_at(secret) != "000000" else "111111"),
        401,
        "MFA_INVALID_CODE",
    )
    fresh = code_at(secret, 1)  # the next step: later than the one verify used
    assert password_login(api, owner, mfa_code=fresh).status_code == 200
    assert_error(password_login(api, owner, mfa_code=fresh), 401, "MFA_INVALID_CODE")


def test_a_recovery_code_works_once(api, owner):
    _, codes = enable(api, owner)
    assert password_login(api, owner, mfa_code=codes[0]).status_code == 200
    assert_error(password_login(api, owner, mfa_code=codes[0]), 401, "MFA_INVALID_CODE")
    assert password_login(api, owner, mfa_code=codes[1]).status_code == 200


def test_wrong_codes_pause_attempts_per_account(api, owner):
    secret, _ = enable(api, owner)
    wrong = "123456" if code_at(secret) != "123456" and code_at(secret, 1) != "123456" else "654321"
    for _ in range(5):
        assert_error(password_login(api, owner, mfa_code=wrong), 401, "MFA_INVALID_CODE")
    paused = password_login(api, owner, mfa_code=code_at(secret, 1))
    assert_error(paused, 429, "RATE_LIMIT_EXCEEDED")
    assert 1 <= int(paused.headers["retry-after"]) <= 300


def test_mfa_can_be_turned_off_with_a_current_code(api, owner):
    secret, _ = enable(api, owner)

    def turn_off(code):
        return api.request("DELETE", "/v1/auth/mfa", json={"code": code}, headers=owner.headers)

    # Issue 13: a wrong code from a signed-in caller is no 401 (the token is fine): 422, no WWW-Authenticate.
    wrong = turn_off("000000" if code_at(secret, 1) != "000000" else "111111")
    assert_error(wrong, 422, "MFA_CODE_REJECTED")
    assert "www-authenticate" not in wrong.headers
    assert turn_off(code_at(secret, 1)).status_code == 204
    assert login(api, owner.email, tenant_id=owner.tenant["id"])["access_token"]
    assert_error(turn_off(code_at(secret, 1)), 409, "CONFLICT")


def test_other_channels_answer_422_and_setup_twice_is_409(api, owner):
    for kind in ("sms", "email"):
        assert_error(
            api.post("/v1/auth/mfa/setup", json={"type": kind}, headers=owner.headers), 422, "MFA_CHANNEL_UNAVAILABLE"
        )
    assert_error(api.post("/v1/auth/mfa/verify", json={"code": "123456"}, headers=owner.headers), 409, "CONFLICT")
    enable(api, owner)
    assert_error(api.post("/v1/auth/mfa/setup", json={"type": "totp"}, headers=owner.headers), 409, "CONFLICT")


def test_the_secret_is_stored_encrypted(api, server):
    account = register(api)
    secret, _ = enable(api, account)
    from tests.livesrv import backend

    # Read the raw row, under the API.
    if backend() == "postgres":
        import psycopg2

        conn = psycopg2.connect(server.env["DATABASE_URL"])
        row = conn.cursor()
        row.execute("SELECT mfa_secret FROM user_account WHERE id = %s", (account.user["id"],))
        stored = row.fetchone()[0]
        conn.close()
    else:
        import sqlite3

        conn = sqlite3.connect(server.env["DATABASE_URL"].removeprefix("sqlite:///"))
        stored = conn.execute("SELECT mfa_secret FROM user_account WHERE id = ?", (account.user["id"],)).fetchone()[0]
        conn.close()
    assert stored and secret not in stored


# Issue 13, item 3 and seed 003: /mfa/setup without a body, /mfa/verify with a wrong code or a `type`.


def wrong_code(secret: str) -> str:
    return next(c for c in ("123456", "654321", "111111") if c not in {code_at(secret, n) for n in (-1, 0, 1)})


def test_setup_without_a_body_sets_up_totp(api, owner):
    for body in ({}, None):
        response = (
            api.post("/v1/auth/mfa/setup", headers=owner.headers)
            if body is None
            else api.post("/v1/auth/mfa/setup", json=body, headers=owner.headers)
        )
        assert response.status_code == 200, response.text
        assert response.json()["data"]["type"] == "totp"
    secret = response.json()["data"]["secret"]
    verified = api.post("/v1/auth/mfa/verify", json={"code": code_at(secret)}, headers=owner.headers)
    assert verified.status_code == 200, verified.text


def test_a_wrong_code_at_verify_is_422_without_www_authenticate_and_still_counts(api, owner):
    secret = api.post("/v1/auth/mfa/setup", json={"type": "totp"}, headers=owner.headers).json()["data"]["secret"]
    wrong = wrong_code(secret)
    for _ in range(5):
        response = api.post("/v1/auth/mfa/verify", json={"code": wrong}, headers=owner.headers)
        assert_error(response, 422, "MFA_CODE_REJECTED")
        assert "www-authenticate" not in response.headers
    # The token is fine all along; the wrong codes still pause MFA attempts.
    assert api.get("/v1/auth/me", headers=owner.headers).status_code == 200
    assert_error(
        api.post("/v1/auth/mfa/verify", json={"code": code_at(secret)}, headers=owner.headers),
        429,
        "RATE_LIMIT_EXCEEDED",
    )


def test_verify_takes_type_totp_and_refuses_other_kinds(api, owner):
    secret = api.post("/v1/auth/mfa/setup", json={"type": "totp"}, headers=owner.headers).json()["data"]["secret"]
    for kind in ("recovery", "sms", "TOTP", ""):
        error = assert_error(
            api.post("/v1/auth/mfa/verify", json={"type": kind, "code": code_at(secret)}, headers=owner.headers),
            400,
            "VALIDATION_ERROR",
        )
        assert error["details"] == [{"field": "type", "message": "must be one of: totp"}]
    verified = api.post("/v1/auth/mfa/verify", json={"type": "totp", "code": code_at(secret)}, headers=owner.headers)
    assert verified.status_code == 200, verified.text


def test_a_wrong_code_at_login_is_still_the_401_of_a_failed_login(api, owner):
    """At login the code is part of the credentials: a wrong one fails the login (401), as a wrong password does."""
    secret, _ = enable(api, owner)
    assert_error(password_login(api, owner, mfa_code=wrong_code(secret)), 401, "MFA_INVALID_CODE")
