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

from typing import Any

from peewee import BooleanField, CharField, IntegerField

from models.base import JSONField, TenantScopedModel, UTCDateTimeField, utcnow

#: Every state; the final ones never change again except by an explicit retry through the API.
STATUSES = ("queued", "running", "succeeded", "failed", "dead", "cancelled")
#: A job in one of these states still holds its `unique_key` (a second enqueue creates nothing).
ACTIVE = ("queued", "running", "failed")
#: Final states.
FINAL = ("succeeded", "dead", "cancelled")


class Job(TenantScopedModel):
    """One unit of background work and its state."""

    label = "job"
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
        from tenantry.errors import format_datetime

        return {
            "number": self.number,
            "started_at": format_datetime(self.started_at),
            "finished_at": format_datetime(self.finished_at) if self.finished_at else None,
            "duration_ms": self.duration_ms,
            "outcome": self.outcome,
            "error": self.error,
        }
