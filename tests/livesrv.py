"""A real Tenantry server in a subprocess, on a fresh database, for tests and the contract run."""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get("TENANTRY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
OPERATOR_EMAIL = "operator@tenantry.example.com"
REDIS_URL = os.environ.get("TENANTRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def backend() -> str:
    """Returns the database the tests run on: `sqlite` (default) or `postgres`."""
    return os.environ.get("TENANTRY_TEST_DB", "sqlite")


def postgres_required() -> bool:
    """True when a missing PostgreSQL must fail the run instead of skipping it (CI)."""
    return os.environ.get("CI", "").lower() in {"1", "true"} or bool(os.environ.get("TENANTRY_REQUIRE_POSTGRES"))


def postgres_reachable() -> bool:
    """True when the PostgreSQL server for tests accepts connections."""
    import psycopg2

    try:
        psycopg2.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
    except psycopg2.Error:
        return False
    return True


def eventually(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Returns `check()`'s first truthy result, retrying until `timeout` (then fails the test).

    For whatever the server does after it has answered (the access log line, the metrics, the
    usage counts written every second, a worker's output): reading it at once races the server
    and fails under load, so tests wait for the condition, bounded, instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {result!r})")
        time.sleep(interval)


def free_port() -> int:
    """Returns a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FreshDatabase:
    """A database of its own for one server: a temp SQLite file, or a new PostgreSQL database.

    With `template` (a migrated database, see `_template`), the new one starts as a copy of it:
    PostgreSQL's `CREATE DATABASE ... TEMPLATE` and SQLite's backup API copy a migrated schema in
    milliseconds, where running every migration again took a CLI process of seconds.
    """

    def __init__(self, kind: str, template: FreshDatabase | None = None) -> None:
        self.kind = kind
        self.tmp = tempfile.TemporaryDirectory(prefix="tenantry-test-")
        self.name = f"tenantry_test_{uuid.uuid4().hex[:12]}"
        if kind == "postgres":
            if template is None:
                self._admin(f'CREATE DATABASE "{self.name}"')
            else:
                self._copy_postgres(template.name)
            base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
            self.url = f"{base}/{self.name}"
        else:
            self.url = f"sqlite:///{self.tmp.name}/tenantry.db"
            if template is not None:
                import sqlite3

                source = sqlite3.connect(template.url.removeprefix("sqlite:///"))
                target = sqlite3.connect(self.url.removeprefix("sqlite:///"))
                try:
                    source.backup(target)  # a consistent copy, whatever the journal mode
                finally:
                    target.close()
                    source.close()

    def _copy_postgres(self, template: str) -> None:
        import psycopg2

        # The CLI process that migrated the template has exited, but PostgreSQL may not have
        # ended its backend yet, and a template must have no other session: wait for that, bounded.
        deadline = time.monotonic() + 30
        while True:
            try:
                self._admin(f'CREATE DATABASE "{self.name}" TEMPLATE "{template}"')
                return
            except psycopg2.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _admin(self, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(POSTGRES_ADMIN_URL, connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def drop(self) -> None:
        """Removes the database."""
        if self.kind == "postgres":
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.tmp.cleanup()


#: Per database kind, a migrated database with the platform operator and that operator's password:
#: made once per test process, copied for each server (`start_server`), dropped when the process ends.
_templates: dict[str, tuple[FreshDatabase, str]] = {}
_templates_lock = threading.Lock()


def _cli_setup(env: dict[str, str], password: str) -> None:
    """Migrates the database `env` names and creates the platform operator with `password`."""
    cli = [sys.executable, "-m", "tenantry.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True, cwd=ROOT)
    # `--password=...`: a generated password may start with "-", which argparse would
    # otherwise read as an option.
    subprocess.run(
        [*cli, "admin", "create", f"--email={OPERATOR_EMAIL}", f"--password={password}"],
        env=env,
        check=True,
        capture_output=True,
        cwd=ROOT,
    )


def _template(kind: str) -> tuple[FreshDatabase, str]:
    """Returns the migrated template database of this kind and its operator's password, made on first use.

    Migrations and the operator do not depend on a server's settings (the CLI's `db upgrade` and
    `admin create` read only DATABASE_URL), so every server's database can start as this copy.
    """
    with _templates_lock:
        if kind not in _templates:
            database = FreshDatabase(kind)
            password = secrets.token_urlsafe(16)
            env = {
                **os.environ,
                "DATABASE_URL": database.url,
                "TENANTRY_INSTANCE_PATH": database.tmp.name,
                "TENANTRY_SECRET_KEY": secrets.token_urlsafe(48),
                "TENANTRY_ENV": "test",
            }
            try:
                _cli_setup(env, password)
            except subprocess.CalledProcessError:
                database.drop()
                raise
            _templates[kind] = (database, password)
            atexit.register(database.drop)
        return _templates[kind]


@dataclass
class LiveServer:
    """A running `tenantry serve` and what tests need to reach it."""

    url: str
    env: dict[str, str]
    process: subprocess.Popen
    database: FreshDatabase
    operator_password: str
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    def client(self, **kwargs: object) -> httpx.Client:
        """Returns an HTTP client for the server."""
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        """Stops the server and drops its database."""
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.database.drop()

    def log(self) -> str:
        """Returns what the server has written to its log."""
        return self.log_path.read_text(errors="replace")


def start_server(
    kind: str | None = None, workers: int = 1, url_transform: Callable[[str], str] | None = None, **env_overrides: str
) -> LiveServer:
    """Starts a server on a fresh database (migrated, with the platform operator) and waits until it is ready.

    `url_transform` rewrites the database URL the server uses (to route it through a proxy).
    """
    kind = kind or backend()
    template, password = _template(kind)
    database = FreshDatabase(kind, template)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url_transform(database.url) if url_transform else database.url,
        "TENANTRY_INSTANCE_PATH": database.tmp.name,
        "TENANTRY_SECRET_KEY": secrets.token_urlsafe(48),
        "TENANTRY_ENV": "test",
        "TENANTRY_VALIDATE_RESPONSES": "true",
        "TENANTRY_LOG_LEVEL": "INFO",
        # The suite makes thousands of requests from one address and a few accounts: the limits
        # are raised here, and tests/api/test_limits.py starts servers with the real defaults.
        "TENANTRY_DEFAULT_PLAN": "enterprise",
        "TENANTRY_RATE_LIMIT_IP": "1000000/minute",
        "TENANTRY_RATE_LIMIT_AUTH_IP": "1000000/minute",
        "TENANTRY_RATE_LIMIT_AUTH_ACCOUNT": "10000/minute",
        # Webhook receivers and integration providers in the tests listen on 127.0.0.1, which
        # the SSRF guard refuses unless the operator allows it; retries and heartbeats are
        # compressed from hours to seconds.
        "TENANTRY_OUTBOUND_ALLOWLIST": "127.0.0.0/8",
        "TENANTRY_WEBHOOK_RETRY_SCHEDULE": "1,1,1",
        "TENANTRY_WEBHOOK_TIMEOUT": "2",
        "TENANTRY_WEBHOOK_LEASE": "4",
        "TENANTRY_SSE_HEARTBEAT": "1",
        # On PostgreSQL the counters are in Redis, as in production, under a prefix of this server's own.
        # and the server acts as the role that row-level security binds, as in production.
        **(
            {
                "REDIS_URL": REDIS_URL,
                "TENANTRY_RATE_LIMIT_PREFIX": f"test-{uuid.uuid4().hex[:12]}",
                "TENANTRY_DB_ROLE": "tenantry_app",
            }
            if kind == "postgres"
            else {}
        ),
        **env_overrides,
    }
    cli = [sys.executable, "-m", "tenantry.cli"]
    log_path = Path(database.tmp.name) / "server.log"
    with log_path.open("wb") as handle:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [*cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    server = LiveServer(url, env, process, database, password, log_path)
    # Generous: on a loaded two-core machine (CI, parallel runs) a start has taken over a minute.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log()}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    log = server.log()  # before stop(), which removes the log with the database's directory
    server.stop()
    raise RuntimeError(f"server did not become ready within 120 s:\n{log}")


class LatencyProxy:
    """A TCP proxy on 127.0.0.1 that delays every chunk it forwards: a slow network to a real database."""

    def __init__(self, target_port: int, delay: float, port: int | None = None) -> None:
        import asyncio

        self.delay = delay
        self.target_port = target_port
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    await asyncio.sleep(self.delay)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(client_reader, client_writer):
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

        async def serve():
            self.server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            ready.set()
            await self.server.serve_forever()

        def run() -> None:
            try:
                self.loop.run_until_complete(serve())
            except asyncio.CancelledError:
                pass  # close() ended serve_forever
            finally:
                self.loop.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(5)

    def close(self) -> None:
        """Stops the proxy and waits for its thread."""
        self.loop.call_soon_threadsafe(self.server.close)
        self.thread.join(5)


class HungRedis:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers: a hung Redis."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        """Stops listening (waking the accepting thread) and drops the connections it accepted."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)
        for conn in self.accepted:
            conn.close()
