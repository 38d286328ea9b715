"""Domain events: the outbox every state change writes in its own transaction.

An event is written in the transaction of the change it reports, so it exists exactly when the
change does. Each tenant's events are numbered (`sequence`) under a lock on the tenant's
`EventHead` row, held until the transaction commits: a later sequence therefore never becomes
visible before an earlier one, which is what lets a reader that remembers the last sequence it
saw (the event stream, `Last-Event-ID`) miss nothing. Who hears of an event is not this
module's business: tenantry.events runs the subscribers plug-ins register, in the same transaction.
"""

from __future__ import annotations

import fnmatch
from datetime import datetime
from typing import Any

from peewee import BigIntegerField, BooleanField, CharField

from models.base import BaseModel, JSONField, TenantScopedModel, UTCDateTimeField, database, utcnow
from tenantry.errors import NotFound
from tenantry.ids import new_id
from tenantry.times import format_datetime


def matches(patterns: list[str], event_type: str) -> bool:
    """Returns True when `event_type` matches one of `patterns` (`*`, `user.*`, or an exact type)."""
    return any(
        p == "*"
        or p == event_type
        or (p.endswith(".*") and event_type.startswith(p[:-1]))
        or (("*" in p) and fnmatch.fnmatchcase(event_type, p))
        for p in patterns
    )


class EventHead(BaseModel):
    """The last sequence number given to one tenant's events (its row is the tenant's event lock)."""

    tenant_id = CharField(primary_key=True, max_length=30)
    last_sequence = BigIntegerField()

    class Meta:
        table_name = "event_head"


class Event(TenantScopedModel):
    """One domain event: what changed, in which tenant and mode, and the changed object."""

    label = "event"
    api_resource = "event"
    mode_scoped = True

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30)
    sequence = BigIntegerField()
    type = CharField(max_length=64)
    livemode = BooleanField(default=True)
    data = JSONField()
    request_id = CharField(max_length=128, null=True)
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "event"

    @classmethod
    def emit(
        cls,
        tenant_id: str,
        event_type: str,
        data: dict[str, Any],
        livemode: bool,
        request_id: str | None = None,
    ) -> Event:
        """Writes an event in the current transaction, numbered after the tenant's last one."""
        with database.atomic():
            EventHead.insert(tenant_id=tenant_id, last_sequence=0).on_conflict_ignore().execute()
            query = EventHead.select().where(EventHead.tenant_id == tenant_id)
            if database.for_update:
                query = query.for_update()
            head = query.get()
            event = cls.create(
                id=new_id("evt"),
                tenant_id=tenant_id,
                sequence=head.last_sequence + 1,
                type=event_type,
                livemode=livemode,
                data=data,
                request_id=request_id,
                created_at=utcnow(),
            )
            EventHead.update(last_sequence=event.sequence).where(EventHead.tenant_id == tenant_id).execute()
        return event

    @classmethod
    def page(
        cls,
        tenant_id: str,
        livemode: bool,
        limit: int,
        starting_after: str | None = None,
        types: list[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> tuple[list[Event], bool]:
        """Returns up to `limit` events of the tenant and mode, newest first, after the cursor event;
        and whether more follow. `types` holds exact types and `prefix.*` patterns (any may match)."""
        query = cls.select().where((cls.tenant_id == tenant_id) & (cls.livemode == livemode))
        if starting_after is not None:
            cursor = cls.get_or_none(
                (cls.tenant_id == tenant_id) & (cls.id == starting_after) & (cls.livemode == livemode)
            )
            if cursor is None:
                raise NotFound("starting_after names no event of this tenant.")
            query = query.where(cls.sequence < cursor.sequence)
        if types and "*" not in types:  # `*` is every type: no filter
            condition = None
            for pattern in types:
                term = cls.type.startswith(pattern[:-1]) if pattern.endswith(".*") else cls.type == pattern
                condition = term if condition is None else condition | term
            query = query.where(condition)
        if created_from is not None:
            query = query.where(cls.created_at >= created_from)
        if created_to is not None:
            query = query.where(cls.created_at <= created_to)
        rows = list(query.order_by(cls.sequence.desc()).limit(limit + 1))
        return rows[:limit], len(rows) > limit

    @classmethod
    def after(cls, tenant_id: str, livemode: bool, sequence: int, limit: int = 100) -> list[Event]:
        """Returns the tenant's events of the mode after `sequence`, oldest first (the stream's next batch)."""
        return list(
            cls.select()
            .where((cls.tenant_id == tenant_id) & (cls.livemode == livemode) & (cls.sequence > sequence))
            .order_by(cls.sequence.asc())
            .limit(limit)
        )

    @classmethod
    def sequence_of(cls, tenant_id: str, livemode: bool, event_id: str) -> int:
        """Returns the sequence of the tenant's event `event_id` in the mode, or raises NotFound."""
        seen = cls.get_or_none((cls.tenant_id == tenant_id) & (cls.id == event_id) & (cls.livemode == livemode))
        if seen is None:
            raise NotFound("Last-Event-ID names no event of this tenant.")
        return seen.sequence

    @classmethod
    def last_sequence(cls, tenant_id: str) -> int:
        """Returns the sequence of the tenant's latest committed event (0 when there is none)."""
        head = EventHead.get_or_none(EventHead.tenant_id == tenant_id)
        return head.last_sequence if head is not None else 0

    @classmethod
    def purge(cls, older_than: datetime, keep: list[Any] | None = None) -> int:
        """Removes events made before `older_than`, but those whose ids a query in `keep` returns (a
        consumer still needs them: tenantry.events.retain). Returns how many were removed."""
        condition = cls.created_at < older_than
        for still_needed in keep or ():
            condition &= cls.id.not_in(still_needed)
        with database.atomic():
            return cls.delete().where(condition).execute()

    def as_dict(self) -> dict[str, Any]:
        """Returns the event as the API, the stream and webhook deliveries show it."""
        return {
            "id": self.id,
            "type": self.type,
            "tenant_id": self.tenant_id,
            "livemode": bool(self.livemode),
            "created_at": format_datetime(self.created_at),
            "request_id": self.request_id,
            "data": self.data,
        }
