"""TOTP multi-factor authentication for a user: setup, verification, login codes, recovery codes."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import NoReturn
from urllib.parse import quote

import pyotp
from peewee import CharField

from models.base import TenantScopedModel, UTCDateTimeField, database, utcnow
from models.user import User
from tenantry.crypto import lookup_hash, secret_box, totp_step
from tenantry.errors import ApiError, Conflict, MfaCodeRejected, MfaInvalidCode, MfaRequired, TooManyAttempts
from tenantry.ids import new_id

ISSUER = "Tenantry"
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=5)
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


class RecoveryCode(TenantScopedModel):
    """A one-time recovery code, stored as its SHA-256 (it is random, so no salt is needed)."""

    label = "recovery code"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30, null=True)
    user_id = CharField(max_length=30)
    code_hash = CharField(max_length=64, unique=True)
    created_at = UTCDateTimeField(default=utcnow)
    used_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "mfa_recovery_code"


def start_totp(user: User) -> tuple[str, str]:
    """Gives `user` a pending TOTP secret; returns it and its otpauth:// URI. Conflict when MFA is on."""
    if user.mfa_enabled:
        raise Conflict("MFA is on already; turn it off first to set it up again.")
    secret = pyotp.random_base32(32)
    user.mfa_pending_secret = secret_box().seal(secret)
    user.save(only=[User.mfa_pending_secret])
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
    return secret, uri.replace(quote(user.email), quote(user.email, safe=""))


def _guard(user: User) -> None:
    if user.mfa_locked_until is not None and user.mfa_locked_until > utcnow():
        raise TooManyAttempts(
            int((user.mfa_locked_until - utcnow()).total_seconds()) + 1, "Too many wrong MFA codes; retry later."
        )


def _fail(user: User, error: type[ApiError] = MfaInvalidCode) -> NoReturn:
    """Counts a wrong code, pausing MFA attempts after MAX_FAILURES in a row; raises `error`:
    MfaInvalidCode (401) at login, where the code is part of the credentials, MfaCodeRejected
    (422) where the caller is signed in already (turning MFA on or off)."""
    failures = user.mfa_failures + 1
    locked = utcnow() + LOCKOUT if failures >= MAX_FAILURES else None
    User.update(mfa_failures=0 if locked else failures, mfa_locked_until=locked).where(User.id == user.id).execute()
    raise error()


def _accept_step(user: User, step: int) -> bool:
    """Records `step` as used; False when a concurrent request used it (or a later one) first."""
    updated = (
        User.update(mfa_last_step=step, mfa_failures=0, mfa_locked_until=None)
        .where(User.id == user.id, User.mfa_last_step.is_null() | (User.mfa_last_step < step))
        .execute()
    )
    return updated == 1


def verify_and_enable(user: User, code: str) -> list[str]:
    """Turns MFA on when `code` matches the pending secret; returns the new recovery codes (shown once)."""
    if user.mfa_enabled or not user.mfa_pending_secret:
        raise Conflict("There is no pending MFA setup; start one with POST /v1/auth/mfa/setup.")
    _guard(user)
    secret = secret_box().open(user.mfa_pending_secret)
    step = totp_step(secret, code, user.mfa_last_step)
    if step is None:
        _fail(user, MfaCodeRejected)
    codes = ["".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10)) for _ in range(RECOVERY_CODES)]
    codes = [f"{c[:5]}-{c[5:]}" for c in codes]
    with database.atomic():
        if not _accept_step(user, step):
            raise MfaCodeRejected()
        RecoveryCode.delete().where(RecoveryCode.user_id == user.id).execute()
        for code_ in codes:
            RecoveryCode.create(
                id=new_id("rcv"), tenant_id=user.tenant_id, user_id=user.id, code_hash=lookup_hash(code_)
            )
        User.update(mfa_enabled=True, mfa_secret=user.mfa_pending_secret, mfa_pending_secret=None).where(
            User.id == user.id
        ).execute()
    return codes


def check_login(user: User, code: str | None) -> None:
    """Passes when `user` has MFA off, or `code` is a fresh TOTP code or an unused recovery code."""
    if not user.mfa_enabled:
        return
    if not code:
        raise MfaRequired()
    _guard(user)
    if "-" in code:
        with database.atomic():
            used = (
                RecoveryCode.update(used_at=utcnow())
                .where(
                    RecoveryCode.user_id == user.id,
                    RecoveryCode.code_hash == lookup_hash(code),
                    RecoveryCode.used_at.is_null(),
                )
                .execute()
            )
        if used != 1:
            _fail(user)
        return
    assert user.mfa_secret is not None  # MFA is on, so its secret is stored
    step = totp_step(secret_box().open(user.mfa_secret), code, user.mfa_last_step)
    if step is None or not _accept_step(user, step):
        _fail(user)


def disable(user: User, code: str) -> None:
    """Turns MFA off given a fresh TOTP code, deleting the secret and recovery codes."""
    if not user.mfa_enabled:
        raise Conflict("MFA is not on.")
    _guard(user)
    assert user.mfa_secret is not None  # MFA is on, so its secret is stored
    step = totp_step(secret_box().open(user.mfa_secret), code, user.mfa_last_step)
    if step is None or not _accept_step(user, step):
        _fail(user, MfaCodeRejected)
    with database.atomic():
        RecoveryCode.delete().where(RecoveryCode.user_id == user.id).execute()
        User.update(mfa_enabled=False, mfa_secret=None, mfa_pending_secret=None).where(User.id == user.id).execute()


def reset(user: User) -> None:
    """Turns the user's MFA off without a code (an owner or admin's reset, for a lost device), deleting
    the secret, any pending one and the recovery codes, and ends the user's sessions: whoever holds
    one may be who the reset is about. A user without MFA state is left as they are."""
    from models.session import Session

    if not (user.mfa_enabled or user.mfa_secret or user.mfa_pending_secret):
        return
    with database.atomic():
        RecoveryCode.delete().where(RecoveryCode.user_id == user.id).execute()
        User.update(
            mfa_enabled=False,
            mfa_secret=None,
            mfa_pending_secret=None,
            mfa_last_step=None,
            mfa_failures=0,
            mfa_locked_until=None,
        ).where(User.id == user.id).execute()
        Session.revoke_all_for_user(user.id)
    user.mfa_enabled, user.mfa_secret, user.mfa_pending_secret = False, None, None
    user.mfa_last_step, user.mfa_failures, user.mfa_locked_until = None, 0, None
