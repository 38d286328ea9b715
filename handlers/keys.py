"""Keys: scoped API keys for server-to-server calls."""

from __future__ import annotations

from typing import Any

from flask import Response

from models import ApiKey
from models.api_key import normalize_ranges
from policies import normalize
from policies.permissions import ADMIN_SCOPE
from tenantry.access import known_permissions
from tenantry.authz import acting_tenant, authorize_grant, authorize_handover, current_access, current_principal, target
from tenantry.envelope import no_content, one, page
from tenantry.errors import Detail, ValidationFailed
from tenantry.times import parse_rfc3339


def _known(raw: list[str]) -> list[str]:
    """Returns the scopes normalised and without repeats; a 400 naming each that is no permission of
    the tenant (built-in, its own, a `<resource>:write` alias, or `admin`), before any "not held" 403."""
    known = known_permissions(current_access()) | {ADMIN_SCOPE}
    names = [normalize(p) for p in raw]
    details = [
        Detail(f"names no permission of this tenant ({name})", f"permissions[{index}]")
        for index, name in enumerate(names)
        if name not in known
    ]
    if details:
        raise ValidationFailed("The request body is invalid: unknown permissions.", details)
    return list(dict.fromkeys(names))


def list_keys(limit: int = 20, offset: int = 0) -> dict[str, Any]:
    """The tenant's keys, newest first, without secrets."""
    return page(ApiKey.for_tenant(acting_tenant()).order_by(ApiKey.id.desc()), limit, offset, ApiKey.as_dict)


def create_key(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A new key and its secret, shown once (201)."""
    tenant_id = acting_tenant()
    permissions = _known(body["permissions"])
    authorize_grant(frozenset(permissions))
    networks = normalize_ranges(body.get("allowed_ips", []))
    expires_at = parse_rfc3339(body["expires_at"]) if "expires_at" in body else None
    key, secret = ApiKey.issue(
        tenant_id, body["name"], permissions, body.get("mode", "live"), networks, expires_at, current_principal().id
    )
    return one({"key": key.as_dict(), "secret": secret}, 201, location=f"/v1/keys/{key.id}")


def get_key(key_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One key, without its secret."""
    return one(target().as_dict())


def revoke_key(key_id: str) -> Response:
    """Revokes the key; again is harmless (204)."""
    target().revoke()
    return no_content()


def rotate_key(key_id: str, body: Any = None) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A new secret for the key, shown once; the old one lasts the grace period."""
    options = body if isinstance(body, dict) else {}  # no body sent: Connexion passes its raw bytes
    key = target()
    authorize_handover(key)  # the new secret hands the key's authority to the caller
    secret = key.rotate(options.get("grace_period_seconds", 0))
    return one({"key": key.as_dict(), "secret": secret})
