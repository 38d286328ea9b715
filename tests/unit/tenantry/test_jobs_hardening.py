"""The job worker against what a careless or hostile job does: it raises BaseException, returns a
result that is not JSON, leaves a transaction open, or is declared with a cron expression that
cannot be read. Each must end the attempt cleanly (never a job stuck `running`, never a dead
worker thread) or be refused when it is registered, not at a worker's first tick.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from models.base import database, utcnow
from models.job import Job, JobAttempt
from models.tenant import Tenant
from tenantry import jobs
from tenantry.db import init_database, upgrade
from tenantry.ids import new_id
from tenantry.jobs import JobContext, JobKind, Periodic, Worker, enqueue
from tenantry.settings import Settings
from tests.livesrv import ROOT, FreshDatabase, backend, postgres_reachable

T0 = datetime(2030, 1, 1, 12, 0, 0)


@pytest.fixture(scope="module")
def db() -> Iterator[FreshDatabase]:
    if backend() == "postgres" and not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable")
    fresh = FreshDatabase(backend())
    init_database(fresh.url, 8)
    upgrade()
    if backend() == "postgres":
        database.obj.close_all()
        init_database(fresh.url, 8, role="tenantry_app")  # as the server acts: bound by row-level security
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
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty kind and periodic registry for each test (the process's own is put back after)."""
    monkeypatch.setattr(jobs, "_kinds", {})
    monkeypatch.setattr(jobs, "_periodic", {})


@pytest.fixture(autouse=True)
def empty_queue(db: FreshDatabase) -> Iterator[None]:
    yield
    with database.atomic():
        JobAttempt.delete().execute()
        Job.delete().execute()


def tenant() -> str:
    return Tenant.create(id=new_id("ten"), name="Acme").id


def attempts(job_id: str) -> list[tuple[int, str, str | None]]:
    rows = JobAttempt.select().where(JobAttempt.job_id == job_id).order_by(JobAttempt.number)
    return [(a.number, a.outcome, a.error) for a in rows]


