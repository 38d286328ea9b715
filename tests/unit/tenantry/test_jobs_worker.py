"""The job worker, in process, against a real database of its own (SQLite or PostgreSQL).

Time is a clock the tests drive (`Worker.run_due(now=...)`): retries, leases and schedules are
checked without sleeping. The wake-up test and the SIGKILL test use real time, each bounded.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from models.base import current_livemode, database, utcnow
from models.job import FINAL, Job, JobAttempt
from models.tenant import Tenant
from tenantry import jobs
from tenantry.db import init_database, upgrade
from tenantry.ids import new_id
from tenantry.jobs import JobContext, JobError, JobKind, Worker, enqueue
from tenantry.logs import JsonFormatter, request_id_var
from tenantry.settings import Settings
from tests.livesrv import REDIS_URL, ROOT, FreshDatabase, backend, eventually, postgres_reachable

T0 = datetime(2030, 1, 1, 12, 0, 0)


def at(seconds: float) -> datetime:
    """The driven clock: T0 plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def db() -> Iterator[FreshDatabase]:
    if backend() == "postgres" and not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable")
    fresh = FreshDatabase(backend())
    init_database(fresh.url, 8)
    upgrade()
    if backend() == "postgres":
        database.obj.close_all()
        # As the server acts: the role row-level security binds.
        init_database(fresh.url, 8, role="tenantry_app")
    yield fresh
    if backend() == "postgres":
        database.obj.close_all()
    else:
        database.close()
    fresh.drop()


@pytest.fixture
def settings(db: FreshDatabase) -> Settings:
    return Settings(database_url=db.url, secret_key="x" * 40, worker_poll_interval=5.0, worker_grace=0.2)


@pytest.fixture(autouse=True)
def empty_queue(db: FreshDatabase) -> Iterator[None]:
    yield
    with database.atomic():
        JobAttempt.delete().execute()
        Job.delete().execute()


def tenant(name: str = "Acme") -> str:
    row = Tenant.create(id=new_id("ten"), name=name)
    return row.id


def kind(name: str, run: Any, **options: Any) -> JobKind:
    spec = JobKind(name, run, **options)
    jobs.register_kind(spec, replace=True)
    return spec


def job(job_id: str) -> Job:
    return Job.get_by_id(job_id)


def attempts(job_id: str) -> list[JobAttempt]:
    return list(JobAttempt.select().where(JobAttempt.job_id == job_id).order_by(JobAttempt.number))


def succeed(ctx: JobContext) -> dict[str, Any]:
    return {"done": ctx.payload.get("n")}


# -- enqueue: the outbox rule and unique keys -----------------------------------------------------


def test_a_rolled_back_enqueue_leaves_no_job_and_a_committed_one_is_seen_by_another_connection(db):
    kind("test.ok", succeed)
    owner = tenant()

    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned), database.atomic():
        enqueue("test.ok", {"n": 1}, tenant_id=owner)
        raise Abandoned
    assert Job.select().count() == 0
    with database.atomic():
        made = enqueue("test.ok", {"n": 2}, tenant_id=owner)
    seen: list[Any] = []
    other = threading.Thread(target=lambda: seen.append(Job.get_or_none(Job.id == made.id)))
    other.start()
    other.join(10)
    assert seen[0] is not None and seen[0].status == "queued" and seen[0].payload == {"n": 2}


