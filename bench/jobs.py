"""Job-layer benchmark: Tenantry's job queue against huey's SqlHuey, on the same PostgreSQL server, in one run.

Run it through `bench/run-jobs` (which installs huey into .venv first). One run:

1. creates a fresh PostgreSQL database (and a SQLite file), migrates it (`tenantry db upgrade`), and
   adds `bench_effect`, the table every no-op job writes one row to (its key and its times);
2. throughput: 5,000 no-op jobs queued up front, then 1, 2 and 4 worker processes (one job at a time
   each) of Tenantry (`tenantry.jobs.Worker`) and of huey (`huey_consumer -k process -w N`) take
   them; jobs/s = jobs / (last finish - first start), read from bench_effect;
3. enqueue-to-start latency: one worker process idle, 200 jobs enqueued one at a time at random
   10-40 ms gaps (each its own transaction); p50/p95 of start - enqueue. Tenantry with the
   wake-up (PostgreSQL LISTEN/NOTIFY), without it (polling only), on SQLite (polling, and with the
   Redis wake-up), and huey with its defaults and with a fixed 100 ms poll;
4. exactly once: 10,000 jobs on 4 Tenantry worker processes (2 threads each); every job's key must
   appear in bench_effect exactly once;
5. prints a markdown table and, with `--write`, writes it with the machine to bench/JOBS_RESULTS.md;
6. drops the database and stops every process, also on error.

Both queues write their side effect through their own connection; both poll or wait on the same
PostgreSQL server. Run it with the machine otherwise quiet.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import secrets
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV_BIN = REPO / ".venv" / "bin"
ADMIN_URL = os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "bench-" + "k" * 40
THROUGHPUT_JOBS = 5000
LATENCY_JOBS = 200
ONCE_JOBS = 10_000
WAIT_S = 300  # at most this long for any phase to finish

EFFECT_TABLE = (
    "CREATE TABLE bench_effect (system VARCHAR(16) NOT NULL, key VARCHAR(64) NOT NULL, "
    "t_enqueued DOUBLE PRECISION NOT NULL, t_started DOUBLE PRECISION NOT NULL, t_done DOUBLE PRECISION NOT NULL)"
)
INSERT_EFFECT = "INSERT INTO bench_effect (system, key, t_enqueued, t_started, t_done) VALUES (%s, %s, %s, %s, %s)"


# -- the job processes (run as `python bench/jobs.py tenantry-worker` / by huey_consumer) ----------


def tenantry_worker() -> None:
    """A Tenantry worker process for the `bench.*` kinds: one job at a time, until SIGTERM."""
    from models.base import database
    from tenantry import jobs
    from tenantry.db import init_database
    from tenantry.settings import Settings

    settings = Settings.from_env()
    init_database(settings.database_url, 4, settings.db_role or None)
    jobs.configure_wakeup(settings)
    placeholder = "?" if settings.is_sqlite else "%s"
    sql = INSERT_EFFECT.replace("%s", placeholder)

    def noop(ctx: jobs.JobContext) -> None:
        started = time.time()
        payload = ctx.payload
        database.execute_sql(sql, ("tenantry", payload["key"], payload["t0"], started, time.time()))

    jobs.register_kind(jobs.JobKind("bench.noop", noop))
    worker_class: type[jobs.Worker] = jobs.Worker
    if os.environ.get("BENCH_NO_WAKEUP"):

        class PollingWorker(jobs.Worker):
            """Never listens: finds jobs only when it polls (the 'without the wake-up' row)."""

            def _listen(self) -> None:
                self.listening.set()

        worker_class = PollingWorker
    worker = worker_class(settings, kinds=["bench.*"], concurrency=int(os.environ.get("BENCH_THREADS", "1")))
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.run()


# -- the driver -----------------------------------------------------------------------------------


@dataclass
class Proc:
    """A started process and how to stop it."""

    popen: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextmanager
def fresh_database() -> Iterator[str]:
    """Yields the URL of a new database `tenantry_jobbench_<random>`; drops it (WITH (FORCE)) afterwards."""
    name = "tenantry_jobbench_" + secrets.token_hex(4)
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def env_for(url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"DATABASE_URL": url, "TENANTRY_SECRET_KEY": SECRET, "TENANTRY_LOG_LEVEL": "WARNING"}, **extra)
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def migrate(url: str) -> None:
    subprocess.run([str(VENV_BIN / "tenantry"), "db", "upgrade"], env=env_for(url), check=True, capture_output=True)


class Effects:
    """Reads bench_effect (PostgreSQL or SQLite)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.url.startswith("sqlite"):
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=30)
            try:
                return conn.execute(sql.replace("%s", "?"), params).fetchall()
            finally:
                conn.close()
        import psycopg2

        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.commit()
            conn.close()

    def create(self) -> None:
        self._rows(EFFECT_TABLE)
        if not self.url.startswith("sqlite"):
            self._rows("GRANT ALL ON bench_effect TO PUBLIC")

    def clear(self) -> None:
        self._rows("DELETE FROM bench_effect")

    def count(self, system: str) -> int:
        return int(self._rows("SELECT count(*) FROM bench_effect WHERE system = %s", (system,))[0][0])

    def times(self, system: str) -> list[tuple[float, float, float]]:
        return [
            (float(a), float(b), float(c))
            for a, b, c in self._rows(
                "SELECT t_enqueued, t_started, t_done FROM bench_effect WHERE system = %s", (system,)
            )
        ]

    def once(self, system: str) -> tuple[int, int]:
        row = self._rows("SELECT count(*), count(DISTINCT key) FROM bench_effect WHERE system = %s", (system,))[0]
        return int(row[0]), int(row[1])


