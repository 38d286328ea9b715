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
    return api.post("/v1/auth/login", json={"email": account.email, "password": account.password,
                                            "tenant_id": account.tenant["id"], **extra})


def test_login_needs_a_fresh_code_and_refuses_a_replayed_one(api, owner):
    secret, _ = enable(api, owner)
    assert_error(password_login(api, owner), 401, "MFA_REQUIRED")
    assert_error(password_login(api, owner, mfa_code="000000" if code_at(secret) != "000000" else "111111"), 401,
                 "MFA_INVALID_CODE")
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

    assert_error(turn_off("000000" if code_at(secret, 1) != "000000" else "111111"), 401, "MFA_INVALID_CODE")
    assert turn_off(code_at(secret, 1)).status_code == 204
    assert login(api, owner.email, tenant_id=owner.tenant["id"])["access_token"]
    assert_error(turn_off(code_at(secret, 1)), 409, "CONFLICT")


def test_other_channels_answer_422_and_setup_twice_is_409(api, owner):
    for kind in ("sms", "email"):
        assert_error(api.post("/v1/auth/mfa/setup", json={"type": kind}, headers=owner.headers), 422,
                     "MFA_CHANNEL_UNAVAILABLE")
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
