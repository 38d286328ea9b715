"""Webhook endpoints, their deliveries and each delivery's attempts.

A delivery is one event on its way to one endpoint; it is queued in the event's own transaction
(models.event), with the job (kind `webhook.deliver`, services.webhooks.delivery) that attempts
it: leases, retries and the dead letter are the job layer's (tenantry.jobs). The delivery stays
the API's record of it. Its `lease_until`/`lease_owner` columns are no longer used.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta
from typing import Any

from peewee import BooleanField, CharField, IntegerField, TextField

from models.base import JSONField, TenantScopedModel, UTCDateTimeField, utcnow
from models.event import Event, matches
from tenantry.crypto import secret_box
from tenantry.errors import NotFound
from tenantry.ids import new_id
from tenantry.times import format_datetime

#: The job kind that attempts a delivery (services.webhooks.delivery registers it).
DELIVERY_JOB = "webhook.deliver"

#: How long a rotated-out signing secret still signs deliveries (beside the new one).
ROTATION_GRACE = timedelta(hours=24)


def new_signing_secret() -> str:
    """Returns a Standard Webhooks signing secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class WebhookEndpoint(TenantScopedModel):
    """Where a tenant wants its events sent, which ones, and the secret that signs them."""

    label = "webhook endpoint"
    api_resource = "webhook"
    mode_scoped = True

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30)
    url = CharField(max_length=2048)
    description = CharField(max_length=500, null=True)
    events = JSONField()
    enabled = BooleanField(default=True)
    livemode = BooleanField(default=True)
    secret = TextField()  # sealed (tenantry.crypto.SecretBox): deliveries need the secret itself
    previous_secret = TextField(null=True)
    previous_expires_at = UTCDateTimeField(null=True)
    disabled_reason = CharField(max_length=32, null=True)
    failing_since = UTCDateTimeField(null=True)
    created_at = UTCDateTimeField(default=utcnow)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "webhook_endpoint"
        only_save_dirty = True  # a tenant's change and the worker's never overwrite each other's columns

    @classmethod
    def make(
        cls, tenant_id: str, livemode: bool, url: str, events: list[str], description: str | None, enabled: bool
    ) -> tuple[WebhookEndpoint, str]:
        """Creates an endpoint; returns it and its signing secret, which is shown this once."""
        secret = new_signing_secret()
        endpoint = cls.create(
            id=new_id("we"),
            tenant_id=tenant_id,
            livemode=livemode,
            url=url,
            events=events,
            description=description,
            enabled=enabled,
            secret=secret_box().seal(secret),
            disabled_reason=None if enabled else "manual",
        )
        return endpoint, secret

    @classmethod
    def subscribed(
        cls, tenant_id: str, livemode: bool, event_type: str, only: str | None = None
    ) -> list[WebhookEndpoint]:
        """Returns the tenant's enabled endpoints of the mode whose patterns match `event_type`
        (or just endpoint `only`, whatever its patterns)."""
        query = cls.select().where((cls.tenant_id == tenant_id) & (cls.livemode == livemode) & cls.enabled)
        if only is not None:
            return list(query.where(cls.id == only))
        return [endpoint for endpoint in query if matches(endpoint.events, event_type)]

    def change(self, fields: dict[str, Any]) -> None:
        """Applies a partial update; enabling clears the reason it was disabled and its failure streak."""
        for name in ("url", "description", "events"):
            if name in fields:
                setattr(self, name, fields[name])
        if "enabled" in fields:
            self.enabled = fields["enabled"]
            self.disabled_reason = None if self.enabled else "manual"
            if self.enabled:
                self.failing_since = None
        self.updated_at = utcnow()
        self.save()

    def rotate(self) -> str:
        """Replaces the signing secret; the old one keeps signing beside it for ROTATION_GRACE. Returns the new one."""
        secret = new_signing_secret()
        self.previous_secret, self.previous_expires_at = self.secret, utcnow() + ROTATION_GRACE
        self.secret = secret_box().seal(secret)
        self.updated_at = utcnow()
        self.save()
        return secret

    def signing_secrets(self, now: datetime) -> list[str]:
        """Returns the secrets a delivery is signed with now: the current one, and the previous in its grace."""
        box = secret_box()
        out = [box.open(self.secret)]
        if self.previous_secret and self.previous_expires_at and self.previous_expires_at > now:
            out.append(box.open(self.previous_secret))
        return out

    def disable(self, reason: str) -> None:
        """Stops deliveries to this endpoint (`gone`: it answered 410; `failing`: it failed for too long).

        Writes only these columns: the worker must never write a stale copy of a tenant's change.
        """
        self.enabled, self.disabled_reason, self.updated_at = False, reason, utcnow()
        type(self).update(enabled=False, disabled_reason=reason, updated_at=self.updated_at).where(
            type(self).id == self.id
        ).execute()

    def set_failing_since(self, moment: datetime | None) -> None:
        """Starts (a time) or ends (None) the endpoint's failure streak, writing that column alone."""
        self.failing_since = moment
        type(self).update(failing_since=moment).where(type(self).id == self.id).execute()

    def as_dict(self) -> dict[str, Any]:
        """Returns the endpoint as the API shows it, never its secret."""
        return {
            "id": self.id,
            "url": self.url,
            "description": self.description,
            "events": self.events,
            "enabled": bool(self.enabled),
            "disabled_reason": self.disabled_reason,
            "livemode": bool(self.livemode),
            "created_at": format_datetime(self.created_at),
            "updated_at": format_datetime(self.updated_at),
            "failing_since": format_datetime(self.failing_since) if self.failing_since else None,
        }


