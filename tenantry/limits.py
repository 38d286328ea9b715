"""Rate limits (flask-limiter): per credential, per tenant and per client address, in sliding windows.

Each limit counts in fixed windows and weighs the previous window's count by how much of it the
sliding window still covers (the sliding window counter): exact while requests stay inside one
window, and within the budget plus the previous window's share of it across a boundary.

Every operation declares its class in the spec (`x-rate-limit`):
- `standard`: the credential (an API key or a user) gets its tenant's plan budget, a minute
  budget and a 10-second burst; the tenant as a whole gets ten times the minute budget; the
  client address gets `TENANTRY_RATE_LIMIT_IP`. The platform operator is held to the address
  limit only: it belongs to no plan.
- `auth` (login, signup, token refresh, MFA): also the harder `TENANTRY_RATE_LIMIT_AUTH_IP` per
  address and `TENANTRY_RATE_LIMIT_AUTH_ACCOUNT` per account (the email or its alias `username`,
  the refresh token or its alias `refresh`, JSON or form, or the signed-in user).
- `none` (health, metrics, the spec): not limited, so monitoring never competes with traffic.

Counts live in a table in memory shared by the worker processes of one `tenantry serve`
(tenantry/counters.py) on the default, and in Redis when `REDIS_URL` is set, shared by every
process on every host. When Redis cannot be reached the limiter fails open: the request is served
without limits or headers, and a circuit breaker stops asking Redis for
`TENANTRY_REDIS_RETRY_AFTER` seconds (one warning when it opens, one info line when it closes),
so an outage of the counter store never becomes an outage of the API, nor a slower one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any

import connexion
from flask import Flask, Response, g, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded, RequestLimit

from tenantry.context import caller_address
from tenantry.counters import CounterStoreUnavailable
from tenantry.errors import error_response
from tenantry.settings import Settings

log = logging.getLogger("tenantry.limits")

#: Requests a minute and in any 10 seconds, per credential, by plan (enterprise: its rate_limits, or these).
PLANS: dict[str, tuple[int, int]] = {
    "standard": (100, 50),
    "professional": (1000, 200),
    "enterprise": (10000, 2000),
}
TENANT_FACTOR = 10  # the tenant's minute budget, in credentials' minute budgets
CLASSES = ("standard", "auth", "none")
#: Which limit the headers describe when none was exceeded, nearest the caller first.
_HEADER_SCOPES = ("credential", "auth-account", "auth-address", "address", "tenant")


def plan_limits(plan: str, custom: dict[str, int] | None) -> tuple[int, int]:
    """Returns (per minute, per 10 seconds) for a tenant's plan and custom limits."""
    if custom:
        return int(custom["requests_per_minute"]), int(custom["burst_per_10_seconds"])
    return PLANS.get(plan, PLANS["standard"])


#: Seconds the limiter's Redis client waits to connect and for each answer. Redis answers in a
#: millisecond or two; a hung one costs this much to the one request per TENANTRY_REDIS_RETRY_AFTER
#: (per process) that tries it again.
REDIS_TIMEOUT = 0.25


class _FailOpenWarning(logging.Filter):
    """Turns flask-limiter's swallowed-error records into one warning line naming the error.

    A Redis failure is reported by the breaker once when it opens (tenantry/counters.py): the
    records of the requests it fails open are dropped, not one line each.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrites the record in place; drops it when the breaker has already said it."""
        if record.exc_info and "Swallowing" in record.getMessage():
            error = record.exc_info[1]
            if isinstance(error, CounterStoreUnavailable):
                return False
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "rate limits not applied (failing open): %s: %s", (type(error).__name__, error)
            record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("flask-limiter").addFilter(_FailOpenWarning())


