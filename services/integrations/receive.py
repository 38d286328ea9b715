"""Receiving an inbound webhook: the provider's signature is the credential, the event is stored and handled once.

A webhook names its provider by id, and nothing else identifies the caller: the signature over
the raw body, made with the provider's secret, is the credential. An unknown or inactive
provider and a missing, stale or wrong signature are refused alike (401), so the answer never
tells which.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import InvalidToken
from flask import g, request
from werkzeug.datastructures import Headers

from models.audit import redact
from models.base import database, use_livemode
from models.integration import IntegrationEvent, IntegrationProvider
from services.integrations.settings import IntegrationSettings
from services.integrations.signatures import verify_hmac_sha256, verify_standard_webhooks
from services.integrations.users import HANDLERS, EventRefused
from tenantry import audit, events
from tenantry.context import settings
from tenantry.db import scope_rows_to
from tenantry.errors import ApiError, AuthenticationFailed, Detail, PermissionDenied, ValidationFailed
from tenantry.net import parse_networks

log = logging.getLogger("tenantry.integrations")

_REFUSED = "The webhook's signature is missing, stale or invalid, or its provider is unknown or inactive."


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
        valid = verify_standard_webhooks(
            secret, body, headers, settings().section(IntegrationSettings).inbound_tolerance
        )
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
