"""Attribute-based policies, and the evaluator's answer to "what would you decide?"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Response

from models import Policy, User
from policies import ConditionError, Resource, Subject, evaluate, normalize
from policies.permissions import singular
from tenantry.access import TenantAccess, compile_policy, known_permissions
from tenantry.authz import acting_tenant, authorize, current_access, target
from tenantry.envelope import no_content, one, page
from tenantry.errors import Detail, ValidationFailed
from tenantry.times import parse_rfc3339


def _checked(policy: Policy, fields: dict[str, Any]) -> Policy:
    """Applies `fields` to `policy` once its target is known, its conditions parse, and an allow is grantable."""
    fields = dict(fields)
    if "target" in fields:
        fields["target"] = {
            "resource": singular(fields["target"]["resource"].lower()),
            "action": fields["target"]["action"].lower(),
        }
    policy.assign(fields)
    if policy.permission not in known_permissions(current_access()):
        raise ValidationFailed(
            "The request body is invalid.",
            [Detail(f"names no permission of this tenant ({policy.permission})", "target")],
        )
    try:
        compile_policy(policy)
    except ConditionError as exc:
        field = f"rules.conditions[{exc.index}]" + (f".{exc.key}" if exc.key else "")
        raise ValidationFailed("A condition does not parse.", [Detail(f"{exc.message}", field)]) from None
    if policy.effect == "allow":
        # An allow policy grants its target: only someone who holds it may write one.
        authorize(policy.permission)
    return policy


def list_policies(
    is_enabled: bool | None = None, resource: str | None = None, limit: int = 20, offset: int = 0
) -> dict[str, Any]:
    """The tenant's policies, oldest first."""
    resource = singular(resource.lower()) if resource else None
    return page(Policy.search(acting_tenant(), is_enabled, resource), limit, offset, Policy.as_dict)


def create_policy(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A new policy (201)."""
    policy = _checked(Policy.build(acting_tenant()), {"is_enabled": True, "description": None, **body})
    policy.save_checked(created=True)
    return one(policy.as_dict(), 201, location=f"/v1/policies/{policy.id}")


def get_policy(policy_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One policy."""
    return one(target().as_dict())


def update_policy(policy_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Changes the fields given."""
    policy = _checked(target(), body)
    policy.save_checked()
    return one(policy.as_dict())


def replace_policy(policy_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Replaces every writable field."""
    policy = _checked(target(), {"description": None, **body})
    policy.save_checked()
    return one(policy.as_dict())


def delete_policy(policy_id: str) -> Response:
    """Deletes the policy (204)."""
    target().delete_checked()
    return no_content()


def _subject(raw: Any, access: TenantAccess) -> Subject:
    """Returns the subject to decide for: a user of the tenant (loaded), or the attributes given."""
    attributes = {"user_id": raw} if isinstance(raw, str) else dict(raw)
    tenant_id = acting_tenant()
    user_id = attributes.pop("user_id", None)
    roles = list(attributes.pop("roles", []))
    if "role" in attributes:
        roles.insert(0, attributes.pop("role"))
    if user_id is not None:
        user = User.get_for_tenant(tenant_id, user_id)
        roles = [*access.role_names(user), *roles]
        attributes = {"email": user.email, "status": user.status, "mfa_enabled": bool(user.mfa_enabled), **attributes}
    else:
        user_id = "subject"
    return Subject(
        id=user_id,
        tenant_id=tenant_id,
        roles=tuple(dict.fromkeys(roles)),
        role_grants=access.role_grants,
        attributes=attributes,
    )


def _context(raw: dict[str, Any] | None) -> dict[str, Any]:
    context = dict(raw or {})
    try:
        context["now"] = parse_rfc3339(context["now"]) if "now" in context else datetime.now(UTC)
    except ValueError:
        raise ValidationFailed(
            "The request body is invalid.", [Detail("is not an RFC 3339 date-time", "context.now")]
        ) from None
    context.setdefault("mode", "live")
    return context


def _source(entry: str, access: TenantAccess, names: dict[str, str]) -> dict[str, str]:
    kind, _, ident = entry.partition(":")
    if kind == "policy":
        return {"type": "policy", "id": ident, "name": names.get(ident, ident)}
    if kind == "role":
        role_id = access.role_ids_by_name.get(ident.casefold(), ident)
        return {"type": "role", "id": role_id, "name": ident}
    if kind == "scope":
        return {"type": "scope", "id": ident, "name": ident}
    if kind == "operator":
        return {"type": "operator", "id": "operator", "name": "platform operator"}
    return {"type": "rule", "id": ident or kind, "name": ident or kind}


def evaluate_policies(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """What the evaluator would decide, and why."""
    access = current_access()
    try:
        action = normalize(body["action"])
    except ValueError:
        raise ValidationFailed(
            "The request body is invalid.", [Detail("is not a permission (<resource>:<action>)", "action")]
        ) from None
    if body.get("include_disabled"):
        rows = Policy.search(access.tenant_id).where(
            Policy.resource == action.partition(":")[0], Policy.action == action.partition(":")[2]
        )
        policies = tuple(compile_policy(row) for row in rows)
    else:
        policies = access.policies_for(action)
    attributes = dict(body["resource"])
    kind = singular(str(attributes.pop("type")).lower())
    resource = Resource(kind, attributes.pop("id", None), access.tenant_id, attributes)
    decision = evaluate(_subject(body["subject"], access), action, resource, _context(body.get("context")), policies)
    names = {p.id: p.name for p in policies}
    return one(
        {
            "decision": "allow" if decision.allowed else "deny",
            "reason": decision.reason,
            "decided_by": [_source(entry, access, names) for entry in decision.decided_by],
            "policies": [
                {
                    "id": o.policy.id,
                    "name": o.policy.name,
                    "effect": o.policy.effect,
                    "is_enabled": o.policy.is_enabled,
                    "applied": o.applied,
                    "failed_condition": o.failed_condition,
                    "error": o.error,
                }
                for o in decision.outcomes
            ],
        }
    )
