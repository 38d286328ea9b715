"""The audit trail: one hash chain per tenant, appended in the transaction of the change it records.

Each entry's hash is SHA-256 over the previous entry's hash and the entry's own fields, so an
edited, removed or reordered entry breaks the chain at that point. `AuditChain` holds each
chain's head (its last sequence and hash) and, after a purge, where the kept chain starts.
Appending locks the head row (FOR UPDATE on PostgreSQL; SQLite's write lock does the same), so
concurrent changes in one tenant get consecutive sequence numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from peewee import BigIntegerField, BooleanField, CharField

from models.base import (
    BaseModel,
    JSONField,
    TenantScopedModel,
    UTCDateTimeField,
    current_livemode,
    database,
    row_tuples,
    utcnow,
)
from tenantry.errors import NotFound
from tenantry.ids import new_id
from tenantry.times import format_datetime

GENESIS = "0" * 64
PLATFORM = "-"  # the chain of what happens outside any tenant (a failed login for an unknown email)
REDACTED = "[REDACTED]"
_SECRET_KEYS = frozenset({"code", "mfa_code", "recovery_codes", "otpauth_uri", "secret_key", "refresh"})
_SECRET_WORDS = ("password", "secret", "token", "_hash")


def redact(value: Any) -> Any:
    """Returns `value` with every secret-looking field (passwords, tokens, key secrets, codes) replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret(k) and v is not None else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return lowered in _SECRET_KEYS or any(word in lowered for word in _SECRET_WORDS)


class AuditChain(BaseModel):
    """The head of one tenant's chain, and where it starts after a purge."""

    tenant_id = CharField(primary_key=True, max_length=30)
    last_sequence = BigIntegerField()
    last_hash = CharField(max_length=64)
    first_sequence = BigIntegerField()
    anchor_hash = CharField(max_length=64)  # the previous_hash the first kept entry must carry


def verb_forms(verb: str) -> list[str]:
    """Returns the last parts of the actions a bare verb stands for: itself and its past tense.

    `create` -> `created` (every `*.created`), `update` -> `updated`, `delete` -> `deleted`,
    `add` -> `added`, `login` -> `login` and `logined` (only `user.login` exists).
    """
    return [verb, verb + "d" if verb.endswith("e") else verb + "ed"]


