"""The host: how a domain plug-in adds itself to the core without the core naming it.

Each domain in `services.DOMAINS` has a `register(host)` that create_app and the CLI call once
at start (services.register_all). Through the host a domain subscribes to events, tells the
enforcement point how to load its rows, adds its settings section, and declares its background
jobs and periodic work. The core keeps one registry of each; none of them lists a domain.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from models.event import Event
from tenantry import authz, events, jobs, settings
from tenantry.settings import Settings


class Host:
    """The registration API each `services.<domain>.register(host)` calls."""

    def subscribe(self, pattern: str, subscriber: Callable[[Event], None]) -> None:
        """Calls `subscriber(event)` in the transaction of every event whose type matches `pattern`."""
        events.subscribe(pattern, subscriber)

    def retain_events(self, still_needed: Callable[[], Any]) -> None:
        """Keeps the events whose ids `still_needed()` (a query) returns from the events purge."""
        events.retain(still_needed)

    def purge_with_events(self, key: str, what: str, remove: Callable[[datetime], int]) -> None:
        """Removes the domain's own finished rows (`remove(older_than)`, returning how many) whenever
        events are purged (`tenantry events purge`, the periodic purge), before the events."""
        events.purge_with(key, what, remove)

    def loader(self, resource: str, load: Callable[[dict[str, Any]], Any]) -> None:
        """Makes the enforcement point load the row an operation on `resource` targets with
        `load(kwargs)`. A tenant-scoped model that declares `api_resource` needs none: it is found
        by `<resource>_id` in the acting tenant."""
        authz.register_loader(resource, load)

    def settings_section(self, section: type) -> None:
        """Reads and checks the section (its `from_env()`) with the settings at start;
        `settings().section(cls)` returns it."""
        settings.register_section(section)

    def job(self, kind: jobs.JobKind) -> None:
        """Registers a kind of background job (tenantry.jobs.register_kind)."""
        jobs.register_kind(kind)

    def periodic(self, periodic: jobs.Periodic) -> None:
        """Registers periodic work (tenantry.jobs.register_periodic)."""
        jobs.register_periodic(periodic)

    def with_settings(self, declare: Callable[[Settings], list[jobs.JobKind | jobs.Periodic]]) -> None:
        """Registers the jobs and periodic work that depend on the settings (a retry schedule, a
        retention): `declare(settings)` is called with the settings read at start (`configure`),
        and again if a process starts with other settings (the last ones win)."""
        if declare not in _declarers:
            _declarers.append(declare)


_declarers: list[Callable[[Settings], list[jobs.JobKind | jobs.Periodic]]] = []


def configure(settings: Settings) -> None:
    """Registers every plug-in's settings-dependent jobs and periodic work for `settings` (create_app
    and the CLI call it once the settings are read and checked)."""
    for declare in _declarers:
        for item in declare(settings):
            if isinstance(item, jobs.JobKind):
                jobs.register_kind(item, replace=True)
            else:
                jobs.register_periodic(item)