def wait_for(effects: Effects, system: str, count: int, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while effects.count(system) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what}: {effects.count(system)} of {count} jobs ran within {WAIT_S} s")
        time.sleep(0.2)


class TenantrySide:
    """Enqueues through tenantry.jobs in this process; runs workers as processes."""

    name = "tenantry"

    def __init__(self, url: str, redis: bool = False) -> None:
        from tenantry import jobs
        from tenantry.db import init_database
        from tenantry.settings import Settings

        self.url = url
        init_database(url, 2)
        # The enqueue side announces on Redis only when told to (SQLite + REDIS_URL), as the server would.
        jobs.configure_wakeup(Settings(database_url=url, secret_key=SECRET, redis_url=REDIS_URL if redis else ""))
        jobs.register_kind(jobs.JobKind("bench.noop", lambda ctx: None), replace=True)

    def enqueue(self, count: int, prefix: str) -> None:
        from models.base import database
        from tenantry import jobs

        with database.atomic():
            for n in range(count):
                jobs.enqueue("bench.noop", {"key": f"{prefix}-{n}", "t0": time.time()}, tenant_id=None)

    def enqueue_one(self, key: str) -> None:
        from models.base import database
        from tenantry import jobs

        with database.atomic():
            jobs.enqueue("bench.noop", {"key": key, "t0": time.time()}, tenant_id=None)

    def start(self, processes: int, threads: int = 1, wakeup: bool = True, redis: bool = False) -> list[Proc]:
        extra = {"BENCH_THREADS": str(threads)}
        if not wakeup:
            extra["BENCH_NO_WAKEUP"] = "1"
        if redis:
            extra["REDIS_URL"] = REDIS_URL
        return [
            Proc(
                subprocess.Popen(
                    [sys.executable, str(BENCH / "jobs.py"), "tenantry-worker"],
                    env=env_for(self.url, **extra),
                    cwd=REPO,
                )
            )
            for _ in range(processes)
        ]


class HueySide:
    """Enqueues through huey's SqlHuey in this process; runs `huey_consumer -k process`."""

    name = "huey"

    def __init__(self, url: str) -> None:
        os.environ["BENCH_HUEY_URL"] = url
        sys.path.insert(0, str(BENCH))
        import jobs_huey

        self.module = jobs_huey
        self.url = url

    def enqueue(self, count: int, prefix: str) -> None:
        for n in range(count):
            self.module.noop(f"{prefix}-{n}", time.time())

    def enqueue_one(self, key: str) -> None:
        self.module.noop(key, time.time())

    def start(self, processes: int, max_delay: float | None = None) -> list[Proc]:
        args = [str(VENV_BIN / "huey_consumer"), "jobs_huey.huey", "-k", "process", "-w", str(processes), "-q"]
        if max_delay is not None:
            args += ["-d", str(max_delay), "-m", str(max_delay)]
        env = dict(os.environ, BENCH_HUEY_URL=self.url, PYTHONPATH=str(BENCH))
        return [Proc(subprocess.Popen(args, env=env, cwd=BENCH))]


def stop_all(procs: list[Proc]) -> None:
    for proc in procs:
        proc.stop()


def throughput(side: Any, effects: Effects, processes: int) -> float:
    effects.clear()
    side.enqueue(THROUGHPUT_JOBS, f"tp{processes}")
    procs = side.start(processes)
    try:
        wait_for(effects, side.name, THROUGHPUT_JOBS, f"{side.name} throughput x{processes}")
    finally:
        stop_all(procs)
    times = effects.times(side.name)
    span = max(t[2] for t in times) - min(t[1] for t in times)
    return len(times) / span


