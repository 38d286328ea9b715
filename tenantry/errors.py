"""The error hierarchy and the one place errors become the error envelope.

Handlers and models raise these; the app factory maps them (and every Connexion, Starlette and
Werkzeug error) to `{"error": {...}, "meta": {...}}` in exactly one way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# format_datetime is re-exported: it moved to tenantry.times, where code not yet moved still finds it here.
from tenantry.times import format_datetime as format_datetime
from tenantry.times import now_rfc3339


@dataclass(frozen=True)
class Detail:
    """One field-level problem: `field` is a body path (`users[2].email`) or a parameter name."""

    message: str
    field: str | None = None

    def as_dict(self) -> dict[str, str]:
        """Returns the detail as it appears in the envelope."""
        out = {"message": self.message}
        if self.field:
            out = {"field": self.field, "message": self.message}
        return out


class ApiError(Exception):
    """An error with an HTTP status and a stable code. Subclasses fix both."""

    status = 500
    code = "INTERNAL_ERROR"
    default_message = "An internal error occurred."

    def __init__(
        self, message: str | None = None, details: list[Detail] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        self.message = message or self.default_message
        self.details = details or []
        self.headers = headers or {}
        super().__init__(self.message)


class ValidationFailed(ApiError):
    status, code, default_message = 400, "VALIDATION_ERROR", "The request is invalid."


class TenantRequired(ApiError):
    status, code = 400, "TENANT_REQUIRED"
    default_message = "Name the tenant with tenant_id or the X-Tenant-ID header."


class AuthenticationFailed(ApiError):
    status, code = 401, "AUTHENTICATION_FAILED"
    default_message = "Authentication credentials are missing or invalid."

    def __init__(self, message: str | None = None, details: list[Detail] | None = None) -> None:
        super().__init__(message, details, headers={"WWW-Authenticate": 'Bearer realm="tenantry"'})


class TokenExpired(AuthenticationFailed):
    code, default_message = "TOKEN_EXPIRED", "The access token has expired; refresh it."


class SessionRevoked(AuthenticationFailed):
    code, default_message = "SESSION_REVOKED", "The session was logged out or revoked."


class MfaRequired(AuthenticationFailed):
    code, default_message = "MFA_REQUIRED", "This account has MFA on; send mfa_code."


class MfaInvalidCode(AuthenticationFailed):
    code, default_message = "MFA_INVALID_CODE", "The MFA code is wrong, expired or was used already."


class PermissionDenied(ApiError):
    status, code, default_message = 403, "PERMISSION_DENIED", "You do not have permission to do this."

    def __init__(
        self,
        message: str | None = None,
        details: list[Detail] | None = None,
        headers: dict[str, str] | None = None,
        decided_by: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, details, headers)
        self.decided_by = decided_by  # the policies or rules that refused, for the audit trail


class MfaEnrollmentRequired(PermissionDenied):
    code = "MFA_ENROLLMENT_REQUIRED"
    default_message = (
        "This tenant requires MFA of owners and admins: turn it on with "
        "POST /v1/auth/mfa/setup and /v1/auth/mfa/verify first."
    )


class TenantSuspended(PermissionDenied):
    code, default_message = "TENANT_SUSPENDED", "This tenant is suspended."


class UserSuspended(PermissionDenied):
    code, default_message = "USER_SUSPENDED", "This account is suspended."


class SignupDisabled(PermissionDenied):
    code, default_message = "SIGNUP_DISABLED", "Self-signup is turned off on this server."


class NotFound(ApiError):
    status, code, default_message = 404, "RESOURCE_NOT_FOUND", "The resource does not exist."


class MethodNotAllowed(ApiError):
    status, code, default_message = 405, "METHOD_NOT_ALLOWED", "The method is not allowed on this path."


class Conflict(ApiError):
    status, code, default_message = 409, "CONFLICT", "The request conflicts with the current state."


class IdempotencyInProgress(Conflict):
    code = "IDEMPOTENCY_IN_PROGRESS"
    default_message = "A request with this Idempotency-Key is still running; retry when it has finished."


class PayloadTooLarge(ApiError):
    status, code, default_message = 413, "PAYLOAD_TOO_LARGE", "The request body is too large."


class UnsupportedMediaType(ApiError):
    status, code, default_message = 415, "UNSUPPORTED_MEDIA_TYPE", "Send the body as application/json."


class MfaChannelUnavailable(ApiError):
    status, code = 422, "MFA_CHANNEL_UNAVAILABLE"
    default_message = "This kind of second factor has no delivery channel yet; use totp."


class MfaCodeRejected(ApiError):
    """A wrong MFA code where the caller is already signed in (turning MFA on or off): the token is
    fine, so no 401 and no WWW-Authenticate, which clients read as "refresh the token"."""

    status, code = 422, "MFA_CODE_REJECTED"
    default_message = "The MFA code is wrong, expired or was used already; nothing was changed."


class UrlNotAllowed(ApiError):
    status, code = 422, "URL_NOT_ALLOWED"
    default_message = (
        "A URL may not be called: it must be http or https, without credentials, and not "
        "resolve to a private, loopback or link-local address (unless the server's operator admits its "
        "range with TENANTRY_OUTBOUND_ALLOWLIST)."
    )


class IdempotencyKeyReused(ApiError):
    status, code = 422, "IDEMPOTENCY_KEY_REUSED"
    default_message = "This Idempotency-Key was used with a different request; use a new key."


class TooManyAttempts(ApiError):
    status, code, default_message = 429, "RATE_LIMIT_EXCEEDED", "Too many attempts; retry later."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class ServiceUnavailable(ApiError):
    status, code, default_message = 503, "SERVICE_UNAVAILABLE", "The service is unavailable."


#: Seconds a client waits before retrying a request that found the database busy.
BUSY_RETRY_AFTER = 1


class DatabaseBusy(ServiceUnavailable):
    """The database is up but another transaction held what this one needed for longer than the
    busy timeout (SQLite's write lock, a PostgreSQL row lock or deadlock): nothing was written,
    and the same request may simply be sent again."""

    code = "DATABASE_BUSY"
    default_message = "The database is busy with other writes; nothing was changed. Retry shortly."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(BUSY_RETRY_AFTER)})


class DeadlineExceeded(ApiError):
    """The request ran past its operation's time limit: it was answered 504 and nothing it did was kept."""

    status, code = 504, "GATEWAY_TIMEOUT"
    default_message = "The request took longer than its time limit; nothing was changed. Retry it, or send less."


#: SQLSTATEs of PostgreSQL errors that mean contention, not failure: lock_not_available,
#: deadlock_detected, serialization_failure. Retrying the whole request is the remedy for each.
_PG_CONTENTION = frozenset({"55P03", "40P01", "40001"})


def is_contention(exc: BaseException) -> bool:
    """True when a database error (peewee's, wrapping the driver's) is lock contention, not an outage:
    SQLite's "database is locked"/"database is busy" (SQLITE_BUSY or SQLITE_LOCKED, after the busy
    timeout), or a PostgreSQL lock timeout, deadlock or serialization failure."""
    original = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    pgcode = getattr(original, "pgcode", None)
    if pgcode is not None:
        return pgcode in _PG_CONTENTION
    name = getattr(original, "sqlite_errorname", None)  # Python 3.11+
    if name is not None:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    message = str(original)
    return message.startswith(("database is locked", "database is busy", "database table is locked"))


#: Code for a bare HTTP status, for errors that arrive without one of ours.
STATUS_CODES: dict[int, tuple[str, str]] = {
    400: ("VALIDATION_ERROR", "The request is invalid."),
    401: ("AUTHENTICATION_FAILED", "Authentication credentials are missing or invalid."),
    403: ("PERMISSION_DENIED", "You do not have permission to do this."),
    404: ("RESOURCE_NOT_FOUND", "The resource does not exist."),
    405: ("METHOD_NOT_ALLOWED", "The method is not allowed on this path."),
    406: ("VALIDATION_ERROR", "The server cannot produce the requested media type."),
    409: ("CONFLICT", "The request conflicts with the current state."),
    413: ("PAYLOAD_TOO_LARGE", "The request body is too large."),
    414: ("URI_TOO_LONG", "The URL is too long."),
    415: ("UNSUPPORTED_MEDIA_TYPE", "Send the body as application/json."),
    422: ("VALIDATION_ERROR", "The request cannot be carried out as asked."),
    429: ("RATE_LIMIT_EXCEEDED", "Too many requests; retry later."),
    431: ("REQUEST_HEADERS_TOO_LARGE", "The request headers are too large."),
    500: ("INTERNAL_ERROR", "An internal error occurred."),
    503: ("SERVICE_UNAVAILABLE", "The service is unavailable."),
    504: ("GATEWAY_TIMEOUT", "The request took longer than its time limit."),
}


def error_body(
    status: int,
    request_id: str,
    code: str | None = None,
    message: str | None = None,
    details: list[Detail] | None = None,
) -> dict[str, Any]:
    """Returns the error envelope for `status`, filling code and message from the status if absent."""
    fallback_code, fallback_message = STATUS_CODES.get(
        status,
        ("INTERNAL_ERROR", "An internal error occurred.")
        if status >= 500
        else ("VALIDATION_ERROR", "The request is invalid."),
    )
    error: dict[str, Any] = {"code": code or fallback_code, "message": message or fallback_message}
    if details:
        error["details"] = [d.as_dict() for d in details]
    return {"error": error, "meta": {"request_id": request_id, "timestamp": now_rfc3339()}}


def error_response(
    status: int,
    code: str | None = None,
    message: str | None = None,
    details: list[Detail] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """Returns the Flask response carrying the error envelope, for the request being served."""
    from flask import Response, request  # Flask is only needed where a Flask request is served

    body = error_body(status, request.headers.get("X-Request-Id", ""), code, message, details)
    return Response(json.dumps(body), status=status, headers=headers or {}, content_type="application/json")


def api_error_response(exc: ApiError) -> Any:
    """Returns the Flask response for one of our errors."""
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
