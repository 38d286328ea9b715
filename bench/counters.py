"""The cost of one rate-limit check per counter store: `bench/counters.py` (writes bench/COUNTERS_RESULTS.md).

Pure CPU, no server: times limits' sliding window counter `hit` (what the limiter does for each
limit a request is under) and `get_window_stats` (the headers, once a request) on the shared
table in a file (what `tenantry serve` workers use), the same table in anonymous memory (one
process), and limits' own MemoryStorage (per process; what the workers used before). A request
on a `standard` operation checks three or four limits, an `auth` one five.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from limits import parse  # noqa: E402
from limits.storage import MemoryStorage  # noqa: E402
from limits.strategies import SlidingWindowCounterRateLimiter  # noqa: E402

from tenantry.counters import SharedCounters, create_table  # noqa: E402

KEYS = 5000  # distinct keys hit round-robin: addresses, credentials, tenants


def per_call(fn: Callable[[int], object], calls: int, repeats: int) -> float:
    """Returns the median over `repeats` runs of the microseconds one call takes."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(calls):
            fn(i)
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


def measure(name: str, storage: object, calls: int, repeats: int) -> tuple[str, float, float]:
    limiter = SlidingWindowCounterRateLimiter(storage)  # type: ignore[arg-type]
    budget = parse("1000000/minute")
    keys = [f"tenantry/address/198.51.100.{i}" for i in range(KEYS)]
    hit = per_call(lambda i: limiter.hit(budget, keys[i % KEYS]), calls, repeats)
    stats = per_call(lambda i: limiter.get_window_stats(budget, keys[i % KEYS]), calls, repeats)
    return name, hit, stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "bench" / "COUNTERS_RESULTS.md"))
    args = parser.parse_args()
    table = create_table(131072)  # where `tenantry serve` puts it: /dev/shm when there is one
    try:
        rows = [
            measure("shared table, file (tenantry serve)", SharedCounters(path=str(table)), args.calls, args.repeats),
            measure("shared table, anonymous (one process)", SharedCounters(path=""), args.calls, args.repeats),
            measure("limits MemoryStorage (per process, before)", MemoryStorage(), args.calls, args.repeats),
        ]
    finally:
        table.unlink()
    lines = [
        "# Rate-limit counter stores: cost of one check",
        "",
        f"`bench/counters.py`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} cores (shared with other work: compare rows of one run). "
        f"{args.calls} calls over {KEYS} keys, median of {args.repeats} runs.",
        "",
        "| store | hit (µs) | window stats (µs) |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {hit:.1f} | {stats:.1f} |" for name, hit, stats in rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
