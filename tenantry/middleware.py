"""The outermost ASGI layer: request ids, security headers, size limits, access log and metrics.

It wraps the whole Connexion stack, so every response (Connexion's own 401/404/405 included)
passes through it exactly once.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantry.docs import DocsApp
from tenantry.errors import error_body
from tenantry.ids import is_valid_request_id, new_request_id
from tenantry.logs import request_id_var
from tenantry.metrics import Metrics

log = logging.getLogger("tenantry.access")

#: A body larger than this is refused with 413 before any of it is read.
MAX_BODY_BYTES = 10 * 1024 * 1024

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

_STATIC_HEADERS = [
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class RequestContextMiddleware:
    """Gives each request an id, answers oversize bodies, and stamps every response.

    The request id (the client's `X-Request-Id` when well-formed, else a new one) is written
    back into the request headers, so every later layer reads one value, and echoed on the
    response. `scope["state"]["tenantry"]` is a dict the Flask layer fills (tenant, user) for
    the access log line.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, docs: DocsApp,
                 concrete_paths: dict[str, list[str]] | None = None) -> None:
        self.app = app
        self.docs = docs
        # OpenAPI matches a concrete path before a templated one: `PUT /v1/users/batch` is a 405
        # on /v1/users/batch, not a bad id on /v1/users/{user_id}.
        self.concrete_paths = concrete_paths or {}
        self.metrics = metrics
        self.docs_prefix = docs.prefix
        self.docs_csp = docs.csp.encode()
        self.api_csp = API_CSP.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serves one request through the wrapped app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id, scope = _with_request_id(scope)
        token = request_id_var.set(request_id)
        info: dict[str, Any] = {}
        scope.setdefault("state", {})["tenantry"] = info
        # Connexion's router records the operationId in scope["extensions"] of a shallow copy of
        # this scope; creating the dict here makes that record visible to us for the metrics.
        scope.setdefault("extensions", {})
        path: str = scope["path"]
        is_docs = path == self.docs_prefix or path.startswith(self.docs_prefix + "/")
        csp = self.docs_csp if is_docs else self.api_csp
        status_holder = [500]
        extra = [(b"x-request-id", request_id.encode()), (b"content-security-policy", csp), *_STATIC_HEADERS]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                names = {name.lower() for name, _ in message.get("headers", [])}
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                headers.extend(h for h in extra if h[0] not in names or h[0] == b"x-request-id")
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        self.metrics.in_flight.inc()
        try:
            allowed = self.concrete_paths.get(path)
            if _declared_length(scope) > MAX_BODY_BYTES:
                await _send_error(send_wrapper, 413, request_id)
            elif is_docs:
                info["operation"] = "docs"
                await self.docs(scope, receive, send_wrapper)
            elif allowed and scope["method"] not in allowed and scope["method"] != "OPTIONS":
                await _send_error(send_wrapper, 405, request_id, [(b"allow", ", ".join(allowed).encode())])
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - start
            operation = info.get("operation") or _operation_id(scope) or "unmatched"
            status = status_holder[0]
            self.metrics.observe(operation, scope["method"], status, elapsed)
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
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
        return sent, scope  # type: ignore[return-value]
    request_id = new_request_id()
    headers = [h for h in scope["headers"] if h[0] != b"x-request-id"]
    headers.append((b"x-request-id", request_id.encode()))
    return request_id, {**scope, "headers": headers}


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


async def _send_error(send: Send, status: int, request_id: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(error_body(status, request_id)).encode()
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        base.append((b"connection", b"close"))  # the unread body cannot be skipped safely
    await send({"type": "http.response.start", "status": status, "headers": base + (headers or [])})
    await send({"type": "http.response.body", "body": body})