def test_a_unique_key_holds_while_the_job_is_active_even_under_a_race(db, settings):
    kind("test.ok", succeed)
    owner = tenant()
    first = enqueue("test.ok", {}, tenant_id=owner, unique_key="k1")
    assert first is not None
    assert enqueue("test.ok", {}, tenant_id=owner, unique_key="k1") is None
    assert enqueue("test.ok", {}, tenant_id=tenant("Other"), unique_key="k1") is not None  # per tenant
    Worker(settings, kinds=["test.ok"]).run_due(now=utcnow() + timedelta(seconds=1), tenant_id=owner)
    assert job(first.id).status == "succeeded"
    assert enqueue("test.ok", {}, tenant_id=owner, unique_key="k1") is not None  # a finished job holds nothing
    # Two transactions enqueue one key at once: exactly one job.
    barrier, results = threading.Barrier(2), []

    def racer() -> None:
        barrier.wait(5)
        with database.atomic():
            results.append(enqueue("test.ok", {}, tenant_id=owner, unique_key="race"))

    racers = [threading.Thread(target=racer) for _ in range(2)]
    for racer_thread in racers:
        racer_thread.start()
    for racer_thread in racers:
        racer_thread.join(20)
    assert sorted(r is None for r in results) == [False, True]
    assert Job.select().where(Job.unique_key == "race").count() == 1


# -- retries, dead letters, the driven clock ------------------------------------------------------


def test_a_failing_job_retries_on_its_schedule_then_dies_with_every_error_kept(db, settings):
    exhausted: list[tuple[str, str, bool]] = []

    def fail(ctx: JobContext) -> None:
        if ctx.job.attempt == 2:
            raise ValueError("a secret the tenant must not see")
        raise JobError(f"the partner said no ({ctx.job.attempt})")

    kind(
        "test.fail",
        fail,
        retry=(10, 20),
        on_exhausted=lambda j: exhausted.append((j.id, j.status, database.in_transaction())),
    )
    made = enqueue("test.fail", {}, tenant_id=tenant(), run_at=T0)
    worker = Worker(settings, kinds=["test.*"])
    assert worker.run_due(now=at(0)) == 1
    first = job(made.id)
    assert first.status == "failed" and first.attempt == 1 and first.lease_owner is None
    assert at(10) <= first.run_at <= at(12)  # 10 s, stretched by up to 20% jitter
    assert worker.run_due(now=at(9.9)) == 0
    assert worker.run_due(now=at(12)) == 1
    second = job(made.id)
    assert second.status == "failed" and second.last_error == "the job failed: ValueError"
    assert worker.run_due(now=at(12 + 19.9)) == 0
    assert worker.run_due(now=at(12 + 24)) == 1
    dead = job(made.id)
    assert dead.status == "dead" and dead.finished_at == at(36) and dead.attempt == 3
    assert [(a.number, a.outcome, a.error) for a in attempts(made.id)] == [
        (1, "failed", "the partner said no (1)"),
        (2, "failed", "the job failed: ValueError"),
        (3, "failed", "the partner said no (3)"),
    ]
    assert all(a.duration_ms is not None and a.finished_at is not None for a in attempts(made.id))
    # on_exhausted ran once, in the transaction that made the job dead.
    assert exhausted == [(made.id, "dead", True)]
    assert worker.run_due(now=at(10_000)) == 0


def test_a_job_error_without_retry_goes_dead_at_once_and_one_attempt_caps_a_job(db, settings):
    def wrong(ctx: JobContext) -> None:
        raise JobError("bad input", retry=False)

    def flaky(ctx: JobContext) -> None:
        raise JobError("flaky")

    kind("test.wrong", wrong, retry=(1, 1))
    kind("test.flaky", flaky, retry=(1, 1, 1))
    wrong = enqueue("test.wrong", {}, tenant_id=None, run_at=T0)  # a platform job
    once = enqueue("test.flaky", {}, tenant_id=tenant(), run_at=T0, max_attempts=1)
    assert once.max_attempts == 1
    Worker(settings, kinds=["test.*"]).run_due(now=at(0))
    assert job(wrong.id).status == "dead" and job(wrong.id).last_error == "bad input"
    assert job(once.id).status == "dead" and len(attempts(once.id)) == 1


def test_run_due_runs_what_is_due_at_the_driven_time_only(db, settings):
    kind("test.ok", succeed)
    owner = tenant()
    later = enqueue("test.ok", {"n": 1}, tenant_id=owner, run_at=at(60))
    worker = Worker(settings, kinds=["test.ok"])
    assert worker.run_due(now=at(59)) == 0
    assert worker.run_due(now=at(60)) == 1
    done = job(later.id)
    assert done.status == "succeeded" and done.result == {"done": 1} and done.progress == 100
    assert done.started_at == at(60) and done.finished_at == at(60)


