"""A new user's first hour (issue 13 item 6): `tenantry serve --demo` delivers webhooks to a receiver on this
machine with its own worker, which ends with the server; a busy port fails before any credential is printed;
URL_NOT_ALLOWED names the setting that admits a range."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import PASSWORD, assert_error, unique_email
from tests.livesrv import ROOT, FreshDatabase, eventually, free_port
from tests.receivers import Receiver


def _demo_env(tmp_path: Path, database: FreshDatabase) -> dict[str, str]:
    # No TENANTRY_OUTBOUND_ALLOWLIST: the demo must admit loopback itself.
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATABASE_URL": database.url,
        "TENANTRY_INSTANCE_PATH": database.tmp.name,
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_demo_delivers_webhooks_to_loopback_and_its_worker_ends_with_it(tmp_path: Path):
    database = FreshDatabase("sqlite")
    port = free_port()
    out = tmp_path / "serve.out"
    receiver = Receiver()
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
            env=_demo_env(tmp_path, database),
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    worker_pid = None
    try:
        text = eventually(
            lambda: (lambda t: t if "Webhook worker" in t else None)(out.read_text(errors="replace")), timeout=60
        )
        assert "TENANTRY_OUTBOUND_ALLOWLIST=127.0.0.0/8,::1/128" in text
        worker_pid = int(re.search(r"Webhook worker: started \(pid (\d+)\)", text).group(1))
        password = text.split("password ", 1)[1].split()[0]
        url = f"http://127.0.0.1:{port}"
        eventually(lambda: _ready(url), timeout=60)
        with httpx.Client(base_url=url, timeout=30) as api:
            tokens = api.post("/v1/auth/login", json={"email": "demo@tenantry.example.com", "password": password})
            assert tokens.status_code == 200, tokens.text
            headers = {"Authorization": f"Bearer {tokens.json()['data']['access_token']}"}
            hook = api.post("/v1/webhooks", json={"url": receiver.url, "events": ["user.created"]}, headers=headers)
            assert hook.status_code == 201, hook.text  # loopback admitted for the demo
            body = {"email": unique_email(), "password": PASSWORD, "first_name": "Demo", "last_name": "Hook"}
            user = api.post("/v1/users", json=body, headers=headers)
            assert user.status_code == 201, user.text
        (got,) = receiver.wait_for(1, timeout=30)  # delivered by the worker the demo started
        assert user.json()["data"]["id"] in got.body.decode()
        assert _alive(worker_pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        receiver.close()
    try:
        assert process.returncode == 0, out.read_text(errors="replace")
        eventually(lambda: not _alive(worker_pid), timeout=20)  # no orphan worker
    finally:
        if worker_pid is not None and _alive(worker_pid):
            os.kill(worker_pid, 9)
        database.drop()


def test_a_second_demo_on_a_busy_port_fails_before_printing_credentials(tmp_path: Path):
    database = FreshDatabase("sqlite")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        run = subprocess.run(
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
            env=_demo_env(tmp_path, database),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    try:
        assert run.returncode != 0
        assert f"cannot listen on 127.0.0.1:{port}" in run.stderr, run.stderr
        assert "password" not in run.stdout + run.stderr and "Webhook worker" not in run.stdout
    finally:
        database.drop()


DEMO_ANYWHERE = [sys.executable, "-m", "tenantry.cli", "serve", "--demo", "--host", "0.0.0.0"]


def test_a_demo_listening_beyond_loopback_does_not_open_loopback_to_webhooks(tmp_path: Path):
    # Self-signup is on in the demo: with `--host 0.0.0.0` anyone who can reach the server could make a
    # tenant and point a webhook at this machine's loopback services (SSRF). Loopback is admitted only
    # when the demo itself listens on loopback alone.
    database = FreshDatabase("sqlite")
    port = free_port()
    out = tmp_path / "serve.out"
    receiver = Receiver()
    with out.open("wb") as handle:
        process = subprocess.Popen(
            [*DEMO_ANYWHERE, "--port", str(port), "--workers", "1"],
            env=_demo_env(tmp_path, database),
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        text = eventually(
            lambda: (lambda t: t if "Webhook worker" in t else None)(out.read_text(errors="replace")), timeout=60
        )
        assert "TENANTRY_OUTBOUND_ALLOWLIST=127.0.0.0/8" not in text
        assert "not admitted" in text
        password = text.split("password ", 1)[1].split()[0]
        url = f"http://127.0.0.1:{port}"
        eventually(lambda: _ready(url), timeout=60)
        with httpx.Client(base_url=url, timeout=30) as api:
            tokens = api.post("/v1/auth/login", json={"email": "demo@tenantry.example.com", "password": password})
            assert tokens.status_code == 200, tokens.text
            headers = {"Authorization": f"Bearer {tokens.json()['data']['access_token']}"}
            hook = api.post("/v1/webhooks", json={"url": receiver.url, "events": ["user.created"]}, headers=headers)
            assert_error(hook, 422, "URL_NOT_ALLOWED")
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        receiver.close()
        database.drop()


def test_url_not_allowed_names_the_setting_that_admits_a_range(api, owner):
    refused = api.post(
        "/v1/webhooks", json={"url": "http://10.1.2.3/hooks", "events": ["user.created"]}, headers=owner.headers
    )
    error = assert_error(refused, 422, "URL_NOT_ALLOWED")
    assert "TENANTRY_OUTBOUND_ALLOWLIST" in error["message"]
    assert all("TENANTRY_OUTBOUND_ALLOWLIST" in d["message"] for d in error["details"])
    assert "10.1.2.3" not in str(error)
