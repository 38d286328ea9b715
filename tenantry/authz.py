"""The enforcement point: who is calling, in which tenant, and may they run this operation.

Every operation declares `x-permission` in the spec. The resolver wraps each handler so that,
before it runs, the credential is turned into a `Principal` (session live, user and tenant
active), the acting tenant is fixed, and the policy evaluator decides on the permission with the
tenant's role grants and enabled policies. Where the operation targets one resource (a path
parameter `<resource>_id` for the permission's resource), that row is loaded here, in the
tenant, and the decision sees its attributes; the handler gets it from `target()`. A create
operation's decision sees the request body as the resource to be. Handlers ask for a finer
decision (with attributes only they know) through `authorize(action, resource)`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import connexion
from connexion.resolver import Resolution, Resolver
from flask import current_app, g, request

from models import (
    ApiKey,
    Domain,
    Event,
    IntegrationProvider,
    Job,
    Policy,
    Role,
    Session,
    Tenant,
    User,
    WebhookEndpoint,
)
from models.base import use_livemode
from policies import Decision, Resource, Subject, can_grant, evaluate, may_allow
from tenantry import audit
from tenantry.access import TenantAccess, access_for
from tenantry.db import scope_rows_to
from tenantry.errors import (
    ApiError,
    AuthenticationFailed,
    MfaEnrollmentRequired,
    NotFound,
    PermissionDenied,
    SessionRevoked,
    TenantRequired,
    TenantSuspended,
    UserSuspended,
)
from tenantry.mutation import run_changing
from tenantry.net import client_ip, parse_networks
from tenantry.paging import paginated
from tenantry.spec import RESERVED_PERMISSIONS, handler_name

_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_TENANT_ID_RE = re.compile(r"^ten_[0-9A-HJKMNP-TV-Z]{26}$")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of this request: a user's session, or an API key."""

    tenant_id: str | None  # the tenant acted in: the credential's own, or X-Tenant-ID for the operator
    user: User | None = None
    session_id: str | None = None
    key: ApiKey | None = None
    tenant: Tenant | None = None  # the row of the tenant acted in (None for the operator outside one)
    #: For a key: the user it acts for (its maker, or its parent key's), None when none was recorded.
    creator: User | None = None
    #: For a key: True when another key made it.
    delegated: bool = False

    @property
    def id(self) -> str:
        """The id of the user or key behind the request."""
        # A principal is a user's or a key's: `key` is set whenever `user` is None.
        return self.user.id if self.user is not None else self.key.id  # type: ignore[union-attr]

    @property
    def home_tenant_id(self) -> str | None:
        """The credential's own tenant (None for the platform operator)."""
        # A principal is a user's or a key's: `key` is set whenever `user` is None.
        return self.user.tenant_id if self.user is not None else self.key.tenant_id  # type: ignore[union-attr]

    @property
    def livemode(self) -> bool:
        """False for a test key, whose requests work on test data; True for every other credential."""
        return self.key is None or self.key.mode == "live"

    @property
    def is_operator(self) -> bool:
        """True for the platform operator."""
        return self.user is not None and bool(self.user.is_platform_operator)

    @cached_property
    def access(self) -> TenantAccess | None:
        """The acting tenant's access snapshot (roles, grants, policies), or None outside a tenant."""
        return access_for(self.tenant) if self.tenant is not None else None

    @cached_property
    def subject(self) -> Subject:
        """The policy subject for this caller, with the tenant's grants and the caller's attributes.

        A key's subject carries its creator's subject as they stand now: the key's permissions are
        its scopes that the creator holds, its rank and the self-change rules are the creator's.
        """
        access = self.access
        grants = access.role_grants if access is not None else {}
        if self.key is not None:
            creator = self._user_subject(self.creator) if self.creator is not None else None
            return Subject(
                id=self.key.id,
                tenant_id=self.tenant_id,
                scopes=frozenset(self.key.permissions),
                role_grants=grants,
                attributes={"mode": self.key.mode, "name": self.key.name},
                creator=creator,
                delegated=self.delegated,
            )
        assert self.user is not None
        return self._user_subject(self.user)

    def _user_subject(self, user: User) -> Subject:
        """The policy subject of `user` in the acting tenant: their roles there, or the operator's standing."""
        access = self.access
        grants = access.role_grants if access is not None else {}
        operator = bool(user.is_platform_operator)
        roles = access.role_names(user) if access is not None and not operator else (user.role,)
        return Subject(
            id=user.id,
            tenant_id=self.tenant_id,
            roles=roles,
            is_operator=operator,
            role_grants=grants,
            attributes={"email": user.email, "status": user.status, "mfa_enabled": bool(user.mfa_enabled)},
        )