def test_a_job_over_its_timeout_fails_when_it_returns(db, settings):
    kind("test.slow", lambda ctx: time.sleep(0.15), timeout=0.05, lease=5)
    made = enqueue("test.slow", {}, tenant_id=tenant(), run_at=T0)
    Worker(settings, kinds=["test.slow"]).run_due(now=at(0))
    assert job(made.id).status == "dead"
    assert attempts(made.id)[0].error == "the job ran past its timeout (0.05 s)"


# -- leases ---------------------------------------------------------------------------------------


def test_a_lapsed_lease_is_rescued_the_attempt_lost_and_the_job_retried(db, settings):
    exhausted: list[str] = []
    kind("test.ok", succeed, retry=(5,), timeout=10, lease=30, on_exhausted=lambda j: exhausted.append(j.id))
    made = enqueue("test.ok", {"n": 7}, tenant_id=tenant(), run_at=T0)
    first, second = Worker(settings, kinds=["test.ok"]), Worker(settings, kinds=["test.ok"])
    (taken,) = first.claim(at(0), 1)  # and then it dies: nothing recorded
    assert job(made.id).status == "running" and job(made.id).lease_owner == first.owner
    assert second.run_due(now=at(29)) == 0  # the lease still holds
    assert second.run_due(now=at(31)) == 0  # rescued: lost, and its retry is due in 5 s (+ jitter)
    rescued = job(made.id)
    assert rescued.status == "failed" and rescued.lease_owner is None and at(36) <= rescued.run_at <= at(37)
    (lost,) = attempts(made.id)
    assert lost.outcome == "lost" and lost.error == jobs.LOST and lost.finished_at == at(31)
    assert second.run_due(now=at(37)) == 1
    assert job(made.id).status == "succeeded"
    assert [a.outcome for a in attempts(made.id)] == ["lost", "succeeded"]
    # The first worker comes back and would record: its lease is gone, nothing is overwritten.
    assert first.execute(taken, at(38)) == ""
    assert job(made.id).status == "succeeded" and job(made.id).result == {"done": 7}
    # A lost last attempt makes the job dead (never left running), with the dead-letter hook.
    again = enqueue("test.ok", {}, tenant_id=tenant(), run_at=at(100), max_attempts=1)
    first.claim(at(100), 1)
    second.run_due(now=at(200))
    assert job(again.id).status == "dead" and job(again.id).last_error == jobs.LOST
    assert exhausted == [again.id]


# -- cancellation and progress --------------------------------------------------------------------


def test_a_requested_cancel_is_honoured_and_progress_is_written(db, settings):
    seen: list[int] = []

    def long_job(ctx: JobContext) -> None:
        ctx.progress(40)
        seen.append(job(ctx.job.id).progress)
        # The API asks to cancel while it runs.
        Job.update(cancel_requested=True).where(Job.id == ctx.job.id).execute()
        for _ in range(1000):
            if ctx.cancelled():
                return
        raise AssertionError("never saw the cancel")

    kind("test.long", long_job, retry=(1,))
    owner = tenant()
    made = enqueue("test.long", {}, tenant_id=owner, run_at=T0)
    waiting = enqueue("test.long", {}, tenant_id=owner, run_at=T0)
    Job.update(cancel_requested=True).where(Job.id == waiting.id).execute()
    assert Worker(settings, kinds=["test.long"]).run_due(now=at(0)) == 1
    assert seen == [40]
    cancelled = job(made.id)
    assert cancelled.status == "cancelled" and cancelled.progress == 40
    assert [a.outcome for a in attempts(made.id)] == ["cancelled"]
    # One asked to cancel before it ran never runs.
    assert job(waiting.id).status == "cancelled" and attempts(waiting.id) == []


