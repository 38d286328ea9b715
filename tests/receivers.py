"""Real parts for webhook tests: an HTTP receiver on 127.0.0.1, and `tenantry worker` processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.livesrv import ROOT, LiveServer, eventually

__all__ = ["Received", "Receiver", "Worker", "eventually"]


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """An HTTP server that records every POST and answers from a script of statuses.

    `statuses` is consumed one per request (the last one repeats); `hang` makes the next
    requests wait that many seconds before answering (to be killed mid-delivery).
    """

    statuses: list[int] = field(default_factory=lambda: [200])
    hang: float = 0.0
    received: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                owner.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                )
                owner.arrived.set()
                if owner.hang:
                    time.sleep(owner.hang)
                status = owner.statuses.pop(0) if len(owner.statuses) > 1 else owner.statuses[0]
                payload = b"ok" if status < 300 else b"nope"
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """The receiver's URL."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Waits until `count` requests arrived; returns them (fails the test on timeout)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver got {len(self.received)} of {count} requests in {timeout} s")
            time.sleep(0.05)
        return self.received[:count]

    def close(self) -> None:
        """Stops the receiver."""
        self.server.shutdown()
        self.server.server_close()


class Worker:
    """A `tenantry worker` process on the live server's database."""

    def __init__(self, server: LiveServer, **env: str) -> None:
        self.log_path = Path(server.database.tmp.name) / f"worker-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tenantry.cli", "worker"],
                env={**server.env, **env},
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def log(self) -> str:
        """Returns what the worker has written."""
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """Kills the worker at once (SIGKILL): nothing it had in hand is finished."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Stops the worker the polite way (SIGTERM), or kills it after 15 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
