"""Inbound integrations: verifying a provider's signed webhook, handling its event, checking providers' health.

A webhook names its provider by id, and nothing else identifies the caller: the signature over
the raw body, made with the provider's secret, is the credential. An unknown or inactive
provider and a missing, stale or wrong signature are refused alike (401), so the answer never
tells which. Signatures are compared in constant time (`hmac.compare_digest`).

- `standard-webhooks` (https://www.standardwebhooks.com): `webhook-signature` holds one or more
  space-separated `v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">`;
  `webhook-timestamp` is Unix seconds within the tolerance of now. A `whsec_<base64>` secret
  signs with its decoded bytes, as the `standardwebhooks` library does; any other secret with
  its UTF-8 bytes (what `Webhook(secret.encode())` signs with).
- `hmac-sha256`: `X-Signature: sha256=<hex HMAC-SHA256 of the body>`, keyed by the secret's UTF-8 bytes.

Health checks call every active provider's health URL at once, each through the outbound guard
(tenantry.outbound), so a tenant's URL can never make the server reach a private address.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.fernet import InvalidToken
from flask import current_app, g, request
from werkzeug.datastructures import Headers

from models import accounts
from models.audit import redact
from models.base import database, use_livemode, utcnow
from models.integration import IntegrationEvent, IntegrationProvider
from models.user import User, normalize_email
from tenantry import audit, events, outbound
from tenantry.db import scope_rows_to
from tenantry.errors import (
    ApiError,
    AuthenticationFailed,
    Detail,
    PermissionDenied,
    ValidationFailed,
    format_datetime,
)
from tenantry.formats import is_email
from tenantry.net import Network, parse_networks
from tenantry.security import unusable_password_hash

log = logging.getLogger("tenantry.integrations")

_REFUSED = "The webhook's signature is missing, stale or invalid, or its provider is unknown or inactive."
_SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks marker of a base64 secret, not a secret
#: A 2xx slower than this is `degraded`, not `healthy`.
SLOW_MS = 1000
_MAX_CONCURRENT_CHECKS = 8
_URL_FIELDS = ("webhook_url", "api_base_url", "health_url")
#: The same rule as the spec's Email schema: what a user's email may be.
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&*+/=?^_{|}~-]+(\.[A-Za-z0-9!#$%&*+/=?^_{|}~-]+)*@"
    r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


def _settings() -> Any:
    return current_app.extensions["tenantry"].settings


# Signatures.


def standard_webhooks_key(secret: str) -> bytes:
    """Returns the HMAC key a Standard Webhooks secret signs with: a `whsec_` secret's decoded bytes,
    else the secret's UTF-8 bytes."""
    if secret.startswith(_SECRET_PREFIX):
        encoded = secret[len(_SECRET_PREFIX) :]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if key:
            return key
    return secret.encode()


def _raw(value: str) -> bytes:
    # Header values reach us decoded as latin-1 (WSGI): encoding them back gives the bytes sent.
    return value.encode("latin-1", errors="replace")


def verify_standard_webhooks(
    secret: str, body: bytes, headers: Mapping[str, str] | Headers, tolerance: int, now: float | None = None
) -> bool:
    """Returns True when one of the `v1` signatures in `webhook-signature` is the body's, and
    `webhook-timestamp` is within `tolerance` seconds of `now`."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        return False
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(
        standard_webhooks_key(secret), _raw(msg_id) + b"." + _raw(timestamp) + b"." + body, hashlib.sha256
    ).digest()
    matched = False
    for candidate in signatures.split(" "):
        version, _, encoded = candidate.partition(",")
        if version != "v1":
            continue  # a later version's signature is not ours to judge
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        matched = hmac.compare_digest(expected, given) or matched
    return matched


def verify_hmac_sha256(secret: str, body: bytes, header: str | None) -> bool:
    """Returns True when `header` is `sha256=<hex HMAC-SHA256 of body>` under `secret`."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, _raw(header[len("sha256=") :].strip().lower()))


def _signed(provider: IntegrationProvider | None, body: bytes, headers: Mapping[str, str] | Headers) -> bool:
    """Returns True when the request carries the active provider's signature.

    Without an active provider the check still runs, against a fresh random secret, so an
    unknown id takes as long to refuse as a wrong signature.
    """
    secret, scheme = secrets.token_urlsafe(32), "standard-webhooks"  # a secret nobody holds
    if provider is not None and provider.is_active:
        try:
            secret, scheme = provider.secret, provider.signature_scheme
        except InvalidToken:  # sealed under an earlier server key: nobody can sign for it now
            log.warning("an integration provider's secret cannot be unsealed", extra={"provider": provider.id})
            provider = None
    if scheme == "hmac-sha256":
        valid = verify_hmac_sha256(secret, body, headers.get("X-Signature"))
    else:
        valid = verify_standard_webhooks(secret, body, headers, _settings().inbound_tolerance)
    return valid and provider is not None and bool(provider.is_active)