def current_principal() -> Principal:
    """Returns the authenticated caller; raises AuthenticationFailed on a public operation."""
    principal = g.get("principal")
    if principal is None:
        raise AuthenticationFailed()
    return principal


def acting_tenant() -> str:
    """Returns the id of the tenant this request acts in, or raises TenantRequired (operator without X-Tenant-ID)."""
    tenant_id = current_principal().tenant_id
    if tenant_id is None:
        raise TenantRequired("Send X-Tenant-ID to act inside a tenant.")
    return tenant_id


def current_access() -> TenantAccess:
    """Returns the acting tenant's access snapshot; raises TenantRequired outside a tenant."""
    acting_tenant()
    access = current_principal().access
    assert access is not None  # a principal acting in a tenant always has its row
    return access


def caller_address() -> str | None:
    """Returns the client's address: the socket's, or the first untrusted hop behind trusted proxies."""
    settings = current_app.extensions["tenantry"].settings
    return client_ip(
        request.remote_addr, request.headers.get("X-Forwarded-For"), parse_networks(settings.trusted_proxies)
    )


def request_context() -> dict[str, Any]:
    """Returns the context conditions see: `now`, the client `ip`, the credential's `mode`."""
    principal = g.get("principal")
    ip = caller_address()
    mode = principal.key.mode if principal is not None and principal.key is not None else "live"
    return {"now": datetime.now(UTC), "ip": ip, "mode": mode}


def decide(action: str, resource: Resource | None = None) -> Decision:
    """Returns the evaluator's decision for the caller, with the acting tenant's policies on `action`."""
    principal = current_principal()
    access = principal.access
    policies = access.policies_for(action) if access is not None else ()
    return evaluate(principal.subject, action, resource, request_context(), policies)


def authorize(action: str, resource: Resource | None = None) -> None:
    """Raises PermissionDenied unless the policy evaluator allows `action` on `resource`."""
    decision = decide(action, resource)
    if not decision.allowed:
        raise PermissionDenied(decision.reason, decided_by=decision.decided_by)
    audit.remember_decision(decision)


def target() -> Any:
    """Returns the row the operation targets, loaded in the tenant by the enforcement point."""
    return g.target


def visible_tenant(tenant_id: str) -> Tenant:
    """Returns the tenant if the caller may see it: the operator any, others only their own (else 404)."""
    principal = current_principal()
    if not principal.is_operator and principal.home_tenant_id != tenant_id:
        raise NotFound("No tenant with this id.")
    if principal.tenant is not None and principal.tenant.id == tenant_id:
        return principal.tenant
    return Tenant.get_by_id_or_404(tenant_id)


def _in_tenant(model: Any, param: str) -> Callable[[dict[str, Any]], Any]:
    return lambda kwargs: model.get_for_tenant(acting_tenant(), kwargs[param])


#: How the enforcement point loads the row an operation targets, by the permission's resource.
LOADERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "user": _in_tenant(User, "user_id"),
    "key": _in_tenant(ApiKey, "key_id"),
    "integration": _in_tenant(IntegrationProvider, "integration_id"),
    "role": _in_tenant(Role, "role_id"),
    "policy": _in_tenant(Policy, "policy_id"),
    "event": _in_tenant(Event, "event_id"),
    "job": _in_tenant(Job, "job_id"),
    "webhook": _in_tenant(WebhookEndpoint, "webhook_id"),
    "tenant": lambda kwargs: visible_tenant(kwargs["tenant_id"]),
    "domain": lambda kwargs: Domain.get_for_tenant(visible_tenant(kwargs["tenant_id"]).id, kwargs["domain_id"]),
}

#: Request fields a decision never sees as resource attributes.
_SECRET_FIELDS = frozenset({"password", "secret", "secret_key", "mfa_code", "code"})


def _operation_resource(permission: str, operation_id: str, kwargs: dict[str, Any]) -> Resource | None:
    """Returns the resource the operation acts on: the targeted row, a create's body, or None (a list)."""
    kind = permission.partition(":")[0]
    loader = LOADERS.get(kind)
    if loader is not None and f"{kind}_id" in kwargs:
        row = loader(kwargs)
        g.target = row
        tenant_id = row.id if kind == "tenant" else row.tenant_id
        return Resource(kind, row.id, tenant_id, row.as_dict())
    body = kwargs.get("body")
    if operation_id.startswith("create_") and isinstance(body, dict):
        attributes = {k: v for k, v in body.items() if k not in _SECRET_FIELDS}
        return Resource(kind, None, current_principal().tenant_id, attributes)
    return None


