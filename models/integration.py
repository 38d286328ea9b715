"""Inbound integrations: a tenant's providers (secret sealed at rest) and the events they sent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from peewee import BooleanField, CharField, IntegerField, IntegrityError, TextField

from models.audit import redact
from models.base import JSONField, TenantScopedModel, UTCDateTimeField, database, utcnow
from tenantry.crypto import secret_box
from tenantry.errors import Conflict, Detail, NotFound
from tenantry.ids import new_id
from tenantry.times import format_datetime

#: The fields a create or an update may set directly (the secret and the ranges have their own forms).
_WRITABLE = ("name", "webhook_url", "api_base_url", "health_url", "auth_type", "signature_scheme", "is_active")
EVENT_STATUSES = ("received", "processed", "ignored", "failed")
ERROR_LENGTH = 500


def _name_taken() -> Conflict:
    return Conflict(
        "An integration provider with this name already exists in the tenant.", [Detail("is already taken", "name")]
    )


class IntegrationProvider(TenantScopedModel):
    """A provider that sends one tenant signed webhooks, and the result of its last health check."""

    label = "integration provider"
    api_resource = "integration"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30)
    name = CharField(max_length=100)
    webhook_url = CharField(max_length=2048)
    api_base_url = CharField(max_length=2048)
    health_url = CharField(max_length=2048, null=True)  # null: api_base_url is checked
    auth_type = CharField(max_length=16)
    signature_scheme = CharField(max_length=32)
    secret_sealed = TextField()  # tenantry.crypto.SecretBox: the provider's secret, never plaintext
    is_active = BooleanField(default=True)
    allowed_ips = JSONField()
    created_by = CharField(max_length=30, null=True)
    created_at = UTCDateTimeField(default=utcnow)
    updated_at = UTCDateTimeField(default=utcnow)
    health_status = CharField(max_length=16, null=True)
    last_checked_at = UTCDateTimeField(null=True)
    response_time_ms = IntegerField(null=True)

    class Meta:
        table_name = "integration_provider"

    @classmethod
    def add(
        cls, tenant_id: str, fields: dict[str, Any], secret: str, allowed_ips: list[str], created_by: str | None
    ) -> IntegrationProvider:
        """Creates a provider with `fields` (see _WRITABLE); raises Conflict when the tenant has its name."""
        values = {
            "auth_type": "none",
            "signature_scheme": "standard-webhooks",
            "is_active": True,
            **{k: v for k, v in fields.items() if k in _WRITABLE},
        }
        provider = cls(id=new_id("int"), tenant_id=tenant_id, allowed_ips=allowed_ips, created_by=created_by, **values)
        provider.secret_sealed = secret_box().seal(secret)
        try:
            with database.atomic():  # a savepoint: a taken name must not abort the request's transaction
                provider.save(force_insert=True)
        except IntegrityError:
            raise _name_taken() from None
        return provider

    @classmethod
    def find_inbound(cls, provider_id: str) -> IntegrationProvider | None:
        """Returns the provider with this id in any tenant, or None.

        Only for an inbound webhook, which names the provider before anyone knows the tenant:
        the provider's tenant is the tenant of the call. A primary-key lookup.
        """
        return cls.get_or_none(cls.id == provider_id)

    @property
    def secret(self) -> str:
        """The provider's signing secret, unsealed."""
        return secret_box().open(self.secret_sealed)

    @property
    def check_url(self) -> str:
        """The URL a health check calls: `health_url`, else `api_base_url`."""
        return self.health_url or self.api_base_url

    def apply_changes(
        self, changes: dict[str, Any], secret: str | None = None, allowed_ips: list[str] | None = None
    ) -> None:
        """Applies `changes` (see _WRITABLE), a new secret and new ranges when given; Conflict on a taken name."""
        for name in _WRITABLE:
            if name in changes:
                setattr(self, name, changes[name])
        if secret is not None:
            self.secret_sealed = secret_box().seal(secret)
        if allowed_ips is not None:
            self.allowed_ips = allowed_ips
        self.updated_at = utcnow()
        try:
            with database.atomic():
                self.save()
        except IntegrityError:
            raise _name_taken() from None

    def record_health(self, status: str, response_time_ms: int | None, checked_at: datetime) -> None:
        """Stores the result of a health check (the row's other fields are left as they are)."""
        self.health_status, self.response_time_ms, self.last_checked_at = status, response_time_ms, checked_at
        IntegrationProvider.update(
            health_status=status, response_time_ms=response_time_ms, last_checked_at=checked_at
        ).where(IntegrationProvider.id == self.id).execute()

    def delete_with_events(self) -> None:
        """Deletes the provider and every event it sent, together."""
        with database.atomic():
            IntegrationEvent.delete().where(
                (IntegrationEvent.tenant_id == self.tenant_id) & (IntegrationEvent.provider_id == self.id)
            ).execute()
            self.delete_instance()

    def as_dict(self) -> dict[str, Any]:
        """Returns the provider as the API shows it: never its secret."""
        return {
            "id": self.id,
            "name": self.name,
            "webhook_url": self.webhook_url,
            "api_base_url": self.api_base_url,
            "health_url": self.health_url,
            "auth_type": self.auth_type,
            "signature_scheme": self.signature_scheme,
            "is_active": bool(self.is_active),
            "allowed_ips": list(self.allowed_ips or []),
            "created_at": format_datetime(self.created_at),
            "updated_at": format_datetime(self.updated_at),
            "health_status": self.health_status,
            "last_checked_at": format_datetime(self.last_checked_at) if self.last_checked_at else None,
            "response_time_ms": self.response_time_ms,
        }


