"""RFC 3339 timestamps in, naive UTC datetimes out."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

from tenantry.errors import Detail, ValidationFailed

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


def now_utc() -> datetime:
    """Returns the current time as naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def query_moment(value: str | None, name: str) -> datetime | None:
    """Returns a date-time query parameter as naive UTC (None when absent); raises a 400
    ValidationFailed naming the parameter when it is not RFC 3339."""
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise ValidationFailed(details=[Detail("is not an RFC 3339 date-time", name)]) from None


_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def query_bound(value: str | None, name: str, end: bool = False) -> datetime | None:
    """Returns a date-time query parameter, or a date (`YYYY-MM-DD`) as its whole UTC day, as naive UTC.

    A date is the day's first moment, or with `end` its last (an inclusive upper bound). None when
    absent; a 400 ValidationFailed naming the parameter when it is neither.
    """
    if value is not None and _DAY.match(value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ValidationFailed(details=[Detail("is not a date (YYYY-MM-DD) or RFC 3339 date-time", name)]) from None
        return datetime.combine(day, time.max if end else time.min)
    return query_moment(value, name)
