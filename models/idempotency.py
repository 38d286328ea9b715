"""Idempotency records: who claimed an Idempotency-Key, for which request, and the answer it got.

A record is claimed (state `running`) in its own committed transaction before the request's
handler runs, so a concurrent duplicate finds it at once; it is completed (state `done`, with
the response) inside the request's own transaction, so the answer is kept exactly when the
change is. A claim whose request died is taken over once its lock lapses, or at once on
PostgreSQL when the connection that claimed it is gone: a claim records its connection's
holder token (tenantry.db.claim_holder), which the connection holds as a session lock until
it ends, so a claim whose holder's lock is free was abandoned (its process died, the server
restarted, or its release failed and the connection was dropped) and nothing can complete it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import BigIntegerField, CharField, CompositeKey, Expression, IntegerField, IntegrityError, TextField

from models.base import BaseModel, UTCDateTimeField, database, utcnow
from tenantry import db as tenantry_db  # a module, not names: tenantry.db imports models too
from tenantry import deadline as deadlines
from tenantry.errors import IdempotencyInProgress, IdempotencyKeyReused

KEEP_FOR = timedelta(hours=24)
#: How long a claim holds before another request may take it over (its request must have died).
LOCK_FOR = timedelta(seconds=60)
#: Past its request's deadline a claim still holds this long: the request claimed its commit just
#: before the deadline (tenantry.deadline) and its COMMIT may still be on its way.
COMMIT_GRACE = timedelta(seconds=10)


def _lock_for() -> timedelta:
    """How long a new claim holds: LOCK_FOR, or longer while its request may still commit.

    A request with a deadline (batch: 120 s, upload: 300 s) may commit until it passes, never
    after (tenantry.deadline.claim_commit): a claim that lapsed earlier would let a retry run
    the request a second time while the first still commits.
    """
    current = deadlines.current()
    if current is None:
        return LOCK_FOR
    return max(LOCK_FOR, timedelta(seconds=max(0.0, current.remaining())) + COMMIT_GRACE)


@dataclass(frozen=True)
class Scope:
    """Whose key it is: the tenant ("-" outside one) and the credential (user, key, or client address)."""

    tenant_id: str
    credential: str
    key: str


class IdempotencyRecord(BaseModel):
    """One claimed Idempotency-Key and, once its request finished, the response it got."""

    tenant_id = CharField(max_length=30)
    credential = CharField(max_length=80)
    idem_key = CharField(max_length=255)
    fingerprint = CharField(max_length=64)
    state = CharField(max_length=10)
    locked_until = UTCDateTimeField()
    holder = BigIntegerField(null=True)  # the claiming connection's holder token (PostgreSQL); None on SQLite
    status_code = IntegerField(null=True)
    response = TextField(null=True)  # sealed (tenantry.crypto.SecretBox): it may hold secrets shown once
    created_at = UTCDateTimeField(default=utcnow)
    expires_at = UTCDateTimeField()

    class Meta:
        primary_key = CompositeKey("tenant_id", "credential", "idem_key")

    @classmethod
    def _where(cls, scope: Scope) -> Expression:
        return (cls.tenant_id == scope.tenant_id) & (cls.credential == scope.credential) & (cls.idem_key == scope.key)

    @classmethod
    def claim(cls, scope: Scope, fingerprint: str, now: datetime | None = None) -> IdempotencyRecord | None:
        """Claims the key for a request with `fingerprint`.

        Returns None when the caller now holds the claim (run the request), or the finished
        record to replay. Raises IdempotencyKeyReused for a different request under the key and
        IdempotencyInProgress while another request holds it: until its lock lapses (LOCK_FOR,
        or its request's deadline plus COMMIT_GRACE when later), or, on PostgreSQL, until the
        connection that claimed it is gone. `now` is the clock (naive UTC), the current time
        unless a test drives it.
        """
        clock = now
        for _ in range(3):
            now = clock or utcnow()
            try:
                with database.atomic():
                    cls.insert(
                        tenant_id=scope.tenant_id,
                        credential=scope.credential,
                        idem_key=scope.key,
                        fingerprint=fingerprint,
                        state="running",
                        locked_until=now + _lock_for(),
                        holder=tenantry_db.claim_holder(),
                        created_at=now,
                        expires_at=now + KEEP_FOR,
                    ).execute()
                return None
            except IntegrityError:
                pass
            row = cls.get_or_none(cls._where(scope))
            if row is None:
                continue  # released between our insert and this read: try again
            if row.expires_at <= now:
                cls.delete().where(cls._where(scope) & (cls.expires_at <= now)).execute()
                continue
            if row.fingerprint != fingerprint:
                raise IdempotencyKeyReused()
            if row.state == "done":
                return row
            if row.locked_until > now:
                if row.holder is None or tenantry_db.holder_alive(row.holder):
                    raise IdempotencyInProgress()
                # Its connection is gone, so its request can no longer answer: take it over now,
                # unless another request took it first (the holder changed).
                abandoned = cls.holder == row.holder
            else:
                # The request that claimed it died before answering and its lock lapsed.
                abandoned = cls.locked_until <= now
            taken = (
                cls.update(locked_until=now + _lock_for(), holder=tenantry_db.claim_holder())
                .where(cls._where(scope) & (cls.state == "running") & abandoned)
                .execute()
            )
            if taken:
                return None
            raise IdempotencyInProgress()
        raise IdempotencyInProgress()

    @classmethod
    def complete(cls, scope: Scope, status_code: int, sealed_response: str) -> None:
        """Stores the answer to the claimed request (call it inside the request's transaction)."""
        cls.update(state="done", status_code=status_code, response=sealed_response).where(cls._where(scope)).execute()

    @classmethod
    def release(cls, scope: Scope) -> None:
        """Gives up a claim whose request failed without an answer worth keeping (a 5xx), so it can be retried."""
        cls.delete().where(cls._where(scope) & (cls.state == "running")).execute()

    @classmethod
    def forget(cls, scope: Scope) -> None:
        """Deletes the key's record, whatever its state (its stored answer can no longer be read)."""
        cls.delete().where(cls._where(scope)).execute()

    @classmethod
    def purge_expired(cls) -> int:
        """Deletes every record past its 24 hours; returns how many."""
        return cls.delete().where(cls.expires_at <= utcnow()).execute()
