"""Webhooks: the tenant's endpoints for outbound events, their secrets and deliveries."""

from __future__ import annotations

from typing import Any

from flask import Response

from models.base import current_livemode
from models.webhook import WebhookDelivery, WebhookEndpoint
from services import webhooks
from tenantry import events, outbound
from tenantry.authz import acting_tenant, target
from tenantry.context import settings
from tenantry.envelope import cursor_page, no_content, one, page
from tenantry.errors import Conflict, Detail, ValidationFailed


def _checked_url(url: str) -> str:
    """Returns `url` when outbound calls may go there; a private or reserved address is a 422."""
    outbound.refuse_uncallable({"url": url}, ("url",), settings().outbound_networks)
    return url


def _checked_events(patterns: list[str]) -> list[str]:
    """Returns the patterns without repeats; a 400 naming each that matches no event type of the catalog."""
    unmatched = events.unmatched_patterns(patterns)
    if unmatched:
        raise ValidationFailed(
            "The request body is invalid: some event patterns match no event type.",
            [Detail(f"matches no event type ({pattern})", f"events[{index}]") for index, pattern in unmatched],
        )
    return list(dict.fromkeys(patterns))


def list_webhooks(limit: int = 20, offset: int = 0) -> dict[str, Any]:
    """The tenant's endpoints of the caller's mode, newest first, without secrets."""
    query = WebhookEndpoint.for_tenant(acting_tenant()).order_by(WebhookEndpoint.id.desc())
    return page(query, limit, offset, WebhookEndpoint.as_dict)


def create_webhook(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A new endpoint and its signing secret, shown once (201)."""
    patterns = _checked_events(body["events"])
    endpoint, secret = WebhookEndpoint.make(
        acting_tenant(),
        current_livemode(),
        _checked_url(body["url"]),
        patterns,
        body.get("description"),
        body.get("enabled", True),
    )
    return one({"webhook": endpoint.as_dict(), "secret": secret}, 201, location=f"/v1/webhooks/{endpoint.id}")


def get_webhook(webhook_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One endpoint, without its secret."""
    return one(target().as_dict())


def update_webhook(webhook_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The endpoint with the sent fields changed."""
    fields = dict(body)
    if "events" in fields:
        fields["events"] = _checked_events(fields["events"])
    if "url" in fields:
        _checked_url(fields["url"])
    endpoint = target()
    endpoint.change(fields)
    return one(endpoint.as_dict())


def delete_webhook(webhook_id: str) -> Response:
    """Removes the endpoint and its deliveries (204)."""
    target().delete_instance()
    return no_content()


def rotate_webhook_secret(webhook_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A new signing secret, shown once; the old one signs beside it for 24 hours."""
    endpoint = target()
    secret = endpoint.rotate()
    return one({"webhook": endpoint.as_dict(), "secret": secret})


def test_webhook(webhook_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Queues a `webhook.test` event for this endpoint alone; answers the delivery (202)."""
    endpoint = target()
    if not endpoint.enabled:
        raise Conflict("The endpoint is disabled: enable it first.")
    event = events.emit(
        endpoint.tenant_id,
        "webhook.test",
        {"object": {"id": endpoint.id, "url": endpoint.url}},
        livemode=bool(endpoint.livemode),
    )
    webhooks.queue_test(endpoint, event)
    return one(WebhookDelivery.of_event(endpoint, event.id).as_dict([]), 202)


def list_deliveries(
    webhook_id: str, status: str | None = None, limit: int = 20, starting_after: str | None = None
) -> dict[str, Any]:
    """The endpoint's deliveries with their attempts, newest first, a cursor page at a time."""
    deliveries, has_more = WebhookDelivery.page(target(), limit, starting_after, status)
    return cursor_page([d.as_dict() for d in deliveries], limit, has_more)


def get_delivery(webhook_id: str, delivery_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One of the endpoint's deliveries, with its attempts (404 for another endpoint's or tenant's)."""
    return one(WebhookDelivery.of_endpoint(target(), delivery_id).as_dict())


def retry_delivery(webhook_id: str, delivery_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Makes the delivery's next attempt now (202)."""
    delivery = WebhookDelivery.of_endpoint(target(), delivery_id)
    webhooks.retry(delivery)
    return one(delivery.as_dict(), 202)
