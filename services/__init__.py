"""Domain behaviour that is neither a handler nor a query: the core's plug-ins.

Each domain is a package `services.<name>` with a `register(host)`; `DOMAINS` is the one list a
new domain edits. A domain may use the core (tenantry), the data layer (models) and policies;
it never imports another domain's services module: domains talk through events and jobs.
"""

from __future__ import annotations

import importlib

from tenantry.host import Host

#: The domains, in the order they are registered.
DOMAINS = ["webhooks", "integrations"]


def register_all(host: Host) -> None:
    """Calls `register(host)` of every domain in DOMAINS (safe to call again: registration is idempotent)."""
    for name in DOMAINS:
        importlib.import_module(f"services.{name}").register(host)
