"""Webhook delivery as a job: the Standard Webhooks signature, the `webhook.deliver` job, the disable policy.

Every attempt at a delivery (models.webhook.WebhookDelivery, the API's record) is one run of a
job of kind `webhook.deliver` (payload: the delivery's id), so deliveries share the job layer's
queue, leases, retries and dead letters (tenantry.jobs):

- a 2xx within the timeout is success;
- 410 Gone disables the endpoint (the receiver says it is gone for good) and ends the delivery;
- anything else fails the attempt: the job layer retries it after the next delay of
  TENANTRY_WEBHOOK_RETRY_SCHEDULE (with up to 20% jitter), and after the last one
  (`on_exhausted`) the delivery is failed and a `webhook.delivery_failed` event says so;
- an endpoint whose every attempt failed for TENANTRY_WEBHOOK_DISABLE_AFTER is disabled when a
  delivery to it is exhausted (`webhook.disabled`).

At least once, never lost: a worker killed mid-delivery leaves a lease that lapses, and any
worker takes the job again (the lost attempt counts). The delivery's own record is written only
while the job's lease is held (`JobContext.holds_lease`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from models.base import database, utcnow
from models.event import Event
from models.job import ACTIVE, Job
from models.webhook import DELIVERY_JOB, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from services.webhooks.settings import WebhookSettings
from tenantry import events, jobs, outbound
from tenantry.crypto import standard_webhooks_key
from tenantry.errors import Conflict
from tenantry.ids import new_id
from tenantry.jobs import JobContext, JobError, JobKind
from tenantry.settings import Settings

log = logging.getLogger("tenantry.webhooks")


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Returns a Standard Webhooks signature: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`.

    `secret` is `whsec_` + base64 of the key bytes, read by the one decoder inbound checks use too.
    """
    key = standard_webhooks_key(secret)
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _locked(query: Any) -> Any:
    return query.for_update() if database.for_update else query