def _admits(provider: IntegrationProvider, address: str | None) -> bool:
    """Returns True when the provider has no ranges, or one of them holds `address`."""
    if not provider.allowed_ips:
        return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in parse_networks(provider.allowed_ips))


# Receiving.


def receive(provider_id: str, payload: dict[str, Any], address: str | None) -> tuple[IntegrationEvent, bool]:
    """Verifies the request's webhook and stores and handles its event, once.

    Returns the event and True the first time it is received, or the stored event and False
    for a repeat. Raises AuthenticationFailed (unknown or inactive provider, bad signature),
    PermissionDenied (a signed call from outside the provider's ranges), or ValidationFailed
    (no event id).
    """
    provider = IntegrationProvider.find_inbound(provider_id)
    if not _signed(provider, request.get_data(cache=True), request.headers) or provider is None:
        raise AuthenticationFailed(_REFUSED)
    if not _admits(provider, address):
        raise PermissionDenied("This provider may not call from this address.")
    # The tenant is known now: from here on the database shows this request only its rows
    # (PostgreSQL row-level security; the request's end unscopes it), and the audit entry goes
    # to its chain. Provider data is live data.
    scope_rows_to(provider.tenant_id)
    g.rows_scoped = True
    use_livemode(True)
    event_id = payload.get("id") or payload.get("event_id")
    if not event_id and provider.signature_scheme != "hmac-sha256":
        # The Standard Webhooks signature covers webhook-id; an hmac-sha256 one covers the body
        # alone, so there the id must be in the body, or a replay with a fresh header would pass.
        event_id = request.headers.get("webhook-id")
    if not event_id or len(event_id) > 255:
        raise ValidationFailed(
            "The event has no id of 1 to 255 characters.",
            [
                Detail(
                    "send `id` or `event_id` in the body, or the webhook-id header, of 1 to 255 characters", "event_id"
                )
            ],
        )
    event_type = payload.get("type") or payload.get("event_type") or "unknown"
    event, created = IntegrationEvent.receive(provider, event_id, event_type, payload)
    audit.note(tenant_id=provider.tenant_id, resource_id=event.id)
    if created:
        event.finish(*_handle(provider.tenant_id, event))
        # Only a first receipt is news to the tenant's systems: a repeat changes nothing.
        events.emit(
            provider.tenant_id, "integration_event.received", {"object": redact(event.as_dict())}, livemode=True
        )
    return event, created


class EventRefused(ValueError):
    """The event's data cannot be handled; `str()` says why (stored as the event's error)."""


def _handle(tenant_id: str, event: IntegrationEvent) -> tuple[str, str | None]:
    """Runs the event's handler; returns its status (`processed`, `ignored`, `failed`) and error."""
    handler = HANDLERS.get(event.event_type)
    if handler is None:
        return "ignored", None
    try:
        with database.atomic():  # a savepoint: a failed handler leaves nothing half-written
            handler(tenant_id, event.payload.get("data"))
    except EventRefused as exc:
        return "failed", str(exc)
    except ApiError as exc:  # a model's refusal, such as a conflict
        return "failed", exc.message
    except Exception as exc:  # any other failure is the event's, recorded on it, never the provider's 500
        log.exception("integration event handler failed", extra={"event": event.id})
        return "failed", f"The handler failed: {type(exc).__name__}."
    return "processed", None


