"""Counting requests per tenant for GET /v1/tenants/{tenant_id}/usage, off the request path.

The request path only adds one to a dict (under a lock); a background thread of each process
writes the counts every `interval` seconds, in one transaction, and at exit. A process that
dies loses at most its last interval's counts: usage is for reporting, not billing-grade
metering. The usage operation writes its own process's counts first, so a reader sees its own
requests at once; another process's appear within the interval.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import Counter
from datetime import UTC, date, datetime

log = logging.getLogger("tenantry.usage")


class UsageRecorder:
    """Buffers request counts and writes them in the background."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._counts: Counter[tuple[str, date, str, str]] = Counter()
        self._lock = threading.Lock()
        self._pid: int | None = None  # the process whose thread writes; a forked child starts its own
        self._flush_lock = threading.Lock()

    def count(self, tenant_id: str, credential: str, operation: str) -> None:
        """Counts one request of `credential` to `operation` in the tenant, today (UTC)."""
        key = (tenant_id, datetime.now(UTC).date(), credential, operation)
        with self._lock:
            self._counts[key] += 1
        if self._pid != os.getpid():
            self._start()

    def flush(self, tenant_id: str | None = None) -> None:
        """Writes the buffered counts now, or only one tenant's (kept for the next try if the write fails).

        A request flushes only its own tenant's: its connection is bound to that tenant by
        row-level security, which would refuse the other tenants' rows.
        """
        from models.usage import UsageCounter
        from tenantry.db import drop_connection

        with self._flush_lock:
            with self._lock:
                if tenant_id is None:
                    counts, self._counts = self._counts, Counter()
                else:
                    counts = Counter({k: n for k, n in self._counts.items() if k[0] == tenant_id})
                    for key in counts:
                        del self._counts[key]
            if not counts:
                return
            try:
                UsageCounter.add(counts)
            except Exception:
                log.warning("usage counts not written; kept for the next try", exc_info=True)
                with self._lock:
                    self._counts.update(counts)
                if tenant_id is None:  # the writer thread's own connection; a request's is the core's to handle
                    drop_connection()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
        threading.Thread(target=self._run, name="usage-writer", daemon=True).start()
        atexit.register(self.flush)

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.interval):
            self.flush()
