"""A TCP proxy between a test server and PostgreSQL that a test can cut, as a database restart would.

The shared PostgreSQL server is never restarted (other suites use it at the same time): cutting
every proxied connection is what the server's connections see of a restart, and refusing new
ones is what they see of an outage. `tests.livesrv.LatencyProxy` slows a connection down; this
one breaks it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from tests.livesrv import free_port


class FaultProxy:
    """Forwards 127.0.0.1:`port` to PostgreSQL on 127.0.0.1:`target_port` until told to fail.

    - `cut()` closes every connection it carries (the server's side sees them die, PostgreSQL's
      backends end), while new ones are still forwarded: a restart that is over.
    - `down()` also refuses new connections until `up()`: an outage.
    - `cut_when_sent(marker)` cuts and goes down the moment a client sends a chunk holding
      `marker` (which is not forwarded): the database gone in the middle of a chosen request.
    """

    def __init__(self, target_port: int = 5432) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cuts = 0  # how many times connections were cut
        self._refusing = False
        self._marker: bytes | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if from_client and self._marker is not None and self._marker in data:
                        self._marker = None
                        self._refusing = True
                        self._cut_all()
                        return
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            if self._refusing:
                client_writer.close()
                return
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                client_writer.close()
                return
            pair = {client_writer, upstream_writer}
            self._writers |= pair
            try:
                await asyncio.gather(
                    pipe(client_reader, upstream_writer, True), pipe(upstream_reader, client_writer, False)
                )
            finally:
                self._writers -= pair

        async def serve() -> None:
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
        if not ready.wait(5):
            raise RuntimeError("the fault proxy did not start")

    def url_for(self, url: str) -> str:
        """Returns the database URL `url` routed through this proxy."""
        return url.replace(f":{self.target_port}/", f":{self.port}/")

    @property
    def connections(self) -> int:
        """How many connections the proxy carries now."""
        return self._call(lambda: len(self._writers) // 2)

    def _cut_all(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            if transport is not None:
                transport.abort()  # no goodbye, as a restart's backends give none the client waits for
        self._writers.clear()
        self.cuts += 1

    def _call(self, func: Callable[[], object]) -> object:
        done: asyncio.Future = asyncio.run_coroutine_threadsafe(self._run(func), self.loop)
        return done.result(5)

    @staticmethod
    async def _run(func: Callable[[], object]) -> object:
        return func()

    def cut(self) -> None:
        """Closes every connection the proxy carries now; new ones are forwarded."""
        self._call(self._cut_all)

    def down(self) -> None:
        """Cuts every connection and refuses new ones until `up()`."""

        def go_down() -> None:
            self._refusing = True
            self._cut_all()

        self._call(go_down)

    def up(self) -> None:
        """Forwards new connections again."""

        def go_up() -> None:
            self._refusing = False

        self._call(go_up)

    def cut_when_sent(self, marker: bytes) -> None:
        """Cuts every connection and goes down when a client next sends `marker`."""

        def arm() -> None:
            self._marker = marker

        self._call(arm)

    def close(self) -> None:
        """Stops the proxy (cutting what it still carries) and waits for its thread."""
        self.down()
        self.loop.call_soon_threadsafe(self.server.close)
        self.thread.join(5)
