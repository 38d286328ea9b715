"""A job worker process for tests/unit/tenantry/test_jobs_worker.py: the test kinds, then `Worker.run()` until SIGTERM.

Run as `python -m tests.jobproc` with DATABASE_URL set; TEST_JOB_LEASE is the kinds' lease in seconds.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from tenantry import jobs
from tenantry.db import init_database
from tenantry.logs import configure_logging
from tenantry.settings import Settings


def block_first_attempt(ctx: jobs.JobContext) -> dict[str, Any]:
    """Blocks its first attempt for ten minutes (to be killed mid-job); any later attempt succeeds at once."""
    if ctx.job.attempt == 1:
        time.sleep(600)
    return {"attempt": ctx.job.attempt}


def main() -> None:
    """Runs a worker of the `test.*` kinds until SIGTERM."""
    lease = float(os.environ.get("TEST_JOB_LEASE", "1"))
    settings = Settings(database_url=os.environ["DATABASE_URL"], secret_key="x" * 40, worker_poll_interval=0.1)
    configure_logging("INFO")
    init_database(settings.database_url, 4)
    jobs.register_kind(
        jobs.JobKind("test.block", block_first_attempt, retry=(0.1,), timeout=lease / 2, lease=lease), replace=True
    )
    worker = jobs.Worker(settings, kinds=["test.*"], concurrency=1)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    print(f"job worker {worker.owner} ready", flush=True)
    worker.run()


if __name__ == "__main__":
    main()
