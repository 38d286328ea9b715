"""Benchmark driver: Tenantry (uvicorn, 2 workers) against a bare Flask baseline (gunicorn, 2 sync workers).

Run it through `bench/run`, which installs wrk and gunicorn first. One run:

1. creates a fresh PostgreSQL database on the local server and migrates it (`tenantry db upgrade`);
2. starts Tenantry and the baseline (`bench/baseline_app.py`) on free ports of 127.0.0.1;
3. seeds a tenant, its owner and 200 users through the real API, and logs the owner in;
4. runs wrk per scenario (a discarded 3 s warm-up, then 10 s measured, `-t2 -c32 --latency`);
5. prints the results as a markdown table and writes it, with the machine, to bench/RESULTS.md;
6. stops both servers and drops the database, also on error.

`--profile` instead records one Tenantry worker with py-spy for 10 s under the `GET /v1/users/{id}`
load and writes a speedscope file to bench/out/ (see bench/profile.sh).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"  # gitignored: server logs, raw wrk output, profiles
VENV_BIN = REPO / ".venv" / "bin"
ADMIN_URL = os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
HOST = "127.0.0.1"
WORKERS = 2
THREADS, CONNECTIONS, WARMUP_S, DURATION_S = 2, 32, 3, 10
BENCH_LIMIT = "1000000/minute"
BENCH_THREADS = "2"
OPERATOR_EMAIL = "operator@bench.example.com"
OPERATOR_PASSWORD = secrets.token_urlsafe(18)
WRK_TIMEOUT = "10s"  # login is slow by design (argon2id); the default 2 s would count its tail as timeouts
SEED_USERS = 200
SETTLE_S = 30  # at most this long waiting for a server to drain the previous run's backlog
PASSWORD = "correct-horse-battery"


@dataclass(frozen=True)
class Result:
    """One measured wrk run."""

    scenario: str
    server: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx responses plus socket errors


@dataclass(frozen=True)
class Seed:
    """What the load needs from the seeded tenant."""

    token: str
    user_id: str
    login_body: str


@dataclass
class Server:
    """A server process started in its own process group, with its output in a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    base_url: str
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        """Stops the process group (SIGTERM, then SIGKILL after 15 s)."""
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def tail(self, lines: int = 30) -> str:
        """Returns the last lines of the server's log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _admin(sql: str) -> None:
    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextmanager
def fresh_database() -> Iterator[str]:
    """Yields the URL of a new database `tenantry_bench_<random>`; drops it (WITH (FORCE)) afterwards."""
    name = "tenantry_bench_" + secrets.token_hex(4)
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def http(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 60) -> tuple[int, Any]:
    """Returns (status, decoded JSON body or None) for one request; never raises on an HTTP status."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def start_server(
    name: str, argv: list[str], env: dict[str, str], port: int, ready_path: str, timeout: float = 60
) -> Server:
    """Starts `argv` (output to bench/out/<name>.log) and returns it once GET `ready_path` answers 200.

    Raises RuntimeError when it exits or is not ready within `timeout` seconds.
    """
    log = OUT / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, proc, log, f"http://{HOST}:{port}", env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{server.tail()}")
        try:
            if http("GET", server.base_url + ready_path, timeout=2)[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{name} was not ready within {timeout:.0f} s:\n{server.tail()}")


def _expect(status: int, body: Any, want: int, what: str) -> Any:
    if status != want:
        raise RuntimeError(f"{what}: expected {want}, got {status}: {body}")
    return body["data"]


def seed(base: str) -> Seed:
    """Registers a tenant, logs its owner in and creates SEED_USERS users in batches of 100."""
    email = f"owner-{secrets.token_hex(4)}@bench.example.com"
    registered = _expect(
        *http(
            "POST",
            base + "/v1/auth/register",
            {
                "email": email,
                "password": PASSWORD,
                "first_name": "Bench",
                "last_name": "Owner",
                "tenant_name": "Bench Corporation",
            },
        ),
        201,
        "register",
    )
    tenant_id = registered["tenant"]["id"]
    login_body = {"email": email, "password": PASSWORD, "tenant_id": tenant_id}
    token = _expect(*http("POST", base + "/v1/auth/login", login_body), 200, "login")["access_token"]
    operator = _expect(
        *http("POST", base + "/v1/auth/login", {"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD}),
        200,
        "operator login",
    )["access_token"]
    _expect(
        *http(
            "PUT",
            f"{base}/v1/tenants/{tenant_id}",
            {
                "name": "Bench Corporation",
                "status": "active",
                "settings": {},
                "plan": "enterprise",
                "rate_limits": {"requests_per_minute": 1_000_000, "burst_per_10_seconds": 1_000_000},
            },
            operator,
        ),
        200,
        "set the tenant's limits",
    )

    def batch(start: int) -> list[str]:
        users = [
            {
                "email": f"user{n:04d}@bench.example.com",
                "password": PASSWORD,
                "first_name": f"User{n}",
                "last_name": "Seeded",
            }
            for n in range(start, min(start + 100, SEED_USERS))
        ]
        created = _expect(
            *http("POST", base + "/v1/users/batch", {"users": users}, token, timeout=120), 201, "users batch"
        )
        return [u["id"] for u in created]

    # Each user costs an argon2id hash; two batches at a time keep both cores busy.
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        user_ids = [uid for ids in pool.map(batch, range(0, SEED_USERS, 100)) for uid in ids]
    return Seed(token=token, user_id=user_ids[len(user_ids) // 2], login_body=json.dumps(login_body))


def jwt_claims(token: str) -> dict[str, Any]:
    """Returns the JWT's payload claims, decoded without verification."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _latency_ms(text: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)
    if not match:
        raise ValueError(f"no {percentile}% latency in wrk output:\n{text}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(text: str) -> tuple[float, float, float, int, int]:
    """Returns (requests/s, p50 ms, p99 ms, requests, errors) from `wrk --latency` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", text))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return rps, _latency_ms(text, "50"), _latency_ms(text, "99"), requests, errors


def wrk(
    url: str,
    duration_s: int,
    headers: dict[str, str] | None = None,
    script: str | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Runs wrk against `url` for `duration_s` seconds and returns its output; raises on failure."""
    argv = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration_s}s", "--latency", "--timeout", WRK_TIMEOUT]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if script:
        argv += ["-s", str(BENCH / "wrk" / script)]
    argv.append(url)
    done = subprocess.run(
        argv, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=duration_s + 30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


def settle(server: Server) -> float:
    """Waits (up to SETTLE_S) until GET /health answers within 100 ms twice running; returns the seconds waited.

    wrk stops at its deadline, but the server still works off the requests it had accepted (for the
    argon2 scenarios, several seconds of them): without this the next run would measure that backlog.
    """
    started = time.monotonic()
    quick = 0
    while quick < 2 and time.monotonic() - started < SETTLE_S:
        probe = time.monotonic()
        try:
            ok = http("GET", server.base_url + "/health", timeout=SETTLE_S)[0] == 200
        except OSError:
            ok = False
        quick = quick + 1 if ok and time.monotonic() - probe < 0.1 else 0
        time.sleep(0.1)
    return time.monotonic() - started


def measure(scenario: str, server: Server, path: str, **wrk_args: Any) -> Result:
    """Warms up for WARMUP_S (discarded), then measures DURATION_S; returns the measured run.

    The server is let settle before each of the two; wrk's raw output goes to bench/out/wrk-*.txt.
    """
    url = server.base_url + path
    settle(server)
    wrk(url, WARMUP_S, **wrk_args)
    settle(server)
    text = wrk(url, DURATION_S, **wrk_args)
    slug = re.sub(r"[^a-z0-9]+", "-", f"{scenario} {server.name}".lower()).strip("-")
    (OUT / f"wrk-{slug}.txt").write_text(text)
    rps, p50, p99, requests, errors = parse_wrk(text)
    result = Result(scenario, server.name, rps, p50, p99, requests, errors)
    flag = f"  <- {errors} errors" if errors else ""
    print(
        f"  {scenario:<24} {server.name:<11} {rps:9.1f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms{flag}", flush=True
    )
    return result


def machine() -> str:
    """Returns a one-line description of this machine: cores, CPU model, RAM, OS."""
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    mem = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    ram = f"{int(mem.group(1)) / 1024 / 1024:.1f} GiB" if mem else "unknown"
    return (
        f"nproc {os.cpu_count()}, {model.group(1).strip() if model else platform.processor()}, "
        f"RAM {ram}, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def git_commit() -> str:
    """Returns the short commit of HEAD, or 'unknown'."""
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def render(results: list[Result]) -> str:
    """Returns the results as a markdown table followed by the Tenantry/bare-Flask ratios."""
    lines = [
        "| scenario | server | req/s | p50 ms | p99 ms | requests | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        # wrk reports no latency for a run whose every response failed; don't print its zeros as numbers.
        p50, p99 = (f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}") if r.requests > r.errors else ("n/a", "n/a")
        lines.append(f"| `{r.scenario}` | {r.server} | {r.rps:,.1f} | {p50} | {p99} | {r.requests:,} | {r.errors} |")
    by_key = {(r.scenario, r.server): r for r in results}
    ratios = []
    for scenario in ("GET /v1/users/{id}", "GET /health"):
        ours, base = by_key.get((scenario, "tenantry")), by_key.get((scenario, "bare-flask"))
        if ours and base and base.rps:
            ratios.append(
                f"- `{scenario}`: Tenantry/bare-Flask = {ours.rps / base.rps:.2f}x req/s "
                f"(p50 {ours.p50_ms / base.p50_ms:.2f}x, p99 {ours.p99_ms / base.p99_ms:.2f}x)"
            )
    return (
        "\n".join(lines)
        + "\n\nRatios (throughput; latency in parentheses, lower is better):\n\n"
        + "\n".join(ratios)
        + "\n"
    )


def write_results(table: str, notes: list[str]) -> Path:
    """Overwrites bench/RESULTS.md with the table, the machine, the date and the commit; returns its path."""
    path = BENCH / "RESULTS.md"
    path.write_text(
        "# Benchmark results\n\n"
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"- commit: {git_commit()} (the working tree may have had uncommitted changes)\n"
        f"- machine: {machine()}\n"
        f"- load: wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION_S}s --latency --timeout {WRK_TIMEOUT}, after a "
        f"discarded {WARMUP_S} s warm-up, from the same machine over 127.0.0.1; wrk shares the cores with the "
        "servers and anything else running, so compare rows of one run, not across runs\n"
        f"- servers: Tenantry `tenantry serve --workers {WORKERS}` (uvicorn, TENANTRY_THREADS={BENCH_THREADS}); "
        f"bare Flask `gunicorn -w {WORKERS} "
        "-k sync bench/baseline_app.py`, one psycopg2 connection per worker; PostgreSQL on 127.0.0.1\n"
        + "".join(f"- {note}\n" for note in notes)
        + "\nProduced by `bench/run`.\n\n"
        + table
    )
    return path


def _secret() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(48))


@contextmanager
def servers(database_url: str, workdir: Path, baseline: bool = True) -> Iterator[tuple[Server, Server | None]]:
    """Migrates the database and yields (tenantry, baseline or None), both ready; stops them afterwards."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TENANTRY_SECRET_KEY": _secret(),
        "TENANTRY_INSTANCE_PATH": str(workdir / "instance"),
        "TENANTRY_LOG_LEVEL": "WARNING",
        "TENANTRY_ACCESS_TOKEN_TTL": "3600",
        "PYTHONUNBUFFERED": "1",
        # Rate limits stay on (every request is counted, in the table the workers share) with budgets no
        # load here reaches: the address and login limits here, the tenant's through the operator.
        "TENANTRY_RATE_LIMIT_IP": BENCH_LIMIT,
        "TENANTRY_RATE_LIMIT_AUTH_IP": BENCH_LIMIT,
        "TENANTRY_RATE_LIMIT_AUTH_ACCOUNT": BENCH_LIMIT,
        # As in production: the server's connections are bound by row-level security.
        "TENANTRY_DB_ROLE": "tenantry_app",
        # Two handler threads a worker, against the baseline's one request at a time a worker:
        # with the database 0.1 ms away, more threads add no throughput, only tail latency
        # (README, "Benchmark"). The default (8) is for databases further away.
        "TENANTRY_THREADS": BENCH_THREADS,
    }
    env.pop("TENANTRY_VALIDATE_RESPONSES", None)
    env.pop("REDIS_URL", None)
    (workdir / "instance").mkdir()
    subprocess.run(
        [str(VENV_BIN / "tenantry"), "db", "upgrade"], cwd=REPO, env=env, check=True, capture_output=True, timeout=60
    )
    subprocess.run(
        [str(VENV_BIN / "tenantry"), "admin", "create", f"--email={OPERATOR_EMAIL}", f"--password={OPERATOR_PASSWORD}"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    started: list[Server] = []
    try:
        port = free_port()
        started.append(
            start_server(
                "tenantry",
                [str(VENV_BIN / "tenantry"), "serve", "--host", HOST, "--port", str(port), "--workers", str(WORKERS)],
                env,
                port,
                "/health/ready",
            )
        )
        if baseline:
            port = free_port()
            started.append(
                start_server(
                    "bare-flask",
                    [
                        str(VENV_BIN / "gunicorn"),
                        "-w",
                        str(WORKERS),
                        "-k",
                        "sync",
                        "-b",
                        f"{HOST}:{port}",
                        "--chdir",
                        str(BENCH),
                        "--log-level",
                        "warning",
                        "baseline_app:app",
                    ],
                    env,
                    port,
                    "/health",
                )
            )
        yield started[0], started[1] if baseline else None
    finally:
        for server in reversed(started):
            server.stop()


def check_baseline(tenantry: Server, flask: Server, seeded: Seed) -> list[str]:
    """Returns notes on whether both servers answer GET /v1/users/{id} with the same user."""
    path = f"/v1/users/{seeded.user_id}"
    ours = http("GET", tenantry.base_url + path, token=seeded.token)
    base = http("GET", flask.base_url + path, token=seeded.token)
    if ours[0] != 200 or base[0] != 200 or ours[1]["data"] != base[1]["data"]:
        raise RuntimeError(f"the servers disagree on GET {path}: tenantry {ours}, bare-flask {base}")
    sid = jwt_claims(seeded.token)["sid"]
    return [f"check: both servers answer the same user for GET /v1/users/{{id}} (token of session {sid})"]


TARGETS = ("GET /health", "GET /v1/users/{id}")  # the scenarios `--targets` limits a run to


def benchmark(database_url: str, workdir: Path, targets_only: bool = False) -> None:
    """Runs every scenario on both servers (or only TARGETS), prints the table and writes bench/RESULTS.md."""
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with servers(database_url, workdir) as (tenantry, flask):
        assert flask is not None
        started = time.monotonic()
        seeded = seed(tenantry.base_url)
        print(f"bench: seeded {SEED_USERS} users in {time.monotonic() - started:.1f} s", flush=True)
        notes = check_baseline(tenantry, flask, seeded)
        auth = {"Authorization": f"Bearer {seeded.token}"}
        user_path = f"/v1/users/{seeded.user_id}"
        scenarios: list[tuple[str, Server, str, dict[str, Any]]] = [
            ("GET /health", tenantry, "/health", {}),
            ("GET /health", flask, "/health", {}),
            ("GET /v1/users/{id}", tenantry, user_path, {"headers": auth}),
            ("GET /v1/users/{id}", flask, user_path, {"headers": auth}),
            ("GET /v1/users?limit=20", tenantry, "/v1/users?limit=20", {"headers": auth}),
            (
                "POST /v1/users",
                tenantry,
                "/v1/users",
                {"script": "post_user.lua", "env": {"BENCH_TOKEN": seeded.token}},
            ),
            (
                "POST /v1/auth/login",
                tenantry,
                "/v1/auth/login",
                {"script": "login.lua", "env": {"BENCH_LOGIN_BODY": seeded.login_body}},
            ),
        ]
        results = [
            measure(name, server, path, **wrk_args)
            for name, server, path, wrk_args in scenarios
            if not targets_only or name in TARGETS
        ]
    table = render(results)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    notes.append(
        f"load average (1, 5, 15 min) before {' '.join(load_before)}, after {' '.join(load_after)} "
        "(above the 2 cores means other work shared the machine)"
    )
    print("\n" + table)
    print(f"bench: wrote {write_results(table, notes).relative_to(REPO)}")


def _worker_pids(parent: int) -> list[int]:
    """Returns the pids of the uvicorn worker processes under `parent` (not multiprocessing helpers)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"resource_tracker" not in cmdline:
            pids.append(int(proc.name))
    return sorted(pids)


def profile(database_url: str, workdir: Path) -> None:
    """Records one Tenantry worker with py-spy for 10 s under GET /v1/users/{id}; writes to bench/out/."""
    py_spy = shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    with servers(database_url, workdir, baseline=False) as (tenantry, _):
        seeded = seed(tenantry.base_url)
        workers = _worker_pids(tenantry.proc.pid)
        if not workers:
            raise RuntimeError("found no uvicorn worker process to profile")
        target = OUT / f"tenantry-get-user-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.speedscope.json"
        url = tenantry.base_url + f"/v1/users/{seeded.user_id}"
        wrk(url, WARMUP_S, headers={"Authorization": f"Bearer {seeded.token}"})
        argv = [
            "wrk",
            f"-t{THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{DURATION_S + 4}s",
            "-H",
            f"Authorization: Bearer {seeded.token}",
            url,
        ]
        load = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        try:
            time.sleep(1)
            subprocess.run(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(workers[0]),
                    "--duration",
                    str(DURATION_S),
                    "--rate",
                    "200",
                    "--format",
                    "speedscope",
                    "--output",
                    str(target),
                    "--nonblocking",
                ],
                check=True,
                timeout=DURATION_S + 30,
            )
        finally:
            load.wait(timeout=DURATION_S + 30)
    print(f"bench: wrote {target.relative_to(REPO)} (open it at https://www.speedscope.app)\n")
    print(summarize_profile(target))


def summarize_profile(path: Path, top: int = 15) -> str:
    """Returns the `top` functions by own (self) time and by inclusive time in a speedscope file, as text."""
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    own: Counter[int] = Counter()
    inclusive: Counter[int] = Counter()
    for thread in doc["profiles"]:
        for stack, weight in zip(thread["samples"], thread["weights"], strict=True):
            if stack:
                own[stack[-1]] += weight
                inclusive.update(dict.fromkeys(set(stack), weight))
    total = sum(own.values()) or 1.0

    def lines(counter: Counter[int]) -> list[str]:
        return [
            f"  {100 * weight / total:5.1f}%  {frames[i]['name']}  "
            f"{frames[i].get('file', '').split('site-packages/')[-1]}:{frames[i].get('line')}"
            for i, weight in counter.most_common(top)
        ]

    return "\n".join(
        [
            f"self time (top {top}; idle pool threads show as Condition.wait):",
            *lines(own),
            f"inclusive time (top {top}):",
            *lines(inclusive),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark (or the profile); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", action="store_true", help="py-spy one Tenantry worker instead of benchmarking")
    parser.add_argument(
        "--targets",
        action="store_true",
        help=f"measure only the target scenarios ({', '.join(TARGETS)}) on both servers",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk is not installed (bench/run installs it)", file=sys.stderr)
        return 2
    started = time.monotonic()
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tenantry-bench-") as tmp, fresh_database() as database_url:
        try:
            if args.profile:
                profile(database_url, Path(tmp))
            else:
                benchmark(database_url, Path(tmp), targets_only=args.targets)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", None)
            print(
                f"error: {exc}" + (f"\n{detail.decode(errors='replace')}" if isinstance(detail, bytes) else ""),
                file=sys.stderr,
            )
            return 1
    print(f"bench: done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
