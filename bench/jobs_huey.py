"""The huey side of bench/jobs.py: a SqlHuey on the benchmark's database and its no-op task.

`huey_consumer jobs_huey.huey -k process -w N` runs it (PYTHONPATH=bench). The task writes the
same side effect as Tenantry's `bench.noop` job, through its own psycopg2 connection.
"""

from __future__ import annotations

import os
import time

import psycopg2
from huey.contrib.sql_huey import SqlHuey

huey = SqlHuey(name="bench", database=os.environ["BENCH_HUEY_URL"], results=False)
_conn = None


@huey.task()
def noop(key: str, t0: float) -> None:
    """Records that it ran: key, enqueue time, start time."""
    global _conn  # one connection per consumer process
    started = time.time()
    if _conn is None:
        _conn = psycopg2.connect(os.environ["BENCH_HUEY_URL"])
        _conn.autocommit = True
    with _conn.cursor() as cur:
        cur.execute(
            "INSERT INTO bench_effect (system, key, t_enqueued, t_started, t_done) VALUES (%s, %s, %s, %s, %s)",
            ("huey", key, t0, started, time.time()),
        )