def counter_store(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Returns the limits storage URI and options for these settings: Redis behind a breaker, else the shared table."""
    if settings.redis_url:
        return "tenantry-" + settings.redis_url, {
            "socket_timeout": REDIS_TIMEOUT,
            "socket_connect_timeout": REDIS_TIMEOUT,
            "retry_after": settings.redis_retry_after,
        }
    return "tenantry-shared://", {"slots": settings.rate_limit_slots}


class RateLimits:
    """The limiter of one app: which limits apply to a request, and the headers that describe them."""

    def __init__(self, app: Flask, settings: Settings, classes: dict[str, str]) -> None:
        self.classes = classes
        uri, options = counter_store(settings)
        self.limiter = Limiter(
            key_func=self._address,
            application_limits=[
                ApplicationLimit(
                    self._credential_limit,
                    key_function=self._credential_key,
                    scope="credential",
                    exempt_when=lambda: self._credential_key() == "",
                ),
                ApplicationLimit(
                    self._tenant_limit,
                    key_function=self._tenant_key,
                    scope="tenant",
                    exempt_when=lambda: self._tenant_key() == "",
                ),
                ApplicationLimit(
                    settings.rate_limit_ip,
                    key_function=self._address,
                    scope="address",
                    exempt_when=lambda: self._class() == "none",
                ),
                ApplicationLimit(
                    settings.rate_limit_auth_ip,
                    key_function=self._address,
                    scope="auth-address",
                    exempt_when=lambda: self._class() != "auth",
                ),
                ApplicationLimit(
                    settings.rate_limit_auth_account,
                    key_function=self._account_key,
                    scope="auth-account",
                    exempt_when=lambda: self._class() != "auth",
                ),
            ],
            storage_uri=uri,
            storage_options=options,
            # O(1) a check (two counters a limit) whatever the budget: a moving window keeps one
            # entry a request, which at enterprise budgets costs more than the request itself.
            strategy="sliding-window-counter",
            headers_enabled=False,  # written by `_headers`, which picks the limit they describe
            swallow_errors=True,  # fail open when the counter store is down (see the module docstring)
            key_prefix=settings.rate_limit_prefix,
        )
        # Unlimited operations skip the limiter altogether, not just each limit (health probes are hot).
        self.limiter.request_filter(lambda: self._class() == "none")
        self.limiter.init_app(app)
        app.after_request(self._headers)
        app.register_error_handler(RateLimitExceeded, self._exceeded)

    # What the request is, worked out once per request.

    def _class(self) -> str:
        cached = g.get("rate_limit_class")
        if cached is None:
            try:
                operation_id = connexion.context.operation.operation_id
            except (RuntimeError, AttributeError):
                operation_id = None
            cached = g.rate_limit_class = self.classes.get(operation_id or "", "none")
        return cached

    def _principal(self) -> Any:
        from tenantry.authz import principal_or_none  # authz needs the app; this module is built with it

        return principal_or_none() if self._class() != "none" else None

    def _address(self) -> str:
        return caller_address() or "unknown"

    def _credential_key(self) -> str:
        principal = self._principal()
        if principal is None or principal.is_operator:
            return ""
        return f"{'key' if principal.key is not None else 'user'}:{principal.id}"

    def _tenant_key(self) -> str:
        principal = self._principal()
        if principal is None or principal.is_operator or principal.tenant is None:
            return ""
        return f"tenant:{principal.tenant.id}"

    def _account_key(self) -> str:
        principal = self._principal()
        if principal is not None:
            return f"account:{principal.id}"
        body = request.get_json(silent=True, cache=True)
        if not isinstance(body, dict):  # an OAuth 2.0 form (`POST /v1/auth/token`), or no body
            body = request.form.to_dict() if request.mimetype == "application/x-www-form-urlencoded" else {}
        # The seeds' aliases (`username`, `refresh`) name the same account: the same budget.
        email = body.get("email") if isinstance(body.get("email"), str) else body.get("username")
        if isinstance(email, str):
            return "email:" + hashlib.sha256(email.strip().casefold().encode()).hexdigest()[:32]
        token = body.get("refresh_token") if isinstance(body.get("refresh_token"), str) else body.get("refresh")
        if isinstance(token, str):
            return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]
        return f"address:{self._address()}"

    def _budget(self) -> tuple[int, int]:
        # flask-limiter asks every limit for its value before it asks whether the limit applies:
        # without a tenant, the exempt limit gets the standard plan's.
        principal = self._principal()
        tenant = principal.tenant if principal is not None else None
        return plan_limits(tenant.plan, tenant.rate_limits) if tenant is not None else PLANS["standard"]

    def _credential_limit(self) -> str:
        per_minute, burst = self._budget()
        return f"{per_minute}/minute;{burst}/10 seconds"

    def _tenant_limit(self) -> str:
        return f"{self._budget()[0] * TENANT_FACTOR}/minute"

    # The answer.

    def _chosen(self) -> RequestLimit | None:
        limits = self.limiter.current_limits
        breached = [lim for lim in limits if lim.breached]
        if breached:
            return breached[0]

        def rank(lim: RequestLimit) -> tuple[int, int]:
            scope = lim.request_args[-1]
            order = _HEADER_SCOPES.index(scope) if scope in _HEADER_SCOPES else len(_HEADER_SCOPES)
            return order, -lim.limit.get_expiry()  # the minute budget before the burst

        return min(limits, key=rank, default=None)

    def _headers(self, response: Response) -> Response:
        try:
            chosen = self._chosen()
            if chosen is None:
                return response
            reset, remaining = chosen.window
        except CounterStoreUnavailable:  # the breaker opened mid-request and has said so: fail open
            return response
        except Exception:  # the store went away mid-request: fail open, as the check did
            log.warning("rate limit headers skipped: the limit store is unreachable", exc_info=True)
            return response
        response.headers["X-RateLimit-Limit"] = str(chosen.limit.amount)
        response.headers["X-RateLimit-Remaining"] = str(max(0, remaining))
        response.headers["X-RateLimit-Reset"] = str(math.ceil(reset))
        if response.status_code == 429 and chosen.breached:  # not an MFA pause, which sets its own
            response.headers["Retry-After"] = str(max(1, math.ceil(reset - time.time())))
        return response

    def _exceeded(self, exc: RateLimitExceeded) -> Response:
        return error_response(
            429,
            "RATE_LIMIT_EXCEEDED",
            f"Rate limit exceeded ({exc.description}); retry after the seconds in Retry-After.",
            headers={"Retry-After": "1"},
        )  # the exact wait is set with the other headers
