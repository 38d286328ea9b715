"""The integrations plug-in: inbound webhooks from a tenant's providers, and their health.

- `signatures`: the inbound signature schemes (Standard Webhooks, hmac-sha256).
- `receive`: verifying a provider's call and storing and handling its event once.
- `users`: what the events do (user upserts).
- `health`: checking every active provider's health URL, and the URL guard on save.
"""

from __future__ import annotations

from services.integrations.health import check_health, check_urls
from services.integrations.receive import receive
from services.integrations.settings import IntegrationSettings
from tenantry.host import Host

__all__ = ["IntegrationSettings", "check_health", "check_urls", "receive", "register"]


def register(host: Host) -> None:
    """Adds integrations to the core: their settings section (read and checked at start)."""
    host.settings_section(IntegrationSettings)
