"""The webhooks plug-in's settings section: how deliveries are retried, timed and given up on."""

from __future__ import annotations

from dataclasses import dataclass

from tenantry.settings import SettingsError, int_setting, schedule_setting


@dataclass(frozen=True)
class WebhookSettings:
    """Delivery's retry schedule, HTTP timeout, lease, and how long an endpoint may fail before it is disabled."""

    #: Seconds before each retry after the first attempt (TENANTRY_WEBHOOK_RETRY_SCHEDULE, `5,300,1800`).
    retry_schedule: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    #: Seconds an attempt may take, resolving included (TENANTRY_WEBHOOK_TIMEOUT).
    timeout: int = 30
    #: Seconds a worker holds a delivery's job (TENANTRY_WEBHOOK_LEASE); at least the timeout + 2.
    lease: int = 60
    #: Seconds of nothing but failures after which an exhausted delivery disables its endpoint
    #: (TENANTRY_WEBHOOK_DISABLE_AFTER; five days).
    disable_after: int = 5 * 24 * 3600

    @classmethod
    def from_env(cls) -> WebhookSettings:
        """Returns the section read from the environment; raises SettingsError naming a bad variable."""
        section = cls(
            retry_schedule=schedule_setting("TENANTRY_WEBHOOK_RETRY_SCHEDULE", cls.retry_schedule),
            timeout=int_setting("TENANTRY_WEBHOOK_TIMEOUT", 30),
            lease=int_setting("TENANTRY_WEBHOOK_LEASE", 60),
            disable_after=int_setting("TENANTRY_WEBHOOK_DISABLE_AFTER", 5 * 24 * 3600),
        )
        # An attempt (the timeout, which covers resolving too) must end inside its lease, or another
        # worker could take the delivery while it is still being sent.
        if section.lease < section.timeout + 2:
            raise SettingsError("TENANTRY_WEBHOOK_LEASE must exceed TENANTRY_WEBHOOK_TIMEOUT by 2 seconds or more")
        return section