@dataclass(frozen=True)
class Deliver:
    """The `webhook.deliver` job: one attempt at one delivery (a value: equal for equal settings)."""

    settings: Settings

    def __call__(self, ctx: JobContext) -> dict[str, Any] | None:
        """Sends the delivery once and records the attempt; returns {"status_code"} on a 2xx.

        Raises JobError with the attempt's error otherwise (retry=False when nothing can help:
        410, a disabled endpoint, a purged event).
        """
        delivery = WebhookDelivery.get_or_none(
            (WebhookDelivery.tenant_id == ctx.job.tenant_id) & (WebhookDelivery.id == ctx.payload["delivery_id"])
        )
        if delivery is None:
            return None  # deleted with its endpoint, or purged: nothing left to deliver
        endpoint = WebhookEndpoint.get_or_none(WebhookEndpoint.id == delivery.endpoint_id)
        if endpoint is None:
            return None
        event = Event.get_or_none(Event.id == delivery.event_id)
        if event is None:
            self._unsent(ctx, delivery, "The event was purged before it could be delivered.")
        if not endpoint.enabled:
            self._unsent(ctx, delivery, "The endpoint is disabled.")
        if delivery.status != "pending":
            # Its job was retried through the jobs API after the delivery had ended (dead, or
            # cancelled): the delivery is pending again while the job tries, as after its own retry.
            with database.atomic():
                if ctx.holds_lease():
                    delivery.reopen(ctx.now)
        body = json.dumps(event.as_dict(), separators=(",", ":")).encode()
        started = ctx.now
        # The signature's timestamp is the wall clock's, whatever clock drives the worker: the
        # receiver checks it against its own.
        timestamp = int(time.time())
        signatures = " ".join(sign(s, delivery.id, timestamp, body) for s in endpoint.signing_secrets(utcnow()))
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
                timeout=self.settings.section(WebhookSettings).timeout,
                allow=self.settings.outbound_networks,
            )
            status_code, answer = response.status, response.body[:1024].decode("utf-8", "replace")
            if not 200 <= status_code < 300:
                error = f"The endpoint answered {status_code}."
        except (outbound.OutboundRefused, outbound.OutboundFailed) as exc:
            error = str(exc)[:500]
        duration_ms = int((time.perf_counter() - clock) * 1000)
        self._record(ctx, delivery.id, endpoint.id, started, duration_ms, status_code, error, answer)
        log.info(
            "delivery attempt",
            extra={
                "delivery_id": delivery.id,
                "endpoint_id": endpoint.id,
                "attempt": ctx.job.attempt,
                "status_code": status_code,
                "outcome": "succeeded" if error is None else "failed",
            },
        )
        if error is not None:
            raise JobError(error, retry=status_code != 410)
        return {"status_code": status_code}

    def _unsent(self, ctx: JobContext, delivery: WebhookDelivery, reason: str) -> NoReturn:
        with database.atomic():
            if ctx.holds_lease():
                WebhookDelivery.update(status="failed", last_error=reason, completed_at=ctx.now).where(
                    (WebhookDelivery.id == delivery.id) & (WebhookDelivery.status == "pending")
                ).execute()
        raise JobError(reason, retry=False)

    def _record(
        self,
        ctx: JobContext,
        delivery_id: str,
        endpoint_id: str,
        started: datetime,
        duration_ms: int,
        status_code: int | None,
        error: str | None,
        answer: str | None,
    ) -> None:
        """Writes the attempt and the delivery's state in one transaction, if the job's lease is still held.

        Rows are locked job first, then endpoint, then delivery: the order the job layer's own
        record takes them in (the job, then `on_exhausted`'s endpoint and delivery), and a deletion
        of the endpoint takes the endpoint before its deliveries, so none of them deadlock. Only
        the columns meant are written, never a stale copy of the endpoint over a tenant's change.
        """
        now = ctx.now
        with database.atomic():
            held = ctx.holds_lease()
            endpoint = _locked(WebhookEndpoint.select().where(WebhookEndpoint.id == endpoint_id)).get_or_none()
            delivery = _locked(WebhookDelivery.select().where(WebhookDelivery.id == delivery_id)).get_or_none()
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
            if not held:
                # The lease lapsed and another worker holds the job now: the attempt happened and
                # is on record, but the delivery's state is the other worker's to write.
                log.warning("lease lost before the result was written", extra={"delivery_id": delivery_id})
                return
            state: dict[str, Any] = {"attempt_count": number, "last_status_code": status_code, "last_error": error}
            if error is None:
                state.update(status="succeeded", completed_at=now, next_attempt_at=None)
                if endpoint.failing_since is not None:
                    endpoint.set_failing_since(None)
            elif status_code == 410:
                state.update(status="failed", completed_at=now, next_attempt_at=None)
                if endpoint.enabled:
                    disable(endpoint, "gone")
            elif endpoint.failing_since is None:
                endpoint.set_failing_since(now)
            WebhookDelivery.update(**state).where(WebhookDelivery.id == delivery.id).execute()


@dataclass(frozen=True)
class Exhausted:
    """`on_exhausted` of `webhook.deliver`: the delivery failed for good (in the job's dead-letter transaction)."""

    settings: Settings

    def __call__(self, job: Job) -> None:
        """Fails the delivery, disables an endpoint failing for too long, and emits `webhook.delivery_failed`.

        A delivery already ended by its job (410, a disabled endpoint, a purged event) is left as it is.
        """
        now = job.finished_at or utcnow()
        delivery = WebhookDelivery.get_or_none(
            (WebhookDelivery.tenant_id == job.tenant_id) & (WebhookDelivery.id == job.payload["delivery_id"])
        )
        if delivery is None or delivery.status != "pending":
            return
        endpoint = _locked(WebhookEndpoint.select().where(WebhookEndpoint.id == delivery.endpoint_id)).get_or_none()
        if endpoint is None:
            return
        WebhookDelivery.update(status="failed", completed_at=now, next_attempt_at=None).where(
            WebhookDelivery.id == delivery.id
        ).execute()
        # An endpoint is disabled for failing only when a delivery has used up every retry and
        # nothing has succeeded for the whole limit (days by default).
        if (
            endpoint.enabled
            and endpoint.failing_since is not None
            and (now - endpoint.failing_since).total_seconds() >= self.settings.section(WebhookSettings).disable_after
        ):
            disable(endpoint, "failing")
        events.emit(
            endpoint.tenant_id,
            "webhook.delivery_failed",
            {"object": WebhookDelivery.get_by_id(delivery.id).as_dict()},
            livemode=bool(endpoint.livemode),
        )


def rescheduled(job: Job) -> None:
    """`on_retry` of `webhook.deliver`: the delivery shows its next attempt's time (the job's retry time)."""
    WebhookDelivery.update(next_attempt_at=job.run_at).where(
        (WebhookDelivery.tenant_id == job.tenant_id)
        & (WebhookDelivery.id == job.payload["delivery_id"])
        & (WebhookDelivery.status == "pending")
    ).execute()


