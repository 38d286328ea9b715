"""Credentials: password hashing (argon2id), access tokens (JWT) and the bearer check.

`bearer_info` runs on the event loop (Connexion calls security functions there), so it does only
what is pure and fast: the JWT's signature, expiry and shape. Whether the session is still live
and the user and tenant are active is checked in the Flask layer (tenantry.authz), in a worker
thread, where a database query does not stall other requests.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from connexion.exceptions import OAuthProblem
from connexion.security import AbstractSecurityHandler, ApiKeySecurityHandler, BearerSecurityHandler

from tenantry.crypto import (
    SecretBox,
    hash_password,
    install_secret_box,
    lookup_hash,
    needs_rehash,
    password_work,
    prehash,
    secret_box,
    totp_step,
    unusable_password_hash,
    verify_password,
)
from tenantry.ids import new_id

# The password and secret helpers moved to tenantry.crypto; they are re-exported here, where
# callers above the data layer have always found them.
__all__ = [
    "ALGORITHM",
    "ISSUER",
    "SECURITY_MAP",
    "BearerProblem",
    "CachedApiKeyHandler",
    "CachedBearerHandler",
    "SecretBox",
    "TokenService",
    "api_key_info",
    "bearer_info",
    "hash_password",
    "install_token_service",
    "lookup_hash",
    "needs_rehash",
    "password_work",
    "prehash",
    "secret_box",
    "token_service",
    "totp_step",
    "unusable_password_hash",
    "verify_password",
]

ISSUER = "tenantry"
ALGORITHM = "HS256"
#: How many verified access tokens each process remembers (see TokenService.verify).
VERIFIED_TOKENS_KEPT = 4096


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


_service: TokenService | None = None


def install_token_service(service: TokenService, box: SecretBox | None = None) -> None:
    """Makes `service` the one `bearer_info` verifies with, and `box` the secret box; create_app calls this once."""
    # A module global because Connexion resolves security functions by import path only.
    global _service
    _service = service
    install_secret_box(box)


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
