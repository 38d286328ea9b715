"""The one durable job queue: background work whose state the API shows.

A job is one unit of background work of a registered kind (tenantry.jobs). It is written in the
caller's transaction (`tenantry.jobs.enqueue`): a rolled-back request leaves no job, a committed
one is visible to workers at once. Workers lease the jobs they take (`lease_owner`,
`lease_until`); a worker that dies leaves leases that lapse, and the job is taken again with the
lost attempt counted and its error recorded. Every attempt is a `JobAttempt` row.

States:
- `queued`: waiting to run at `run_at` (new, or retried through the API);
- `running`: leased by a worker;
- `failed`: an attempt failed and a retry is scheduled at `run_at`;
- `dead`: attempts exhausted (every attempt's error is kept in `JobAttempt`);
- `succeeded`, `cancelled`: final.

Platform jobs (purges) have no tenant (`tenant_id` NULL) and are never visible to a tenant.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from peewee import BooleanField, CharField, IntegerField, IntegrityError, fn

from models.base import BaseModel, JSONField, TenantScopedModel, UTCDateTimeField, database, row_tuples, utcnow
from tenantry.errors import Conflict, NotFound
from tenantry.times import format_datetime

#: Every state; the final ones never change again except by an explicit retry through the API.
STATUSES = ("queued", "running", "succeeded", "failed", "dead", "cancelled")
#: A job in one of these states still holds its `unique_key` (a second enqueue creates nothing).
ACTIVE = ("queued", "running", "failed")
#: Final states.
FINAL = ("succeeded", "dead", "cancelled")


class Job(TenantScopedModel):
    """One unit of background work and its state."""

    label = "job"
    api_resource = "job"
    mode_scoped = True

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30, null=True)  # NULL: a platform job (a purge), no tenant's business
    livemode = BooleanField(default=True)
    kind = CharField(max_length=64)
    payload = JSONField()
    status = CharField(max_length=16, default="queued")
    priority = IntegerField(default=0)  # higher runs first among due jobs
    run_at = UTCDateTimeField(default=utcnow)  # due from this moment (the next retry's time when failed)
    attempt = IntegerField(default=0)  # attempts started so far
    max_attempts = IntegerField(default=1)
    progress = IntegerField(default=0)  # 0..100, set by the job while it runs
    result = JSONField(null=True)
    last_error = CharField(max_length=1000, null=True)
    unique_key = CharField(max_length=255, null=True)
    lease_owner = CharField(max_length=64, null=True)
    lease_until = UTCDateTimeField(null=True)
    cancel_requested = BooleanField(default=False)
    request_id = CharField(max_length=128, null=True)  # the request that enqueued it
    resource_type = CharField(max_length=32, null=True)  # what it works on (`webhook_delivery`), if anything
    resource_id = CharField(max_length=64, null=True)
    created_at = UTCDateTimeField(default=utcnow)
    started_at = UTCDateTimeField(null=True)  # the latest attempt's start
    finished_at = UTCDateTimeField(null=True)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "job"
        only_save_dirty = True  # the worker and the API write their own columns, never a stale copy

    def as_dict(self, attempts: list[JobAttempt] | None = None) -> dict[str, Any]:
        """Returns the job as the API shows it, with `attempts` (first first; none when not given)."""

        def moment(value: Any) -> str | None:
            return format_datetime(value) if value else None

        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "livemode": bool(self.livemode),
            "progress": self.progress,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "cancel_requested": bool(self.cancel_requested),
            # A kind may return any JSON value; the API shows an object (a bare value as {"value": ...}).
            "result": self.result if self.result is None or isinstance(self.result, dict) else {"value": self.result},
            "last_error": self.last_error,
            "resource": {"type": self.resource_type, "id": self.resource_id} if self.resource_type else None,
            "run_at": moment(self.run_at),
            "created_at": moment(self.created_at),
            "started_at": moment(self.started_at),
            "finished_at": moment(self.finished_at),
            "request_id": self.request_id,
            "attempts": [a.as_dict() for a in attempts or ()],
        }


class JobAttempt(TenantScopedModel):
    """One run of a job: when, how long, how it ended, and its error (never a secret)."""

    label = "job attempt"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30, null=True)
    job_id = CharField(max_length=30)
    number = IntegerField()
    worker = CharField(max_length=64, null=True)
    started_at = UTCDateTimeField()
    finished_at = UTCDateTimeField(null=True)
    duration_ms = IntegerField(null=True)
    outcome = CharField(max_length=16, default="running")  # running | succeeded | failed | lost | cancelled
    error = CharField(max_length=1000, null=True)

    class Meta:
        table_name = "job_attempt"

    def as_dict(self) -> dict[str, Any]:
        """Returns the attempt as the API shows it."""
        return {
            "number": self.number,
            "started_at": format_datetime(self.started_at),
            "finished_at": format_datetime(self.finished_at) if self.finished_at else None,
            "duration_ms": self.duration_ms,
            "outcome": self.outcome,
            "error": self.error,
        }


# --- The API's queries (GET /v1/jobs, cancel, retry) and the metrics' counts -------------------------
#
# Every write below is one conditional UPDATE on the state the caller saw: when a worker claimed,
# finished or failed the job in between, the row no longer matches and nothing is written, so the
# API never puts a stale copy over the worker's write (the worker's `only_save_dirty` writes do the
# same from its side).

#: States a job can be cancelled from at once (nothing is running it).
CANCELLABLE = ("queued", "failed")
#: States a job can be retried from through the API.
RETRYABLE = ("dead", "cancelled")


def page_jobs(
    tenant_id: str,
    livemode: bool,
    limit: int,
    starting_after: str | None = None,
    kinds: list[str] | None = None,
    statuses: list[str] | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> tuple[list[Job], bool]:
    """Returns up to `limit` of the tenant's jobs in the mode, newest first, after the cursor job;
    and whether more follow. Platform jobs (no tenant) never match. Raises NotFound when
    `starting_after` is not one of the tenant's jobs in the mode."""
    query = Job.select().where((Job.tenant_id == tenant_id) & (Job.livemode == livemode))
    if starting_after is not None:
        cursor = Job.get_or_none((Job.tenant_id == tenant_id) & (Job.id == starting_after) & (Job.livemode == livemode))
        if cursor is None:
            raise NotFound("starting_after names no job of this tenant.")
        query = query.where(Job.id < cursor.id)  # ULIDs: a smaller id is an older job
    if kinds:
        query = query.where(Job.kind.in_(kinds))
    if statuses:
        query = query.where(Job.status.in_(statuses))
    if created_from is not None:
        query = query.where(Job.created_at >= created_from)
    if created_to is not None:
        query = query.where(Job.created_at <= created_to)
    rows = list(query.order_by(Job.id.desc()).limit(limit + 1))
    return rows[:limit], len(rows) > limit


