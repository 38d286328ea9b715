"""Secrets at rest and password hashing: what the data layer needs of cryptography, and nothing more.

The kernel's cryptography, below models/: lookup hashes of random secrets, the secret box that
seals secrets stored in rows (TOTP seeds, provider and endpoint secrets), TOTP verification and
argon2id password hashing. It imports no web framework, so a model that stores a secret does not
pull in Connexion (tenantry.security, the bearer check, does).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.fernet import Fernet

# argon2id with OWASP's recommended parameters (19 MiB, 2 passes, 1 lane): about 20 ms a hash
# here, so a login costs what a password guess should, without capping logins at a few a second.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified against when no account matches, so a wrong email costs what a wrong password does.
_DUMMY_HASH = _hasher.hash("tenantry-dummy-password-for-timing")
# The password hash of accounts created without a password (by an integration): of 256 random
# bits forgotten at once, so no password matches, yet a login to such an account costs a full
# verification like any other. Made here, at start-up, not inside a request's write transaction.
_UNUSABLE_HASH = _hasher.hash(secrets.token_urlsafe(32))


def lookup_hash(secret: str) -> str:
    """Returns the SHA-256 hex digest a random secret (refresh token, API key, recovery code) is stored by.

    These secrets carry 128+ random bits, so a fast unsalted hash is safe and lets the database
    find the row by the digest (an index lookup, no per-row comparison of secrets). Passwords,
    which people choose, use argon2id instead.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class _PasswordWork:
    """Argon2 work a request did before its transaction: hashes waiting to be used, verifications done."""

    #: Fresh hashes by password, one per occurrence in the request (each with its own salt).
    hashes: dict[str, list[str]] = field(default_factory=dict)
    #: Verification results by (stored hash, password); a hash that changes is verified anew.
    verified: dict[tuple[str | None, str], bool] = field(default_factory=dict)


_work: ContextVar[_PasswordWork | None] = ContextVar("tenantry_password_work", default=None)


@contextmanager
def password_work() -> Iterator[None]:
    """Within it, `hash_password` and `verify_password` use what `prehash` and earlier verifications did.

    tenantry.mutation wraps each changing request in it, so the slow argon2 work runs before the
    request's transaction takes the write lock and the handler's own calls are then instant.
    """
    token = _work.set(_PasswordWork())
    try:
        yield
    finally:
        _work.reset(token)


def prehash(passwords: Iterable[str], between: Callable[[], None] | None = None) -> None:
    """Hashes each of `passwords` now, for `hash_password` to hand out later in the same `password_work`.

    A password given twice is hashed twice (two salts, two hashes), so two accounts never share a
    hash. `between` runs before each hash (the request's deadline check). Outside `password_work`
    it does nothing.
    """
    work = _work.get()
    if work is None:
        return
    for password in passwords:
        if between is not None:
            between()
        work.hashes.setdefault(password, []).append(_hasher.hash(password))


def unusable_password_hash() -> str:
    """Returns a password hash no password matches, for an account that has none (no argon2 work)."""
    return _UNUSABLE_HASH


def hash_password(password: str) -> str:
    """Returns an argon2id hash of `password`: one `prehash` made for it, else a new one."""
    work = _work.get()
    if work is not None:
        ready = work.hashes.get(password)
        if ready:
            return ready.pop()
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Returns True when `password` matches `password_hash`, in constant time.

    With no hash (no such account) it still runs one full verification, so both failures take
    the same time. Within `password_work`, the same hash and password are verified once: a check
    made before the transaction answers the one made inside it, unless the stored hash changed.
    """
    work = _work.get()
    if work is not None and (password_hash, password) in work.verified:
        return work.verified[(password_hash, password)]
    try:
        result = _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        result = False
    if work is not None:
        work.verified[(password_hash, password)] = result
    return result


def needs_rehash(password_hash: str) -> bool:
    """Returns True when the hash was made with other parameters than today's (rehash it on login)."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


class SecretBox:
    """Encrypts small secrets at rest (TOTP seeds) with a key derived from the server's secret key."""

    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(b"tenantry:mfa-secrets:" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, plaintext: str) -> str:
        """Returns `plaintext` encrypted and authenticated."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        """Returns the plaintext of a sealed value; raises InvalidToken when it was tampered with."""
        return self._fernet.decrypt(token.encode()).decode()


TOTP_WINDOW = 1  # accept the previous, current and next 30 s step (clock drift)


def totp_step(secret: str, code: str, after_step: int | None) -> int | None:
    """Returns the time step whose TOTP code is `code`, if it is later than `after_step`.

    Checks the steps around now in constant time each; a code of a step at or before
    `after_step` is refused, so an accepted code never works twice (RFC 6238, section 5.2).
    """
    totp = pyotp.TOTP(secret)
    now = totp.timecode(datetime.now(UTC))
    for step in range(now - TOTP_WINDOW, now + TOTP_WINDOW + 1):
        if after_step is not None and step <= after_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


#: The Standard Webhooks marker of a base64 secret.
_WHSEC_PREFIX = "whsec_"


def standard_webhooks_key(secret: str) -> bytes:
    """Returns the HMAC key a Standard Webhooks secret signs with: a `whsec_` secret's decoded bytes
    (padding optional), else the secret's UTF-8 bytes. The one decoder, for inbound checks and
    outbound signing alike."""
    if secret.startswith(_WHSEC_PREFIX):
        encoded = secret[len(_WHSEC_PREFIX) :]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if key:
            return key
    return secret.encode()


_box: SecretBox | None = None


def install_secret_box(box: SecretBox | None) -> None:
    """Makes `box` the secret box rows are sealed with (create_app and the CLI, once, at start)."""
    # A module global, installed with the token service (tenantry.security.install_token_service).
    global _box
    _box = box


def secret_box() -> SecretBox:
    """Returns the installed secret box."""
    if _box is None:
        raise RuntimeError("create_app() has not installed a secret box")
    return _box
