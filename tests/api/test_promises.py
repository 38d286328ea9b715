"""README promises no other test exercised end to end: each against real processes.

The BYPASSRLS start-up warning, an event stream ending when its token expires, events becoming
visible in order under concurrent writers, `tenantry worker --once`, and `tenantry serve --demo`.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jwt
import pytest

from tests.conftest import PASSWORD, register, unique_email
from tests.livesrv import ROOT, FreshDatabase, backend, eventually, free_port, start_server
from tests.receivers import Receiver

ROW_SECURITY_WARNING = "the database role bypasses row-level security"


@pytest.mark.skipif(backend() != "postgres", reason="row-level security and database roles are PostgreSQL's")
def test_a_role_that_bypasses_row_security_is_warned_about_at_start_up(server):
    # The suite's server acts as tenantry_app (TENANTRY_DB_ROLE), which row-level security binds.
    assert ROW_SECURITY_WARNING not in server.log()
    # Without the role it acts as the login role of the test URL: postgres, a superuser.
    unbound = start_server(TENANTRY_DB_ROLE="")
    try:
        line = eventually(
            lambda: next((line for line in unbound.log().splitlines() if ROW_SECURITY_WARNING in line), None)
        )
        assert json.loads(line)["level"] == "warning" and "TENANTRY_DB_ROLE=tenantry_app" in line
    finally:
        unbound.stop()


def test_an_event_stream_ends_when_its_access_token_expires(server, api):
    # The session's server (its stream maximum, TENANTRY_SSE_MAX_SECONDS, is 15 minutes: if expiry
    # did not end the stream, the bound below would catch it), and a token of a real session that
    # expires in 4 s: the server's own token with its expiry moved, signed with the server's key,
    # which is what a server with a 4 s TENANTRY_ACCESS_TOKEN_TTL would have issued.
    owner = register(api)
    claims = jwt.decode(owner.token, options={"verify_signature": False})
    expires = int(time.time()) + 4
    token = jwt.encode({**claims, "exp": expires}, server.env["TENANTRY_SECRET_KEY"], algorithm="HS256")
    lines = []
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(30, read=30)) as client:
        with client.stream("GET", "/v1/events/stream", headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status_code == 200, response.read()
            lines.extend(response.iter_lines())  # until the server ends the stream
    ended = time.time()
    assert expires - 1 <= ended <= expires + 5, (ended - expires, lines[-3:])
    assert ": heartbeat" in lines  # it was open, and quiet, until then


def test_events_become_visible_in_order_under_concurrent_writers(server, api):
    """Eight writers at once: no reader ever sees a later event before an earlier one."""
    from tests.api.test_events import SseClient

    owner = register(api, "Concurrent")
    stream = SseClient(server, owner.headers)
    snapshots: list[list[str]] = []
    refused: list[str] = []
    writing = threading.Event()
    writing.set()

    def read() -> None:
        with server.client() as reader:
            while writing.is_set():
                page = reader.get("/v1/events", params={"limit": 100}, headers=owner.headers)
                if page.status_code != 200:
                    refused.append(page.text)
                    return
                snapshots.append([e["id"] for e in reversed(page.json()["data"])])  # oldest first

    def write(_: int) -> str:
        with server.client() as writer:
            body = {"email": unique_email(), "password": PASSWORD, "first_name": "Con", "last_name": "Current"}
            response = writer.post("/v1/users", json=body, headers=owner.headers)
            assert response.status_code == 201, response.text
            return response.json()["data"]["id"]

    try:
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        with ThreadPoolExecutor(max_workers=8) as pool:
            users = set(pool.map(write, range(40)))
        writing.clear()
        reader.join(30)
        final = [
            e["id"]
            for e in reversed(api.get("/v1/events", params={"limit": 100}, headers=owner.headers).json()["data"])
        ]
        assert refused == [] and not reader.is_alive()
        assert len(final) == 41 and len(set(final)) == 41  # tenant.created, then one per user
        # Every snapshot a reader took while the writers ran is a prefix of the final order: an
        # event was never visible before one that precedes it.
        assert len(snapshots) > 1
        for seen in snapshots:
            assert seen == final[: len(seen)], (seen, final)
        # The stream, which reads "after the last sequence it sent", got every event once, in order.
        streamed = [stream.next(timeout=15) for _ in range(40)]
        assert [m["id"] for m in streamed] == final[1:]
        assert {json.loads(m["data"])["data"]["object"]["id"] for m in streamed} == users
    finally:
        writing.clear()
        stream.close()


def test_worker_once_delivers_what_is_due_and_exits_0():
    # A server of its own: the session's holds other tests' deliveries, which --once would send too.
    live = start_server()
    receiver = Receiver()
    worker = [sys.executable, "-m", "tenantry.cli", "worker", "--once"]
    try:
        with live.client() as api:
            owner = register(api)
            hook = api.post(
                "/v1/webhooks", json={"url": receiver.url, "events": ["user.created"]}, headers=owner.headers
            )
            assert hook.status_code == 201, hook.text
            body = {"email": unique_email(), "password": PASSWORD, "first_name": "Once", "last_name": "Only"}
            user = api.post("/v1/users", json=body, headers=owner.headers).json()["data"]
            run = subprocess.run(worker, env=live.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, run.stdout + run.stderr
            assert "attempted 1 deliveries" in run.stdout, run.stdout + run.stderr
            (got,) = receiver.received  # sent before the command returned, and nothing else
            assert json.loads(got.body)["data"]["object"]["id"] == user["id"]
            webhook_id = hook.json()["data"]["webhook"]["id"]
            listed = api.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=owner.headers).json()["data"]
            assert [d["status"] for d in listed] == ["succeeded"]
            again = subprocess.run(worker, env=live.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert again.returncode == 0 and "attempted 0 deliveries" in again.stdout, again.stdout + again.stderr
            assert len(receiver.received) == 1
    finally:
        receiver.close()
        live.stop()


def test_serve_demo_prints_a_login_and_a_curl_command_that_work(tmp_path: Path):
    """`./scripts/serve --demo` runs `tenantry serve --demo` on the embedded default (SQLite)."""
    database = FreshDatabase("sqlite")
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATABASE_URL": database.url,
        "TENANTRY_INSTANCE_PATH": database.tmp.name,
    }
    out = tmp_path / "serve.out"
    with out.open("wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tenantry.cli",
                "serve",
                "--demo",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env=env,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        text = eventually(lambda: (lambda t: t if "Docs:" in t else None)(out.read_text(errors="replace")), timeout=60)
        curl = next(line.strip() for line in text.splitlines() if line.strip().startswith("curl "))
        password = text.split("password ", 1)[1].split()[0]
        url = f"http://127.0.0.1:{port}"
        eventually(lambda: _ready(url), timeout=60)
        # The printed command, run as printed.
        printed = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=30)
        assert printed.returncode == 0, printed.stderr
        token = json.loads(printed.stdout)["data"]["access_token"]
        me = httpx.get(f"{url}/v1/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert me.status_code == 200 and me.json()["data"]["email"] == "demo@tenantry.example.com"
        # The printed login, used by hand.
        login = httpx.post(
            f"{url}/v1/auth/login", json={"email": "demo@tenantry.example.com", "password": password}, timeout=30
        )
        assert login.status_code == 200, login.text
        assert httpx.get(f"{url}/docs/", timeout=10).status_code == 200
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        database.drop()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
