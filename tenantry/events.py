"""The one emitter of domain events: what the core writes to the outbox after every state change.

Every changing operation's event type is declared in the spec: `x-event-type`, or else its
`x-audit-action` (`false` for the few changes that are not the tenant's business, such as a
login). The core writes the event in the request's own transaction (tenantry.mutation), so it
exists exactly when the change does; handlers write no event code. Outside a request (the
delivery worker), `emit` writes one in the caller's transaction.

What happens next is the subscribers' business: a plug-in subscribes to a pattern of types
(`host.subscribe("*", fan_out)`, services.webhooks) and `emit` calls it with the event inside
the event's own transaction, so its work (a queued delivery, a job) exists exactly when the event
does. The core knows no consumer. A consumer that still needs old events (a pending delivery)
says so with `retain`, and `purge` keeps them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Response, g

from models.audit import PLATFORM, redact
from models.base import current_livemode, database
from models.event import Event, matches
from models.user import User
from tenantry import audit
from tenantry.logs import request_id_var


def catalog() -> frozenset[str]:
    """Returns the event types Tenantry emits: the served spec's EventType catalog (read once)."""
    from flask import current_app

    from tenantry.spec import event_catalog

    state = current_app.extensions["tenantry"]
    types = getattr(state, "_event_types", None)
    if types is None:
        types = frozenset(event_catalog(state.spec))
        state._event_types = types
    return types


def unmatched_patterns(patterns: list[str]) -> list[tuple[int, str]]:
    """Returns (index, pattern) for each subscription pattern no catalog event type matches
    (`users.created`, `usr.*`): an endpoint subscribed with it alone would never get anything."""
    types = catalog()
    return [
        (index, pattern)
        for index, pattern in enumerate(patterns)
        if not any(matches([pattern], event_type) for event_type in types)
    ]


def _object(resource_type: str, item: Any) -> Any:
    """Returns the changed object inside an answer (`{"key": {...}, "secret": ...}` holds the key)."""
    if isinstance(item, dict) and isinstance(item.get(resource_type), dict):
        return item[resource_type]
    return item


def _previous(before: dict[str, Any] | None, after: Any) -> dict[str, Any] | None:
    """Returns the fields an update changed, with their old values (None when nothing is known)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return None
    changed = {k: v for k, v in before.items() if k in after and after[k] != v and k != "updated_at"}
    return changed or None


def _unanswered(event_type: str, before: dict[str, Any] | None, resource_id: str | None) -> dict[str, Any]:
    """Returns the object of a change answered with 204: as it was (a deletion), else as it is now."""
    if event_type.endswith(".deleted") and before is not None:
        return before
    row = g.get("target")
    if row is not None and hasattr(row, "as_dict"):
        return row.as_dict()  # the enforcement point's row, changed in place by the handler (a revocation)
    if event_type.startswith("user.") and resource_id:
        # The caller's own account (MFA turned off): as it is now.
        user = User.get_or_none(User.id == resource_id)
        if user is not None:
            return user.as_dict()
    return {"id": resource_id}


def record(event_type: str, kwargs: dict[str, Any], response: Response, before: dict[str, Any] | None) -> None:
    """Writes the events of a successful change (one per resource of a batch), inside its transaction."""
    if response.status_code >= 400:
        return
    resource_type = event_type.partition(".")[0]
    data = audit.response_data(response)
    items = data if isinstance(data, list) else [data]
    for item in items:
        changed = _object(resource_type, item)
        resource_id = audit.resource_id_of(resource_type, kwargs, item)
        if changed is None:
            changed = _unanswered(event_type, before, resource_id)
        payload: dict[str, Any] = {"object": redact(changed)}
        previous = (
            _previous(before, changed)
            if response.status_code == 200 and event_type.endswith(("updated", "replaced"))
            else None
        )
        if previous is not None:
            payload["previous_attributes"] = redact(previous)
        tenant_id = audit.tenant_of(resource_type, resource_id, item)
        if tenant_id == PLATFORM:
            continue  # outside every tenant: nobody's stream
        emit(tenant_id, event_type, payload)


#: (pattern, subscriber) pairs, in registration order (tenantry.host.Host.subscribe adds them).
_subscribers: list[tuple[str, Callable[[Event], None]]] = []
#: Each returns a query of the ids of events its consumer still needs (never purged).
_retainers: list[Callable[[], Any]] = []


def subscribe(pattern: str, subscriber: Callable[[Event], None]) -> None:
    """Calls `subscriber(event)` for every event whose type matches `pattern` (`*`, `user.*`, an exact
    type), in the event's transaction; an exception it raises rolls the change back. Subscribing
    the same function to the same pattern again is a no-op."""
    if (pattern, subscriber) not in _subscribers:
        _subscribers.append((pattern, subscriber))


def retain(still_needed: Callable[[], Any]) -> None:
    """Makes `purge` keep the events whose ids `still_needed()` (a query of event ids) returns."""
    if still_needed not in _retainers:
        _retainers.append(still_needed)


def emit(
    tenant_id: str,
    event_type: str,
    payload: dict[str, Any],
    livemode: bool | None = None,
) -> Event:
    """Writes one event for the tenant in the current transaction and runs its subscribers in it."""
    with database.atomic():
        event = Event.emit(
            tenant_id,
            event_type,
            payload,
            current_livemode() if livemode is None else livemode,
            request_id=request_id_var.get(),
        )
        for pattern, subscriber in _subscribers:
            if matches([pattern], event_type):
                subscriber(event)
    return event


def purge(older_than: datetime) -> int:
    """Removes events made before `older_than` that no consumer still needs (`retain`); returns how many."""
    return Event.purge(older_than, keep=[still_needed() for still_needed in _retainers])


#: What a plug-in removes with the events (`purge_with`): (key, what it is, remove(older_than) -> count).
_companions: list[tuple[str, str, Callable[[datetime], int]]] = []


def purge_with(key: str, what: str, remove: Callable[[datetime], int]) -> None:
    """Makes `purge_all` remove a consumer's own finished rows with the events (`remove(older_than)`
    returns how many), first, so an event only they still needed can go too. Registering `key` again
    replaces it."""
    _companions[:] = [c for c in _companions if c[0] != key] + [(key, what, remove)]


def purge_all(older_than: datetime) -> list[tuple[str, str, int]]:
    """Removes, in one transaction, every consumer's finished rows (`purge_with`) and then the events
    older than `older_than`; returns (key, what, how many) for each, the events last."""
    with database.atomic():
        removed = [(key, what, remove(older_than)) for key, what, remove in list(_companions)]
        removed.append(("events", "event(s)", purge(older_than)))
    return removed
