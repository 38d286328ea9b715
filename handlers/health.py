"""Health: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app

from tenantry import db
from tenantry.envelope import one
from tenantry.errors import ServiceUnavailable


def get_health() -> tuple[dict[str, Any], int, dict[str, str]]:
    """200 while the process runs."""
    return one({"status": "ok"})


def get_liveness() -> tuple[dict[str, Any], int, dict[str, str]]:
    """200 while the process can answer at all."""
    return one({"status": "ok"})


def get_readiness() -> tuple[dict[str, Any], int, dict[str, str]]:
    """200 when the database answers; 503 SERVICE_UNAVAILABLE when it does not."""
    try:
        db.ping()
    except Exception:
        raise ServiceUnavailable("The database is unavailable.") from None
    return one({"status": "ok", "checks": {"database": "ok"}})


def get_metrics() -> Response:
    """The Prometheus exposition of this server's request metrics."""
    body, content_type = current_app.extensions["tenantry"].metrics.render()
    return Response(body, status=200, content_type=content_type)
