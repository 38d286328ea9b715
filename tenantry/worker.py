"""`tenantry worker`: delivers queued webhook deliveries, signed the Standard Webhooks way.

The worker leases due deliveries (models.webhook.WebhookDelivery.claim), sends each from a
small thread pool through the SSRF guard (tenantry.outbound), and records every attempt:

- a 2xx within the timeout is success;
- 410 Gone disables the endpoint (the receiver says it is gone for good);
- anything else is retried after the next delay of TENANTRY_WEBHOOK_RETRY_SCHEDULE, with up to
  20% jitter so that many failed deliveries do not come back at the same moment; after the
  last retry the delivery is failed and a `webhook.delivery_failed` event says so;
- an endpoint whose every attempt failed for TENANTRY_WEBHOOK_DISABLE_AFTER is disabled.

At least once, never lost: a worker killed mid-batch leaves leases that lapse, and any worker
takes the deliveries again. A result is written only while its worker still holds the lease.
On PostgreSQL any number of workers share the queue (FOR UPDATE SKIP LOCKED); on SQLite one
worker runs per database file, held by a file lock.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import IO

from models.base import database, utcnow
from models.event import Event
from models.webhook import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tenantry import events, outbound
from tenantry.db import drop_connection
from tenantry.ids import new_id
from tenantry.settings import Settings

log = logging.getLogger("tenantry.worker")

POLL_S = 0.25
JITTER = 0.2


class WorkerLocked(RuntimeError):
    """Another worker already runs on this SQLite database."""


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Returns a Standard Webhooks signature: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`.

    `secret` is `whsec_` + base64 of the key bytes, as the standardwebhooks library reads it.
    """
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class DeliveryWorker:
    """Takes due deliveries from the queue and sends them, until stopped."""

    def __init__(self, settings: Settings, concurrency: int = 8) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:64]
        self.stopping = threading.Event()
        self._lock_file: IO[str] | None = None

    def hold_sqlite_lock(self) -> None:
        """On SQLite, takes the database's worker lock; raises WorkerLocked when another worker has it."""
        if not self.settings.is_sqlite:
            return
        path = Path(self.settings.database_url.removeprefix("sqlite:///") + ".worker.lock")
        handle = path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise WorkerLocked(
                f"another worker holds {path}: on SQLite one worker runs per database (use PostgreSQL for more)"
            ) from None
        self._lock_file = handle

    def run(self) -> None:
        """Delivers until `stopping` is set; then lets the deliveries in flight finish."""
        in_flight: dict[Future[None], str] = {}
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="deliver") as pool:
            while not self.stopping.is_set():
                in_flight = {f: d for f, d in in_flight.items() if not f.done()}
                free = self.concurrency - len(in_flight)
                claimed = []
                if free > 0:
                    try:
                        # Never a delivery this process still has in hand, even if its lease lapsed.
                        claimed = WebhookDelivery.claim(
                            self.owner, free, self.settings.webhook_lease, exclude=set(in_flight.values())
                        )
                    except Exception:
                        log.exception("could not claim deliveries; retrying")
                        drop_connection()
                for delivery in claimed:
                    in_flight[pool.submit(self._safely, delivery.id)] = delivery.id
                if not claimed:
                    self.stopping.wait(POLL_S)
        log.info("worker stopped", extra={"owner": self.owner})

    def run_once(self) -> int:
        """Claims and delivers what is due now, waiting for each; returns how many were attempted."""
        claimed = WebhookDelivery.claim(self.owner, self.concurrency, self.settings.webhook_lease)
        for delivery in claimed:
            self._safely(delivery.id)
        return len(claimed)

    def _safely(self, delivery_id: str) -> None:
        try:
            self.deliver(delivery_id)
        except Exception:
            # The lease lapses and the delivery is taken again: nothing is lost.
            log.exception("delivery failed inside the worker", extra={"delivery_id": delivery_id})
            drop_connection()

    def deliver(self, delivery_id: str) -> None:
        """Makes one attempt at a leased delivery and records it."""
        delivery = WebhookDelivery.get_or_none(WebhookDelivery.id == delivery_id)
        if delivery is None or delivery.lease_owner != self.owner:
            return
        endpoint = WebhookEndpoint.get_or_none(WebhookEndpoint.id == delivery.endpoint_id)
        event = Event.get_or_none(Event.id == delivery.event_id)
        if endpoint is None:
            return  # deleted with its endpoint (cascade) while leased
        if event is None:
            self._finish_unsent(delivery, "The event was purged before it could be delivered.")
            return
        if not endpoint.enabled:
            self._finish_unsent(delivery, "The endpoint is disabled.")
            return
        body = json.dumps(event.as_dict(), separators=(",", ":")).encode()
        started = utcnow()
        timestamp = int(time.time())
        signatures = " ".join(sign(s, delivery.id, timestamp, body) for s in endpoint.signing_secrets(started))
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures,
        }
        status_code, error, answer, clock = None, None, None, time.perf_counter()
        try:
            response = outbound.request(
                "POST",
                endpoint.url,
                body=body,
                headers=headers,
                timeout=self.settings.webhook_timeout,
                allow=self.settings.outbound_networks,
            )
            status_code, answer = response.status, response.body[:1024].decode("utf-8", "replace")
            if not 200 <= status_code < 300:
                error = f"The endpoint answered {status_code}."
        except (outbound.OutboundRefused, outbound.OutboundFailed) as exc:
            error = str(exc)[:500]
        duration_ms = int((time.perf_counter() - clock) * 1000)
        self._record(delivery.id, endpoint.id, started, duration_ms, status_code, error, answer)

    def _finish_unsent(self, delivery: WebhookDelivery, reason: str) -> None:
        with database.atomic():
            WebhookDelivery.update(
                status="failed", last_error=reason, completed_at=utcnow(), lease_until=None, lease_owner=None
            ).where((WebhookDelivery.id == delivery.id) & (WebhookDelivery.lease_owner == self.owner)).execute()

    def _record(
        self,
        delivery_id: str,
        endpoint_id: str,
        started: object,
        duration_ms: int,
        status_code: int | None,
        error: str | None,
        answer: str | None,
    ) -> None:
        """Writes the attempt and the delivery's next state in one transaction, if the lease is still ours.

        The endpoint row is locked before the delivery's, the order a deletion of the endpoint
        takes them in (its cascade reaches the deliveries), so the two never deadlock; and only
        the columns meant are written, never a stale copy of the endpoint over a tenant's change.
        """
        schedule = self.settings.webhook_retry_schedule
        now = utcnow()
        with database.atomic():
            endpoint_query = WebhookEndpoint.select().where(WebhookEndpoint.id == endpoint_id)
            query = WebhookDelivery.select().where(WebhookDelivery.id == delivery_id)
            if database.for_update:
                endpoint_query, query = endpoint_query.for_update(), query.for_update()
            endpoint = endpoint_query.get_or_none()
            delivery = query.get_or_none()
            if endpoint is None or delivery is None:
                return  # the endpoint was deleted meanwhile, and its deliveries with it
            number = delivery.attempt_count + 1
            WebhookAttempt.create(
                id=new_id("wha"),
                tenant_id=delivery.tenant_id,
                delivery_id=delivery.id,
                number=number,
                started_at=started,
                duration_ms=duration_ms,
                status_code=status_code,
                succeeded=error is None,
                error=error,
                response_body=answer,
            )
            if delivery.lease_owner != self.owner:
                # Our lease lapsed and another worker holds the delivery now: the attempt happened
                # and is on record, but its state is the other worker's to write.
                log.warning("lease lost before the result was written", extra={"delivery_id": delivery_id})
                return
            state: dict[str, object] = {
                "attempt_count": number,
                "last_status_code": status_code,
                "last_error": error,
                "lease_until": None,
                "lease_owner": None,
            }
            if error is None:
                state.update(status="succeeded", completed_at=now)
                if endpoint.failing_since is not None:
                    endpoint.set_failing_since(None)
            elif status_code == 410:
                state.update(status="failed", completed_at=now)
                if endpoint.enabled:
                    self._disable(endpoint, "gone")
            else:
                if endpoint.failing_since is None:
                    endpoint.set_failing_since(now)
                retries_used = number - 1
                if delivery.final_attempt or retries_used >= len(schedule):
                    state.update(status="failed", completed_at=now)
                    # An endpoint is disabled for failing only when a delivery has used up every
                    # retry and nothing has succeeded for the whole limit (days by default).
                    if (
                        endpoint.enabled
                        and endpoint.failing_since is not None
                        and (now - endpoint.failing_since).total_seconds() >= self.settings.webhook_disable_after
                    ):
                        self._disable(endpoint, "failing")
                else:
                    delay = schedule[retries_used] * (1 + random.uniform(0, JITTER))  # noqa: S311 (jitter, not a secret)
                    state["next_attempt_at"] = now + timedelta(seconds=delay)
            WebhookDelivery.update(**state).where(WebhookDelivery.id == delivery.id).execute()
            if state.get("status") == "failed" and status_code != 410:
                delivery = WebhookDelivery.get_by_id(delivery.id)
                events.emit(
                    delivery.tenant_id,
                    "webhook.delivery_failed",
                    {"object": delivery.as_dict()},
                    livemode=bool(endpoint.livemode),
                    skip_endpoint=endpoint_id,
                )
            log.info(
                "delivery attempt",
                extra={
                    "delivery_id": delivery_id,
                    "endpoint_id": endpoint_id,
                    "attempt": number,
                    "status_code": status_code,
                    "outcome": "succeeded" if error is None else "failed",
                },
            )

    def _disable(self, endpoint: WebhookEndpoint, reason: str) -> None:
        endpoint.disable(reason)
        events.emit(
            endpoint.tenant_id,
            "webhook.disabled",
            {"object": endpoint.as_dict()},
            livemode=bool(endpoint.livemode),
            skip_endpoint=endpoint.id,
        )
        log.warning("webhook endpoint disabled", extra={"endpoint_id": endpoint.id, "reason": reason})
