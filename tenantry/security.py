"""Credentials: password hashing (argon2id), access tokens (JWT) and the bearer check.

`bearer_info` runs on the event loop (Connexion calls security functions there), so it does only
what is pure and fast: the JWT's signature, expiry and shape. Whether the session is still live
and the user and tenant are active is checked in the Flask layer (tenantry.authz), in a worker
thread, where a database query does not stall other requests.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from connexion.exceptions import OAuthProblem
from connexion.security import AbstractSecurityHandler, ApiKeySecurityHandler, BearerSecurityHandler
from cryptography.fernet import Fernet

from tenantry.ids import new_id

ISSUER = "tenantry"
ALGORITHM = "HS256"
#: How many verified access tokens each process remembers (see TokenService.verify).
VERIFIED_TOKENS_KEPT = 4096

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


class BearerProblem(OAuthProblem):
    """A 401 from the bearer check, with our error code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail=detail)
        self.error_code = code


@dataclass(frozen=True)
class TokenService:
    """Issues and verifies access tokens with one secret."""

    secret: str
    access_ttl: int
    #: Claims of tokens whose signature, issuer and shape already passed, by the exact token text.
    _verified: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)

    def issue(self, user_id: str, tenant_id: str | None, session_id: str) -> str:
        """Returns a signed access token for the session."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user_id,
            "tid": tenant_id,
            "sid": session_id,
            "jti": new_id("at"),
            "iat": now,
            "exp": now + self.access_ttl,
            "typ": "access",
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> dict[str, Any]:
        """Returns the token's claims, or raises BearerProblem (TOKEN_EXPIRED or AUTHENTICATION_FAILED).

        A client sends the same token with every request until it expires: once its signature has
        been checked, the same text is answered from memory (about 1 us instead of PyJWT's 50-70),
        its expiry still checked each time. Whether the session is live is not a property of the
        token: the enforcement point checks that in the database on every request.
        """
        known = self._verified.get(token)
        if known is not None:
            if known["exp"] <= time.time():  # PyJWT's rule: expired from the second `exp` names
                self._verified.pop(token, None)
                raise BearerProblem("TOKEN_EXPIRED", "The access token has expired; refresh it.")
            return dict(known)
        claims = self._decode(token)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            self._verified.clear()  # bounded: a flood of distinct tokens costs a re-check, not memory
        self._verified[token] = claims
        return dict(claims)

    def _decode(self, token: str) -> dict[str, Any]:
        """Verifies the token with PyJWT; returns its claims or raises BearerProblem."""
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "sid", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise BearerProblem("TOKEN_EXPIRED", "The access token has expired; refresh it.") from None
        except jwt.PyJWTError:
            raise BearerProblem("AUTHENTICATION_FAILED", "The access token is invalid.") from None
        if claims.get("typ") != "access":
            raise BearerProblem("AUTHENTICATION_FAILED", "The access token is invalid.")
        return claims


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


_service: TokenService | None = None
_box: SecretBox | None = None


def install_token_service(service: TokenService, box: SecretBox | None = None) -> None:
    """Makes `service` the one `bearer_info` verifies with, and `box` the secret box; create_app calls this once."""
    # Module globals because Connexion resolves security functions by import path only.
    global _service, _box
    _service = service
    _box = box


def secret_box() -> SecretBox:
    """Returns the installed secret box."""
    if _box is None:
        raise RuntimeError("create_app() has not installed a secret box")
    return _box


def token_service() -> TokenService:
    """Returns the installed token service."""
    if _service is None:
        raise RuntimeError("create_app() has not installed a token service")
    return _service


def bearer_info(token: str) -> dict[str, Any]:
    """Connexion's x-bearerInfoFunc: returns the verified claims of an access token.

    Pure and fast (an HMAC check), so it is safe on the event loop. A token starting `sk_` is an
    API key sent the way seed 002's client sends it (`Authorization: Bearer sk_live_...`; no JWT
    starts so): it goes the API key's one way from here (tenantry.authz loads and checks it).
    """
    if token.startswith("sk_"):
        return {**api_key_info(token), "via": "bearer"}
    claims = token_service().verify(token)
    return {"sub": claims["sub"], "kind": "bearer", "claims": claims}


_API_KEY_SHAPE = re.compile(r"^sk_(live|test)_[A-Za-z0-9]{40}$")


def api_key_info(apikey: str, required_scopes: list[str] | None = None) -> dict[str, Any]:
    """Connexion's x-apikeyInfoFunc: accepts a well-formed `sk_live_`/`sk_test_` secret.

    Only its shape is checked here, on the event loop; the key is looked up by its hash in the
    Flask layer (tenantry.authz), in a worker thread, so a slow database never stalls the loop
    and N concurrent key requests run side by side.
    """
    if not _API_KEY_SHAPE.match(apikey or ""):
        raise BearerProblem("AUTHENTICATION_FAILED", "The API key is invalid.")
    return {"sub": apikey[:12], "kind": "api_key", "secret": apikey}


@functools.cache
def _accepts_kwarg(func: Any, keyword: str) -> bool:
    return AbstractSecurityHandler._accepts_kwarg(func, keyword)


class CachedBearerHandler(BearerSecurityHandler):
    """Connexion's bearer handler, asking for the info function's signature once, not twice a request."""

    _accepts_kwarg = staticmethod(_accepts_kwarg)


class CachedApiKeyHandler(ApiKeySecurityHandler):
    """Connexion's API key handler, asking for the info function's signature once, not twice a request."""

    _accepts_kwarg = staticmethod(_accepts_kwarg)


#: add_api's `security_map`: Connexion's handlers for the spec's schemes, with the signature cached.
SECURITY_MAP = {"bearer": CachedBearerHandler, "apiKey": CachedApiKeyHandler}