# -- fairness -------------------------------------------------------------------------------------


def test_a_tenant_with_thousands_queued_delays_another_by_at_most_a_job_per_slot(db, settings):
    kind("test.ok", succeed)
    big, small = tenant("Big"), tenant("Small")
    rows = [
        {
            "id": new_id("job"),
            "tenant_id": big,
            "livemode": True,
            "kind": "test.ok",
            "payload": {"n": n},
            "status": "queued",
            "priority": 0,
            "run_at": at(-60),  # queued long before the small tenant's
            "attempt": 0,
            "max_attempts": 1,
            "progress": 0,
            "created_at": at(-60),
            "updated_at": at(-60),
        }
        for n in range(5000)
    ]
    with database.atomic():
        for start in range(0, len(rows), 500):
            Job.insert_many(rows[start : start + 500]).execute()
    small_jobs = {enqueue("test.ok", {}, tenant_id=small, run_at=at(0)).id for _ in range(5)}
    worker = Worker(settings, kinds=["test.ok"], concurrency=2)
    started: list[str] = []
    while not small_jobs <= set(started) and len(started) < 40:
        for claimed in worker.claim(at(1), worker.concurrency):
            started.append(claimed.id)
            worker.execute(claimed, at(1))
    positions = [n for n, job_id in enumerate(started) if job_id in small_jobs]
    # Two slots: each claim takes one job of each tenant, so the k-th small job starts at the
    # latest as the 2k-th job, whatever the big tenant has queued.
    assert positions == [1, 3, 5, 7, 9], started[:12]


def test_with_more_tenants_than_a_claim_reads_each_claim_takes_one_job_per_tenant_urgent_first(db, settings):
    # Eleven queues (ten tenants and the platform's): a claim reads only a few candidates per
    # tenant from the index (its share of the claim), yet each claim takes every queue's first
    # due job before any queue's second: the urgent one first, then by age.
    kind("test.ok", succeed)
    owners = [tenant(f"T{n}") for n in range(10)] + [None]
    queued: dict[str | None, list[str]] = {owner: [] for owner in owners}
    for n, owner in enumerate(owners):
        for k in range(3):
            queued[owner].append(enqueue("test.ok", {}, tenant_id=owner, run_at=at(-100 + n * 3 + k)).id)
    urgent = enqueue("test.ok", {}, tenant_id=owners[7], run_at=at(0), priority=5)
    worker = Worker(settings, kinds=["test.ok"], concurrency=11)
    assert [job.id for job in worker.claim(at(1), 3)] == [urgent.id, queued[owners[0]][0], queued[owners[1]][0]]
    second = worker.claim(at(1), 11)
    # Every queue's next job again; within the turn, the queues this worker has not served yet come
    # first (by age), then those it served, longest ago first (owner 7's urgent job, then 0, then 1).
    served = [owners[7], owners[0], owners[1]]
    fresh = [owner for owner in owners if owner not in served]
    expected = [queued[owner][0] for owner in fresh] + [queued[owners[7]][0]] + [queued[o][1] for o in owners[:2]]
    assert [job.id for job in second] == expected


def test_one_slot_taking_a_job_at_a_time_alternates_between_a_backlog_and_a_newcomer(db, settings):
    # The fair turn alone would give a one-job claim to the oldest first job, the backlog's, every
    # time: the worker's own memory of whom it served breaks the tie, so the newcomer's jobs start
    # every other job, however long the backlog.
    kind("test.ok", succeed)
    big, small = tenant("Backlog"), tenant("Newcomer")
    for n in range(300):
        enqueue("test.ok", {"n": n}, tenant_id=big, run_at=at(-60 + n * 0.01))
    small_jobs = {enqueue("test.ok", {}, tenant_id=small, run_at=at(0)).id for _ in range(5)}
    worker = Worker(settings, kinds=["test.ok"], concurrency=1)
    started: list[str] = []
    while not small_jobs <= set(started) and len(started) < 40:
        (claimed,) = worker.claim(at(1), 1)
        started.append(claimed.id)
        worker.execute(claimed, at(1))
    assert [n for n, job_id in enumerate(started) if job_id in small_jobs] == [1, 3, 5, 7, 9]