def authorize_grant(permissions: frozenset[str]) -> None:
    """Raises PermissionDenied unless the caller holds every one of `permissions` (to hand them out)."""
    decision = can_grant(current_principal().subject, permissions)
    if not decision.allowed:
        raise PermissionDenied(decision.reason)


def authorize_handover(key: ApiKey) -> None:
    """Raises PermissionDenied unless the caller could hold `key` themselves (its new secret goes to
    them, as on rotation): it grants no permission they lack and acts with no rank above theirs
    (a key acts with its creator's rank, an admin's at most)."""
    caller = current_principal()
    subject = caller.subject
    decision = can_grant(subject, frozenset(key.permissions))
    if not decision.allowed:
        raise PermissionDenied(decision.reason)
    standing = ApiKey.standing_of(key.id)
    held = Principal(
        tenant_id=key.tenant_id,
        key=key,
        tenant=caller.tenant,
        creator=standing.creator if standing is not None else None,
        delegated=standing is not None and standing.parent is not None,
    ).subject
    if held.rank > subject.rank:
        raise PermissionDenied("You cannot take a key that acts with a role above yours.")


def _key_principal(secret: str) -> Principal:
    """Turns an API key's secret into a Principal: known, active, its creator still standing in its
    tenant, allowed from this address. The key, its creator and its tenant are read in one query."""
    standing = ApiKey.find_live(secret)
    if standing is None or standing.key.status != "active":
        raise AuthenticationFailed("The API key is unknown, revoked or expired.")
    key, tenant = standing.key, standing.tenant
    if tenant is None:
        raise AuthenticationFailed("The API key is unknown, revoked or expired.")
    refusal = standing.refusal()
    if refusal is not None:
        # Like a revoked key: the credential no longer stands for anyone who may act.
        raise AuthenticationFailed(refusal)
    if not key.admits(caller_address()):
        raise PermissionDenied("This API key may not be used from this address.")
    if tenant.status != "active":
        raise TenantSuspended()
    header = request.headers.get("X-Tenant-ID")
    if header and header != key.tenant_id:
        raise PermissionDenied("X-Tenant-ID may only name your own tenant.")
    key.touch()
    return Principal(
        tenant_id=key.tenant_id, key=key, tenant=tenant, creator=standing.creator, delegated=standing.parent is not None
    )


def _load_principal() -> Principal:
    """Turns the verified credential into a Principal, checking the session and account are live."""
    token_info = connexion.context.context.get("token_info") or {}
    if token_info.get("kind") == "api_key":
        return _key_principal(token_info["secret"])
    claims = token_info.get("claims")
    if not claims:
        raise AuthenticationFailed()
    loaded = Session.load_principal(claims["sid"], claims["sub"])
    if loaded is None:
        raise SessionRevoked()
    session, user, tenant = loaded
    if not session.is_live:
        raise SessionRevoked()
    if user.status != "active":
        raise UserSuspended()
    if tenant is not None and tenant.status != "active":
        raise TenantSuspended()
    acting, acting_row = user.tenant_id, tenant
    header = request.headers.get("X-Tenant-ID")
    if header:
        if user.is_platform_operator:
            acting_row = Tenant.get_or_none(Tenant.id == header) if _TENANT_ID_RE.match(header) else None
            if acting_row is None:
                raise NotFound("No tenant with the id in X-Tenant-ID.")
            acting = header
        elif header != user.tenant_id:
            raise PermissionDenied("X-Tenant-ID may only name your own tenant.")
    return Principal(tenant_id=acting, user=user, session_id=session.id, tenant=acting_row)


def principal_or_none() -> Principal | None:
    """Returns the request's caller, loading it once per request; None when the credential is refused.

    The rate limiter asks before the operation runs; a refused credential is then answered by
    the enforcement point, which loads it again and raises the precise error.
    """
    if "principal" in g:
        return g.principal
    if g.get("principal_refused") or connexion.context.context.get("token_info") is None:
        return None
    try:
        g.principal = _load_principal()
    except ApiError:
        g.principal_refused = True
        return None
    return g.principal


