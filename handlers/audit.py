"""Audit: the tenant's tamper-evident trail of changes, read-only."""

from __future__ import annotations

from typing import Any

from models.audit import AuditEntry
from models.base import current_livemode
from tenantry.authz import acting_tenant
from tenantry.envelope import cursor_page, one
from tenantry.paging import query_bound


def list_audit_logs(
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    user_id: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    livemode: bool | None = None,
    limit: int = 20,
    starting_after: str | None = None,
) -> dict[str, Any]:
    """The tenant's entries of one mode (the caller's by default), newest first, a cursor page at a time."""
    entries, has_more = AuditEntry.page(
        acting_tenant(),
        limit,
        current_livemode() if livemode is None else livemode,
        starting_after,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        actor_id=user_id,
        date_from=query_bound(date_from, "date_from"),
        date_to=query_bound(date_to, "date_to", end=True),
    )
    return cursor_page([e.as_dict() for e in entries], limit, has_more)


def verify_audit_logs() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Recomputes the tenant's hash chain and names the first broken link."""
    return one(AuditEntry.verify(acting_tenant()))


def get_audit_log(entry_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One entry of the tenant's trail."""
    return one(AuditEntry.get_for_tenant(acting_tenant(), entry_id).as_dict())
