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

import contextvars
import fcntl
import fnmatch
import functools
import itertools
import json
import logging
import os
import queue
import random
import select
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from croniter import croniter
from peewee import Case

from models.base import current_livemode, database, use_livemode, utcnow
from models.job import ACTIVE, Job, JobAttempt, cancel_job
from tenantry.db import drop_connection, scope_rows_to
from tenantry.ids import new_id
from tenantry.logs import request_id_var
from tenantry.metrics import observe_job

if TYPE_CHECKING:
    from tenantry.settings import Settings

log = logging.getLogger("tenantry.jobs")

#: The channel enqueue announces due jobs on (PostgreSQL NOTIFY, or Redis pub/sub on SQLite).
CHANNEL = "tenantry_jobs"
#: The error of an attempt whose worker died or hung past its lease.
LOST = "the worker stopped before the job finished (lease expired)"
#: The error of an attempt still running when its worker was stopped and its grace period ended.
RELEASED = "the worker stopped before the job finished (released at shutdown; it does not count)"
#: The outcome metrics record for an attempt whose lease was lost before its result was written.
LOST_OUTCOME = "lost"


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
    `max_attempts == len(retry) + 1` (a job enqueued with fewer, such as a manual retry's one
    attempt, ends sooner). `lease` must exceed `timeout`: a job still running when
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
    #: `on_retry(job)` runs in the transaction that schedules a retry (`job.run_at` is its time):
    #: a domain record that shows the next attempt's time (a webhook delivery's) keeps it there.
    on_retry: Callable[[Job], None] | None = None
    #: `on_cancelled(job)` runs in the transaction that ends the job `cancelled` (the API's cancel
    #: of a waiting job, or a running one that stopped): a domain record waiting on it (a webhook
    #: delivery) ends too, instead of waiting for ever.
    on_cancelled: Callable[[Job], None] | None = None

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
    """What a running job sees: its row, its payload, and ways to report progress and honour cancellation.

    `now` is the worker's clock at the claim (a test's driven clock under `Worker.run_due`);
    `timeout` the seconds the job may run (its kind's): a job over it is failed when it returns.
    """

    job: Job
    now: datetime
    timeout: float = 0.0
    owner: str | None = None
    #: Set once `cancelled()` has answered True: the job saw the request (it ends `cancelled`).
    saw_cancel: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def payload(self) -> dict[str, Any]:
        """Returns the job's payload."""
        return self.job.payload

    def time_left(self) -> float:
        """Returns the seconds left before the job's timeout (never below zero)."""
        return max(0.0, self.timeout - (time.monotonic() - self.started))

    def _mine(self) -> Any:
        condition = (Job.id == self.job.id) & (Job.status == "running") & (Job.attempt == self.job.attempt)
        return condition & (Job.lease_owner == self.owner) if self.owner else condition

    def progress(self, percent: int) -> None:
        """Records progress (0..100, clamped), visible at GET /v1/jobs/{job_id}; its own short update."""
        percent = max(0, min(100, int(percent)))
        with database.atomic():
            Job.update(progress=percent, updated_at=utcnow()).where(self._mine()).execute()
        self.job.progress = percent

    def cancelled(self) -> bool:
        """Returns True when cancellation was requested: a long job checks it and stops (it ends `cancelled`)."""
        row = Job.select(Job.cancel_requested).where(Job.id == self.job.id).first()
        if row is not None and row.cancel_requested:
            self.saw_cancel = True
        return self.saw_cancel

    def holds_lease(self) -> bool:
        """Returns True while this attempt still holds the job's lease.

        Called inside a transaction, it locks the job's row (PostgreSQL) until that transaction
        ends, so a job writes its own domain records only while no other worker can have taken it.
        """
        query = Job.select(Job.id).where(self._mine())
        if database.for_update and database.in_transaction():
            query = query.for_update()
        return query.exists()


_kinds: dict[str, JobKind] = {}
_periodic: dict[str, Periodic] = {}


def register_kind(kind: JobKind, replace: bool = False) -> None:
    """Registers a kind of job; registering the same name twice with another definition is an error
    unless `replace` (a host reconfigured, a test's own settings)."""
    existing = _kinds.get(kind.name)
    if existing is not None and existing != kind and not replace:
        raise ValueError(f"job kind {kind.name!r} is already registered")
    if kind.lease <= kind.timeout:
        raise ValueError(
            f"job kind {kind.name!r}: the lease ({kind.lease} s) must exceed the timeout ({kind.timeout} s)"
        )
    _kinds[kind.name] = kind


def register_periodic(periodic: Periodic) -> None:
    """Registers periodic work; its kind must be registered too (`tenantry worker` checks at start:
    `unrunnable_periodics`). Raises ValueError for an unreadable cron expression or a non-positive interval."""
    if (periodic.every is None) == (periodic.cron is None):
        raise ValueError(f"periodic {periodic.name!r}: give exactly one of `every` and `cron`")
    # Refused here, at start, rather than at a worker's first tick (where it would fail every tick).
    if periodic.every is not None and periodic.every.total_seconds() <= 0:
        raise ValueError(f"periodic {periodic.name!r}: `every` must be positive, not {periodic.every}")
    if periodic.cron is not None:
        if not croniter.is_valid(periodic.cron):
            raise ValueError(f"periodic {periodic.name!r}: {periodic.cron!r} is not a cron expression croniter reads")
        try:  # readable, but it may name no moment at all (February 30th)
            croniter(periodic.cron, datetime(2000, 1, 1)).get_next(datetime)
        except Exception:
            raise ValueError(
                f"periodic {periodic.name!r}: the cron expression {periodic.cron!r} never matches"
            ) from None
    _periodic[periodic.name] = periodic