# -- what a job sees ------------------------------------------------------------------------------


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_a_job_runs_as_its_tenant_in_its_mode_with_its_request_id_and_all_is_reset_after(db, settings):
    seen: dict[str, Any] = {}

    def look(ctx: JobContext) -> None:
        seen["request_id"] = request_id_var.get()
        seen["livemode"] = current_livemode()
        seen["in_transaction"] = database.in_transaction()
        seen["tenants"] = {row.tenant_id for row in Job.select(Job.tenant_id)}
        logging.getLogger("tests.job").warning("inside the job")

    kind("test.look", look)
    mine, other = tenant("Mine"), tenant("Other")
    token = request_id_var.set("req_from_the_request")
    try:
        made = enqueue("test.look", {}, tenant_id=mine, livemode=False, run_at=T0)
        enqueue("test.ok", {}, tenant_id=other, run_at=at(1000))
    finally:
        request_id_var.reset(token)
    assert made.request_id == "req_from_the_request"
    lines = Lines()
    logging.getLogger().addHandler(lines)
    try:
        assert Worker(settings, kinds=["test.look"]).run_due(now=at(0)) == 1
    finally:
        logging.getLogger().removeHandler(lines)
    assert seen["request_id"] == "req_from_the_request" and seen["livemode"] is False
    assert seen["in_transaction"] is False  # jobs make HTTP calls: never inside a transaction
    if backend() == "postgres":
        assert seen["tenants"] == {mine}  # row-level security: the other tenant's rows are invisible
    inside = [line for line in lines.lines if "inside the job" in line]
    assert inside and '"request_id": "req_from_the_request"' in inside[0]
    # Reset: this thread is unscoped again, in live mode, with no request id.
    assert request_id_var.get() is None and current_livemode() is True
    assert {row.tenant_id for row in Job.select(Job.tenant_id)} == {mine, other}


# -- the long-running worker: wake-up and graceful stop -------------------------------------------


def run_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("wakeup", ["notify", "redis"])
def test_an_enqueue_wakes_a_waiting_worker_before_its_poll_would(db, settings, wakeup):
    if wakeup == "notify" and backend() != "postgres":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite wakes through Redis")
    if wakeup == "redis":
        if backend() != "sqlite":
            pytest.skip("on PostgreSQL the wake-up is NOTIFY")
        settings = Settings(
            database_url=settings.database_url, secret_key="x" * 40, worker_poll_interval=5.0, redis_url=REDIS_URL
        )
    ran = threading.Event()
    kind("test.ping", lambda ctx: ran.set())
    jobs.configure_wakeup(settings)
    worker = Worker(settings, kinds=["test.ping"], concurrency=1)
    thread = run_in_thread(worker)
    try:
        assert worker.listening.wait(10), "the wake-up listener never connected"
        time.sleep(0.3)  # let its first claim find nothing: it is now waiting out its 5 s poll
        started = time.monotonic()
        with database.atomic():
            enqueue("test.ping", {}, tenant_id=tenant())
        assert ran.wait(4), "not run within 4 s"
        latency = time.monotonic() - started
        assert latency < worker.poll_interval / 2, latency  # woke before the poll fallback would
    finally:
        worker.stop()
        thread.join(10)
        jobs.configure_wakeup(Settings(database_url=settings.database_url, secret_key="x" * 40))


