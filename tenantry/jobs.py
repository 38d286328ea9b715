"""The one durable job layer: kinds registered in code, jobs enqueued in the caller's transaction.

A domain registers each kind of background work it needs once, at start (`register_kind`, usually
through its plug-in's `register(host)`), with its retry schedule, lease, timeout and the hook that
runs when attempts are exhausted. A request (or another job) then calls `enqueue(...)`: the job is
written in the caller's transaction, so a rolled-back request leaves no job and a committed one is
visible to workers at once (the outbox rule). Handlers never start threads: background work is a job.

Periodic work is declared the same way (`register_periodic`): an interval or a cron expression; the
workers enqueue each slot once however many of them run.

The worker that runs jobs is `Worker` (tenantry worker); tests drive it with `Worker.run_due(now=...)`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from models.base import current_livemode, utcnow
from models.job import ACTIVE, Job
from tenantry.ids import new_id
from tenantry.logs import request_id_var


class JobError(Exception):
    """Raised by a job to fail its attempt with a message safe to show the tenant (never a secret).

    `retry=False` sends the job straight to `dead` (no retry can help: the input is wrong).
    """

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class JobKind:
    """One kind of background work.

    `run(ctx)` does the work and returns the job's result (JSON-serializable, or None); it raises
    JobError (or any exception: its message is not shown, only its type) to fail the attempt.
    `retry` is the delays in seconds before each retry (exponential backoff: `backoff(...)`), so
    `max_attempts == len(retry) + 1`. `lease` must exceed `timeout`: a job still running when
    its lease lapses is taken as lost. `on_exhausted(job)` runs, in the transaction that marks the
    job dead, when the last attempt has failed.
    """

    name: str
    run: Callable[[JobContext], Any]
    retry: tuple[float, ...] = ()
    timeout: float = 60.0
    lease: float = 120.0
    on_exhausted: Callable[[Job], None] | None = None
    #: Jitter: each retry delay is stretched by up to this fraction, at random.
    jitter: float = 0.2

    @property
    def max_attempts(self) -> int:
        """Returns how many attempts a job of this kind gets: the first and one per retry delay."""
        return len(self.retry) + 1


def backoff(first: float, factor: float = 2.0, retries: int = 5, cap: float = 3600.0) -> tuple[float, ...]:
    """Returns an exponential retry schedule: `first`, `first*factor`, ... (`retries` delays, each at most `cap`)."""
    return tuple(min(cap, first * factor**n) for n in range(retries))


@dataclass(frozen=True)
class Periodic:
    """Work enqueued on a schedule: every `every`, or at each slot of the cron expression `cron`.

    Each slot is enqueued once however many workers run (as a platform job of kind `kind`).
    """

    name: str
    kind: str
    every: timedelta | None = None
    cron: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobContext:
    """What a running job sees: its row, its payload, and ways to report progress and honour cancellation."""

    job: Job
    now: datetime

    @property
    def payload(self) -> dict[str, Any]:
        """Returns the job's payload."""
        return self.job.payload

    def progress(self, percent: int) -> None:
        """Records progress (0..100), visible at GET /v1/jobs/{job_id}. Implemented by the worker."""
        raise NotImplementedError

    def cancelled(self) -> bool:
        """Returns True when cancellation was requested: a long job checks it and stops. Implemented by the worker."""
        raise NotImplementedError


_kinds: dict[str, JobKind] = {}
_periodic: dict[str, Periodic] = {}


def register_kind(kind: JobKind) -> None:
    """Registers a kind of job; registering the same name twice with another definition is an error."""
    existing = _kinds.get(kind.name)
    if existing is not None and existing != kind:
        raise ValueError(f"job kind {kind.name!r} is already registered")
    if kind.lease <= kind.timeout:
        raise ValueError(
            f"job kind {kind.name!r}: the lease ({kind.lease} s) must exceed the timeout ({kind.timeout} s)"
        )
    _kinds[kind.name] = kind


def register_periodic(periodic: Periodic) -> None:
    """Registers periodic work; its kind must be registered too (checked when the worker starts)."""
    if (periodic.every is None) == (periodic.cron is None):
        raise ValueError(f"periodic {periodic.name!r}: give exactly one of `every` and `cron`")
    _periodic[periodic.name] = periodic


def kinds(patterns: list[str] | None = None) -> dict[str, JobKind]:
    """Returns the registered kinds, or those matching any of the glob `patterns` (`webhook.*`)."""
    if not patterns:
        return dict(_kinds)
    return {n: k for n, k in _kinds.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}


def periodics() -> dict[str, Periodic]:
    """Returns the registered periodic work."""
    return dict(_periodic)


def kind(name: str) -> JobKind:
    """Returns the registered kind `name`; raises KeyError naming it when none is."""
    try:
        return _kinds[name]
    except KeyError:
        raise KeyError(f"no job kind {name!r} is registered") from None


def enqueue(
    kind_name: str,
    payload: dict[str, Any],
    *,
    tenant_id: str | None,
    run_at: datetime | None = None,
    unique_key: str | None = None,
    priority: int = 0,
    resource: tuple[str, str] | None = None,
    livemode: bool | None = None,
) -> Job | None:
    """Writes a job in the caller's transaction; returns it, or None when `unique_key` is already
    held by an active (queued, running or failed) job of this kind in this tenant.

    `tenant_id` None makes a platform job. `resource` is (type, id) of what it works on.
    """
    spec = kind(kind_name)
    now = utcnow()
    if unique_key is not None:
        holder = Job.select(Job.id).where(
            (Job.kind == kind_name)
            & (Job.unique_key == unique_key)
            & (Job.status.in_(ACTIVE))
            & ((Job.tenant_id == tenant_id) if tenant_id is not None else Job.tenant_id.is_null())
        )
        if holder.exists():
            return None
    row = {
        "id": new_id("job"),
        "tenant_id": tenant_id,
        "livemode": current_livemode() if livemode is None else livemode,
        "kind": kind_name,
        "payload": payload,
        "status": "queued",
        "priority": priority,
        "run_at": run_at or now,
        "attempt": 0,
        "max_attempts": spec.max_attempts,
        "progress": 0,
        "unique_key": unique_key,
        "request_id": request_id_var.get(),
        "resource_type": resource[0] if resource else None,
        "resource_id": resource[1] if resource else None,
        "created_at": now,
        "updated_at": now,
    }
    # The partial unique index (m0015) settles a race between two enqueues of one key: the loser's
    # insert is ignored and it gets None, as if it had seen the holder.
    insert = Job.insert(**row)
    inserted = insert.on_conflict_ignore().as_rowcount().execute() if unique_key else insert.execute()
    if unique_key and not inserted:
        return None
    job = Job(**row)
    job._dirty.clear()  # type: ignore[attr-defined]  # peewee's stubs omit `_dirty`
    return job
