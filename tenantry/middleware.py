"""The outermost ASGI layer: request ids, security headers, size limits, access log and metrics.

It wraps the whole Connexion stack, so every response (Connexion's own 401/404/405 included)
passes through it exactly once.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, cast

from a2wsgi.wsgi import build_environ
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantry import deadline as deadlines
from tenantry.docs import DocsApp
from tenantry.errors import DeadlineExceeded, error_body
from tenantry.ids import is_valid_request_id, new_request_id
from tenantry.logs import request_id_var
from tenantry.metrics import Metrics
from tenantry.usage import UsageRecorder

log = logging.getLogger("tenantry.access")

#: A body larger than this is refused with 413: before any of it is read when its Content-Length
#: says so, else (a chunked body) as soon as the chunks received pass it.
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_URL_BYTES = 8 * 1024
MAX_HEADER_BYTES = 32 * 1024
MAX_QUERY_PARAMETERS = 50
#: How long a stream with nothing to send waits before asking its producer again.
STREAM_IDLE_S = 0.25

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

_STATIC_HEADERS = [
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class CompressionMiddleware(GZipMiddleware):
    """Starlette's gzip, for clients that send `Accept-Encoding: gzip`, with a compressed answer's ETag made weak.

    Bodies under `minimum_size` are sent as they are; `text/event-stream` (the event stream) and
    already-encoded bodies never are compressed, so a stream is not held back. Every compressible
    answer says `Vary: Accept-Encoding`. A strong ETag names one byte sequence, which the gzip
    copy is not: it becomes weak (`W/"..."`), as nginx does.
    """

    def __init__(self, app: ASGIApp, minimum_size: int = 1024, compresslevel: int = 6) -> None:
        super().__init__(app, minimum_size=minimum_size, compresslevel=compresslevel)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serves one request, compressing its answer when the client accepts gzip."""
        if scope["type"] == "http" and scope.get("method") == "HEAD":
            await self.app(scope, receive, self._as_get_would(scope, send))
            return

        async def weak_etag(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(raw=message.setdefault("headers", []))
                etag = headers.get("etag")
                if etag and "content-encoding" in headers and not etag.startswith("W/"):
                    headers["etag"] = f"W/{etag}"
            await send(message)

        await super().__call__(scope, receive, weak_etag)

    def _as_get_would(self, scope: Scope, send: Send) -> Send:
        """Returns `send` giving a HEAD answer the encoding headers GET's would have.

        HEAD has no body, so Starlette's gzip never sees the 1 KB it compresses from and would leave
        the headers of an identity answer where GET says gzip. Here a HEAD answer GET would compress
        (of a compressible type, not partial, not encoded already, of at least `minimum_size` by its
        Content-Length) says `Vary: Accept-Encoding`, and to a client accepting gzip `Content-Encoding:
        gzip` with a weak ETag and no Content-Length (known only by compressing; RFC 9110 9.3.2).
        """
        accepts_gzip = "gzip" in Headers(scope=scope).get("accept-encoding", "")
        excluded = set(self.exclude_content_types)

        async def head_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(raw=message.setdefault("headers", []))
                media = headers.get("content-type", "").partition(";")[0].strip().lower()
                length = headers.get("content-length", "")
                if (
                    message["status"] != 206
                    and "content-encoding" not in headers
                    and length.isdigit()
                    and int(length) >= self.minimum_size
                    and media
                    and excluded.isdisjoint({media, media.partition("/")[0] + "/*"})
                ):
                    headers.add_vary_header("Accept-Encoding")
                    if accepts_gzip:
                        headers["content-encoding"] = "gzip"
                        del headers["content-length"]
                        etag = headers.get("etag")
                        if etag and not etag.startswith("W/"):
                            headers["etag"] = f"W/{etag}"
            await send(message)

        return head_send


class RequestContextMiddleware:
    """Gives each request an id, answers oversize bodies, and stamps every response.

    The request id (the client's `X-Request-Id` when well-formed, else a new one) is written
    back into the request headers, so every later layer reads one value, and echoed on the
    response. `scope["state"]["tenantry"]` is a dict the Flask layer fills (tenant, user) for
    the access log line.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        docs: DocsApp,
        concrete_paths: dict[str, list[str]] | None = None,
        usage: UsageRecorder | None = None,
    ) -> None:
        self.app = app
        self.usage = usage
        self.docs = docs
        # OpenAPI matches a concrete path before a templated one: `PUT /v1/users/batch` is a 405
        # on /v1/users/batch, not a bad id on /v1/users/{user_id}.
        self.concrete_paths = concrete_paths or {}
        self.metrics = metrics
        self.docs_prefix = docs.prefix
        self.docs_dir = docs.prefix + "/"
        # The headers every response gets after its request id, built once: the CSP differs for /docs.
        self.api_headers = [(b"content-security-policy", API_CSP.encode()), *_STATIC_HEADERS]
        self.docs_headers = [(b"content-security-policy", docs.csp.encode()), *_STATIC_HEADERS]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serves one request through the wrapped app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id, scope = _with_request_id(scope)
        token = request_id_var.set(request_id)
        info: dict[str, Any] = {"arrived": time.monotonic()}  # the deadline counts from here
        scope.setdefault("state", {})["tenantry"] = info
        # Connexion's router records the operationId in scope["extensions"] of a shallow copy of
        # this scope; creating the dict here makes that record visible to us for the metrics.
        scope.setdefault("extensions", {})
        path: str = scope["path"]
        method: str = scope["method"]
        is_docs = path == self.docs_prefix or path.startswith(self.docs_dir)
        stamped = self.docs_headers if is_docs else self.api_headers
        id_header = (b"x-request-id", request_id.encode())
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = []
                names = set()
                for header in message.get("headers", ()):
                    name = header[0].lower()
                    if name != b"x-request-id":
                        headers.append(header)
                        names.add(name)
                headers.append(id_header)
                headers.extend(h for h in stamped if h[0] not in names)
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                if status == 413 and b"connection" not in names:
                    headers.append((b"connection", b"close"))  # the rest of the body is unread
                message = {**message, "headers": headers}
            await send(message)

        in_flight = self.metrics.in_flight
        in_flight.inc()
        try:
            allowed = self.concrete_paths.get(path)
            oversize = _oversize(scope)
            if oversize is not None:
                await _send_error(send_wrapper, *oversize, request_id=request_id)
            elif _declared_length(scope) > MAX_BODY_BYTES:
                await _send_error(send_wrapper, 413, request_id=request_id)
            elif is_docs:
                info["operation"] = "docs"
                await self.docs(scope, receive, send_wrapper)
            elif allowed and method not in allowed and method != "OPTIONS":
                await _send_error(
                    send_wrapper, 405, request_id=request_id, headers=[(b"allow", ", ".join(allowed).encode())]
                )
            else:
                await self.app(scope, _bounded(receive), send_wrapper)
        finally:
            in_flight.dec()
            elapsed = time.perf_counter() - start
            operation = info.get("operation") or _operation_id(scope) or "unmatched"
            self.metrics.observe(operation, method, status, elapsed)
            tenant_id = info.get("tenant_id")
            if tenant_id is not None and self.usage is not None:
                self.usage.count(tenant_id, info.get("key_id") or info.get("user_id") or "", operation)
            if log.isEnabledFor(logging.INFO):  # the fields are gathered only when the line is written
                log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "path": path,
                        "operation": operation,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "tenant_id": info.get("tenant_id"),
                        "user_id": info.get("user_id"),
                        "key_id": info.get("key_id"),
                    },
                )
            request_id_var.reset(token)


def _with_request_id(scope: Scope) -> tuple[str, Scope]:
    """Returns the request's id and a scope whose headers carry exactly that id."""
    sent = None
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            sent = value.decode("latin-1")
            break
    if is_valid_request_id(sent):
        return sent, scope
    request_id = new_request_id()
    headers = [h for h in scope["headers"] if h[0] != b"x-request-id"]
    headers.append((b"x-request-id", request_id.encode()))
    return request_id, {**scope, "headers": headers}


def _bounded(receive: Receive) -> Receive:
    """Returns `receive` raising a 413 once the body received passes MAX_BODY_BYTES.

    A body with a Content-Length is refused before it is read (above); a chunked one declares no
    size, so it is counted as it arrives, and refused on the chunk that passes the limit, never
    buffered whole. Whoever reads the body first (request validation, the Flask bridge) meets it.
    """
    size = 0

    async def bounded() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > MAX_BODY_BYTES:
                raise HTTPException(413)
        return message

    return bounded


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _operation_id(scope: Scope) -> str | None:
    routing = scope.get("extensions", {}).get("connexion_routing", {})
    return routing.get("operation_id")


def _oversize(scope: Scope) -> tuple[int, str, str] | None:
    """Returns (status, code, message) when the request line or headers are past the limits, else None.

    Checked before anything reads the body: a URL over 8 KB is 414, headers over 32 KB in all
    431, more than 50 query parameters 400.
    """
    query: bytes = scope.get("query_string", b"")
    if len(scope.get("raw_path") or scope["path"].encode()) + len(query) + 1 > MAX_URL_BYTES:
        return 414, "URI_TOO_LONG", f"The URL is longer than {MAX_URL_BYTES // 1024} KB."
    if sum(len(name) + len(value) + 4 for name, value in scope["headers"]) > MAX_HEADER_BYTES:
        return 431, "REQUEST_HEADERS_TOO_LARGE", f"The request headers exceed {MAX_HEADER_BYTES // 1024} KB."
    if (
        query
        and query.count(b"&") >= MAX_QUERY_PARAMETERS
        and sum(1 for part in query.split(b"&") if part) > MAX_QUERY_PARAMETERS
    ):
        return 400, "VALIDATION_ERROR", f"More than {MAX_QUERY_PARAMETERS} query parameters."
    return None


async def _send_error(
    send: Send,
    status: int,
    code: str | None = None,
    message: str | None = None,
    *,
    request_id: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps(error_body(status, request_id, code, message)).encode()
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        base.append((b"connection", b"close"))  # the unread body cannot be skipped safely
    await send({"type": "http.response.start", "status": status, "headers": base + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class FlaskBridge:
    """Runs the Flask (WSGI) app for an ASGI request with one hand-off to a thread and one back.

    Connexion's FlaskApp reaches Flask through a2wsgi, which hands every response message
    (the start, each body chunk, the end) back to the event loop separately, with the pool
    thread blocked until the loop has taken it: four or more thread hand-offs a request, each
    a wake-up of a sleeping thread. Tenantry's responses are small and never streamed, so here
    the request body is read on the loop (at most MAX_BODY_BYTES), the whole WSGI call runs in
    a pool thread (with the request's context variables), and the loop sends the buffered
    response. Lifespan and websocket scopes still go to a2wsgi (`fallback`).
    """

    def __init__(
        self,
        app: Any,
        fallback: ASGIApp,
        threads: int = 8,
        time_limits: dict[str, float] | None = None,
        default_limit: float | None = None,
    ) -> None:
        self.app = app  # the WSGI app; Connexion's add_wsgi_middleware wraps this attribute
        self.fallback = fallback
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="WSGI")
        # Seconds each operation (by operationId) may take; others get `default_limit` (None: no limit).
        self.time_limits = time_limits or {}
        self.default_limit = default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serves one request through the WSGI app, answering 504 when it outlasts its operation's limit."""
        if scope["type"] != "http":
            await self.fallback(scope, receive, send)
            return
        body = await _read_body(receive)
        # a2wsgi types `scope` as its own HTTPScope and the environ as a closed TypedDict, without the
        # `wsgi.input_terminated` extension set below: to Flask it is a plain WSGI environ.
        environ = cast(dict[str, Any], build_environ(scope, io.BytesIO(body)))  # type: ignore[arg-type]  # (above)
        # The body is read whole: Flask gets its length and reads it to the end, chunked or not
        # (without a Content-Length, Werkzeug would read a chunked body as empty).
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input_terminated"] = True
        context = contextvars.copy_context()
        deadline = self._deadline(scope)
        if deadline is not None and deadline.remaining() <= 0:  # the body alone took the whole time
            deadline.expire()
            await _send_timeout(send, scope)
            return
        context.run(deadlines.install, deadline)
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self.executor, partial(context.run, _call_in_time, self.app, environ, deadline))
        if deadline is None:
            result = await work
        else:
            try:
                result = await asyncio.wait_for(asyncio.shield(work), timeout=max(0.0, deadline.remaining()))
            except TimeoutError:
                if deadline.expire():
                    # The thread goes on (it cannot be stopped) but will not commit; its answer is dropped.
                    work.add_done_callback(_drop_result)
                    await _send_timeout(send, scope)
                    return
                result = await work  # it claimed its commit in time: its answer is the truth
        if result is None:  # it waited for a thread past its deadline and did not run
            await _send_timeout(send, scope)
            return
        status, headers, chunks, exc_info, stream = result
        if stream is not None:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await self._stream(stream, context, receive, send)
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"".join(chunks)})
        if exc_info is not None:
            raise exc_info[1].with_traceback(exc_info[2])

    def _deadline(self, scope: Scope) -> deadlines.Deadline | None:
        """Returns the request's deadline: its operation's limit, from when the request arrived."""
        routing = scope.get("extensions", {}).get("connexion_routing", {})
        seconds = self.time_limits.get(routing.get("operation_id"), self.default_limit)
        if seconds is None:
            return None
        arrived = scope.get("state", {}).get("tenantry", {}).get("arrived")
        return deadlines.Deadline(seconds, start=arrived)

    async def _stream(self, stream: Any, context: contextvars.Context, receive: Receive, send: Send) -> None:
        """Sends a streamed (text/event-stream) response chunk by chunk until it ends or the client leaves.

        Each chunk is produced in a pool thread (it may query the database) and the thread is
        free between chunks: an empty chunk means "nothing yet", and the loop waits
        STREAM_IDLE_S (or for the client to disconnect) before asking again. So an open stream
        holds no thread between chunks (each ask is a short task in the pool).
        """
        loop = asyncio.get_running_loop()
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.create_task(watch())
        try:
            while not gone.is_set():
                chunk = await loop.run_in_executor(self.executor, partial(context.run, next, stream, None))
                if chunk is None:
                    break
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    continue
                try:
                    await asyncio.wait_for(gone.wait(), timeout=STREAM_IDLE_S)
                except TimeoutError:
                    pass
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b""})
        except OSError:
            pass  # the client went away while a chunk was being sent
        finally:
            watcher.cancel()
            close = getattr(stream, "close", None)
            if close is not None:
                await loop.run_in_executor(self.executor, context.run, close)