def test_stopping_lets_running_jobs_finish_in_the_grace_period_then_releases_the_rest(db, settings):
    go = threading.Event()
    quick_done = threading.Event()
    kind("test.hang", lambda ctx: go.wait(20))
    kind("test.quick", lambda ctx: quick_done.set() or time.sleep(0.05))
    owner = tenant()
    hung = enqueue("test.hang", {}, tenant_id=owner)
    quick = enqueue("test.quick", {}, tenant_id=owner)
    worker = Worker(settings, kinds=["test.*"], concurrency=2, poll_interval=0.05, grace=0.5)
    thread = run_in_thread(worker)
    try:
        eventually(lambda: job(hung.id).status == "running", timeout=10)
        assert quick_done.wait(10)
        worker.stop()
        thread.join(10)
        assert not thread.is_alive()
        assert job(quick.id).status == "succeeded"  # finished within the grace period
        released = job(hung.id)
        # Back in the queue, due now, and the interrupted attempt does not count against it.
        assert released.status == "queued" and released.lease_owner is None and released.max_attempts == 2
        assert [(a.outcome, a.error) for a in attempts(hung.id)] == [("lost", jobs.RELEASED)]
    finally:
        go.set()
    # The abandoned thread finishes late: its lease is gone, so nothing is written.
    time.sleep(0.2)
    assert job(hung.id).status == "queued"
    assert Worker(settings, kinds=["test.hang"]).run_due(tenant_id=owner) == 1
    assert job(hung.id).status == "succeeded"


# -- a real process, killed mid-job ---------------------------------------------------------------


