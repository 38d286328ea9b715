"""Saving a provider's URLs, and checking providers' health.

Health checks call every active provider's health URL at once, each through the outbound guard
(tenantry.outbound), so a tenant's URL can never make the server reach a private address.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.base import utcnow
from models.integration import IntegrationProvider
from services.integrations.settings import IntegrationSettings
from tenantry import outbound
from tenantry.context import settings
from tenantry.net import Network
from tenantry.times import format_datetime

#: A 2xx slower than this is `degraded`, not `healthy`.
SLOW_MS = 1000
_MAX_CONCURRENT_CHECKS = 8
_URL_FIELDS = ("webhook_url", "api_base_url", "health_url")


def check_urls(fields: Mapping[str, Any]) -> None:
    """Raises UrlNotAllowed naming each URL field the outbound guard would refuse to call."""
    outbound.refuse_uncallable(fields, _URL_FIELDS, settings().outbound_networks)


@dataclass(frozen=True)
class Health:
    """The outcome of one health check."""

    status: str
    http_status: int | None
    response_time_ms: int | None
    error: str | None


def check_one(url: str, timeout: float, allow: tuple[Network, ...]) -> Health:
    """Calls `url` once through the outbound guard; returns its health (see the HealthStatus schema)."""
    start = time.perf_counter()
    try:
        answer = outbound.request(
            "GET", url, timeout=timeout, allow=allow, headers={"User-Agent": "Tenantry-Integrations/1", "Accept": "*/*"}
        )
    except outbound.OutboundRefused as exc:
        return Health("down", None, None, str(exc))  # nothing was called
    except outbound.OutboundFailed as exc:
        return Health("down", None, round((time.perf_counter() - start) * 1000), str(exc))
    elapsed = round(answer.elapsed_ms)
    if 200 <= answer.status < 300:
        if elapsed > SLOW_MS:
            return Health("degraded", answer.status, elapsed, f"Answered in {elapsed} ms, over {SLOW_MS} ms.")
        return Health("healthy", answer.status, elapsed, None)
    if answer.status >= 500:
        return Health("down", answer.status, elapsed, f"Answered HTTP {answer.status}.")
    return Health("degraded", answer.status, elapsed, f"Answered HTTP {answer.status}.")


def check_health(tenant_id: str) -> dict[str, Any]:
    """Checks every active provider of the tenant concurrently, saves each result on its provider,
    and returns the API's IntegrationHealth."""
    allow = settings().outbound_networks
    timeout = settings().section(IntegrationSettings).health_timeout
    providers = list(
        IntegrationProvider.for_tenant(tenant_id)
        .where(IntegrationProvider.is_active == True)  # noqa: E712
        .order_by(IntegrationProvider.id)
    )
    checked_at: datetime = utcnow()
    results: list[Health] = []
    if providers:
        # Only the calls run in the pool; the database is used from this request's thread alone.
        with ThreadPoolExecutor(
            max_workers=min(_MAX_CONCURRENT_CHECKS, len(providers)), thread_name_prefix="health"
        ) as pool:
            results = list(pool.map(lambda p: check_one(p.check_url, timeout, allow), providers))
    out = []
    for provider, health in zip(providers, results, strict=True):
        provider.record_health(health.status, health.response_time_ms, checked_at)
        out.append(
            {
                "provider_id": provider.id,
                "name": provider.name,
                "url": provider.check_url,
                "status": health.status,
                "http_status": health.http_status,
                "response_time_ms": health.response_time_ms,
                "last_checked_at": format_datetime(checked_at),
                "error": health.error[:500] if health.error else None,
            }
        )
    statuses = {health.status for health in results}
    overall = "healthy" if statuses <= {"healthy"} else "down" if statuses == {"down"} else "degraded"
    return {"status": overall, "checked_at": format_datetime(checked_at), "providers": out}