@pytest.mark.parametrize("raised", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_a_job_raising_a_base_exception_fails_its_attempt_and_the_worker_goes_on(db, settings, raised):
    def run(ctx: JobContext) -> None:
        raise raised

    jobs.register_kind(JobKind("test.exit", run, retry=(10,)))
    jobs.register_kind(JobKind("test.ok", lambda ctx: {"ok": True}))
    owner = tenant()
    bad = enqueue("test.exit", {}, tenant_id=owner, run_at=T0, priority=1)
    good = enqueue("test.ok", {}, tenant_id=owner, run_at=T0)
    worker = Worker(settings, kinds=["test.*"], concurrency=1)
    if isinstance(raised, KeyboardInterrupt):
        # On the main thread (`tenantry worker --once`) it is the operator's Ctrl-C: recorded, then obeyed.
        with pytest.raises(KeyboardInterrupt):
            worker.run_due(now=T0)
        assert worker.run_due(now=T0) == 1
    else:
        assert worker.run_due(now=T0) == 2  # neither the pass nor the process ends with the job
    failed = Job.get_by_id(bad.id)
    assert failed.status == "failed" and failed.lease_owner is None
    assert failed.last_error == f"the job failed: {type(raised).__name__}"
    assert attempts(bad.id) == [(1, "failed", f"the job failed: {type(raised).__name__}")]
    assert Job.get_by_id(good.id).status == "succeeded"


def test_a_long_running_worker_slot_survives_a_job_raising_system_exit(db, settings):
    """A slot thread that died with its job would lower the worker's concurrency for good."""
    ran: list[str] = []

    def run(ctx: JobContext) -> None:
        ran.append(ctx.job.id)
        if len(ran) == 1:
            raise SystemExit(1)

    jobs.register_kind(JobKind("test.exit", run, retry=(0,)))
    made = enqueue("test.exit", {}, tenant_id=tenant())
    worker = Worker(settings, kinds=["test.exit"], concurrency=1, poll_interval=0.05, grace=1)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while Job.get_by_id(made.id).status != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(10)
    assert Job.get_by_id(made.id).status == "succeeded"
    assert [a[1] for a in attempts(made.id)] == ["failed", "succeeded"]


def test_a_result_that_is_not_json_fails_the_attempt_cleanly(db, settings):
    jobs.register_kind(JobKind("test.odd", lambda ctx: {"when": datetime(2030, 1, 1), "obj": object()}, retry=(10,)))
    made = enqueue("test.odd", {}, tenant_id=tenant(), run_at=T0)
    worker = Worker(settings, kinds=["test.odd"])
    assert worker.run_due(now=T0) == 1  # not an exception out of the worker
    row = Job.get_by_id(made.id)
    assert row.status == "failed" and row.lease_owner is None and row.result is None
    assert row.last_error == "the job's result is not JSON (TypeError)"
    assert attempts(made.id) == [(1, "failed", "the job's result is not JSON (TypeError)")]


def test_a_job_that_leaves_a_transaction_open_fails_and_the_next_job_commits(db, settings):
    def leaky(ctx: JobContext) -> None:
        database.atomic().__enter__()  # never left: the job's bug, not the next job's
        Tenant.update(name="Leaked").where(Tenant.id == ctx.job.tenant_id).execute()

    jobs.register_kind(JobKind("test.leaky", leaky, retry=(10,)))
    jobs.register_kind(JobKind("test.ok", lambda ctx: {"ok": True}))
    owner = tenant()
    bad = enqueue("test.leaky", {}, tenant_id=owner, run_at=T0, priority=1)
    good = enqueue("test.ok", {}, tenant_id=tenant(), run_at=T0)
    Worker(settings, kinds=["test.*"], concurrency=1).run_due(now=T0)
    assert not database.in_transaction()
    row = Job.get_by_id(bad.id)
    assert row.status == "failed" and row.last_error == "the job left a transaction open (rolled back)"
    assert Tenant.get_by_id(owner).name == "Acme"  # its uncommitted write was rolled back
    # Committed for every other connection, not only inside a transaction that never ends.
    database.close()
    assert Job.get_by_id(good.id).status == "succeeded"


@pytest.mark.parametrize("cron", ["not a cron", "61 * * * *", "* * * *", "0 0 30 2 *"])
def test_an_unreadable_cron_expression_is_refused_at_registration(cron):
    jobs.register_kind(JobKind("test.tick", lambda ctx: None))
    with pytest.raises(ValueError, match="cron"):
        jobs.register_periodic(Periodic("bad", "test.tick", cron=cron))
    assert "bad" not in jobs.periodics()


def test_a_non_positive_interval_is_refused_at_registration():
    with pytest.raises(ValueError, match="every"):
        jobs.register_periodic(Periodic("zero", "test.tick", every=timedelta(0)))


def test_a_periodic_whose_kind_is_not_registered_is_named_for_the_worker_to_refuse():
    jobs.register_kind(JobKind("test.tick", lambda ctx: None))
    jobs.register_periodic(Periodic("fine", "test.tick", every=timedelta(minutes=1)))
    assert jobs.unrunnable_periodics() == []
    jobs.register_periodic(Periodic("orphan", "test.gone", every=timedelta(minutes=1)))
    assert jobs.unrunnable_periodics() == ["periodic 'orphan': job kind 'test.gone' is not registered"]


def test_one_periodic_that_cannot_be_scheduled_holds_up_no_other(db, monkeypatch):
    from tenantry import periodic

    jobs.register_kind(JobKind("test.tick", lambda ctx: None))
    jobs.register_periodic(Periodic("broken", "test.tick", every=timedelta(minutes=1)))
    jobs.register_periodic(Periodic("fine", "test.tick", every=timedelta(minutes=1)))
    real = periodic.latest_slot

    def latest(p: Periodic, now: datetime) -> datetime:
        if p.name == "broken":
            raise RuntimeError("boom")
        return real(p, now)

    monkeypatch.setattr(periodic, "latest_slot", latest)
    assert periodic.schedule_due(T0) == 1


def test_aware_and_naive_moments_name_the_same_slot():
    from datetime import UTC, timezone

    from tenantry.periodic import latest_slot

    nightly = Periodic("n", "test.tick", cron="0 3 * * *")
    # 03:30 in New York in winter is 08:30 UTC: the slot is 03:00 UTC that day, never local time.
    new_york = timezone(timedelta(hours=-5))
    assert latest_slot(nightly, datetime(2030, 3, 10, 3, 30, tzinfo=new_york)) == datetime(2030, 3, 10, 3, 0)
    assert latest_slot(nightly, datetime(2030, 3, 10, 3, 30, tzinfo=UTC)) == datetime(2030, 3, 10, 3, 0)
    assert latest_slot(nightly, datetime(2030, 3, 10, 3, 30)) == datetime(2030, 3, 10, 3, 0)


# -- the command ----------------------------------------------------------------------------------


def _worker_command(db: FreshDatabase, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": db.url,
        "TENANTRY_SECRET_KEY": "x" * 40,
        "TENANTRY_INSTANCE_PATH": str(tmp_path),
        "TENANTRY_ENV": "test",
    }
    command = [sys.executable, "-m", "tenantry.cli", "worker", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "--concurrency: must be at least 1, not 0"),
        (["--concurrency", "-3"], "--concurrency: must be at least 1, not -3"),
        (["--concurrency", "many"], "--concurrency: must be a whole number, not 'many'"),
        (["--metrics-port", "0"], "--metrics-port: must be a port from 1 to 65535, not 0"),
        (["--metrics-port", "70000"], "--metrics-port: must be a port from 1 to 65535, not 70000"),
    ],
)
def test_tenantry_worker_refuses_a_bad_concurrency_or_port_with_a_clear_error(db, tmp_path, args, message):
    done = _worker_command(db, tmp_path, *args)
    assert done.returncode == 2 and message in done.stderr
    assert "Traceback" not in done.stderr


