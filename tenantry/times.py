"""Time in one place: RFC 3339 in and out, naive UTC as stored. Imports nothing of the project.

Query parameters that must be a date-time or else a 400 are parsed by tenantry.paging
(`query_moment`, `query_bound`), which knows the error envelope.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339(value: str) -> datetime:
    """Returns `value` (an RFC 3339 date-time) as naive UTC.

    Everything RFC 3339 allows is accepted, including what Python's datetime cannot hold: a leap
    second counts as :59, and a moment outside years 1..9999 clamps to the nearest end. Raises
    ValueError for anything that is not RFC 3339.
    """
    match = _RFC3339.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    if year == 0:
        return datetime.min
    micro = int((fraction or ".0")[1:7].ljust(6, "0"))
    base = datetime(year, month, day, hour, minute, min(second, 59), micro)
    delta = timedelta()
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        delta = sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    try:
        return base - delta
    except OverflowError:
        return datetime.min if delta > timedelta() else datetime.max


def utcnow() -> datetime:
    """Returns the current time as a naive UTC datetime, the form stored in every timestamp column."""
    return datetime.now(UTC).replace(tzinfo=None)


def format_datetime(value: datetime) -> str:
    """Returns `value` (naive UTC or aware) as RFC 3339 UTC with milliseconds: `...T06:12:27.123Z`."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    # Not strftime: glibc writes year 148 as "148", which is not RFC 3339 (four digits always).
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
        f"{value.second:02d}.{value.microsecond // 1000:03d}Z"
    )


def now_rfc3339() -> str:
    """Returns the current UTC time as RFC 3339 with milliseconds and a `Z`."""
    return format_datetime(datetime.now(UTC))
