"""How GET /v1/audit-logs answers with a million entries in the tenant: the first page, a page deep
in the trail (by cursor), and the filtered lists, through the live server on PostgreSQL.

Run with `.venv/bin/python bench/audit_pagination.py`; it makes and drops its own database and
writes bench/AUDIT_RESULTS.md. The entries are inserted with SQL (their hashes are not a chain:
this measures reading, not verifying).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import BENCH, PASSWORD, _expect, fresh_database, http, machine, servers

ENTRIES = 1_000_000
SAMPLES = 30


def fill(database_url: str, tenant_id: str, user_id: str) -> None:
    """Inserts ENTRIES entries for the tenant, one action in ten a user.deleted, spread over 100 users."""
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT coalesce(max(sequence), 0) FROM audit_entry WHERE tenant_id = %s", (tenant_id,))
            start = cur.fetchone()[0]
            cur.execute(
                """
                INSERT INTO audit_entry (id, tenant_id, sequence, action, resource_type, resource_id, actor_type,
                    actor_id, livemode, old_values, new_values, decided_by, ip_address, user_agent, request_id,
                    created_at, previous_hash, hash)
                SELECT 'aud_' || lpad(to_hex(%(start)s + n), 26, '0'), %(tenant)s, %(start)s + n,
                       CASE WHEN n %% 10 = 0 THEN 'user.deleted' ELSE 'user.updated' END, 'user',
                       'usr_' || lpad(to_hex(n %% 100), 26, '0'), 'user', %(user)s, TRUE,
                       '{"role": "member"}', '{"role": "admin"}', '["role:owner"]', '203.0.113.7', 'bench',
                       'req_bench', now() - make_interval(secs => %(total)s - n), repeat('0', 64), repeat('0', 64)
                FROM generate_series(1, %(total)s) AS n""",
                {"start": start, "tenant": tenant_id, "user": user_id, "total": ENTRIES},
            )
            cur.execute(
                "UPDATE audit_chain SET last_sequence = last_sequence + %s WHERE tenant_id = %s", (ENTRIES, tenant_id)
            )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE audit_entry")
    finally:
        conn.close()


def timed(url: str, token: str) -> tuple[float, int]:
    """Returns (median ms over SAMPLES requests, entries on the page)."""
    times, count = [], 0
    for _ in range(SAMPLES):
        began = time.perf_counter()
        status, body = http("GET", url, token=token)
        times.append((time.perf_counter() - began) * 1000)
        if status != 200:
            raise RuntimeError(f"GET {url}: {status} {body}")
        count = len(body["data"])
    return statistics.median(times), count


def main() -> int:
    os.environ["TENANTRY_DEFAULT_PLAN"] = "enterprise"  # 210 reads in a few seconds: past standard's burst
    with (
        fresh_database() as database_url,
        tempfile.TemporaryDirectory() as tmp,
        servers(database_url, Path(tmp), baseline=False) as (server, _),
    ):
        base = server.base_url
        registered = _expect(
            *http(
                "POST",
                base + "/v1/auth/register",
                {
                    "email": "owner@audit.bench.example.com",
                    "password": PASSWORD,
                    "first_name": "Audit",
                    "last_name": "Owner",
                    "tenant_name": "Audit Bench",
                },
            ),
            201,
            "register",
        )
        tenant_id, user_id = registered["tenant"]["id"], registered["user"]["id"]
        token = _expect(
            *http(
                "POST",
                base + "/v1/auth/login",
                {"email": "owner@audit.bench.example.com", "password": PASSWORD, "tenant_id": tenant_id},
            ),
            200,
            "login",
        )["access_token"]
        began = time.perf_counter()
        fill(database_url, tenant_id, user_id)
        filled_s = time.perf_counter() - began
        deep = "aud_" + format(ENTRIES // 100, "x").rjust(26, "0")  # 99% of the way back
        cases = [
            ("first page, no filter", "/v1/audit-logs?limit=20"),
            ("a page 990,000 entries deep (starting_after)", f"/v1/audit-logs?limit=20&starting_after={deep}"),
            ("action=user.deleted", "/v1/audit-logs?limit=20&action=user.deleted"),
            ("action=user.deleted, deep", f"/v1/audit-logs?limit=20&action=user.deleted&starting_after={deep}"),
            (
                "resource_id (one user of 100)",
                "/v1/audit-logs?limit=20&resource_type=user&resource_id=usr_" + format(7, "x").rjust(26, "0"),
            ),
            ("user_id (the actor)", f"/v1/audit-logs?limit=20&user_id={user_id}"),
            (
                "date range (one hour, 11 days back)",
                "/v1/audit-logs?limit=20&date_from=" + _ago(11 * 86400 + 3600) + "&date_to=" + _ago(11 * 86400),
            ),
        ]
        rows = []
        for name, path in cases:
            median, count = timed(base + path, token)
            rows.append(f"| {name} | {count} | {median:.1f} |")
    table = "\n".join(["| request (GET /v1/audit-logs) | entries | median ms |", "| --- | ---: | ---: |", *rows])
    text = (
        f"# Audit trail pagination at scale\n\n- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"- machine: {machine()}\n- data: {ENTRIES:,} entries in one tenant on PostgreSQL "
        f"(inserted in {filled_s:.0f} s), {SAMPLES} sequential requests per row, through the live server "
        f"(`tenantry serve --workers 2`)\n\nProduced by `bench/audit_pagination.py`.\n\n{table}\n"
    )
    (BENCH / "AUDIT_RESULTS.md").write_text(text)
    print(text)
    return 0


def _ago(seconds: int) -> str:
    return datetime.fromtimestamp(time.time() - seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


if __name__ == "__main__":
    raise SystemExit(main())
