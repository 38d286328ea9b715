"""The decision cost with 100 enabled policies in a tenant: `bench/policy_decision.py`.

Pure CPU, no server: it compiles 100 policies the way a tenant's access snapshot does and times
`policies.evaluate` (built-in rules, role grants, and every policy on the action judged) for three
cases: all 100 policies on the action asked about (the worst case: each is judged), the policies
spread over 20 actions (5 judged), and a deny that applies. Writes bench/POLICY_RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies import CompiledPolicy, Resource, Subject, evaluate  # noqa: E402

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def make_policies(count: int, actions: int) -> list[CompiledPolicy]:
    """`count` enabled policies spread round-robin over `actions` booking actions; one deny in ten."""
    policies = []
    for i in range(count):
        action = f"act{i % actions}"
        if i % 10 == 9:
            conditions = [f"resource.amount > {1000 + i}", "context.mode == 'test'"]
            effect = "deny"
        else:
            conditions = [
                {"user.role": f"Tier{i}", "booking.scheduled_time": "> now() + 24h"},
                "context.ip in ['203.0.113.7', '198.51.100.1'] or subject.status == 'active'",
            ]
            effect = "allow"
        policies.append(CompiledPolicy.compile(f"pol_{i:03d}", f"P{i}", "booking", action, effect, conditions))
    return policies


def time_case(
    subject: Subject, action: str, resource: Resource, policies: list[CompiledPolicy], rounds: int, per_round: int
) -> tuple[float, float, bool]:
    """Returns (median µs, best µs) per decision and whether it allowed."""
    context = {"now": NOW, "ip": "203.0.113.7", "mode": "live"}
    on_action = [p for p in policies if p.permission == action]  # the snapshot indexes policies by action
    samples = []
    allowed = evaluate(subject, action, resource, context, on_action).allowed
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            evaluate(subject, action, resource, context, on_action)
        samples.append((time.perf_counter() - start) / per_round * 1e6)
    return statistics.median(samples), min(samples), allowed


def main() -> None:
    """Runs the cases and prints and writes the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--output", default=str(ROOT / "bench" / "POLICY_RESULTS.md"))
    args = parser.parse_args()

    grants = {"Tier5": frozenset({"booking:read"})}
    subject = Subject(
        "usr_1",
        "ten_a",
        ("member", "Tier5"),
        role_grants=grants,
        attributes={"email": "a@example.com", "status": "active", "mfa_enabled": False},
    )
    resource = Resource(
        "booking", "bkg_1", "ten_a", {"scheduled_time": (NOW + timedelta(hours=25)).isoformat(), "amount": 10}
    )
    rows = []
    cases = [
        ("100 policies, all on the action", make_policies(100, 1), "booking:act0"),
        ("100 policies over 20 actions", make_policies(100, 20), "booking:act5"),
        ("100 policies over 20 actions, a deny applies", make_policies(100, 20), "booking:act9"),
        ("no policies (role grant only)", [], "booking:read"),
    ]
    for name, policies, action in cases:
        res = (
            resource
            if "deny applies" not in name
            else Resource("booking", "bkg_1", "ten_a", {"scheduled_time": NOW.isoformat(), "amount": 10_000})
        )
        ctx_subject = subject
        median, best, allowed = time_case(ctx_subject, action, res, policies, args.rounds, args.per_round)
        judged = sum(1 for p in policies if p.permission == action)
        rows.append((name, judged, median, best, "allow" if allowed else "deny"))

    load = os.getloadavg()
    lines = [
        "# Policy decision cost",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: nproc {os.cpu_count()}, Python {platform.python_version()}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- method: `policies.evaluate` called {args.per_round} times a round, {args.rounds} rounds; "
        "compiled policies as the tenant snapshot holds them; one process, no I/O",
        "",
        "Produced by `bench/policy_decision.py`.",
        "",
        "| case | policies judged | median µs/decision | best µs/decision | decision |",
        "| --- | ---: | ---: | ---: | --- |",
        *(f"| {n} | {j} | {m:.1f} | {b:.1f} | {d} |" for n, j, m, b, d in rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