class IntegrationEvent(TenantScopedModel):
    """One event a provider sent, stored once per (provider, event id), and what became of it."""

    label = "integration event"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30)
    provider_id = CharField(max_length=30)
    event_id = CharField(max_length=255)
    event_type = CharField(max_length=100)
    status = CharField(max_length=16, default="received")
    error = CharField(max_length=ERROR_LENGTH, null=True)
    payload = JSONField()
    created_at = UTCDateTimeField(default=utcnow)
    processed_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "integration_event"

    @classmethod
    def receive(
        cls, provider: IntegrationProvider, event_id: str, event_type: str, payload: dict[str, Any]
    ) -> tuple[IntegrationEvent, bool]:
        """Stores the event unless the provider sent it before; returns it and whether it is new."""
        existing = cls._sent(provider, event_id)
        if existing is not None:
            return existing, False
        event = cls(
            id=new_id("iev"),
            tenant_id=provider.tenant_id,
            provider_id=provider.id,
            event_id=event_id,
            event_type=event_type,
            status="received",
            payload=payload,
        )
        try:
            with database.atomic():  # a savepoint: a concurrent delivery may insert it first
                event.save(force_insert=True)
        except IntegrityError:
            existing = cls._sent(provider, event_id)
            if existing is None:
                raise
            return existing, False
        return event, True

    @classmethod
    def _sent(cls, provider: IntegrationProvider, event_id: str) -> IntegrationEvent | None:
        return (
            cls.for_tenant(provider.tenant_id)
            .where((cls.provider_id == provider.id) & (cls.event_id == event_id))
            .first()
        )

    def finish(self, status: str, error: str | None = None) -> None:
        """Records what the handler made of the event."""
        self.status, self.processed_at = status, utcnow()
        self.error = error[:ERROR_LENGTH] if error else None
        self.save(only=[IntegrationEvent.status, IntegrationEvent.error, IntegrationEvent.processed_at])

    @classmethod
    def page(
        cls,
        tenant_id: str,
        limit: int,
        starting_after: str | None = None,
        provider_id: str | None = None,
        event_type: str | None = None,
        status: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> tuple[list[IntegrationEvent], bool]:
        """Returns up to `limit` events, newest first, after the cursor event; and whether more follow."""
        query = cls.for_tenant(tenant_id)
        if starting_after is not None:
            if not cls.for_tenant(tenant_id).where(cls.id == starting_after).exists():
                raise NotFound("starting_after names no event of this tenant.")
            query = query.where(cls.id < starting_after)  # ids are ULIDs: id order is arrival order
        for column, value in ((cls.provider_id, provider_id), (cls.event_type, event_type), (cls.status, status)):
            if value is not None:
                query = query.where(column == value)
        if created_from is not None:
            query = query.where(cls.created_at >= created_from)
        if created_to is not None:
            query = query.where(cls.created_at <= created_to)
        rows = list(query.order_by(cls.id.desc()).limit(limit + 1))
        return rows[:limit], len(rows) > limit

    def as_dict(self) -> dict[str, Any]:
        """Returns the event as the API shows it: the payload with every secret-looking field (a
        `password`, a token, ...) redacted, as events and the audit trail show changes. The stored
        payload stays as sent; handlers read that, never this."""
        return {
            "id": self.id,
            "provider_id": self.provider_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "status": self.status,
            "error": self.error,
            "payload": redact(self.payload),
            "created_at": format_datetime(self.created_at),
            "processed_at": format_datetime(self.processed_at) if self.processed_at else None,
        }