def unrunnable_periodics() -> list[str]:
    """Returns a line for each registered periodic work whose kind is not registered (a worker
    refuses to start with any: the work would never run, and each tick would log it)."""
    return [
        f"periodic {p.name!r}: job kind {p.kind!r} is not registered"
        for p in _periodic.values()
        if p.kind not in _kinds
    ]


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


def cancel(job: Job, now: datetime | None = None) -> tuple[Job, bool]:
    """Cancels `job` as `models.job.cancel_job` does (returns the job afterwards, and True when it
    runs and is only asked to stop); a job cancelled at once has its kind's `on_cancelled` run in
    the same transaction. Raises Conflict for a final job."""
    with database.atomic():
        after, running = cancel_job(job, now)
        if not running:
            _cancelled(after)
    return after, running


def _cancelled(job: Job) -> None:
    spec = _kinds.get(job.kind)  # a kind no longer registered has no hook to run
    if spec is not None and spec.on_cancelled is not None:
        spec.on_cancelled(job)


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
    max_attempts: int | None = None,
) -> Job | None:
    """Writes a job in the caller's transaction; returns it, or None when `unique_key` is already
    held by an active (queued, running or failed) job of this kind in this tenant.

    `tenant_id` None makes a platform job. `resource` is (type, id) of what it works on.
    `max_attempts` caps the attempts below the kind's (1: a manual retry's single attempt).
    A job due now wakes a waiting worker once the caller's transaction commits.
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
        "max_attempts": max(1, min(max_attempts, spec.max_attempts)) if max_attempts else spec.max_attempts,
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
    if (run_at or now) <= now:
        _announce()
    return job


# The wake-up: enqueue announces a due job, a waiting worker wakes at once instead of at its next
# poll. On PostgreSQL a NOTIFY inside the caller's transaction is delivered when it commits (and
# not at all when it rolls back), and one per transaction however many jobs it enqueues. On
# SQLite with REDIS_URL a Redis message is published after the commit. Either is only a hint: a
# lost one costs a poll interval, a spurious one a claim that finds nothing.

_redis_url: str | None = None
_redis_client: Any = None
_redis_down_until = 0.0


def configure_wakeup(settings: Settings) -> None:
    """Tells enqueue how to wake workers in this process: Redis pub/sub on SQLite when REDIS_URL is set."""
    global _redis_url, _redis_client  # process configuration, set once at start like the token service
    _redis_url = settings.redis_url if settings.is_sqlite and settings.redis_url else None
    _redis_client = None


_announced = threading.local()


def _announce() -> None:
    if not database.for_update and not _redis_url:
        return  # SQLite without Redis: the worker polls
    # Once per transaction: an event fanned out to ten endpoints enqueues ten jobs, and one
    # wake-up serves them all (PostgreSQL folds repeated NOTIFYs anyway; this saves round trips).
    top = database.top_transaction() if database.in_transaction() else None
    if top is not None and getattr(_announced, "transaction", None) is top:
        return
    _announced.transaction = top
    if database.for_update:  # PostgreSQL: delivered at commit, dropped on rollback
        database.execute_sql(f"NOTIFY {CHANNEL}")
    else:
        database.after_commit(_publish)


def _publish() -> None:
    global _redis_client, _redis_down_until  # one client per process, reused
    if _redis_url is None or time.monotonic() < _redis_down_until:
        return
    try:
        if _redis_client is None:
            import redis

            _redis_client = redis.Redis.from_url(_redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        _redis_client.publish(CHANNEL, "1")
    except Exception:
        # A request never fails for the hint: the workers poll. Leave Redis alone for a while.
        _redis_down_until = time.monotonic() + 5
        log.warning("could not announce a job on Redis; workers will find it when they poll", exc_info=True)


def _not_json(result: Any) -> str | None:
    """Returns why `result` cannot be stored as the job's JSON result (None when it can): the
    check JSONField's own encoding would fail, made before the attempt's record is written."""
    try:
        json.dumps(result, sort_keys=True, allow_nan=False)  # NaN is not JSON a client can read
    except (TypeError, ValueError, RecursionError) as exc:
        return type(exc).__name__
    return None


def _abandon_transactions() -> None:
    """Rolls back and forgets every transaction this thread's connection has open, then drops it."""
    while database.in_transaction():
        database.pop_transaction()
    try:
        database.rollback()
    except Exception:
        log.debug("rolling back an abandoned transaction failed", exc_info=True)
    database._clear_commit_callbacks()  # a rolled-back transaction's after-commit work never runs
    drop_connection()


class WorkerLocked(RuntimeError):
    """Another worker already runs on this SQLite database."""


@dataclass
class _Outcome:
    ok: bool
    result: Any = None
    error: str | None = None
    retry: bool = True
    cancelled: bool = False


def _jobs(cursor: Any) -> list[Job]:
    """Returns the jobs in `cursor`'s rows (every column of `job`), as the model reads them, clean."""
    fields = Job._meta.columns
    columns = [fields[d[0]] for d in cursor.description]
    jobs = []
    for values in cursor.fetchall():
        job = Job(**{f.name: f.python_value(v) for f, v in zip(columns, values, strict=True)})
        job._dirty.clear()  # type: ignore[attr-defined]  # peewee's stubs omit `_dirty`
        jobs.append(job)
    return jobs


