"""Events: the tenant's record of every change, as a list and as a Server-Sent Events stream."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, g, request

from models.base import current_livemode
from models.event import Event, matches
from tenantry import context
from tenantry.authz import acting_tenant, credential_checker, target
from tenantry.db import scope_rows_to
from tenantry.envelope import cursor_page, one
from tenantry.paging import query_moment
from tenantry.settings import StreamSettings

#: How often an open stream checks that its credential is still good.
RECHECK_S = 5.0


def list_events(
    type: list[str] | None = None,
    created_from: str | None = None,
    created_to: str | None = None,
    limit: int = 20,
    starting_after: str | None = None,
) -> dict[str, Any]:
    """The tenant's events of the caller's mode, newest first, a cursor page at a time."""
    events, has_more = Event.page(
        acting_tenant(),
        current_livemode(),
        limit,
        starting_after,
        type or None,
        query_moment(created_from, "created_from"),
        query_moment(created_to, "created_to"),
    )
    return cursor_page([e.as_dict() for e in events], limit, has_more)


def get_event(event_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One event of the tenant, in the caller's mode."""
    return one(target().as_dict())


def stream_events(type: list[str] | None = None) -> Response:
    """The tenant's events as Server-Sent Events, from the next one or after `Last-Event-ID`."""
    tenant_id, livemode = acting_tenant(), current_livemode()
    last_id = request.headers.get("Last-Event-ID")
    after = Event.sequence_of(tenant_id, livemode, last_id) if last_id else Event.last_sequence(tenant_id)
    stream = context.settings().section(StreamSettings)
    expires, still_good = credential_checker()
    ends = time.time() + stream.max_seconds
    if expires is not None:
        ends = min(ends, expires)
    body = _messages(
        tenant_id, livemode, after, type or [], stream.heartbeat, bool(g.get("rows_scoped")), ends, still_good
    )
    return Response(
        body, mimetype="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )


def _messages(
    tenant_id: str,
    livemode: bool,
    after: int,
    patterns: list[str],
    heartbeat_s: int,
    scoped: bool,
    ends: float,
    still_good: Callable[[], bool],
) -> Iterator[bytes]:
    """Yields the stream's messages; an empty chunk means nothing is new yet (the server then waits a
    moment and asks again, holding no thread meanwhile: tenantry.middleware.FlaskBridge).

    The stream ends at `ends` (the access token's expiry, or the longest a stream lasts) and as
    soon as `still_good` says the credential was revoked: a client reconnects with
    Last-Event-ID and is authorized afresh, so a stream never outlives its permission for long.
    """
    yield b"retry: 1000\n\n"
    quiet_since = checked = time.monotonic()
    while time.time() < ends:
        # Each poll may run on another pool thread, whose connection served other requests:
        # bind it to this tenant's rows for the poll (row-level security), and unbind after.
        if scoped:
            scope_rows_to(tenant_id)
        try:
            if time.monotonic() - checked >= RECHECK_S:
                checked = time.monotonic()
                if not still_good():
                    return
            batch = Event.after(tenant_id, livemode, after)
        finally:
            if scoped:
                scope_rows_to(None)
        out = []
        for event in batch:
            after = event.sequence
            if patterns and not matches(patterns, event.type):
                continue
            document = json.dumps(event.as_dict(), separators=(",", ":"))
            out.append(f"id: {event.id}\nevent: {event.type}\ndata: {document}\n\n")
        if out:
            quiet_since = time.monotonic()
            yield "".join(out).encode()
        elif time.monotonic() - quiet_since >= heartbeat_s:
            quiet_since = time.monotonic()
            yield b": heartbeat\n\n"
        else:
            yield b""
