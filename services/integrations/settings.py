"""The integrations plug-in's settings section (TENANTRY_INTEGRATION_HEALTH_TIMEOUT, TENANTRY_INBOUND_TOLERANCE)."""

from __future__ import annotations

from dataclasses import dataclass

from tenantry.settings import int_setting


@dataclass(frozen=True)
class IntegrationSettings:
    """How long a provider's health check may take, and how old an inbound signature may be."""

    #: Seconds a provider's health URL has to answer (TENANTRY_INTEGRATION_HEALTH_TIMEOUT).
    health_timeout: int = 5
    #: Seconds a Standard Webhooks `webhook-timestamp` may be from now (TENANTRY_INBOUND_TOLERANCE).
    inbound_tolerance: int = 300

    @classmethod
    def from_env(cls) -> IntegrationSettings:
        """Returns the section read from the environment; raises SettingsError naming a bad variable."""
        return cls(
            health_timeout=int_setting("TENANTRY_INTEGRATION_HEALTH_TIMEOUT", 5),
            inbound_tolerance=int_setting("TENANTRY_INBOUND_TOLERANCE", 300),
        )
