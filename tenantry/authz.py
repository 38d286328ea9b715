"""The enforcement point: who is calling, in which tenant, and may they run this operation.

Every operation declares `x-permission` in the spec. The resolver wraps each handler so that,
before it runs, the credential is turned into a `Principal` (session live, user and tenant
active), the acting tenant is fixed, and the policy evaluator decides on the permission. Handlers
ask for a finer decision on a loaded row with `authorize(action, resource)`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import connexion
from connexion.resolver import Resolution, Resolver
from flask import current_app, g, request

from models import ApiKey, Session, Tenant, User
from policies import Resource, Subject, can_grant, evaluate
from tenantry.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    SessionRevoked,
    TenantRequired,
    TenantSuspended,
    UserSuspended,
)
from tenantry.net import client_ip, parse_networks
from tenantry.spec import RESERVED_PERMISSIONS, handler_name

_TENANT_ID_RE = re.compile(r"^ten_[0-9A-HJKMNP-TV-Z]{26}$")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of this request: a user's session, or an API key."""

    tenant_id: str | None  # the tenant acted in: the credential's own, or X-Tenant-ID for the operator
    user: User | None = None
    session_id: str | None = None
    key: ApiKey | None = None

    @property
    def id(self) -> str:
        """The id of the user or key behind the request."""
        return self.user.id if self.user is not None else self.key.id  # type: ignore[union-attr]

    @property
    def home_tenant_id(self) -> str | None:
        """The credential's own tenant (None for the platform operator)."""
        return self.user.tenant_id if self.user is not None else self.key.tenant_id  # type: ignore[union-attr]

    @property
    def is_operator(self) -> bool:
        """True for the platform operator."""
        return self.user is not None and bool(self.user.is_platform_operator)

    @property
    def subject(self) -> Subject:
        """The policy subject for this caller."""
        if self.key is not None:
            return Subject(id=self.key.id, tenant_id=self.tenant_id, scopes=frozenset(self.key.permissions))
        return Subject(id=self.id, tenant_id=self.tenant_id, roles=(self.user.role,),  # type: ignore[union-attr]
                       is_operator=self.is_operator)


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


def authorize(action: str, resource: Resource | None = None, **context: Any) -> None:
    """Raises PermissionDenied unless the policy evaluator allows `action` on `resource`."""
    decision = evaluate(current_principal().subject, action, resource, context)
    if not decision.allowed:
        raise PermissionDenied(decision.reason)


def authorize_grant(permissions: frozenset[str]) -> None:
    """Raises PermissionDenied unless the caller holds every one of `permissions` (to hand them out)."""
    decision = can_grant(current_principal().subject, permissions)
    if not decision.allowed:
        raise PermissionDenied(decision.reason)


def _key_principal(secret: str) -> Principal:
    """Turns an API key's secret into a Principal: known, active, allowed from this address."""
    key = ApiKey.find_live(secret)
    if key is None or key.status != "active":
        raise AuthenticationFailed("The API key is unknown, revoked or expired.")
    settings = current_app.extensions["tenantry"].settings
    address = client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"),
                        parse_networks(settings.trusted_proxies))
    if not key.admits(address):
        raise PermissionDenied("This API key may not be used from this address.")
    tenant = Tenant.get_or_none(Tenant.id == key.tenant_id)
    if tenant is None:
        raise AuthenticationFailed("The API key is unknown, revoked or expired.")
    if tenant.status != "active":
        raise TenantSuspended()
    header = request.headers.get("X-Tenant-ID")
    if header and header != key.tenant_id:
        raise PermissionDenied("X-Tenant-ID may only name your own tenant.")
    key.touch()
    return Principal(tenant_id=key.tenant_id, key=key)


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
    acting = user.tenant_id
    header = request.headers.get("X-Tenant-ID")
    if header:
        if user.is_platform_operator:
            if not _TENANT_ID_RE.match(header) or Tenant.get_or_none(Tenant.id == header) is None:
                raise NotFound("No tenant with the id in X-Tenant-ID.")
            acting = header
        elif header != user.tenant_id:
            raise PermissionDenied("X-Tenant-ID may only name your own tenant.")
    return Principal(tenant_id=acting, user=user, session_id=session.id)


def enforce(func: Callable[..., Any], operation_id: str, permission: str) -> Callable[..., Any]:
    """Returns `func` wrapped so the operation's permission is checked before it runs."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        info = request.environ.get("asgi.scope", {}).get("state", {}).get("tenantry")
        if info is not None:
            info["operation"] = operation_id
        if permission != "public":
            principal = _load_principal()
            g.principal = principal
            if info is not None:
                info["tenant_id"] = principal.tenant_id
                info["user_id" if principal.user is not None else "key_id"] = principal.id
            if permission not in RESERVED_PERMISSIONS:
                authorize(permission)
        return func(*args, **kwargs)

    return wrapper


class EnforcingResolver(Resolver):
    """Resolves `users.list_users` to `handlers.users.list_users`, wrapped by `enforce`."""

    def resolve(self, operation: Any) -> Resolution:
        """Returns the wrapped handler for the operation."""
        operation_id = operation.operation_id
        permission = operation._operation.get("x-permission")
        if not permission:
            raise ValueError(f"operation {operation_id} declares no x-permission")
        func = self.resolve_function_from_operation_id(handler_name(operation_id))
        return Resolution(enforce(func, operation_id, permission), operation_id)