def test_a_worker_killed_mid_job_loses_nothing_the_next_one_finishes_it(db, tmp_path: Path):
    import os

    env = {**os.environ, "DATABASE_URL": db.url, "TEST_JOB_LEASE": "1"}

    def start(name: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "tests.jobproc"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    jobs.register_kind(JobKind("test.block", succeed, retry=(0.1,), timeout=0.5, lease=1), replace=True)
    made = enqueue("test.block", {}, tenant_id=tenant())
    first = start("first")
    try:
        eventually(lambda: job(made.id).status == "running", timeout=30)
        first.kill()  # SIGKILL: nothing it had in hand is finished
        first.wait(10)
        assert job(made.id).status == "running"
        second = start("second")
        try:
            done = eventually(lambda: (lambda j: j if j.status in FINAL else None)(job(made.id)), 30)
        finally:
            second.terminate()
            second.wait(15)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert done.status == "succeeded" and done.attempt == 2 and done.result == {"attempt": 2}
    assert [(a.number, a.outcome, a.error) for a in attempts(made.id)] == [
        (1, "lost", jobs.LOST),
        (2, "succeeded", None),
    ]


# -- the upgrade ----------------------------------------------------------------------------------


def test_the_upgrade_gives_each_pending_delivery_its_job_once(db):
    from models.event import Event
    from models.migrations import m0017_webhook_delivery_jobs as m0017
    from models.webhook import WebhookDelivery, WebhookEndpoint

    kind("webhook.deliver", succeed, retry=(1,) * 7)
    owner = tenant()
    endpoint = WebhookEndpoint.create(
        id=new_id("we"), tenant_id=owner, url="https://hooks.example.com/x", events=["*"], livemode=False, secret="s"
    )
    event = Event.create(
        id=new_id("evt"), tenant_id=owner, sequence=1, type="user.created", livemode=False, data={}, created_at=T0
    )
    rows = {
        name: WebhookDelivery.create(
            id=new_id("msg"),
            tenant_id=owner,
            endpoint_id=endpoint.id,
            event_id=event.id,
            event_type="user.created",
            status=status,
            attempt_count=count,
            final_attempt=final,
            next_attempt_at=at(5),
            lease_owner="old-worker",
            lease_until=at(60),
        )
        for name, status, count, final in (
            ("fresh", "pending", 0, False),
            ("retrying", "pending", 3, False),
            ("manual", "pending", 4, True),
            ("done", "succeeded", 1, False),
        )
    }
    with database.atomic():
        m0017.after(database.obj)
        m0017.after(database.obj)  # once only
    made = {j.resource_id: j for j in Job.select().where(Job.kind == "webhook.deliver")}
    assert set(made) == {rows["fresh"].id, rows["retrying"].id, rows["manual"].id}
    assert [made[rows[n].id].max_attempts for n in ("fresh", "retrying", "manual")] == [8, 5, 1]
    fresh = made[rows["fresh"].id]
    assert fresh.status == "queued" and fresh.run_at == at(5) and fresh.livemode is False
    assert fresh.payload == {"delivery_id": rows["fresh"].id} and fresh.tenant_id == owner
    assert WebhookDelivery.select().where(WebhookDelivery.lease_owner.is_null(False)).count() == 0


# -- the command ----------------------------------------------------------------------------------


def test_tenantry_worker_runs_the_kinds_asked_for_and_stops_cleanly_on_sigterm(db, tmp_path: Path):
    import os
    import signal

    env = {
        **os.environ,
        "DATABASE_URL": db.url,
        "TENANTRY_SECRET_KEY": "x" * 40,
        "TENANTRY_INSTANCE_PATH": str(tmp_path),
        "TENANTRY_ENV": "test",
    }
    command = [sys.executable, "-m", "tenantry.cli", "worker"]
    none = subprocess.run([*command, "--kinds", "nothing.*"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert none.returncode == 2 and "no registered job kind matches nothing.*" in none.stderr
    log = tmp_path / "worker.log"
    with log.open("wb") as handle:
        worker = subprocess.Popen(
            [*command, "--kinds", "webhook.*"], env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT
        )
    try:
        eventually(lambda: "running webhook.deliver" in log.read_text(), timeout=30)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
        assert '"msg": "worker stopped"' in log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


# -- webhook deliveries on the job layer ----------------------------------------------------------


def test_a_delivery_retry_moves_its_waiting_job_refuses_a_running_one_and_gives_a_finished_one_one_attempt(
    db, settings
):
    from models.event import Event
    from models.webhook import WebhookDelivery, WebhookEndpoint
    from services.webhooks import delivery as deliveries
    from tenantry.errors import Conflict

    kind("webhook.deliver", succeed, retry=(60, 60), timeout=5, lease=10)
    owner = tenant()
    endpoint = WebhookEndpoint.create(
        id=new_id("we"), tenant_id=owner, url="https://hooks.example.com/x", events=["*"], secret="s"
    )
    event = Event.create(
        id=new_id("evt"), tenant_id=owner, sequence=1, type="user.created", livemode=True, data={}, created_at=T0
    )
    with database.atomic():
        deliveries.queue(event, [endpoint])
    delivery = WebhookDelivery.get(WebhookDelivery.endpoint_id == endpoint.id)
    (queued,) = Job.select().where(Job.resource_id == delivery.id)
    assert queued.kind == "webhook.deliver" and queued.payload == {"delivery_id": delivery.id}
    assert queued.max_attempts == 3 and queued.unique_key == delivery.id and queued.tenant_id == owner
    # Waiting for a retry an hour away: a retry makes that job due now (no second job).
    Job.update(status="failed", attempt=1, run_at=utcnow() + timedelta(hours=1)).where(Job.id == queued.id).execute()
    deliveries.retry(delivery)
    assert job(queued.id).run_at <= utcnow() and Job.select().count() == 1
    # Being attempted: 409.
    (running,) = Worker(settings, kinds=["webhook.*"]).claim(utcnow(), 1)
    with pytest.raises(Conflict):
        deliveries.retry(WebhookDelivery.get_by_id(delivery.id))
    Job.update(status="dead", lease_owner=None).where(Job.id == running.id).execute()
    WebhookDelivery.update(status="failed", attempt_count=3).where(WebhookDelivery.id == delivery.id).execute()
    # Finished: exactly one more attempt, by a new job.
    deliveries.retry(WebhookDelivery.get_by_id(delivery.id))
    (again,) = Job.select().where((Job.resource_id == delivery.id) & (Job.status == "queued"))
    assert again.id != queued.id and again.max_attempts == 1
    assert WebhookDelivery.get_by_id(delivery.id).status == "pending"