def _call_in_time(app: Any, environ: dict[str, Any], deadline: deadlines.Deadline | None) -> _WsgiResult | None:
    """Runs the WSGI app (`_call_wsgi`); returns None without running it when the request waited in
    the pool's queue past its deadline (an overloaded server should not do work already answered 504)."""
    if deadline is not None and deadline.expired:
        deadline.expire()
        return None
    return _call_wsgi(app, environ)


def _drop_result(future: asyncio.Future[Any]) -> None:
    """Retrieves the result of a request answered 504 (so an error in it is not reported as unretrieved)."""
    if not future.cancelled() and future.exception() is not None:
        log.debug("a request answered 504 ended with an error", exc_info=future.exception())


async def _send_timeout(send: Send, scope: Scope) -> None:
    """Answers 504 GATEWAY_TIMEOUT in the error envelope, with the request's id."""
    request_id = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"x-request-id"), "")
    await _send_error(send, 504, DeadlineExceeded.code, DeadlineExceeded.default_message, request_id=request_id)


async def _read_body(receive: Receive) -> bytes:
    """Returns the whole request body; raises a 413 past MAX_BODY_BYTES (a body sent without a length)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise HTTPException(413)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


#: What `_call_wsgi` returns: status, headers, body chunks, the exc_info the app reported, and a stream.
_WsgiResult = tuple[int, list[tuple[bytes, bytes]], list[bytes], Any, Any]


def _call_wsgi(app: Any, environ: dict[str, Any]) -> _WsgiResult:
    """Runs the WSGI app; returns (status, headers, body chunks, exc_info it reported, stream).

    A `text/event-stream` response is not read here: its iterator is returned as `stream` (and
    the chunks are empty) for FlaskBridge._stream to send as it comes.
    """
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers, exc_info]
        return chunks.append

    chunks: list[bytes] = []
    iterable = app(environ, start_response)
    stream = None
    if started and any(
        name.lower() == "content-type" and value.startswith("text/event-stream") for name, value in started[1]
    ):
        stream = iter(iterable)
    else:
        try:
            chunks.extend(iterable)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
    status, headers, exc_info = started
    encoded = [(name.strip().encode("latin1").lower(), value.strip().encode("latin1")) for name, value in headers]
    return int(status.split(" ", 1)[0]), encoded, chunks, exc_info, stream
