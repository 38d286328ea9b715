"""Periodic jobs (tenantry.periodic), in process on a fresh database with a driven clock: each slot
is enqueued once however many workers tick, a missed slot runs once, and the purges run as jobs."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest

from tenantry import jobs
from tenantry.jobs import JobContext, JobKind, Periodic
from tests.livesrv import FreshDatabase, backend, postgres_reachable

T0 = datetime(2026, 12, 1, 10, 0, 0)


@pytest.fixture
def db():
    """A fresh, migrated database bound to the models in this process."""
    if backend() == "postgres" and not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable")
    from tenantry.db import init_database, upgrade

    fresh = FreshDatabase(backend())
    database = init_database(fresh.url, pool_size=8)
    upgrade()
    yield database
    if hasattr(database, "close_all"):
        database.close_all()
    else:
        database.close()
    fresh.drop()


@pytest.fixture
def registry(monkeypatch):
    """An empty kind and periodic registry for the test (the process's own is put back after)."""
    monkeypatch.setattr(jobs, "_kinds", {})
    monkeypatch.setattr(jobs, "_periodic", {})
    jobs.register_kind(JobKind("test.tick", lambda ctx: None))


def platform_jobs(kind: str = "test.tick"):
    from models.job import Job

    return list(Job.select().where((Job.kind == kind) & Job.tenant_id.is_null()).order_by(Job.id))


def test_latest_slot_of_an_interval_and_of_a_cron_expression():
    from tenantry.periodic import latest_slot

    hourly = Periodic("h", "test.tick", every=timedelta(hours=1))
    assert latest_slot(hourly, T0) == T0  # a slot falling exactly on `now` is due
    assert latest_slot(hourly, T0 + timedelta(minutes=59, seconds=59)) == T0
    assert latest_slot(hourly, T0 + timedelta(hours=1)) == T0 + timedelta(hours=1)
    nightly = Periodic("n", "test.tick", cron="0 3 * * *")
    assert latest_slot(nightly, T0) == datetime(2026, 12, 1, 3, 0)
    assert latest_slot(nightly, datetime(2026, 12, 2, 3, 0)) == datetime(2026, 12, 2, 3, 0)
    assert latest_slot(nightly, datetime(2026, 12, 2, 2, 59, 59)) == datetime(2026, 12, 1, 3, 0)


def test_each_slot_is_enqueued_once_as_a_platform_job(db, registry):
    from tenantry.periodic import schedule_due

    jobs.register_periodic(Periodic("tick", "test.tick", every=timedelta(minutes=5), payload={"n": 1}))
    assert schedule_due(T0) == 1
    assert schedule_due(T0 + timedelta(minutes=4)) == 0  # the same slot
    assert schedule_due(T0 + timedelta(minutes=5)) == 1  # the next one
    made = platform_jobs()
    assert [j.payload for j in made] == [
        {"n": 1, "periodic": "tick", "slot": "2026-12-01T10:00:00Z"},
        {"n": 1, "periodic": "tick", "slot": "2026-12-01T10:05:00Z"},
    ]
    assert all(j.tenant_id is None and j.status == "queued" for j in made)


def test_a_slot_whose_job_already_finished_is_not_enqueued_again(db, registry):
    """The job's unique key holds only while it is active: the schedule, not the key, says a slot was done."""
    from models.job import Job
    from tenantry.periodic import schedule_due

    jobs.register_periodic(Periodic("tick", "test.tick", every=timedelta(minutes=5)))
    assert schedule_due(T0) == 1
    Job.update(status="succeeded").execute()
    assert schedule_due(T0 + timedelta(minutes=1)) == 0
    assert len(platform_jobs()) == 1


def test_a_slot_missed_during_downtime_runs_once_not_once_per_missed_slot(db, registry):
    from tenantry.periodic import schedule_due

    jobs.register_periodic(Periodic("tick", "test.tick", every=timedelta(minutes=5)))
    assert schedule_due(T0) == 1
    assert schedule_due(T0 + timedelta(hours=10, minutes=2)) == 1  # 120 slots passed while down
    assert [j.payload["slot"] for j in platform_jobs()] == ["2026-12-01T10:00:00Z", "2026-12-01T20:00:00Z"]


def test_a_cron_periodic_and_an_unregistered_kind_hold_up_no_other(db, registry):
    from tenantry.periodic import schedule_due

    jobs.register_periodic(Periodic("nightly", "test.tick", cron="0 3 * * *"))
    jobs.register_periodic(Periodic("orphan", "test.unknown", every=timedelta(minutes=1)))
    assert schedule_due(datetime(2026, 12, 2, 2, 0)) == 1  # the 1st's 03:00, first seen
    assert schedule_due(datetime(2026, 12, 2, 2, 59)) == 0
    assert schedule_due(datetime(2026, 12, 2, 3, 0)) == 1


def test_two_workers_racing_on_each_slot_enqueue_it_once(db, registry):
    """Two workers (threads, each on its own connection) tick at the same moment for 20 slots."""
    from models.base import database
    from tenantry.periodic import schedule_due

    jobs.register_periodic(Periodic("tick", "test.tick", every=timedelta(minutes=1)))
    slots = [T0 + timedelta(minutes=n) for n in range(20)]
    barrier = threading.Barrier(2, timeout=30)
    made: list[list[int]] = [[], []]
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for now in slots:
                barrier.wait()
                made[index].append(schedule_due(now))
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
            barrier.abort()
        finally:
            database.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert [a + b for a, b in zip(*made, strict=True)] == [1] * 20  # each slot by exactly one of them
    assert len(platform_jobs()) == 20
    assert len({j.payload["slot"] for j in platform_jobs()}) == 20


def test_the_purges_run_as_periodic_platform_jobs_with_their_retention(db, monkeypatch):
    from models import Event, IdempotencyRecord, accounts
    from models.base import utcnow
    from tenantry.periodic import register_core, schedule_due
    from tenantry.settings import Settings

    monkeypatch.setattr(jobs, "_kinds", {})
    monkeypatch.setattr(jobs, "_periodic", {})
    register_core(Settings(event_retention=7 * 86_400, audit_retention=365 * 86_400))
    assert set(jobs.periodics()) == {"idempotency.purge", "event.purge", "audit.purge"}

    now = utcnow()
    tenant, _ = accounts.create_tenant("Acme", None, None)
    old = Event.emit(tenant.id, "user.created", {"object": {"id": "usr_1"}}, True)
    new = Event.emit(tenant.id, "user.created", {"object": {"id": "usr_2"}}, True)
    Event.update(created_at=now - timedelta(days=8)).where(Event.id == old.id).execute()
    for key, expires in (("spent", now - timedelta(hours=1)), ("live", now + timedelta(hours=1))):
        IdempotencyRecord.create(
            tenant_id=tenant.id,
            credential="usr_1",
            idem_key=key,
            fingerprint="f" * 64,
            state="done",
            locked_until=now,
            expires_at=expires,
        )

    assert schedule_due(now) == 3
    assert schedule_due(now) == 0
    by_kind = {j.kind: j for k in ("event.purge", "idempotency.purge", "audit.purge") for j in platform_jobs(k)}
    assert set(by_kind) == {"event.purge", "idempotency.purge", "audit.purge"}
    assert by_kind["event.purge"].payload["older_than_seconds"] == 7 * 86_400

    def run(kind: str):
        job = by_kind[kind]
        return jobs.kind(kind).run(JobContext(job, now))

    assert run("event.purge")["events"] == 1  # and each plug-in's own rows that go with events (deliveries)
    assert [e.id for e in Event.select()] == [new.id]
    assert run("idempotency.purge") == {"records": 1}
    assert [r.idem_key for r in IdempotencyRecord.select()] == ["live"]
    assert run("audit.purge")["entries"] == 0  # nothing a year old


def test_retention_zero_keeps_forever_and_registers_no_purge_of_it(monkeypatch):
    from tenantry.periodic import register_core
    from tenantry.settings import Settings

    monkeypatch.setattr(jobs, "_kinds", {})
    monkeypatch.setattr(jobs, "_periodic", {})
    register_core(Settings())
    assert set(jobs.periodics()) == {"idempotency.purge"}
    assert {"audit.purge", "event.purge", "idempotency.purge"} <= set(jobs.kinds())


def test_two_workers_run_a_periodic_job_once_per_slot(db, monkeypatch):
    """Through the workers themselves: each schedules before it claims; a slot runs once whichever worker runs."""
    from tenantry.jobs import Worker
    from tenantry.periodic import schedule_due
    from tenantry.settings import Settings

    monkeypatch.setattr(jobs, "_kinds", {})
    monkeypatch.setattr(jobs, "_periodic", {})
    ran: list[str] = []
    jobs.register_kind(JobKind("test.tick", lambda ctx: ran.append(ctx.payload["slot"])))
    jobs.register_periodic(Periodic("tick", "test.tick", every=timedelta(minutes=1)))
    settings = Settings(database_url="sqlite://", secret_key="x" * 40)
    first, second = (Worker(settings, kinds=["test.*"], scheduler=schedule_due) for _ in range(2))
    for minute in range(3):
        now = T0 + timedelta(minutes=minute, seconds=30)
        first.run_due(now)
        second.run_due(now)
        second.run_due(now + timedelta(seconds=10))  # the same slot, later in it
    assert ran == ["2026-12-01T10:00:00Z", "2026-12-01T10:01:00Z", "2026-12-01T10:02:00Z"]
    assert first.ran["test.tick"] + second.ran["test.tick"] == 3