def latency(side: Any, effects: Effects, start: Callable[[], list[Proc]], settle: float = 2.0) -> tuple[float, float]:
    effects.clear()
    procs = start()
    try:
        time.sleep(settle)  # the workers connect and go idle first: this measures an idle queue
        for n in range(LATENCY_JOBS):
            side.enqueue_one(f"lat-{n}")
            time.sleep(random.uniform(0.010, 0.040))  # spacing, not a secret
        wait_for(effects, side.name, LATENCY_JOBS, f"{side.name} latency")
    finally:
        stop_all(procs)
    delays = sorted((started - enqueued) * 1000 for enqueued, started, _ in effects.times(side.name))
    return statistics.median(delays), delays[int(len(delays) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "tenantry-worker", "sqlite-latency"])
    parser.add_argument("url", nargs="?", help="sqlite-latency: the SQLite database URL")
    parser.add_argument("--redis", action="store_true", help="sqlite-latency: workers woken through Redis")
    parser.add_argument("--write", action="store_true", help="write the results to bench/JOBS_RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="a tenth of the jobs: a smoke run, not a measurement")
    args = parser.parse_args()
    if args.command == "tenantry-worker":
        tenantry_worker()
        return
    if args.command == "sqlite-latency":
        migrate(args.url)
        effects = Effects(args.url)
        effects.create()
        side = TenantrySide(args.url, redis=args.redis)
        p50, p95 = latency(side, effects, lambda: side.start(1, redis=args.redis))
        print(f"{p50:.1f} {p95:.1f}")
        return

    global THROUGHPUT_JOBS, LATENCY_JOBS, ONCE_JOBS
    if args.quick:
        THROUGHPUT_JOBS, LATENCY_JOBS, ONCE_JOBS = THROUGHPUT_JOBS // 10, LATENCY_JOBS // 4, ONCE_JOBS // 10
    lines: list[str] = []
    with fresh_database() as url, tempfile.TemporaryDirectory() as tmp:
        migrate(url)
        effects = Effects(url)
        effects.create()
        tenantry, huey = TenantrySide(url), HueySide(url)

        lines += [
            f"| Throughput ({THROUGHPUT_JOBS:,} no-op jobs queued) | Tenantry jobs/s | huey SqlHuey jobs/s | ratio |",
            "|---|---:|---:|---:|",
        ]
        for processes in (1, 2, 4):
            ours = throughput(tenantry, effects, processes)
            theirs = throughput(huey, effects, processes)
            lines.append(f"| {processes} worker process(es) | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f}x |")
            print(lines[-1], flush=True)

        lines += [
            "",
            f"| Enqueue-to-start latency ({LATENCY_JOBS} jobs, idle worker) | p50 ms | p95 ms |",
            "|---|---:|---:|",
        ]
        rows: list[tuple[str, Any, Callable[[], list[Proc]]]] = [
            ("Tenantry, PostgreSQL, LISTEN/NOTIFY wake-up", tenantry, lambda: tenantry.start(1)),
            ("Tenantry, PostgreSQL, polling only (1 s)", tenantry, lambda: tenantry.start(1, wakeup=False)),
            ("huey SqlHuey, PostgreSQL, defaults (-d 0.1 -m 10)", huey, lambda: huey.start(1)),
            ("huey SqlHuey, PostgreSQL, fixed 0.1 s poll", huey, lambda: huey.start(1, max_delay=0.1)),
        ]
        for label, side, start in rows:
            p50, p95 = latency(side, effects, start)
            lines.append(f"| {label} | {p50:,.0f} | {p95:,.0f} |")
            print(lines[-1], flush=True)

        for label, redis in (
            ("Tenantry, SQLite, polling only (0.5 s)", False),
            ("Tenantry, SQLite, Redis wake-up", True),
        ):
            # Its own process: this one's tenantry database is bound to PostgreSQL.
            command = [
                sys.executable,
                str(BENCH / "jobs.py"),
                "sqlite-latency",
                f"sqlite:///{tmp}/bench-{int(redis)}.db",
            ]
            answer = subprocess.run(
                command + (["--redis"] if redis else []), check=True, capture_output=True, text=True
            )
            p50, p95 = (float(x) for x in answer.stdout.split()[-2:])
            lines.append(f"| {label} | {p50:,.0f} | {p95:,.0f} |")
            print(lines[-1], flush=True)

        effects.clear()
        tenantry.enqueue(ONCE_JOBS, "once")
        procs = tenantry.start(4, threads=2)
        try:
            wait_for(effects, "tenantry", ONCE_JOBS, "exactly once")
        finally:
            stop_all(procs)
        total, distinct = effects.once("tenantry")
        lines += [
            "",
            f"Exactly once: {ONCE_JOBS:,} jobs on 4 worker processes x 2 threads: {total:,} side effects, "
            f"{distinct:,} distinct keys ({'exactly once' if total == distinct == ONCE_JOBS else 'NOT exactly once'}).",
        ]
        print(lines[-1], flush=True)

    report = "\n".join(lines)
    if args.write:
        machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        (BENCH / "JOBS_RESULTS.md").write_text(
            f"# Job layer benchmark\n\n{stamp}, {machine}; `bench/run-jobs`.\n\n{report}\n"
        )


if __name__ == "__main__":
    main()
