"""The webhooks plug-in: every event the tenant's endpoints subscribe to becomes a queued delivery.

`fan_out` is an event subscriber: it runs in the event's transaction and queues one delivery per
enabled endpoint of the tenant and mode whose patterns match the type, so a delivery exists
exactly when its event does. An endpoint is never told about its own failure (`webhook.disabled`
of itself, `webhook.delivery_failed` of one of its deliveries: it could not take it anyway). The
test ping (`webhook.test`) goes to the one endpoint pinged, through `queue_test`, never to the others.
"""

from __future__ import annotations

from typing import Any

from models.event import Event
from models.webhook import WebhookDelivery, WebhookEndpoint
from services.webhooks import delivery
from services.webhooks.settings import WebhookSettings
from tenantry.host import Host
from tenantry.jobs import JobKind, Periodic
from tenantry.settings import Settings

#: The event type of a test ping: delivered by `queue_test` alone.
TEST_EVENT = "webhook.test"


def _own_endpoint(event: Event) -> str | None:
    """Returns the id of the endpoint the event reports a failure of (it is not told), or None."""
    changed = (event.data or {}).get("object") or {}
    if not isinstance(changed, dict):
        return None
    if event.type == "webhook.disabled":
        return changed.get("id")
    if event.type == "webhook.delivery_failed":
        return changed.get("endpoint_id")
    return None


def fan_out(event: Event) -> None:
    """Queues the event for each of the tenant's enabled endpoints of its mode that subscribe to its type."""
    if event.type == TEST_EVENT:
        return
    own = _own_endpoint(event)
    endpoints = WebhookEndpoint.subscribed(event.tenant_id, bool(event.livemode), event.type)
    delivery.queue(event, [endpoint for endpoint in endpoints if endpoint.id != own])


def queue_test(endpoint: WebhookEndpoint, event: Event) -> None:
    """Queues the test ping `event` for `endpoint` alone, whatever its patterns (in the caller's transaction)."""
    delivery.queue(event, [endpoint])


def pending_event_ids() -> Any:
    """Returns a query of the ids of events a pending delivery still needs (the events purge keeps them)."""
    return WebhookDelivery.select(WebhookDelivery.event_id).where(WebhookDelivery.status == "pending")


#: Removes finished deliveries queued before a moment (`tenantry events purge`, the periodic purge).
purge_finished = delivery.purge_finished
retry = delivery.retry


def _configure(settings: Settings) -> list[JobKind | Periodic]:
    """The jobs that depend on the settings read at start: delivery (its retry schedule, timeout and lease)."""
    return [delivery.delivery_kind(settings)]


def register(host: Host) -> None:
    """Adds webhooks to the core: the fan-out subscriber, the events its pending deliveries still
    need, the delivery job and the purge of finished deliveries."""
    host.settings_section(WebhookSettings)
    host.subscribe("*", fan_out)
    host.retain_events(pending_event_ids)
    host.with_settings(_configure)
    # Finished deliveries go with the events they carried (`tenantry events purge`, and the periodic
    # purge when TENANTRY_EVENT_RETENTION is set).
    host.purge_with_events("deliveries", "finished delivery(ies)", delivery.purge_finished)
