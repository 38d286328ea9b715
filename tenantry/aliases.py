"""Request fields that other APIs (the seed documents) name differently: one value under either name."""

from __future__ import annotations

import hmac
from typing import Any

from tenantry.errors import Detail, ValidationFailed


def either(body: dict[str, Any], name: str, alias: str, *, required: bool = False) -> Any:
    """Returns `body[name]`, else `body[alias]`, else None; both given with different values is a 400 naming both.

    With `required`, neither given is a 400 naming `name` (the spec says which one of the two is
    required in prose: a top-level anyOf would cost generated clients their named model).
    """
    value, other = body.get(name), body.get(alias)
    if value is not None and other is not None and value != other:
        message = f"is an alias of {name}; send one, or both with the same value"
        raise ValidationFailed(f"{name} and {alias} differ.", [Detail(message, alias), Detail(message, name)])
    if required and value is None and other is None:
        raise ValidationFailed(f"{name} is required.", [Detail(f"is required (or {alias})", name)])
    return value if value is not None else other


#: The longest first or last name (users.yaml#/PersonName).
MAX_NAME = 100
#: What the names' pattern counts as blank: `[\t\n\x0b\x0c\r ]`.
_BLANK = "\t\n\x0b\x0c\r "


def split_full_name(body: dict[str, Any]) -> tuple[str, str]:
    """Returns (first_name, last_name) from the body's own names or its `full_name` (split at the last space)."""
    full = body.get("full_name")
    if full is None:
        missing = [n for n in ("first_name", "last_name") if body.get(n) is None]
        if missing:
            raise ValidationFailed(details=[Detail("is required (or full_name)", n) for n in missing])
        return body["first_name"], body["last_name"]
    given = [n for n in ("first_name", "last_name") if n in body]
    if given:
        raise ValidationFailed(
            "Give full_name or first_name and last_name, not both.",
            [
                Detail(f"cannot be sent with {', '.join(given)}", "full_name"),
                *(Detail("cannot be sent with full_name", n) for n in given),
            ],
        )
    # Blank as the names' pattern reads it (users.yaml#/PersonName): ASCII whitespace only. Python's
    # str.strip() also removes Unicode spaces (NBSP, em space), and a full_name of those left empty names.
    first, _, last = full.strip(_BLANK).rpartition(" ")
    first = first.strip(_BLANK) or last
    if len(first) > MAX_NAME or len(last) > MAX_NAME:
        raise ValidationFailed(
            details=[Detail(f"must split into first and last names of at most {MAX_NAME} characters", "full_name")]
        )
    return first, last


def check_confirmation(body: dict[str, Any], name: str, confirm: str) -> None:
    """Raises a 400 naming `confirm` when it is given and differs from `name`."""
    if confirm in body and not hmac.compare_digest(body[confirm].encode(), body[name].encode()):
        raise ValidationFailed(f"{confirm} does not match {name}.", [Detail(f"does not match {name}", confirm)])