def attempts_of(jobs: Iterable[Job]) -> dict[str, list[JobAttempt]]:
    """Returns each job's attempts, first first, keyed by job id (one query for the lot)."""
    ids = [job.id for job in jobs]
    found: dict[str, list[JobAttempt]] = {job_id: [] for job_id in ids}
    if ids:
        query = JobAttempt.select().where(JobAttempt.job_id.in_(ids)).order_by(JobAttempt.job_id, JobAttempt.number)
        for attempt in query:
            found[attempt.job_id].append(attempt)
    return found


def reload_job(job: Job) -> Job:
    """Returns the job's row as it is now (the same tenant's; it cannot vanish under a request)."""
    return Job.get_by_id(job.id)


def cancel_job(job: Job, now: datetime | None = None) -> tuple[Job, bool]:
    """Cancels `job`: returns the job as it is afterwards, and True when it was running and is only
    asked to stop (`cancel_requested`), False when it is cancelled now.

    Queued or failed (waiting for a retry): cancelled at once. Running: `cancel_requested` is set
    for the job (and its worker) to honour. Raises Conflict for a final job. Each step is a
    conditional update on the state: a job a worker claims in between is asked to stop instead.
    """
    now = now or utcnow()
    for _ in range(3):  # each miss means a worker moved the job on: look again
        cancelled = (
            Job.update(status="cancelled", finished_at=now, updated_at=now, lease_owner=None, lease_until=None)
            .where((Job.id == job.id) & (Job.status.in_(CANCELLABLE)))
            .execute()
        )
        if cancelled:
            return reload_job(job), False
        asked = (
            Job.update(cancel_requested=True, updated_at=now)
            .where((Job.id == job.id) & (Job.status == "running"))
            .execute()
        )
        if asked:
            return reload_job(job), True
        job = reload_job(job)
        if job.status in FINAL:
            raise Conflict(f"The job is {job.status}: only a queued, failed or running job can be cancelled.")
    raise Conflict("The job is changing state right now; try again.")


