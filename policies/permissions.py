"""Permission names: one rule, `<resource>:<action>` with the resource singular."""

from __future__ import annotations

import re

#: The scope that stands for every permission a tenant's owner holds, key management included.
ADMIN_SCOPE = "admin"

_SHAPE = re.compile(r"^([a-z][a-z_]*)[:.]([a-z][a-z_]*)$")


def singular(resource: str) -> str:
    """Returns the singular of a resource name: `users` -> `user`, `policies` -> `policy`."""
    if resource.endswith("ies"):
        return resource[:-3] + "y"
    if resource.endswith(("sses", "uses", "xes")):
        return resource[:-2]
    if resource.endswith("s") and not resource.endswith("ss"):
        return resource[:-1]
    return resource


def normalize(permission: str) -> str:
    """Returns the canonical spelling of a permission.

    Accepts the seeds' spellings: `users:read` (seed 001's key scopes) becomes `user:read`, and
    `booking.cancel` (seed 003) becomes `booking:cancel`. `admin` stays `admin`. Raises ValueError
    for anything else.
    """
    value = permission.strip().lower()
    if value == ADMIN_SCOPE:
        return value
    match = _SHAPE.match(value)
    if match is None:
        raise ValueError(f"{permission!r} is not <resource>:<action>")
    return f"{singular(match.group(1))}:{match.group(2)}"
