"""Periodic jobs: each registered `Periodic`'s due slot enqueued once, however many workers tick.

There is no scheduler process. Every worker tick calls `schedule_due(now)`: for each periodic work
it computes the latest slot at or before `now` (an interval's multiple since the Unix epoch, or the
cron expression's latest match) and, when that slot is later than the one last enqueued
(`job_schedule`, m0016), moves `last_slot` to it with a compare-and-set and enqueues the slot's
platform job in the same transaction. Two workers racing on one slot: one moves `last_slot` and
enqueues, the other's compare-and-set matches nothing. A worker down for a day finds only the
latest slot due, so missed slots run once, not once each; the first tick after a periodic work
is registered enqueues its latest slot, so new periodic work runs at once. The job also carries the unique key
`<name>:<slot>`, so even a slot enqueued twice by hand would run once while it is active.

The core's own periodic work is registered by `register_core(settings)`: the audit, event and
idempotency purges (the operator's `tenantry audit purge`/`events purge`/`idempotency purge`
commands still run them by hand). Their retention comes from the settings
(TENANTRY_AUDIT_RETENTION, TENANTRY_EVENT_RETENTION; 0 keeps forever) and travels in each job's
payload, so a job's record shows the retention it applied.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter

from models.base import database
from models.job import JobSchedule
from tenantry import jobs
from tenantry.jobs import JobContext, JobKind, Periodic, backoff
from tenantry.settings import Settings

log = logging.getLogger("tenantry.periodic")

_EPOCH = datetime(1970, 1, 1)


def latest_slot(periodic: Periodic, now: datetime) -> datetime:
    """Returns the latest slot of `periodic` at or before `now` (naive UTC).

    An interval's slots are its multiples since the Unix epoch (every hour: on the hour), so every
    worker computes the same slots whenever it started. A cron expression is read in UTC.
    """
    now = _naive_utc(now)
    if periodic.every is not None:
        step = periodic.every.total_seconds()
        if step <= 0:
            raise ValueError(f"periodic {periodic.name!r}: `every` must be positive")
        return _EPOCH + timedelta(seconds=((now - _EPOCH).total_seconds() // step) * step)
    assert periodic.cron is not None  # register_periodic checked that exactly one is given
    # croniter's get_prev answers the match strictly before its start: start just after `now`
    # so that a slot falling exactly on `now` counts as due.
    found = croniter(periodic.cron, now + timedelta(seconds=1)).get_prev(datetime)
    return _naive_utc(found)


def schedule_due(now: datetime) -> int:
    """Enqueues each registered periodic work's latest due slot not yet enqueued; returns how many
    jobs this call enqueued (another worker's tick may have enqueued the rest).

    A periodic whose kind is not registered is logged and skipped, so it holds up no other.
    """
    now = _naive_utc(now)
    enqueued = 0
    seen = JobSchedule.last_slots()  # read before any write transaction (see JobSchedule.claim_slot)
    for periodic in jobs.periodics().values():
        try:
            slot = latest_slot(periodic, now)
        except Exception:
            # One periodic work that cannot be scheduled holds up no other, nor the worker's claim.
            log.exception("periodic %s: its slot could not be computed; skipped", periodic.name)
            continue
        last = seen.get(periodic.name)
        if last is not None and last >= slot:
            continue
        try:
            jobs.kind(periodic.kind)
        except KeyError:
            log.error("periodic %s: job kind %s is not registered; skipped", periodic.name, periodic.kind)
            continue
        with database.atomic():
            if not JobSchedule.claim_slot(periodic.name, last, slot, now):
                continue  # another worker enqueued this slot (or a later one)
            stamp = slot.strftime("%Y-%m-%dT%H:%M:%SZ")
            job = jobs.enqueue(
                periodic.kind,
                {**periodic.payload, "periodic": periodic.name, "slot": stamp},
                tenant_id=None,
                run_at=now,
                unique_key=f"{periodic.name}:{stamp}",
                livemode=True,
            )
        if job is not None:
            enqueued += 1
    return enqueued


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


# --- The core's periodic work: purges --------------------------------------------------------------


def purge_audit(ctx: JobContext) -> dict[str, Any]:
    """Removes audit entries older than the payload's `older_than_seconds` (each chain stays verifiable)."""
    from models.audit import AuditEntry

    removed = AuditEntry.purge(ctx.now - timedelta(seconds=ctx.payload["older_than_seconds"]))
    return {"entries": sum(removed.values()), "tenants": len(removed)}


def purge_events(ctx: JobContext) -> dict[str, Any]:
    """Removes events older than the payload's `older_than_seconds` that no consumer still needs
    (a plug-in's retainer: a webhook delivery still pending keeps its event)."""
    from tenantry import events

    removed = events.purge_all(ctx.now - timedelta(seconds=ctx.payload["older_than_seconds"]))
    return {key: count for key, _, count in removed}


def purge_idempotency(ctx: JobContext) -> dict[str, Any]:
    """Removes idempotency records past their 24 hours."""
    from models.idempotency import IdempotencyRecord

    return {"records": IdempotencyRecord.purge_expired()}


#: The purge kinds: a purge is idempotent and cheap to repeat, so a failed one retries a few times.
PURGE_KINDS = (
    JobKind("audit.purge", purge_audit, retry=backoff(60, retries=3), timeout=600.0, lease=900.0),
    JobKind("event.purge", purge_events, retry=backoff(60, retries=3), timeout=600.0, lease=900.0),
    JobKind("idempotency.purge", purge_idempotency, retry=backoff(60, retries=3), timeout=600.0, lease=900.0),
)


def register_core(settings: Settings) -> None:
    """Registers the core's job kinds (the purges) and their periodic work from `settings`.

    The idempotency purge runs hourly; the event purge hourly when TENANTRY_EVENT_RETENTION is set
    (not 0, the default); the audit purge daily at 03:00 UTC when TENANTRY_AUDIT_RETENTION is set.
    The kinds are registered either way, so a purge enqueued by hand always runs.
    """
    for kind in PURGE_KINDS:
        jobs.register_kind(kind)
    jobs.register_periodic(Periodic("idempotency.purge", "idempotency.purge", every=timedelta(hours=1)))
    if settings.event_retention:
        jobs.register_periodic(
            Periodic(
                "event.purge",
                "event.purge",
                every=timedelta(hours=1),
                payload={"older_than_seconds": settings.event_retention},
            )
        )
    if settings.audit_retention:
        jobs.register_periodic(
            Periodic(
                "audit.purge", "audit.purge", cron="0 3 * * *", payload={"older_than_seconds": settings.audit_retention}
            )
        )
