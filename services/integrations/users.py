"""What an integration's events do to the tenant's users: `user.created` and `user.updated` upserts."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from models import accounts
from models.audit import redact
from models.user import User, normalize_email
from tenantry import events
from tenantry.formats import is_email
from tenantry.security import unusable_password_hash

#: The same rule as the spec's Email schema: what a user's email may be.
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&*+/=?^_{|}~-]+(\.[A-Za-z0-9!#$%&*+/=?^_{|}~-]+)*@"
    r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


class EventRefused(ValueError):
    """The event's data cannot be handled; `str()` says why (stored as the event's error)."""


def _name(data: dict[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 100 or "\x00" in value:
        raise EventRefused(f"data.{field} must be a name of 1 to 100 characters.")
    return value.strip()


def _upsert_user(tenant_id: str, data: Any) -> None:
    """`user.created`, `user.updated`: creates the tenant's live user with `data.email`, or updates its names.

    A new user is a `member` whose password is random and unknown to anyone (no sign-in until
    one is set); a provider never sets a role.
    """
    if not isinstance(data, dict):
        raise EventRefused("data must be an object with the user's email.")
    email = data.get("email")
    # The pattern, and the `email` format's sizes (a local part of at most 64): what a response may carry.
    if not isinstance(email, str) or len(email) > 254 or not _EMAIL.match(email.strip()) or not is_email(email.strip()):
        raise EventRefused("data.email must be an email address.")
    first, last = _name(data, "first_name"), _name(data, "last_name")
    full = _name(data, "name")
    if full and (first is None or last is None):
        given, _, family = full.partition(" ")
        first, last = first or given, last or (family.strip() or None)
    user = User.for_tenant(tenant_id).where(User.email_normalized == normalize_email(email)).first()
    if user is not None:
        changes = {k: v for k, v in (("first_name", first), ("last_name", last)) if v and getattr(user, k) != v}
        if changes:
            previous = {k: getattr(user, k) for k in changes}
            accounts.change_user(user, changes)
            # The tenant's own systems hear of the change like of any other (same transaction).
            events.emit(
                tenant_id,
                "user.updated",
                {"object": redact(user.as_dict()), "previous_attributes": previous},
                livemode=True,
            )
        return
    if not first or not last:
        raise EventRefused("A new user needs data.first_name and data.last_name, or a data.name of two words.")
    user = User.build(tenant_id, email, unusable_password_hash(), first, last, role="member")
    User.insert_many_checked([user])
    events.emit(tenant_id, "user.created", {"object": redact(user.as_dict())}, livemode=True)


#: The handler of each event type; any other type is stored as `ignored`.
HANDLERS: dict[str, Callable[[str, Any], None]] = {
    "user.created": _upsert_user,
    "user.updated": _upsert_user,
}