class AuditEntry(TenantScopedModel):
    """One recorded change."""

    label = "audit entry"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30)
    sequence = BigIntegerField()
    action = CharField(max_length=64)
    resource_type = CharField(max_length=32)
    resource_id = CharField(max_length=128, null=True)
    actor_type = CharField(max_length=16)
    actor_id = CharField(max_length=30, null=True)
    livemode = BooleanField(default=True)
    old_values = JSONField(null=True)
    new_values = JSONField(null=True)
    decided_by = JSONField()
    ip_address = CharField(max_length=64, null=True)
    user_agent = CharField(max_length=512, null=True)
    request_id = CharField(max_length=128, null=True)
    created_at = UTCDateTimeField()
    previous_hash = CharField(max_length=64)
    hash = CharField(max_length=64)

    def digest(self) -> str:
        """Returns the hash this entry must carry: over the previous hash and every other field."""
        fields = {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "sequence": self.sequence,
            "action": self.action,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "actor_type": self.actor_type,
            "actor_id": self.actor_id,
            "livemode": bool(self.livemode),
            "old_values": self.old_values,
            "new_values": self.new_values,
            "decided_by": self.decided_by,
            "ip_address": self.ip_address,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "created_at": self.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(f"{self.previous_hash}\n{canonical}".encode()).hexdigest()

    @classmethod
    def append(cls, tenant_id: str, **fields: Any) -> AuditEntry:
        """Adds an entry to the tenant's chain; call it inside the transaction of the change."""
        with database.atomic():
            AuditChain.insert(
                tenant_id=tenant_id, last_sequence=0, last_hash=GENESIS, first_sequence=1, anchor_hash=GENESIS
            ).on_conflict_ignore().execute()
            query = AuditChain.select().where(AuditChain.tenant_id == tenant_id)
            if database.for_update:
                query = query.for_update()
            head = query.get()
            # Microseconds are kept as stored: the hash must be recomputable from the row.
            entry = cls(
                id=new_id("aud"),
                tenant_id=tenant_id,
                sequence=head.last_sequence + 1,
                created_at=utcnow(),
                previous_hash=head.last_hash,
                livemode=fields.pop("livemode", current_livemode()),
                **fields,
            )
            entry.user_agent = (entry.user_agent or None) and entry.user_agent[:512]
            entry.hash = entry.digest()
            entry.save(force_insert=True)
            AuditChain.update(last_sequence=entry.sequence, last_hash=entry.hash).where(
                AuditChain.tenant_id == tenant_id
            ).execute()
        return entry

    @classmethod
    def page(
        cls,
        tenant_id: str,
        limit: int,
        livemode: bool,
        starting_after: str | None = None,
        action: str | None = None,
        resource_type: str | None = None,
        resource_id: str | None = None,
        actor_id: str | None = None,
        date_from: datetime | None = None,
        date_to: datetime | None = None,
    ) -> tuple[list[AuditEntry], bool]:
        """Returns up to `limit` entries, newest first, after the cursor entry; and whether more follow."""
        query = cls.for_tenant(tenant_id).where(cls.livemode == livemode)
        if starting_after is not None:
            cursor = cls.get_or_none((cls.tenant_id == tenant_id) & (cls.id == starting_after))
            if cursor is None:  # another tenant's entry answers the same: it does not exist here
                raise NotFound("starting_after names no entry of this tenant's audit trail.")
            query = query.where(cls.sequence < cursor.sequence)
        if action is not None and "." not in action:  # a bare verb: any resource's action of it
            forms = [cls.action.endswith("." + form) for form in verb_forms(action)]
            query = query.where(forms[0] | forms[1])
            action = None
        for column, value in (
            (cls.action, action),
            (cls.resource_type, resource_type),
            (cls.resource_id, resource_id),
            (cls.actor_id, actor_id),
        ):
            if value is not None:
                query = query.where(column == value)
        # Dates become sequence bounds, each found with one probe of the (tenant_id, created_at)
        # index: a tenant's entries get their time under the chain's lock, so time order is
        # sequence order, and the page then walks the sequence index like any other.
        if date_from is not None:
            first = (
                cls.select(cls.sequence)
                .where((cls.tenant_id == tenant_id) & (cls.created_at >= date_from))
                .order_by(cls.created_at.asc())
                .limit(1)
                .scalar()
            )
            if first is None:
                return [], False
            query = query.where(cls.sequence >= first)
        if date_to is not None:
            last = (
                cls.select(cls.sequence)
                .where((cls.tenant_id == tenant_id) & (cls.created_at <= date_to))
                .order_by(cls.created_at.desc())
                .limit(1)
                .scalar()
            )
            if last is None:
                return [], False
            query = query.where(cls.sequence <= last)
        rows = list(query.order_by(cls.sequence.desc()).limit(limit + 1))
        return rows[:limit], len(rows) > limit

    @classmethod
    def chain(cls, tenant_id: str, batch: int = 1000) -> Iterator[AuditEntry]:
        """Yields the tenant's entries in chain order, a batch at a time (the trail can be long)."""
        after = 0
        while True:
            rows = list(cls.for_tenant(tenant_id).where(cls.sequence > after).order_by(cls.sequence).limit(batch))
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].sequence

    @classmethod
    def verify(cls, tenant_id: str) -> dict[str, Any]:
        """Recomputes the tenant's chain; returns the API's verification result (see AuditVerification)."""
        head = AuditChain.get_or_none(AuditChain.tenant_id == tenant_id)
        if head is None or head.last_sequence < head.first_sequence:
            return {"valid": True, "entries_checked": 0, "first_sequence": None, "broken": None}
        expected_sequence, expected_previous, checked = head.first_sequence, head.anchor_hash, 0

        def broken(entry_id: str | None, sequence: int, reason: str) -> dict[str, Any]:
            return {
                "valid": False,
                "entries_checked": checked,
                "first_sequence": head.first_sequence,
                "broken": {"entry_id": entry_id, "sequence": sequence, "reason": reason},
            }

        for entry in cls.chain(tenant_id):
            if entry.sequence < head.first_sequence:
                continue  # left over from a purge that was cut short: outside the kept chain
            if entry.sequence != expected_sequence:
                return broken(None, expected_sequence, "missing_entry")
            checked += 1
            if entry.previous_hash != expected_previous:
                return broken(entry.id, entry.sequence, "link_mismatch")
            if entry.digest() != entry.hash:
                return broken(entry.id, entry.sequence, "hash_mismatch")
            expected_sequence, expected_previous = entry.sequence + 1, entry.hash
        if expected_sequence <= head.last_sequence or expected_previous != head.last_hash:
            return broken(None, expected_sequence, "missing_entry")
        return {"valid": True, "entries_checked": checked, "first_sequence": head.first_sequence, "broken": None}

    @classmethod
    def purge(cls, older_than: datetime) -> dict[str, int]:
        """Removes, per tenant, the oldest entries made before `older_than`; returns how many per tenant.

        Only a prefix of a chain is removed (entries up to the last one older than the cutoff),
        and the chain's start moves past it, anchored to the hash of the last removed entry:
        what is kept still verifies from its new start. Each tenant is purged in its own
        transaction, with its chain head locked.
        """
        removed: dict[str, int] = {}
        for (tenant_id,) in row_tuples(AuditChain.select(AuditChain.tenant_id)):
            with database.atomic():
                query = AuditChain.select().where(AuditChain.tenant_id == tenant_id)
                if database.for_update:
                    query = query.for_update()
                head = query.get()
                last = (
                    cls.for_tenant(tenant_id).where(cls.created_at < older_than).order_by(cls.sequence.desc()).first()
                )
                if last is None or last.sequence < head.first_sequence:
                    continue
                count = cls.delete().where((cls.tenant_id == tenant_id) & (cls.sequence <= last.sequence)).execute()
                AuditChain.update(first_sequence=last.sequence + 1, anchor_hash=last.hash).where(
                    AuditChain.tenant_id == tenant_id
                ).execute()
                # The purge itself is on the record, as the first entry after the removed ones or later.
                cls.append(
                    tenant_id,
                    action="audit.purged",
                    resource_type="audit",
                    resource_id=None,
                    actor_type="system",
                    actor_id=None,
                    livemode=True,
                    old_values=None,
                    decided_by=[],
                    new_values={
                        "removed": count,
                        "through_sequence": last.sequence,
                        "older_than": format_datetime(older_than),
                    },
                )
                removed[tenant_id] = count
        return removed

    def as_dict(self) -> dict[str, Any]:
        """Returns the entry as the API shows it."""
        return {
            "id": self.id,
            "sequence": self.sequence,
            "action": self.action,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "actor": {"type": self.actor_type, "id": self.actor_id},
            "livemode": bool(self.livemode),
            "old_values": self.old_values,
            "new_values": self.new_values,
            "decided_by": self.decided_by,
            "ip_address": self.ip_address,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "created_at": format_datetime(self.created_at),
            "hash": self.hash,
            "previous_hash": self.previous_hash,
        }