def retry_job(job: Job, budget: int, now: datetime | None = None) -> Job:
    """Queues a dead or cancelled `job` again, due `now`, with `budget` more attempts
    (`max_attempts = attempt + budget`); returns it. Its attempts and their errors are kept.

    Raises Conflict for any other state, when a worker changed it since it was read, or when
    another job now holds its `unique_key` (the same work is already queued).
    """
    now = now or utcnow()
    if job.status not in RETRYABLE:
        raise Conflict(f"The job is {job.status}: only a dead or cancelled job can be retried.")
    try:
        with database.atomic():
            changed = (
                Job.update(
                    status="queued",
                    run_at=now,
                    max_attempts=Job.attempt + budget,
                    cancel_requested=False,
                    progress=0,
                    result=None,
                    finished_at=None,
                    lease_owner=None,
                    lease_until=None,
                    updated_at=now,
                )
                .where((Job.id == job.id) & (Job.status == job.status) & (Job.attempt == job.attempt))
                .execute()
            )
    except IntegrityError:
        # m0015's partial unique index: another active job holds this job's key.
        raise Conflict("The same work is already queued as another job.") from None
    if not changed:
        raise Conflict("The job changed state since it was read; look at it again.")
    return reload_job(job)


def queue_depth() -> list[tuple[str, str, int]]:
    """Returns (kind, status, count) for every kind and non-final status with jobs, platform jobs
    included (one grouped count over the `job_due` index's leading column)."""
    query = (
        Job.select(Job.kind, Job.status, fn.COUNT(Job.id)).where(Job.status.in_(ACTIVE)).group_by(Job.kind, Job.status)
    )
    return [(kind, status, int(n)) for kind, status, n in row_tuples(query)]


def oldest_due(now: datetime) -> list[tuple[str, datetime]]:
    """Returns (kind, run_at) of the longest-waiting due queued job of each kind that has one: how long
    the queue has kept work waiting (a job queued for later is not waiting yet)."""
    query = (
        Job.select(Job.kind, fn.MIN(Job.run_at))
        .where((Job.status == "queued") & (Job.run_at <= now))
        .group_by(Job.kind)
    )
    return [(kind, Job.run_at.python_value(oldest)) for kind, oldest in row_tuples(query)]


class JobSchedule(BaseModel):
    """The last slot enqueued of one periodic work (tenantry.periodic; m0016). A platform row: no tenant."""

    name = CharField(primary_key=True, max_length=64)
    last_slot = UTCDateTimeField()
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "job_schedule"

    @classmethod
    def last_slots(cls) -> dict[str, datetime]:
        """Returns each periodic work's last enqueued slot, by name."""
        return {row.name: row.last_slot for row in cls.select()}

    @classmethod
    def claim_slot(cls, name: str, seen: datetime | None, slot: datetime, now: datetime) -> bool:
        """Returns True when this caller is the one to enqueue `slot` of `name`: `last_slot` was still
        `seen` (None: no row yet) and is now `slot` (a compare-and-set). Call it first in the
        transaction that enqueues the slot's job, so both happen or neither does; read `seen`
        before that transaction (`last_slots`), so SQLite's first statement in it is this write."""
        if seen is None:
            return bool(
                cls.insert(name=name, last_slot=slot, updated_at=now).on_conflict_ignore().as_rowcount().execute()
            )
        # On PostgreSQL a racing update waits for this one's commit, then finds last_slot moved and
        # matches nothing; on SQLite writers are serialised, with the same outcome.
        return bool(
            cls.update(last_slot=slot, updated_at=now).where((cls.name == name) & (cls.last_slot == seen)).execute()
        )


def queue_snapshot(now: datetime) -> tuple[list[tuple[str, str, int]], list[tuple[str, float]]]:
    """Returns what /metrics shows of the queue: `queue_depth()`, and for each kind the seconds its
    oldest due queued job has waited at `now`."""
    return queue_depth(), [(kind, max(0.0, (now - due).total_seconds())) for kind, due in oldest_due(now)]
