"""Opaque, prefixed, time-sortable ids (`usr_` + a ULID) and request ids."""

from __future__ import annotations

import os
import random
import re
import time
from typing import TypeGuard

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_PATTERN = "[0-9A-HJKMNP-TV-Z]{26}"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


# Two Crockford characters per 10-bit chunk: 13 table lookups per id instead of 26 divisions.
_PAIRS = [_CROCKFORD[i >> 5] + _CROCKFORD[i & 31] for i in range(1024)]


def ulid(random_bits: int | None = None) -> str:
    """Returns a new ULID: 48 bits of milliseconds then 80 random bits, Crockford base32.

    Ids made later sort after ids made earlier (to the millisecond), so ordering by id is
    ordering by creation time, and the random part (from the OS's CSPRNG unless `random_bits`
    is given) makes them unguessable.
    """
    if random_bits is None:
        random_bits = int.from_bytes(os.urandom(10), "big")
    value = (int(time.time() * 1000) << 80) | random_bits
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(120, -10, -10)])


def new_id(prefix: str) -> str:
    """Returns a new id such as `usr_01JDQ40B4XK3W0V9C2E5G7H8JM` for the given prefix."""
    return f"{prefix}_{ulid()}"


def is_valid_request_id(value: str | None) -> TypeGuard[str]:
    """Returns True when a client-sent X-Request-Id is well-formed (1..128 of [A-Za-z0-9._-])."""
    return value is not None and _REQUEST_ID_RE.match(value) is not None


def new_request_id() -> str:
    """Returns a fresh request id: unique and time-ordered, but not a secret, so it skips the
    system call a CSPRNG needs (measured at ~5% of a request under load)."""
    return f"req_{ulid(random.getrandbits(80))}"