class WebhookDelivery(TenantScopedModel):
    """One event on its way to one endpoint. Its id is the `webhook-id` every attempt sends."""

    label = "delivery"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30)
    endpoint_id = CharField(max_length=30)
    event_id = CharField(max_length=30)
    event_type = CharField(max_length=64)
    status = CharField(max_length=16, default="pending")  # pending | succeeded | failed
    attempt_count = IntegerField(default=0)
    final_attempt = BooleanField(default=False)  # a manual retry of a finished delivery: one attempt only
    next_attempt_at = UTCDateTimeField(null=True)
    lease_until = UTCDateTimeField(null=True)
    lease_owner = CharField(max_length=64, null=True)
    last_status_code = IntegerField(null=True)
    last_error = CharField(max_length=500, null=True)
    created_at = UTCDateTimeField(default=utcnow)
    completed_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "webhook_delivery"
        only_save_dirty = True

    @classmethod
    def queue(cls, event: Event, endpoints: list[WebhookEndpoint]) -> list[str]:
        """Writes a pending delivery of the event for each endpoint (in the caller's transaction);
        returns their ids. The webhooks plug-in enqueues the job that delivers each."""
        now = utcnow()
        rows = [
            {
                "id": new_id("msg"),
                "tenant_id": event.tenant_id,
                "endpoint_id": e.id,
                "event_id": event.id,
                "event_type": event.type,
                "status": "pending",
                "attempt_count": 0,
                "final_attempt": False,
                "next_attempt_at": now,
                "created_at": now,
            }
            for e in endpoints
        ]
        if rows:
            cls.insert_many(rows).execute()
        return [str(row["id"]) for row in rows]

    @classmethod
    def of_endpoint(cls, endpoint: WebhookEndpoint, delivery_id: str) -> WebhookDelivery:
        """Returns the endpoint's delivery with this id, or raises NotFound."""
        row = cls.get_or_none(
            (cls.tenant_id == endpoint.tenant_id) & (cls.endpoint_id == endpoint.id) & (cls.id == delivery_id)
        )
        if row is None:
            raise NotFound("No delivery with this id for this endpoint.")
        return row

    @classmethod
    def of_event(cls, endpoint: WebhookEndpoint, event_id: str) -> WebhookDelivery:
        """Returns the endpoint's delivery of one event (a test ping's), or raises NotFound."""
        row = cls.get_or_none(
            (cls.tenant_id == endpoint.tenant_id) & (cls.endpoint_id == endpoint.id) & (cls.event_id == event_id)
        )
        if row is None:
            raise NotFound("No delivery of this event for this endpoint.")
        return row

    @classmethod
    def page(
        cls, endpoint: WebhookEndpoint, limit: int, starting_after: str | None = None, status: str | None = None
    ) -> tuple[list[WebhookDelivery], bool]:
        """Returns up to `limit` of the endpoint's deliveries, newest first, after the cursor; and whether
        more follow."""
        query = cls.select().where((cls.tenant_id == endpoint.tenant_id) & (cls.endpoint_id == endpoint.id))
        if starting_after is not None:
            query = query.where(cls.id < cls.of_endpoint(endpoint, starting_after).id)
        if status is not None:
            query = query.where(cls.status == status)
        rows = list(query.order_by(cls.id.desc()).limit(limit + 1))
        return rows[:limit], len(rows) > limit

    def reopen(self, now: datetime) -> bool:
        """Makes the delivery pending again, due now (a finished one for exactly one more attempt);
        returns False when a worker recorded an attempt since it was read (nothing written)."""
        cls = type(self)
        final = self.final_attempt or self.status != "pending"
        changed = (
            cls.update(status="pending", next_attempt_at=now, completed_at=None, final_attempt=final)
            .where((cls.id == self.id) & (cls.status == self.status) & (cls.attempt_count == self.attempt_count))
            .execute()
        )
        if changed:
            self.status, self.next_attempt_at, self.completed_at, self.final_attempt = "pending", now, None, final
        return bool(changed)

    def attempts(self) -> list[WebhookAttempt]:
        """Returns this delivery's attempts, first first."""
        return list(
            WebhookAttempt.select()
            .where((WebhookAttempt.tenant_id == self.tenant_id) & (WebhookAttempt.delivery_id == self.id))
            .order_by(WebhookAttempt.number)
        )

    def as_dict(self, attempts: list[WebhookAttempt] | None = None) -> dict[str, Any]:
        """Returns the delivery as the API shows it, with its attempts."""
        return {
            "id": self.id,
            "endpoint_id": self.endpoint_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "status": self.status,
            "attempt_count": self.attempt_count,
            "next_attempt_at": format_datetime(self.next_attempt_at)
            if self.status == "pending" and self.next_attempt_at
            else None,
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "created_at": format_datetime(self.created_at),
            "completed_at": format_datetime(self.completed_at) if self.completed_at else None,
            "attempts": [a.as_dict() for a in (attempts if attempts is not None else self.attempts())],
        }


class WebhookAttempt(TenantScopedModel):
    """One try at a delivery: when, how long, what came back."""

    label = "attempt"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30)
    delivery_id = CharField(max_length=30)
    number = IntegerField()
    started_at = UTCDateTimeField()
    duration_ms = IntegerField()
    status_code = IntegerField(null=True)
    succeeded = BooleanField()
    error = CharField(max_length=500, null=True)
    response_body = TextField(null=True)  # the first KB, for the tenant's debugging

    class Meta:
        table_name = "webhook_attempt"

    def as_dict(self) -> dict[str, Any]:
        """Returns the attempt as the API shows it."""
        return {
            "number": self.number,
            "started_at": format_datetime(self.started_at),
            "duration_ms": self.duration_ms,
            "status_code": self.status_code,
            "status": "succeeded" if self.succeeded else "failed",
            "error": self.error,
            "response_body": self.response_body,
        }