#: The error of a delivery whose job was cancelled (through the jobs API).
CANCELLED = "The delivery's job was cancelled."


def cancelled(job: Job) -> None:
    """`on_cancelled` of `webhook.deliver`: the pending delivery ends `failed` (a delivery retry sends it again)."""
    WebhookDelivery.update(
        status="failed", last_error=CANCELLED, completed_at=job.finished_at or utcnow(), next_attempt_at=None
    ).where(
        (WebhookDelivery.tenant_id == job.tenant_id)
        & (WebhookDelivery.id == job.payload["delivery_id"])
        & (WebhookDelivery.status == "pending")
    ).execute()


def disable(endpoint: WebhookEndpoint, reason: str) -> None:
    """Disables the endpoint (`gone`: it answered 410; `failing`: failing too long); emits `webhook.disabled`."""
    endpoint.disable(reason)
    events.emit(
        endpoint.tenant_id,
        "webhook.disabled",
        {"object": endpoint.as_dict()},
        livemode=bool(endpoint.livemode),
    )
    log.warning("webhook endpoint disabled", extra={"endpoint_id": endpoint.id, "reason": reason})


def delivery_kind(settings: Settings) -> JobKind:
    """Returns the `webhook.deliver` kind for these settings: their retry schedule, timeout and lease.

    The job's timeout is the HTTP timeout and a second for signing and recording; settings hold
    the lease at least two seconds above the HTTP timeout, so the lease still exceeds it.
    """
    section = settings.section(WebhookSettings)
    return JobKind(
        DELIVERY_JOB,
        Deliver(settings),
        retry=tuple(float(s) for s in section.retry_schedule),
        timeout=section.timeout + 1,
        lease=float(max(section.lease, section.timeout + 2)),
        on_exhausted=Exhausted(settings),
        on_retry=rescheduled,
        on_cancelled=cancelled,
    )


def queue(event: Event, endpoints: list[WebhookEndpoint]) -> None:
    """Queues the event for each endpoint, due now, each with the job that delivers it (in the
    caller's transaction: a rolled-back change sends nothing)."""
    for delivery_id in WebhookDelivery.queue(event, endpoints):
        jobs.enqueue(
            DELIVERY_JOB,
            {"delivery_id": delivery_id},
            tenant_id=event.tenant_id,
            livemode=bool(event.livemode),
            resource=("webhook_delivery", delivery_id),
            unique_key=delivery_id,
        )


def retry(delivery: WebhookDelivery) -> None:
    """Schedules an attempt now; a delivery that had finished gets exactly one more attempt.

    The delivery's job is locked first (the order the worker takes them in): a job running now is
    a 409; one waiting for its retry is made due now; a finished delivery gets a new job of one
    attempt. The delivery changes by one conditional update: if a worker recorded an attempt since
    it was read, the row no longer matches and the retry is a 409, never a stale copy written over
    its result.
    """
    busy = "The delivery is being attempted right now; retry when it has finished."
    now = utcnow()
    finished = delivery.status != "pending"
    with database.atomic():
        job = _locked(
            Job.select().where(
                (Job.tenant_id == delivery.tenant_id)
                & (Job.resource_type == "webhook_delivery")
                & (Job.resource_id == delivery.id)
                & (Job.kind == DELIVERY_JOB)
                & Job.status.in_(ACTIVE)
            )
        ).first()
        if job is not None and job.status == "running":
            raise Conflict(busy)
        if not delivery.reopen(now):
            raise Conflict(busy)
        if job is not None:
            Job.update(run_at=now, updated_at=now).where(Job.id == job.id).execute()
        elif (
            jobs.enqueue(
                DELIVERY_JOB,
                {"delivery_id": delivery.id},
                tenant_id=delivery.tenant_id,
                resource=("webhook_delivery", delivery.id),
                unique_key=delivery.id,
                max_attempts=1 if finished else None,
            )
            is None
        ):
            raise Conflict(busy)


def purge_finished(older_than: datetime) -> int:
    """Removes finished deliveries (succeeded or failed, with their attempts) queued before `older_than`;
    returns how many."""
    with database.atomic():
        return int(
            WebhookDelivery.delete()
            .where((WebhookDelivery.created_at < older_than) & (WebhookDelivery.status != "pending"))
            .execute()
        )
