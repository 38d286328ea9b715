"""The audit trail's one writer: what the core records about every change, login and refusal.

Every changing operation declares its action in the spec (`x-audit-action`, such as
`user.created`; `false` for the few POSTs that change nothing). The core records the entry in
the request's own transaction (tenantry.mutation) from what it already knows: the caller, the
row the enforcement point loaded (the old values), the response (the new values), and the
policy decision. Handlers write no audit code; a public operation may only say, through
`note()`, which tenant and account a failure concerns (a failed login).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, g, request

from models.audit import PLATFORM, AuditEntry, redact
from policies import Decision
from tenantry.context import caller_address
from tenantry.errors import PermissionDenied
from tenantry.logs import request_id_var

#: A 401 on this action records a failed attempt under `<action>_failed`.
_FAILURE_RECORDED = frozenset({"user.login"})


def note(tenant_id: str | None = None, resource_id: str | None = None) -> None:
    """Tells the recorder which tenant and resource an anonymous request concerns (when it fails)."""
    g.audit_note = {"tenant_id": tenant_id, "resource_id": resource_id}


def remember_decision(decision: Decision) -> None:
    """Keeps what decided an allowed request, for its entry's `decided_by`."""
    decided = g.setdefault("decided_by", [])
    decided.extend(s for s in decision.decided_by if s not in decided)


def snapshot() -> dict[str, Any] | None:
    """Returns the targeted row's fields before the change (secrets redacted), or None."""
    row = g.get("target")
    return redact(row.as_dict()) if row is not None and hasattr(row, "as_dict") else None


def _actor(data: Any) -> tuple[str, str | None]:
    principal = g.get("principal")
    if principal is not None:
        if principal.key is not None:
            return "api_key", principal.key.id
        return ("operator" if principal.is_operator else "user"), principal.id
    user = data.get("user") if isinstance(data, dict) else None  # login, register, token refresh
    if isinstance(user, dict) and user.get("id"):
        return "user", user["id"]
    return "anonymous", None


def _request_fields() -> dict[str, Any]:
    return {
        "ip_address": caller_address(),
        "user_agent": request.headers.get("User-Agent"),
        "request_id": request_id_var.get() or request.headers.get("X-Request-Id"),
    }


def tenant_of(resource_type: str, resource_id: str | None, data: Any) -> str:
    """Returns the tenant a change belongs to: the caller's, the tenant acted on, or PLATFORM."""
    principal = g.get("principal")
    if principal is not None and principal.tenant_id is not None:
        return principal.tenant_id
    if resource_type == "tenant" and resource_id:  # the operator acting on a tenant: that tenant's chain
        return resource_id
    noted = (g.get("audit_note") or {}).get("tenant_id")
    if noted:
        return noted
    if isinstance(data, dict):
        tenant = data.get("tenant")
        if isinstance(tenant, dict) and tenant.get("id"):
            return tenant["id"]
        user = data.get("user")
        if isinstance(user, dict) and user.get("tenant_id"):
            return user["tenant_id"]
    return PLATFORM


def resource_id_of(resource_type: str, kwargs: dict[str, Any], data: Any, own_account: bool = True) -> str | None:
    """Returns the id of the resource a change concerns: from the path, the answer, or the caller."""
    for name in (f"{resource_type}_id", f"{resource_type}_name"):
        if kwargs.get(name):
            return str(kwargs[name])
    if isinstance(data, dict):
        if isinstance(data.get(resource_type), dict) and data[resource_type].get("id"):
            return data[resource_type]["id"]  # {"key": {...}, "secret": ...}, {"user": ..., "tenant": ...}
        if data.get("id"):
            return str(data["id"])
        if resource_type == "permission" and data.get("name"):
            return str(data["name"])
    principal = g.get("principal")
    if own_account and resource_type == "user" and principal is not None and principal.user is not None:
        return principal.user.id  # the caller's own account: logout, MFA
    return (g.get("audit_note") or {}).get("resource_id")


def response_data(response: Response) -> Any:
    """Returns the `data` of a JSON answer, or None."""
    if response.mimetype != "application/json":
        return None
    try:
        return json.loads(response.get_data()).get("data")
    except (ValueError, AttributeError):
        return None


def record_change(
    action: str,
    kwargs: dict[str, Any],
    response: Response,
    before: dict[str, Any] | None,
    error: Exception | None = None,
) -> None:
    """Records the operation's outcome, inside its transaction: its change, a refusal, or a failed login."""
    status = response.status_code
    if type(error) is PermissionDenied:  # the handler's own finer decision refused it
        record_denial(g.get("operation_id", ""), action, action, error.decided_by, error.message, kwargs)
        return
    if status == 401 and action in _FAILURE_RECORDED:
        sent = kwargs.get("body")
        body = sent if isinstance(sent, dict) else {}
        problem = json.loads(response.get_data()).get("error", {})
        who = body.get("email") or body.get("username")  # `username` is login's alias of `email`
        _append(f"{action}_failed", None, {"email": who, "reason": problem.get("code")}, None, None)
        return
    if status >= 400:
        return
    data = response_data(response)
    items = data if isinstance(data, list) else [data]  # a batch: one entry per created resource
    own_id = f"{action.partition('.')[0]}_id"
    for item in items:
        # A 204 has no body: the other ids in its path say what it was about (a role taken from a user).
        extra = {k: v for k, v in kwargs.items() if k.endswith("_id") and k != own_id} if status == 204 else None
        new_values = redact(item) if item is not None else extra or None
        _append(action, before, new_values, item, kwargs)


def _append(
    action: str, before: dict[str, Any] | None, new_values: Any, data: Any, kwargs: dict[str, Any] | None
) -> None:
    resource_type = action.partition(".")[0]
    resource_id = resource_id_of(resource_type, kwargs or {}, data)
    actor_type, actor_id = _actor(data)
    AuditEntry.append(
        tenant_of(resource_type, resource_id, data),
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        actor_type=actor_type,
        actor_id=actor_id,
        old_values=before,
        new_values=new_values if isinstance(new_values, dict) or new_values is None else {"value": new_values},
        decided_by=list(g.get("decided_by", [])),
        **_request_fields(),
    )


def record_denial(
    operation_id: str, permission: str, action: str, decided_by: tuple[str, ...], reason: str, kwargs: dict[str, Any]
) -> None:
    """Records a change the policy evaluator refused (a transaction of its own when none is open)."""
    from models.base import database

    resource_type = action.partition(".")[0]
    attempted = {"operation": operation_id or None, "attempted": action, "permission": permission, "reason": reason}
    if permission == action:
        del attempted["permission"]  # refused inside the handler: the finer permission is in the reason
    with database.atomic():
        principal = g.get("principal")
        actor_type, actor_id = _actor(None)
        AuditEntry.append(
            principal.tenant_id if principal is not None and principal.tenant_id else PLATFORM,
            action="authz.denied",
            resource_type=resource_type,
            resource_id=resource_id_of(resource_type, kwargs, None, own_account=False),
            actor_type=actor_type,
            actor_id=actor_id,
            old_values=None,
            new_values=attempted,
            decided_by=list(decided_by),
            **_request_fields(),
        )
