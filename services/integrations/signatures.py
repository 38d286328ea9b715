"""Signature schemes of inbound webhooks: how a provider's signed call is checked.

- `standard-webhooks` (https://www.standardwebhooks.com): `webhook-signature` holds one or more
  space-separated `v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">`;
  `webhook-timestamp` is Unix seconds within the tolerance of now. A `whsec_<base64>` secret
  signs with its decoded bytes, as the `standardwebhooks` library does; any other secret with
  its UTF-8 bytes (what `Webhook(secret.encode())` signs with).
- `hmac-sha256`: `X-Signature: sha256=<hex HMAC-SHA256 of the body>`, keyed by the secret's UTF-8 bytes.

Signatures are compared in constant time (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from werkzeug.datastructures import Headers

from tenantry.crypto import standard_webhooks_key


def _raw(value: str) -> bytes:
    # Header values reach us decoded as latin-1 (WSGI): encoding them back gives the bytes sent.
    return value.encode("latin-1", errors="replace")


def verify_standard_webhooks(
    secret: str, body: bytes, headers: Mapping[str, str] | Headers, tolerance: int, now: float | None = None
) -> bool:
    """Returns True when one of the `v1` signatures in `webhook-signature` is the body's, and
    `webhook-timestamp` is within `tolerance` seconds of `now`."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        return False
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(
        standard_webhooks_key(secret), _raw(msg_id) + b"." + _raw(timestamp) + b"." + body, hashlib.sha256
    ).digest()
    matched = False
    for candidate in signatures.split(" "):
        version, _, encoded = candidate.partition(",")
        if version != "v1":
            continue  # a later version's signature is not ours to judge
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        matched = hmac.compare_digest(expected, given) or matched
    return matched


def verify_hmac_sha256(secret: str, body: bytes, header: str | None) -> bool:
    """Returns True when `header` is `sha256=<hex HMAC-SHA256 of body>` under `secret`."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, _raw(header[len("sha256=") :].strip().lower()))