def _name(data: dict[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 100 or "\x00" in value:
        raise EventRefused(f"data.{field} must be a name of 1 to 100 characters.")
    return value.strip()


def _upsert_user(tenant_id: str, data: Any) -> None:
    """`user.created`, `user.updated`: creates the tenant's live user with `data.email`, or updates its names.

    A new user is a `member` whose password is random and unknown to anyone (no sign-in until
    one is set); a provider never sets a role.
    """
    if not isinstance(data, dict):
        raise EventRefused("data must be an object with the user's email.")
    email = data.get("email")
    # The pattern, and the `email` format's sizes (a local part of at most 64): what a response may carry.
    if not isinstance(email, str) or len(email) > 254 or not _EMAIL.match(email.strip()) or not is_email(email.strip()):
        raise EventRefused("data.email must be an email address.")
    first, last = _name(data, "first_name"), _name(data, "last_name")
    full = _name(data, "name")
    if full and (first is None or last is None):
        given, _, family = full.partition(" ")
        first, last = first or given, last or (family.strip() or None)
    user = User.for_tenant(tenant_id).where(User.email_normalized == normalize_email(email)).first()
    if user is not None:
        changes = {k: v for k, v in (("first_name", first), ("last_name", last)) if v and getattr(user, k) != v}
        if changes:
            previous = {k: getattr(user, k) for k in changes}
            accounts.change_user(user, changes)
            # The tenant's own systems hear of the change like of any other (same transaction).
            events.emit(
                tenant_id,
                "user.updated",
                {"object": redact(user.as_dict()), "previous_attributes": previous},
                livemode=True,
            )
        return
    if not first or not last:
        raise EventRefused("A new user needs data.first_name and data.last_name, or a data.name of two words.")
    user = User.build(tenant_id, email, unusable_password_hash(), first, last, role="member")
    User.insert_many_checked([user])
    events.emit(tenant_id, "user.created", {"object": redact(user.as_dict())}, livemode=True)


#: The handler of each event type; any other type is stored as `ignored`.
HANDLERS: dict[str, Callable[[str, Any], None]] = {
    "user.created": _upsert_user,
    "user.updated": _upsert_user,
}


# Saving a provider.


def check_urls(fields: Mapping[str, Any]) -> None:
    """Raises UrlNotAllowed naming each URL field the outbound guard would refuse to call."""
    outbound.refuse_uncallable(fields, _URL_FIELDS, _settings().outbound_networks)


# Health.


@dataclass(frozen=True)
class Health:
    """The outcome of one health check."""

    status: str
    http_status: int | None
    response_time_ms: int | None
    error: str | None


def check_one(url: str, timeout: float, allow: tuple[Network, ...]) -> Health:
    """Calls `url` once through the outbound guard; returns its health (see the HealthStatus schema)."""
    start = time.perf_counter()
    try:
        answer = outbound.request(
            "GET", url, timeout=timeout, allow=allow, headers={"User-Agent": "Tenantry-Integrations/1", "Accept": "*/*"}
        )
    except outbound.OutboundRefused as exc:
        return Health("down", None, None, str(exc))  # nothing was called
    except outbound.OutboundFailed as exc:
        return Health("down", None, round((time.perf_counter() - start) * 1000), str(exc))
    elapsed = round(answer.elapsed_ms)
    if 200 <= answer.status < 300:
        if elapsed > SLOW_MS:
            return Health("degraded", answer.status, elapsed, f"Answered in {elapsed} ms, over {SLOW_MS} ms.")
        return Health("healthy", answer.status, elapsed, None)
    if answer.status >= 500:
        return Health("down", answer.status, elapsed, f"Answered HTTP {answer.status}.")
    return Health("degraded", answer.status, elapsed, f"Answered HTTP {answer.status}.")


def check_health(tenant_id: str) -> dict[str, Any]:
    """Checks every active provider of the tenant concurrently, saves each result on its provider,
    and returns the API's IntegrationHealth."""
    settings = _settings()
    allow = settings.outbound_networks
    providers = list(
        IntegrationProvider.for_tenant(tenant_id)
        .where(IntegrationProvider.is_active == True)  # noqa: E712
        .order_by(IntegrationProvider.id)
    )
    checked_at: datetime = utcnow()
    results: list[Health] = []
    if providers:
        # Only the calls run in the pool; the database is used from this request's thread alone.
        with ThreadPoolExecutor(
            max_workers=min(_MAX_CONCURRENT_CHECKS, len(providers)), thread_name_prefix="health"
        ) as pool:
            results = list(
                pool.map(lambda p: check_one(p.check_url, settings.integration_health_timeout, allow), providers)
            )
    out = []
    for provider, health in zip(providers, results, strict=True):
        provider.record_health(health.status, health.response_time_ms, checked_at)
        out.append(
            {
                "provider_id": provider.id,
                "name": provider.name,
                "url": provider.check_url,
                "status": health.status,
                "http_status": health.http_status,
                "response_time_ms": health.response_time_ms,
                "last_checked_at": format_datetime(checked_at),
                "error": health.error[:500] if health.error else None,
            }
        )
    statuses = {health.status for health in results}
    overall = "healthy" if statuses <= {"healthy"} else "down" if statuses == {"down"} else "degraded"
    return {"status": overall, "checked_at": format_datetime(checked_at), "providers": out}