def _then(then: Callable[[], None] | None) -> None:
    """Runs `then` in the caller's transaction; its failure is logged, and the rest commits.

    `then` keeps its writes in a savepoint of its own (a nested `database.atomic()`, as `claim`
    does), so that a failed statement leaves the caller's transaction usable.
    """
    if then is None:
        return
    try:
        then()
    except Exception:
        log.exception("could not claim the next job; the loop will")


class Worker:
    """Runs due jobs of the registered kinds (those matching `kinds`, glob patterns) until stopped.

    `concurrency` jobs run at once, each on a thread of its own, outside any transaction; `clock`
    (naive UTC) decides what is due and when leases lapse and retries fall due: tests pass their
    own and drive it with `run_due(now=...)`, which needs no thread and no sleep.
    """

    def __init__(
        self,
        settings: Settings,
        kinds: list[str] | None = None,
        concurrency: int = 8,
        clock: Callable[[], datetime] = utcnow,
        poll_interval: float | None = None,
        grace: float | None = None,
        scheduler: Callable[[datetime], int] | None = None,
    ) -> None:
        self.settings = settings
        self.patterns = list(kinds) if kinds else None
        self.concurrency = max(1, concurrency)
        self.clock = clock
        self.poll_interval = settings.worker_poll_interval if poll_interval is None else poll_interval
        self.grace = settings.worker_grace if grace is None else grace
        #: Enqueues the periodic work due at a moment, each slot once across workers (tenantry.periodic);
        #: called before each claim.
        self.scheduler = scheduler
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:64]
        self.stopping = threading.Event()
        #: Set by a notification, a finished job or stop(): the loop claims again at once.
        self.wake = threading.Event()
        #: Set once the wake-up listener is connected and listening (tests wait for it).
        self.listening = threading.Event()
        self._lock_file: IO[str] | None = None
        #: How many jobs of each kind this worker has run (its `--once` report).
        self.ran: Counter[str] = Counter()
        self._in_flight: dict[str, Job] = {}
        #: When this worker last claimed a job of each tenant (a running count): the fair turn's tie-break.
        self._last_served: dict[str, int] = {}
        self._serve_counter = itertools.count()
        self._guard = threading.Lock()
        self._maybe_more = False

    # -- the queue ---------------------------------------------------------------------------

    def served(self) -> dict[str, JobKind]:
        """Returns the kinds this worker runs (read at each claim: kinds may be registered late)."""
        return kinds(self.patterns)

    def claim(
        self,
        now: datetime,
        count: int,
        exclude: set[str] | None = None,
        tenant_id: str | None = None,
        sweep: bool = True,
    ) -> list[Job]:
        """Leases up to `count` due jobs to this worker in one short transaction; returns them, running.

        Due: queued, or failed with its retry time reached. With `sweep` (the default), jobs whose
        lease lapsed (their worker died or hung) are rescued first: the lost attempt is recorded
        and the job retried or dead; and due jobs whose cancellation was requested end `cancelled`.
        The long-running loop sweeps once per poll interval, not at every claim.
        Fair across tenants: each tenant's first due job comes before any tenant's second, so a
        tenant with thousands queued delays another's few by at most one job per slot.
        `tenant_id` limits the claim to one tenant (tests sharing a database).
        """
        served = self.served()
        if not served or count <= 0:
            return []
        names = list(served)
        with database.atomic():
            if sweep:
                self._sweep(now, served, tenant_id)
            due = (
                Job.status.in_(("queued", "failed")) & (Job.run_at <= now) & Job.kind.in_(names) & ~Job.cancel_requested
            )
            if tenant_id is not None:
                due &= Job.tenant_id == tenant_id
            if exclude:
                due &= Job.id.not_in(list(exclude))
            if database.for_update:
                return self._note_served(self._lease_postgres(now, count, served, exclude, tenant_id))
            # A few more candidates than wanted: another worker may hold some.
            candidates = self._fair_candidates(now, names, count * 4 + 4, exclude, tenant_id)
            self._maybe_more = False
            if not candidates:
                return []
            turn = Case(Job.id, [(job_id, n) for n, job_id in enumerate(candidates)])
            query = Job.select().where(due & Job.id.in_(candidates)).order_by(turn).limit(count)
            if database.for_update:
                # Two workers never take one job; each skips the rows the other has just locked.
                query = query.for_update(skip_locked=True)
            rows = list(query)
            # Fewer taken than were due: another worker held some, and more may be due behind them.
            self._maybe_more = len(rows) < min(count, len(candidates))
            attempts = []
            for row in rows:
                lease = served[row.kind].lease
                row.status, row.attempt, row.lease_owner = "running", row.attempt + 1, self.owner
                row.lease_until, row.started_at, row.updated_at = now + timedelta(seconds=lease), now, now
                Job.update(
                    status="running",
                    attempt=row.attempt,
                    lease_owner=self.owner,
                    lease_until=row.lease_until,
                    started_at=now,
                    updated_at=now,
                ).where(Job.id == row.id).execute()
                attempts.append(
                    {
                        "id": new_id("jat"),
                        "tenant_id": row.tenant_id,
                        "job_id": row.id,
                        "number": row.attempt,
                        "worker": self.owner,
                        "started_at": now,
                        "outcome": "running",
                    }
                )
                row._dirty.clear()  # type: ignore[attr-defined]  # peewee's stubs omit `_dirty`
            if attempts:
                JobAttempt.insert_many(attempts).execute()  # one statement for every attempt started
        return self._note_served(rows)

    def _note_served(self, rows: list[Job]) -> list[Job]:
        """Notes that this worker served the tenants of `rows` now (the fair turn's tie-break); returns them."""
        if len(self._last_served) > 10_000:  # a bound: the order among tenants long unserved matters little
            self._last_served.clear()
        for row in rows:
            self._last_served[row.tenant_id or ""] = next(self._serve_counter)
        return rows

    def _lease_postgres(
        self, now: datetime, count: int, served: dict[str, JobKind], exclude: set[str] | None, tenant_id: str | None
    ) -> list[Job]:
        """PostgreSQL's claim in two statements: the fair candidates read; then the first `count` of them
        not locked by another worker (SKIP LOCKED) leased and their attempts started; returns the leased jobs.

        The candidates are read first, and locked by id: a join of the candidates with the table in
        one statement lets the planner walk every due row for each.
        """
        names = list(served)
        # A few more candidates than wanted: another worker may hold some.
        candidates = self._fair_candidates(now, names, count * 4 + 4, exclude, tenant_id)
        self._maybe_more = False
        if not candidates:
            return []
        leases = [Job.lease_until.db_value(now + timedelta(seconds=spec.lease)) for spec in served.values()]
        at = Job.started_at.db_value(now)
        # The columns by name, not `*`: a prepared statement whose result changes shape (a column
        # added by an upgrade while the worker runs) fails until it is prepared again.
        names_in_order = [field.column_name for field in Job._meta.sorted_fields]
        columns = ", ".join(f"job.{name}" for name in names_in_order)
        sql = (
            # Locked in their turn; the state is checked again on the row as locked (another worker
            # may have leased it, or the API cancelled it, since the candidates were read).
            # Found by their ids (a primary-key probe each): the state is tested as "none of the
            # other states" so that no index on the state (job_fair, job_due) looks cheaper to a
            # planner whose statistics predate a burst of enqueues.
            "WITH picked AS (SELECT j.id FROM unnest(%s::text[]) WITH ORDINALITY AS c(id, turn) "  # noqa: S608 (column names and placeholders only)
            "JOIN job j ON j.id = c.id "
            "WHERE j.status <> ALL(ARRAY['running', 'succeeded', 'dead', 'cancelled']) "
            "AND j.run_at <= %s AND NOT j.cancel_requested "
            "ORDER BY c.turn LIMIT %s FOR UPDATE OF j SKIP LOCKED), "
            "leased AS (UPDATE job SET status = 'running', attempt = job.attempt + 1, lease_owner = %s, "
            "lease_until = (%s::timestamp[])[array_position(%s::text[], job.kind::text)], "
            "started_at = %s, updated_at = %s FROM picked WHERE job.id = picked.id "
            f"RETURNING {columns}), "
            "started AS (INSERT INTO job_attempt (id, tenant_id, job_id, number, worker, started_at, outcome) "
            "SELECT (%s::text[])[row_number() OVER ()], tenant_id, id, attempt, %s, %s, 'running' FROM leased) "
            f"SELECT {', '.join(names_in_order)} FROM leased"
        )
        params = [
            candidates,
            Job.run_at.db_value(now),
            count,
            self.owner,
            leases,
            names,
            at,
            at,
            [new_id("jat") for _ in range(count)],
            self.owner,
            at,
        ]
        # Prepared once per connection: its text never changes, so PostgreSQL parses and plans it once.
        rows = _jobs(database.execute_prepared("tenantry_job_lease", sql, params))
        turn = {job_id: n for n, job_id in enumerate(candidates)}
        rows.sort(key=lambda row: turn[row.id])  # RETURNING keeps no order: the slots get them in turn
        # Fewer taken than were due: another worker held some, and more may be due behind them.
        self._maybe_more = len(rows) < min(count, len(candidates))
        for row in rows:
            row._dirty.clear()  # type: ignore[attr-defined]  # peewee's stubs omit `_dirty`
        return rows

    def _fair_candidates(
        self, now: datetime, names: list[str], limit: int, exclude: set[str] | None, tenant_id: str | None
    ) -> list[str]:
        """Returns the ids of up to `limit` due jobs in their fair turn: every tenant's first, then every second...

        Within a turn (and a tenant) higher priority, then earlier run_at, then id comes first.
        The cost is one index probe per tenant with waiting jobs (m0018's `job_fair`), never a read
        of every due row: the tenants are walked as a loose index scan, and each gives its first
        `share` due jobs, `share` being enough for `limit` when spread over them (at least 2). A
        tenant with fewer due jobs than its share leaves the list shorter, never out of turn: it
        is always a prefix of the full ranking.
        """
        sql, params = self._fair_sql(now, names, limit, exclude, tenant_id)
        if database.for_update:  # prepared: its text is one of two, whatever the kinds and exclusions
            name = "tenantry_job_fair" if tenant_id is None else "tenantry_job_fair_tenant"
            cursor = database.execute_prepared(name, sql, params)
        else:
            cursor = database.execute_sql(sql, params)
        turns: dict[str, int] = {}
        ranked = []
        rows = sorted(cursor.fetchall(), key=lambda r: (r[1], -r[2], r[3], r[0]))
        for job_id, tenant, priority, run_at in rows:
            turns[tenant] = turns.get(tenant, 0) + 1
            # Within a turn, the tenant this worker served longest ago (or never) first: a slot
            # claiming one job at a time alternates between tenants, instead of serving the tenant
            # with the oldest backlog until it drains.
            ranked.append((turns[tenant], -priority, self._last_served.get(tenant, -1), run_at, job_id))
        return [job_id for *_, job_id in sorted(ranked)[:limit]]

    def _fair_sql(
        self, now: datetime, names: list[str], limit: int, exclude: set[str] | None, tenant_id: str | None
    ) -> tuple[str, list[Any]]:
        """Returns the query behind `_fair_candidates` and its parameters.

        Its rows are (id, tenant key, priority, run_at).
        """
        p = database.param
        key = "coalesce(j.tenant_id, '')"
        # job_fair's predicate word for word (a partial index serves only a query that states it).
        waiting = "j.status IN ('queued', 'failed')"
        params: list[Any] = [Job.run_at.db_value(now)]
        if database.for_update:  # arrays: one text for any kinds and exclusions (a prepared statement)
            due = f"{key} = tenants.t AND {waiting} AND j.run_at <= %s AND j.kind = ANY(%s::text[])"
            due += " AND NOT j.cancel_requested AND NOT (j.id = ANY(%s::text[]))"
            params += [names, list(exclude or ())]
        else:
            due = f"{key} = tenants.t AND {waiting} AND j.run_at <= ? AND j.kind IN ({', '.join('?' * len(names))})"
            due += " AND NOT j.cancel_requested"
            params += names
            if exclude:
                due += f" AND j.id NOT IN ({', '.join('?' * len(exclude))})"
                params += list(exclude)
        if tenant_id is not None:
            tenants = f"tenants(t) AS (SELECT CAST({p} AS TEXT))"
            tenant_params: list[Any] = [tenant_id]
        else:
            # One index probe per tenant: the next tenant key above the last (a loose index scan).
            first = f"SELECT {key} FROM job j WHERE {waiting}"  # noqa: S608 (fixed fragments, no values)
            tenants = (
                f"RECURSIVE tenants(t) AS (SELECT ({first} ORDER BY {key} LIMIT 1) UNION ALL "  # noqa: S608
                f"SELECT ({first} AND {key} > tenants.t ORDER BY {key} LIMIT 1) "
                "FROM tenants WHERE tenants.t IS NOT NULL)"
            )
            tenant_params = []
        greatest = "greatest" if database.for_update else "max"
        share = f"(SELECT {greatest}(2, {p} / {greatest}(1, count(*)) + 1) FROM tenants WHERE t IS NOT NULL)"  # noqa: S608
        columns = f"j.id, {key}, j.priority, j.run_at"
        outer = "o.id, coalesce(o.tenant_id, ''), o.priority, o.run_at"
        order = "ORDER BY j.priority DESC, j.run_at, j.id"
        if database.for_update:  # PostgreSQL: each tenant's first jobs through LATERAL
            sql = (
                f"WITH {tenants} SELECT c.* FROM tenants CROSS JOIN LATERAL "  # noqa: S608
                f"(SELECT {columns} FROM job j WHERE {due} {order} LIMIT {share}) c WHERE tenants.t IS NOT NULL"
            )
            params = [*tenant_params, *params, limit]
        else:  # SQLite has no LATERAL; a correlated IN with a LIMIT does the same
            sql = (
                f"WITH {tenants} SELECT {outer} FROM tenants, job o "  # noqa: S608
                f"WHERE tenants.t IS NOT NULL AND o.id IN (SELECT j.id FROM job j WHERE {due} {order} LIMIT {share})"
            )
            params = [*tenant_params, *params, limit]
        return sql, params

    def _sweep(self, now: datetime, served: dict[str, JobKind], tenant_id: str | None) -> None:
        """Rescues the jobs whose lease lapsed, and ends `cancelled` the due jobs asked to stop while waiting."""
        self._rescue(now, served, tenant_id)
        # Asked to stop while waiting (a running job's cancel, released or rescued back to the
        # queue before it saw it): it ends without running, its kind's on_cancelled with it.
        asked = Job.select().where(Job.status.in_(("queued", "failed")) & (Job.run_at <= now) & Job.cancel_requested)
        if tenant_id is not None:
            asked = asked.where(Job.tenant_id == tenant_id)
        if database.for_update:
            asked = asked.for_update(skip_locked=True)
        for row in list(asked.limit(100)):
            Job.update(status="cancelled", finished_at=now, updated_at=now).where(
                (Job.id == row.id) & Job.status.in_(("queued", "failed"))
            ).execute()
            row.status, row.finished_at, row.updated_at = "cancelled", now, now
            row._dirty.clear()  # type: ignore[attr-defined]  # peewee's stubs omit `_dirty`
            _cancelled(row)

    def _rescue(self, now: datetime, served: dict[str, JobKind], tenant_id: str | None) -> None:
        """Settles the running jobs whose lease lapsed: attempt lost, job retried or dead (never left running)."""
        lapsed = Job.select().where((Job.status == "running") & (Job.lease_until < now) & Job.kind.in_(list(served)))
        if tenant_id is not None:
            lapsed = lapsed.where(Job.tenant_id == tenant_id)
        if database.for_update:
            lapsed = lapsed.for_update(skip_locked=True)
        for row in lapsed.limit(100):
            log.warning(
                "job lease lapsed: the attempt is lost",
                extra={"job_id": row.id, "kind": row.kind, "attempt": row.attempt, "lease_owner": row.lease_owner},
            )
            outcome = _Outcome(ok=False, error=LOST, cancelled=bool(row.cancel_requested))
            self._settle(row, served[row.kind], now, outcome, attempt_outcome="lost")

    def _settle(
        self,
        row: Job,
        spec: JobKind,
        now: datetime,
        outcome: _Outcome,
        duration_ms: int | None = None,
        attempt_outcome: str | None = None,
    ) -> None:
        """Writes an attempt's end and the job's next state (inside the caller's transaction)."""
        number = row.attempt
        state: dict[str, Any] = {"lease_owner": None, "lease_until": None, "updated_at": now}
        if outcome.cancelled:
            state.update(status="cancelled", finished_at=now, last_error=outcome.error)
            attempt_outcome = attempt_outcome or "cancelled"
        elif outcome.ok:
            state.update(status="succeeded", finished_at=now, result=outcome.result, progress=100)
            attempt_outcome = "succeeded"
        elif not outcome.retry or number >= row.max_attempts:
            state.update(status="dead", finished_at=now, last_error=outcome.error)
        else:
            delay = spec.retry[min(number - 1, len(spec.retry) - 1)] if spec.retry else 0.0
            delay *= 1 + random.uniform(0, spec.jitter)  # noqa: S311 (jitter, not a secret)
            state.update(status="failed", run_at=now + timedelta(seconds=delay), last_error=outcome.error)
        JobAttempt.update(
            outcome=attempt_outcome or "failed",
            error=outcome.error,
            finished_at=now,
            duration_ms=duration_ms,
        ).where((JobAttempt.job_id == row.id) & (JobAttempt.number == number)).execute()
        Job.update(**state).where(Job.id == row.id).execute()
        for name, value in state.items():
            setattr(row, name, value)
        row._dirty.clear()  # type: ignore[attr-defined]  # peewee's stubs omit `_dirty`
        if state["status"] == "dead" and spec.on_exhausted is not None:
            spec.on_exhausted(row)
        elif state["status"] == "cancelled" and spec.on_cancelled is not None:
            spec.on_cancelled(row)
        elif state["status"] == "failed" and spec.on_retry is not None:
            spec.on_retry(row)

    # -- running one job ---------------------------------------------------------------------

    def execute(self, job: Job, now: datetime | None = None, then: Callable[[], None] | None = None) -> str:
        """Runs one claimed job and records its outcome; returns the job's new status ('' if the lease was lost).

        The job runs outside any transaction, as its tenant (row-level security), in its mode, with
        the request id of the request that enqueued it (every log line carries it); all three are
        reset afterwards, so the thread's next job starts clean. `then()`, if given, runs in the
        transaction that records the outcome, after it; it must write in a savepoint of its own
        (`claim` does): its failure is logged and never undoes the record.
        """
        return contextvars.copy_context().run(self._execute, job, now, then)

    def _execute(self, job: Job, now: datetime | None, then: Callable[[], None] | None = None) -> str:
        spec = kind(job.kind)
        self.ran[job.kind] += 1
        request_id_var.set(job.request_id)
        use_livemode(bool(job.livemode))
        scope_rows_to(job.tenant_id)
        ctx = JobContext(job=job, now=now or self.clock(), timeout=spec.timeout, owner=self.owner)
        clock = time.perf_counter()
        try:
            interrupt: BaseException | None = None
            raised = False
            # Jobs run outside any transaction; a caller that runs one inside its own keeps it.
            outside = not database.in_transaction()
            try:
                outcome = _Outcome(ok=True, result=spec.run(ctx))
            except JobError as exc:
                outcome = _Outcome(ok=False, error=str(exc)[:1000], retry=exc.retry)
            except BaseException as exc:
                # The traceback is for the operator's log; the API shows only the exception's type.
                # BaseException too: a job's SystemExit or KeyboardInterrupt ends its attempt, not
                # the worker's thread (which would leave the job `running` and the slot gone).
                log.exception("job failed", extra={"job_id": job.id, "kind": job.kind, "attempt": job.attempt})
                outcome = _Outcome(ok=False, error=f"the job failed: {type(exc).__name__}")
                raised = True
                if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
                    interrupt = exc  # an operator's Ctrl-C of `tenantry worker --once`: recorded, then obeyed
            if outside and database.in_transaction():
                # The job opened a transaction and never left it: its writes are rolled back, or
                # the attempt's record (a savepoint inside it) and every later job would never commit.
                log.error("job left a transaction open; rolled back", extra={"job_id": job.id, "kind": job.kind})
                _abandon_transactions()
                outcome = _Outcome(ok=False, error="the job left a transaction open (rolled back)")
            elif raised:
                drop_connection()
            if outcome.ok and (problem := _not_json(outcome.result)) is not None:
                outcome = _Outcome(ok=False, error=f"the job's result is not JSON ({problem})")
            elapsed = time.perf_counter() - clock
            if elapsed > spec.timeout:
                outcome = _Outcome(ok=False, error=f"the job ran past its timeout ({spec.timeout:g} s)")
            if ctx.saw_cancel:  # it saw the request and stopped
                outcome.cancelled = True
            status = self._record(job, spec, now or self.clock(), outcome, int(elapsed * 1000), then)
            observe_job(job.kind, status or LOST_OUTCOME, elapsed)
            log.info(
                "job attempt",
                extra={"job_id": job.id, "kind": job.kind, "attempt": job.attempt, "status": status or "lease lost"},
            )
            if interrupt is not None:
                raise interrupt
            return status
        finally:
            scope_rows_to(None)

    def _record(
        self,
        job: Job,
        spec: JobKind,
        now: datetime,
        outcome: _Outcome,
        duration_ms: int,
        then: Callable[[], None] | None = None,
    ) -> str:
        """Records the attempt in one transaction, if this worker still holds the job's lease; runs `then` in it."""
        if outcome.ok and not outcome.cancelled:
            return self._record_success(job, now, outcome.result, duration_ms, then)
        with database.atomic():
            query = Job.select().where(Job.id == job.id)
            if database.for_update:
                query = query.for_update()
            row = query.get_or_none()
            if row is None or row.status != "running" or row.lease_owner != self.owner or row.attempt != job.attempt:
                # The lease lapsed and the job was rescued (its attempt is on record as lost): the
                # state is no longer this worker's to write.
                log.warning("job lease lost before the result was written", extra={"job_id": job.id})
                status = ""
            else:
                if row.cancel_requested and not outcome.ok:
                    outcome.cancelled = True
                self._settle(row, spec, now, outcome, duration_ms)
                status = str(row.status)
            _then(then)
        return status

    def _record_success(
        self, job: Job, now: datetime, result: Any, duration_ms: int, then: Callable[[], None] | None = None
    ) -> str:
        """Records a succeeded attempt: the job's state and its attempt's end, if the lease is still ours.

        The common case, written without reading the row first: the job's update names the lease
        it must still hold (a rescued job's is another's, and the update changes nothing), and the
        attempt's end is written only with it. On PostgreSQL both are one statement (one round
        trip, atomic on its own, when there is no `then`); on SQLite one short transaction.
        """
        p = database.param
        # Only the driver's placeholder is formatted in; every value is a parameter.
        settle_job = (
            f"UPDATE job SET status = 'succeeded', finished_at = {p}, result = {p}, progress = 100, "  # noqa: S608
            f"lease_owner = NULL, lease_until = NULL, updated_at = {p} "
            f"WHERE id = {p} AND status = 'running' AND lease_owner = {p} AND attempt = {p}"
        )
        at = Job.finished_at.db_value(now)
        job_params = [at, Job.result.db_value(result), at, job.id, self.owner, job.attempt]
        settle_attempt = (
            f"UPDATE job_attempt SET outcome = 'succeeded', error = NULL, finished_at = {p}, duration_ms = {p} "  # noqa: S608
            f"WHERE job_id = {p} AND number = {p}"
        )
        attempt_params = [at, duration_ms, job.id, job.attempt]
        if database.for_update:
            sql = (
                f"WITH settled AS ({settle_job} RETURNING id), "  # noqa: S608
                f"attempt AS ({settle_attempt.replace(f'job_id = {p}', 'job_id IN (SELECT id FROM settled)')}) "
                "SELECT count(*) FROM settled"
            )
            params = [*job_params, at, duration_ms, job.attempt]
            if then is None:
                settled = database.execute_prepared("tenantry_job_settle", sql, params).fetchone()[0]
            else:
                with database.atomic():
                    settled = database.execute_prepared("tenantry_job_settle", sql, params).fetchone()[0]
                    _then(then)
        else:
            with database.atomic():
                settled = database.execute_sql(settle_job, job_params).rowcount
                if settled:
                    database.execute_sql(settle_attempt, attempt_params)
                _then(then)
        if not settled:
            # The lease lapsed and the job was rescued (its attempt is on record as lost): the
            # state is no longer this worker's to write.
            log.warning("job lease lost before the result was written", extra={"job_id": job.id})
            return ""
        job.status, job.finished_at, job.result, job.progress = "succeeded", now, result, 100
        job.lease_owner, job.lease_until, job.updated_at = None, None, now
        job._dirty.clear()  # type: ignore[attr-defined]  # peewee's stubs omit `_dirty`
        return "succeeded"

    def _schedule(self, now: datetime) -> None:
        if self.scheduler is not None:
            self.scheduler(now)

    # -- the synchronous driver (tests, `tenantry worker --once`) ------------------------------

    def run_due(self, now: datetime | None = None, tenant_id: str | None = None) -> int:
        """Claims and runs, one after another on this thread, every job due at `now`; returns how many ran.

        `now` (default: the worker's clock) is the time for the whole pass: leases, retries and
        what is due. `tenant_id` limits it to one tenant's jobs.
        """
        now = now or self.clock()
        ran = 0
        self._schedule(now)
        for _ in range(10_000):  # a kind retrying with no delay cannot hold the caller forever
            claimed = self.claim(now, self.concurrency, tenant_id=tenant_id)
            if not claimed:
                break
            for job in claimed:
                self.execute(job, now)
                ran += 1
        return ran

    # -- the long-running worker ---------------------------------------------------------------

    def hold_sqlite_lock(self) -> None:
        """On SQLite, takes the database's worker lock; raises WorkerLocked when another worker has it."""
        if not self.settings.is_sqlite:
            return
        path = Path(self.settings.database_url.removeprefix("sqlite:///") + ".worker.lock")
        handle = path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise WorkerLocked(
                f"another worker holds {path}: on SQLite one worker runs per database (use PostgreSQL for more)"
            ) from None
        self._lock_file = handle

    def stop(self) -> None:
        """Asks `run` to stop claiming, finish what runs within the grace period, and return."""
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        """Runs jobs until `stop()` (SIGTERM); then lets the running ones finish within the grace
        period and releases the leases of any still running (back to queued or failed, not counted)."""
        work: queue.Queue[Job | None] = queue.Queue()
        slots = [
            threading.Thread(target=self._slot, args=(work,), name=f"job-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        for slot in slots:
            slot.start()
        listener = threading.Thread(target=self._listen, name="job-wakeup", daemon=True)
        listener.start()
        swept_at = -float("inf")
        while not self.stopping.is_set():
            self.wake.clear()
            with self._guard:
                busy = set(self._in_flight)
            free = self.concurrency - len(busy)
            claimed: list[Job] = []
            # The rescue and the cancel sweep once per poll interval, not at every claim: a lapsed
            # lease waits at most that much longer, and a busy queue claims faster. Also while
            # every slot is busy (each claims its next job itself, see `_slot`): the loop wakes at
            # least once per poll interval, so periodic work is scheduled and leases rescued.
            sweep = time.monotonic() >= swept_at + self.poll_interval
            if free > 0 or sweep:
                try:
                    self._schedule(self.clock())
                    if free > 0:
                        # Never a job this process still has in hand, even if its lease lapsed.
                        claimed = self.claim(self.clock(), free, exclude=busy, sweep=sweep)
                    else:
                        with database.atomic():
                            self._sweep(self.clock(), self.served(), None)
                    if sweep:
                        swept_at = time.monotonic()
                except Exception:
                    log.exception("could not claim jobs; retrying")
                    drop_connection()
            for job in claimed:
                with self._guard:
                    self._in_flight[job.id] = job
                work.put(job)
            if free <= 0 or len(claimed) < free:
                # Another worker holding due rows: a short pause, not a poll interval, before trying again.
                self.wake.wait(min(0.05, self.poll_interval) if free > 0 and self._maybe_more else self.poll_interval)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            with self._guard:
                if not self._in_flight:
                    break
            time.sleep(0.05)
        self._release()
        for _ in slots:
            work.put(None)
        log.info("worker stopped", extra={"owner": self.owner})

    def _slot(self, work: queue.Queue[Job | None]) -> None:
        job = work.get()
        while job is not None:
            # A freed slot claims its next job at once, in the transaction that records the last
            # one: one commit (one WAL flush) fewer per job, and no hand-off through the loop.
            chained: list[Job] = []
            try:
                self.execute(job, then=functools.partial(self._claim_next, chained))
            except BaseException:
                # The lease lapses and the job is rescued by a worker: nothing is lost. A job
                # claimed in the failed transaction was never leased. The slot lives on whatever
                # was raised: a dead slot would lower the concurrency for good.
                log.exception("job could not be recorded", extra={"job_id": job.id})
                drop_connection()
                chained.clear()
            finally:
                with self._guard:
                    self._in_flight.pop(job.id, None)
                    for taken in chained:
                        self._in_flight[taken.id] = taken
                if not chained:
                    self.wake.set()
            job = chained[0] if chained else work.get()

    def _claim_next(self, into: list[Job]) -> None:
        """Claims one job for a slot (in the transaction recording its last one) into `into`; none once stopping."""
        if self.stopping.is_set():
            return
        with self._guard:
            busy = set(self._in_flight)
        scope_rows_to(None)  # the claim sees every tenant's jobs (the record ran as the last job's tenant)
        into.extend(self.claim(self.clock(), 1, exclude=busy, sweep=False))

    def _release(self) -> None:
        """Hands the jobs still running back to the queue: due now, the interrupted attempt not counted."""
        with self._guard:
            left = list(self._in_flight.values())
        if not left:
            return
        now = self.clock()
        try:
            with database.atomic():
                for job in left:
                    mine = (
                        (Job.id == job.id)
                        & (Job.status == "running")
                        & (Job.lease_owner == self.owner)
                        & (Job.attempt == job.attempt)
                    )
                    released = (
                        Job.update(
                            status="queued" if job.attempt == 1 else "failed",
                            max_attempts=Job.max_attempts + 1,
                            lease_owner=None,
                            lease_until=None,
                            run_at=now,
                            updated_at=now,
                        )
                        .where(mine)
                        .execute()
                    )
                    if released:
                        JobAttempt.update(outcome="lost", error=RELEASED, finished_at=now).where(
                            (JobAttempt.job_id == job.id) & (JobAttempt.number == job.attempt)
                        ).execute()
                        log.warning("job released at shutdown", extra={"job_id": job.id, "kind": job.kind})
        except Exception:
            log.exception("could not release running jobs; their leases will lapse")

    def _listen(self) -> None:
        """Sets `wake` whenever a job is announced (LISTEN/NOTIFY or Redis), until the worker stops."""
        while not self.stopping.is_set():
            try:
                if not self.settings.is_sqlite:
                    self._listen_postgres()
                elif self.settings.redis_url:
                    self._listen_redis()
                else:
                    return  # polling alone
            except Exception:
                self.listening.clear()
                log.warning("job wake-up listener failed; polling until it reconnects", exc_info=True)
                self.stopping.wait(self.poll_interval)

    def _listen_postgres(self) -> None:
        import psycopg2

        conn = psycopg2.connect(self.settings.database_url, connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            while not self.stopping.is_set():
                if select.select([conn], [], [], 0.5)[0]:
                    conn.poll()
                    if conn.notifies:
                        conn.notifies.clear()
                        self.wake.set()
        finally:
            conn.close()

    def _listen_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=5)
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(CHANNEL)
            while not self.stopping.is_set():
                message = pubsub.get_message(timeout=0.5)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    self.listening.set()  # Redis has confirmed: every later publish reaches us
                elif message["type"] == "message":
                    self.wake.set()
        finally:
            pubsub.close()
            client.close()
