"""The one format checker: what each `format` the spec declares means, on input and on output alike.

jsonschema's Draft 4 checker, which Connexion uses, knows `date-time` and a loose `email` (any
string with an `@`) and skips `uri`, `uri-reference` and `date` unless optional packages happen to
be installed. So a request could store what a response then could not carry (a webhook URL
`https://A<P`, an email with a 70-character local part), and a client or Schemathesis reading
it back saw a response break its own schema. Here every declared format has one checker, used for
request bodies and parameters (tenantry.validation) and for the server's own response
validation, with the meaning the usual validators give them (tests/api/test_formats.py checks the
samples against jsonschema-rs, which Schemathesis uses on responses):

- `uri`: an absolute URI per RFC 3986 (`rfc3986-validator`); `uri-reference`: a URI or a
  relative reference.
- `email`: RFC 5321 sizes (local part at most 64 octets, the domain at most 253, each label at
  most 63) in the dot-atom form the `Email` schema's pattern describes.
- `date-time`: RFC 3339 (`rfc3339-validator`); `date`: RFC 3339 `full-date`, a real day.
- `int64`: an integer that fits in 64 signed bits.

`password` only hints at how to show a field: it restricts nothing.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from jsonschema import FormatChecker
from rfc3339_validator import validate_rfc3339
from rfc3986_validator import validate_rfc3986

FORMAT_CHECKER = FormatChecker(formats=())

#: The formats FORMAT_CHECKER gives a meaning to; every other declared format must be a hint
#: that restricts nothing (tests/api/test_formats.py checks the spec declares no other).
HINT_ONLY_FORMATS = frozenset({"password"})

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"^{_ATOM}(\.{_ATOM})*$")
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INT64 = (-(2**63), 2**63 - 1)


@FORMAT_CHECKER.checks("uri")
def is_uri(value: Any) -> bool:
    """An absolute URI (RFC 3986 `URI`): a scheme, and only the characters the grammar allows."""
    return not isinstance(value, str) or bool(validate_rfc3986(value, rule="URI"))


@FORMAT_CHECKER.checks("uri-reference")
def is_uri_reference(value: Any) -> bool:
    """A URI or a relative reference (RFC 3986 `URI-reference`)."""
    return not isinstance(value, str) or bool(validate_rfc3986(value, rule="URI_reference"))


@FORMAT_CHECKER.checks("email")
def is_email(value: Any) -> bool:
    """A mailbox `local@domain` within RFC 5321's sizes: a dot-atom local part of at most 64
    octets, and a domain of at most 253 of dot-separated labels of at most 63 (a letter, digit or
    inner hyphen each), ending in a top-level label of letters."""
    if not isinstance(value, str):
        return True
    local, at, domain = value.rpartition("@")
    if not at or not local or len(local.encode()) > 64 or not _LOCAL.match(local):
        return False
    labels = domain.split(".")
    return (
        len(domain) <= 253
        and len(labels) >= 2
        and all(_LABEL.match(label) for label in labels)
        and labels[-1].isascii()
        and labels[-1].isalpha()
        and len(labels[-1]) >= 2
    )


@FORMAT_CHECKER.checks("date-time")
def is_date_time(value: Any) -> bool:
    """An RFC 3339 `date-time` (a real day and time, with a `Z` or an offset)."""
    return not isinstance(value, str) or bool(validate_rfc3339(value))


@FORMAT_CHECKER.checks("date")
def is_date(value: Any) -> bool:
    """An RFC 3339 `full-date` (`YYYY-MM-DD`) naming a real day."""
    if not isinstance(value, str):
        return True
    if not _FULL_DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


@FORMAT_CHECKER.checks("int64")
def is_int64(value: Any) -> bool:
    """An integer within 64 signed bits (a non-integer is the `type` keyword's business)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return True
    return _INT64[0] <= value <= _INT64[1]