def test_tenantry_worker_with_its_metrics_port_in_use_exits_with_a_clear_error(db, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _worker_command(db, tmp_path, "--metrics-port", str(port))
    assert done.returncode == 1, done.stderr
    assert f"error: cannot serve job metrics on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_after_a_job_fails_the_next_job_runs_as_its_own_tenant_only(db, settings):
    """A failure drops the connection mid-job: the next job (another tenant's, then a platform one)
    must still run as itself, neither unscoped nor as the tenant before it."""
    seen: dict[str, set[str]] = {}

    def look(ctx: JobContext) -> None:
        seen[ctx.payload["name"]] = {row.tenant_id for row in Job.select(Job.tenant_id)}
        if ctx.payload.get("fail"):
            raise RuntimeError("after a query")

    jobs.register_kind(JobKind("test.look", look, retry=(10,)))
    a, b = tenant(), tenant()
    enqueue("test.look", {"name": "a", "fail": True}, tenant_id=a, run_at=T0, priority=3)
    enqueue("test.look", {"name": "b"}, tenant_id=b, run_at=T0, priority=2)
    enqueue("test.look", {"name": "platform"}, tenant_id=None, run_at=T0, priority=1)
    worker = Worker(settings, kinds=["test.look"], concurrency=1)
    assert worker.run_due(now=T0) == 3
    if backend() == "postgres":  # row-level security; on SQLite the data layer's scoping is the guard
        assert seen["a"] == {a} and seen["b"] == {b}
        assert seen["platform"] == {a, b, None}


# -- webhook deliveries whose endpoint or event went away while their job waited -------------------


def _waiting_delivery(settings: Settings) -> tuple[Any, Any, Any, Job]:
    from models.event import Event
    from models.webhook import WebhookDelivery, WebhookEndpoint
    from services.webhooks import delivery as deliveries

    jobs.register_kind(deliveries.delivery_kind(settings))
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
    (waiting,) = Job.select().where(Job.resource_id == delivery.id)
    return endpoint, event, delivery, waiting


def test_a_delivery_whose_endpoint_was_deleted_while_its_job_waited_ends_quietly(db, settings):
    from models.webhook import WebhookDelivery

    endpoint, _, delivery, waiting = _waiting_delivery(settings)
    endpoint.delete_instance()  # as DELETE /v1/webhooks/{id}: its deliveries go with it
    assert WebhookDelivery.get_or_none(WebhookDelivery.id == delivery.id) is None
    assert Worker(settings, kinds=["webhook.*"]).run_due(now=utcnow()) == 1
    done = Job.get_by_id(waiting.id)
    assert done.status == "succeeded" and done.result is None and done.last_error is None


def test_a_delivery_whose_event_was_purged_while_its_job_waited_fails_once_without_sending(db, settings):
    from models.event import Event
    from models.webhook import WebhookDelivery

    _, event, delivery, waiting = _waiting_delivery(settings)
    Event.delete().where(Event.id == event.id).execute()  # an operator's purge that ignored the retainer
    assert Worker(settings, kinds=["webhook.*"]).run_due(now=utcnow()) == 1
    dead = Job.get_by_id(waiting.id)
    reason = "The event was purged before it could be delivered."
    assert dead.status == "dead" and dead.attempt == 1 and dead.last_error == reason
    ended = WebhookDelivery.get_by_id(delivery.id)
    assert ended.status == "failed" and ended.last_error == reason


def test_the_event_purge_keeps_an_event_whose_delivery_waits_and_purges_finished_deliveries(db, settings, monkeypatch):
    from models.event import Event
    from models.webhook import WebhookDelivery
    from services import webhooks
    from tenantry import events

    _, event, delivery, _ = _waiting_delivery(settings)
    monkeypatch.setattr(events, "_retainers", [webhooks.pending_event_ids])  # as webhooks' register(host) does
    later = T0 + timedelta(days=30)
    events.purge(later)
    assert Event.get_or_none(Event.id == event.id) is not None  # its delivery still needs it
    webhooks.purge_finished(later)
    assert WebhookDelivery.get_or_none(WebhookDelivery.id == delivery.id) is not None  # still pending
    WebhookDelivery.update(status="succeeded").where(WebhookDelivery.id == delivery.id).execute()
    assert webhooks.purge_finished(later) >= 1 and events.purge(later) >= 1
    assert WebhookDelivery.get_or_none(WebhookDelivery.id == delivery.id) is None
    assert Event.get_or_none(Event.id == event.id) is None


def test_on_cancelled_runs_once_whichever_way_a_job_ends_cancelled(db, settings):
    ended: list[tuple[str, str, bool]] = []

    def stop_when_asked(ctx: JobContext) -> None:
        Job.update(cancel_requested=True).where(Job.id == ctx.job.id).execute()  # the API's cancel, mid-run
        assert ctx.cancelled()

    def hook(j: Job) -> None:
        ended.append((j.id, j.status, database.in_transaction()))

    jobs.register_kind(JobKind("test.stop", stop_when_asked, on_cancelled=hook))
    owner = tenant()
    waiting = enqueue("test.stop", {}, tenant_id=owner, run_at=T0 + timedelta(hours=1))
    after, running = jobs.cancel(waiting)  # waiting: cancelled at once
    assert after.status == "cancelled" and running is False
    honoured = enqueue("test.stop", {}, tenant_id=owner, run_at=T0)  # running: it stops when it sees the request
    released = enqueue("test.stop", {}, tenant_id=owner, run_at=T0 + timedelta(minutes=1))
    Job.update(cancel_requested=True).where(Job.id == released.id).execute()  # asked while running, then released
    worker = Worker(settings, kinds=["test.stop"])
    assert worker.run_due(now=T0) == 1
    assert worker.run_due(now=T0 + timedelta(minutes=1)) == 0  # ends without running
    assert sorted(ended) == sorted([(j.id, "cancelled", True) for j in (waiting, honoured, released)])
    assert {Job.get_by_id(j.id).status for j in (waiting, honoured, released)} == {"cancelled"}


def test_a_cancelled_delivery_job_retried_through_the_jobs_api_makes_the_delivery_pending_then_sends_it(
    db, settings, monkeypatch
):
    from types import SimpleNamespace

    from models.job import retry_job
    from models.webhook import WebhookDelivery, WebhookEndpoint
    from services.webhooks import delivery as deliveries

    sent: list[str] = []
    seen_status: list[str] = []

    def answer(method: str, url: str, **options: Any) -> SimpleNamespace:
        sent.append(url)
        seen_status.append(WebhookDelivery.get_by_id(options["headers"]["webhook-id"]).status)
        return SimpleNamespace(status=204, body=b"")

    monkeypatch.setattr(deliveries.outbound, "request", answer)
    # Signing is tested with the webhooks; here the secret box the server installs is not needed.
    monkeypatch.setattr(WebhookEndpoint, "signing_secrets", lambda self, now: ["key"])
    monkeypatch.setattr(deliveries, "sign", lambda *args: "v1,signature")
    _, _, delivery, waiting = _waiting_delivery(settings)
    jobs.cancel(waiting)
    ended = WebhookDelivery.get_by_id(delivery.id)
    assert ended.status == "failed" and ended.last_error == deliveries.CANCELLED
    retry_job(Job.get_by_id(waiting.id), 3)
    assert Worker(settings, kinds=["webhook.*"]).run_due(now=utcnow()) == 1
    assert sent == ["https://hooks.example.com/x"] and seen_status == ["pending"]
    done = WebhookDelivery.get_by_id(delivery.id)
    assert done.status == "succeeded" and done.last_error is None and done.attempt_count == 1


def test_each_enqueue_outside_a_transaction_wakes_the_workers(db, settings, monkeypatch):
    """Once per transaction: but outside any, every enqueue is its own and must announce itself."""
    jobs.register_kind(JobKind("test.ok", lambda ctx: None))
    owner = tenant()
    if backend() == "postgres":
        import psycopg2

        listener = psycopg2.connect(db.url)
        listener.autocommit = True
        try:
            listener.cursor().execute(f"LISTEN {jobs.CHANNEL}")
            for _ in range(2):
                enqueue("test.ok", {}, tenant_id=owner)
                deadline = time.monotonic() + 5
                while not listener.notifies and time.monotonic() < deadline:
                    listener.poll()
                    time.sleep(0.01)
                assert listener.notifies, "an enqueue outside a transaction sent no NOTIFY"
                listener.notifies.clear()
        finally:
            listener.close()
    else:
        published: list[int] = []
        monkeypatch.setattr(jobs, "_redis_url", "redis://127.0.0.1:6379/0")
        monkeypatch.setattr(jobs, "_publish", lambda: published.append(1))
        enqueue("test.ok", {}, tenant_id=owner)
        enqueue("test.ok", {}, tenant_id=owner)
        with database.atomic():  # one transaction, one wake-up
            enqueue("test.ok", {}, tenant_id=owner)
            enqueue("test.ok", {}, tenant_id=owner)
        assert len(published) == 3


def test_a_job_of_a_kind_no_worker_knows_is_left_queued_not_claimed(db, settings):
    jobs.register_kind(JobKind("test.ok", lambda ctx: None))
    jobs.register_kind(JobKind("elsewhere.only", lambda ctx: None))
    made = enqueue("elsewhere.only", {}, tenant_id=tenant(), run_at=T0)
    assert Worker(settings, kinds=["test.*"]).run_due(now=T0) == 0
    left = Job.get_by_id(made.id)
    assert left.status == "queued" and left.attempt == 0 and left.lease_owner is None
