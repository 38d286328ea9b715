"""Success envelopes: `{"data": ..., "meta": {...}}`, the same for every operation."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from connexion.jsonifier import Jsonifier
from flask import Response, request

from tenantry.times import now_rfc3339

#: How every JSON body is written: compact, with Connexion's encoder (the app factory uses it too).
JSONIFIER = Jsonifier(json, separators=(",", ":"))


def meta() -> dict[str, Any]:
    """Returns the request's meta block: its id and the response time."""
    return {"request_id": request.headers.get("X-Request-Id", ""), "timestamp": now_rfc3339()}


def one(data: Any, status: int = 200, location: str | None = None) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Returns one resource (or result) in the envelope, with `Location` when given."""
    headers = {"Location": location} if location else {}
    return {"data": data, "meta": meta()}, status, headers


def page(query: Any, limit: int, offset: int, serialize: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Returns one page of `query` in the list envelope, with the total count of matches."""
    total = query.count()
    items: Iterable[Any] = query.limit(limit).offset(offset) if total > offset else []
    return {
        "data": [serialize(item) for item in items],
        "meta": {**meta(), "pagination": {"limit": limit, "offset": offset, "total": total}},
    }


def no_content() -> Response:
    """Returns an empty 204, with no Content-Type since there is no content."""
    response = Response(status=204)
    del response.headers["Content-Type"]
    return response


def page_of(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    """Returns one page of an already materialised, ordered list in the list envelope."""
    return {
        "data": items[offset : offset + limit],
        "meta": {**meta(), "pagination": {"limit": limit, "offset": offset, "total": len(items)}},
    }


def to_response(result: Any) -> Response:
    """Returns a handler's result (`body`, `(body, status)`, `(body, status, headers)` or a Response) as a Response."""
    if isinstance(result, Response):
        return result
    parts = result if isinstance(result, tuple) else (result,)
    body = parts[0]
    status = parts[1] if len(parts) > 1 else 200
    headers = parts[2] if len(parts) > 2 else {}
    return Response(JSONIFIER.dumps(body), status=status, headers=headers, content_type="application/json")


def cursor_page(items: list[dict[str, Any]], limit: int, has_more: bool) -> dict[str, Any]:
    """Returns a page read with a cursor: the next page starts after the last item's id."""
    return {
        "data": items,
        "meta": {
            **meta(),
            "pagination": {
                "limit": limit,
                "has_more": has_more,
                "next_starting_after": items[-1]["id"] if has_more and items else None,
            },
        },
    }