def credential_checker() -> tuple[float | None, Callable[[], bool]]:
    """Returns (when the request's access token expires, as a Unix time, or None; a check that answers
    whether its credential is still good): for a long-lived response (the event stream) to end
    when the key is revoked, the session logged out, or the user or tenant suspended."""
    principal = current_principal()
    claims = (connexion.context.context.get("token_info") or {}).get("claims") or {}
    expires = float(claims["exp"]) if "exp" in claims else None
    if principal.key is not None:
        key_id = principal.key.id

        def key_live() -> bool:
            # What _key_principal refuses, re-read: the key, its creator and its tenant.
            standing = ApiKey.standing_of(key_id)
            return (
                standing is not None
                and standing.key.status == "active"
                and standing.refusal() is None
                and standing.tenant is not None
                and standing.tenant.status == "active"
            )

        return expires, key_live
    session_id, user_id = principal.session_id, principal.id

    def session_live() -> bool:
        loaded = Session.load_principal(session_id, user_id) if session_id else None
        if loaded is None:
            return False
        session, user, tenant = loaded
        return session.is_live and user.status == "active" and (tenant is None or tenant.status == "active")

    return expires, session_live


def _require_mfa_enrollment(principal: Principal) -> None:
    """Raises MfaEnrollmentRequired for an owner or admin without MFA in a tenant that requires it."""
    user, tenant = principal.user, principal.tenant
    if (
        user is not None
        and tenant is not None
        and not user.mfa_enabled
        and user.role in {"owner", "admin"}
        and not user.is_platform_operator
        and (tenant.settings or {}).get("require_mfa_for_admins")
    ):
        raise MfaEnrollmentRequired()


def _check_permission(principal: Principal, permission: str, operation_id: str, kwargs: dict[str, Any]) -> None:
    """Raises PermissionDenied unless the evaluator allows the operation (with its resource loaded)."""
    _require_mfa_enrollment(principal)
    access = principal.access
    policies = access.policies_for(permission) if access is not None else ()
    if not may_allow(principal.subject, permission, policies):
        # Refused before any row is loaded: the answer does not tell whether it exists.
        raise PermissionDenied(f"This credential lacks the permission {permission}.")
    authorize(permission, _operation_resource(permission, operation_id, kwargs))


def enforce(
    func: Callable[..., Any],
    operation_id: str,
    permission: str,
    audit_action: str | None = None,
    event_type: str | None = None,
    takes_keys: bool = True,
) -> Callable[..., Any]:
    """Returns `func` wrapped so the operation's permission is checked before it runs.

    A changing operation then runs through tenantry.mutation (one transaction, idempotency, its
    audit entry as `audit_action` and its domain event as `event_type`); a refused one is
    recorded as `authz.denied`.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        info = request.environ.get("asgi.scope", {}).get("state", {}).get("tenantry")
        if info is not None:
            info["operation"] = operation_id
        g.operation_id = operation_id
        if permission != "public":
            if not takes_keys and (connexion.context.context.get("token_info") or {}).get("kind") == "api_key":
                # `Authorization: Bearer sk_...` where the spec takes access tokens only (the account's own).
                raise AuthenticationFailed("This operation takes an access token from login, not an API key.")
            principal = g.principal if "principal" in g else _load_principal()
            g.principal = principal
            use_livemode(principal.livemode)
            if principal.tenant_id is not None and not principal.is_operator:
                # From here on the database shows this request its tenant's rows only (PostgreSQL
                # row-level security), whatever a handler asks for. The operator is above tenants.
                scope_rows_to(principal.tenant_id)
                g.rows_scoped = True
            if info is not None:
                info["tenant_id"] = principal.tenant_id
                info["user_id" if principal.user is not None else "key_id"] = principal.id
            if permission not in RESERVED_PERMISSIONS:
                try:
                    _check_permission(principal, permission, operation_id, kwargs)
                except PermissionDenied as exc:
                    if audit_action and type(exc) is PermissionDenied:
                        audit.record_denial(operation_id, permission, audit_action, exc.decided_by, exc.message, kwargs)
                    raise
        if request.method in _CHANGING:
            return run_changing(func, args, kwargs, caller_address(), audit_action, event_type)
        return func(*args, **kwargs)

    return wrapper


class EnforcingResolver(Resolver):
    """Resolves `list_users` (tag `users`) to `handlers.users.list_users`, wrapped by `enforce`."""

    def resolve(self, operation: Any) -> Resolution:
        """Returns the wrapped handler for the operation."""
        operation_id = operation.operation_id
        permission = operation._operation.get("x-permission")
        if not permission:
            raise ValueError(f"operation {operation_id} declares no x-permission")
        audit_action = operation._operation.get("x-audit-action") or None
        # The event is the audit action unless the operation names another, or none (false).
        event_type = operation._operation.get("x-event-type", audit_action) or None
        security = operation._operation.get("security")
        takes_keys = security is None or any("apiKeyAuth" in requirement for requirement in security)
        func = paginated(
            self.resolve_function_from_operation_id(handler_name(operation._operation)), operation._operation
        )
        return Resolution(enforce(func, operation_id, permission, audit_action, event_type, takes_keys), operation_id)
