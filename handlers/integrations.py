"""Integrations: the tenant's inbound providers, the signed webhooks they send, their events and health."""

from __future__ import annotations

from typing import Any

from flask import Response

from models import IntegrationEvent, IntegrationProvider
from models.api_key import normalize_ranges
from services import integrations
from tenantry.authz import acting_tenant, caller_address, current_principal, target
from tenantry.envelope import cursor_page, no_content, one, page
from tenantry.paging import query_moment


def list_providers(limit: int = 20, offset: int = 0) -> dict[str, Any]:
    """The tenant's providers, newest first, without secrets."""
    query = IntegrationProvider.for_tenant(acting_tenant()).order_by(IntegrationProvider.id.desc())
    return page(query, limit, offset, IntegrationProvider.as_dict)


def create_provider(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A new provider (201); its secret is sealed and never answered."""
    integrations.check_urls(body)
    provider = IntegrationProvider.add(
        acting_tenant(), body, body["secret_key"], normalize_ranges(body.get("allowed_ips", [])), current_principal().id
    )
    return one(provider.as_dict(), 201, location=f"/v1/integrations/providers/{provider.id}")


def get_provider(integration_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One provider, without its secret."""
    return one(target().as_dict())


def update_provider(integration_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Changes the given fields; URLs are checked again."""
    integrations.check_urls(body)
    provider = target()
    ranges = normalize_ranges(body["allowed_ips"]) if "allowed_ips" in body else None
    provider.apply_changes(body, body.get("secret_key"), ranges)
    return one(provider.as_dict())


def delete_provider(integration_id: str) -> Response:
    """Deletes the provider and its events (204)."""
    target().delete_with_events()
    return no_content()


def receive_webhook(integration_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A provider's signed event: 202 the first time, 200 for a repeat."""
    event, created = integrations.receive(integration_id, body, caller_address())
    return one(event.as_dict(), 202 if created else 200)


def list_integration_events(
    provider: str | None = None,
    event_type: str | None = None,
    status: str | None = None,
    created_from: str | None = None,
    created_to: str | None = None,
    limit: int = 20,
    starting_after: str | None = None,
) -> dict[str, Any]:
    """The tenant's received events, newest first, a cursor page at a time."""
    events, has_more = IntegrationEvent.page(
        acting_tenant(),
        limit,
        starting_after,
        provider_id=provider,
        event_type=event_type,
        status=status,
        created_from=query_moment(created_from, "created_from"),
        created_to=query_moment(created_to, "created_to"),
    )
    return cursor_page([e.as_dict() for e in events], limit, has_more)


def get_integration_event(integration_event_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One received event of the tenant."""
    return one(IntegrationEvent.get_for_tenant(acting_tenant(), integration_event_id).as_dict())


def check_health() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Every active provider's health, checked now, at once."""
    return one(integrations.check_health(acting_tenant()))
