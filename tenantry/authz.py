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
from flask import g, request

from models import Session, Tenant, User
from policies import Resource, Subject, evaluate
from tenantry.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    SessionRevoked,
    TenantRequired,
    TenantSuspended,
    UserSuspended,
)
from tenantry.spec import RESERVED_PERMISSIONS, handler_name

_TENANT_ID_RE = re.compile(r"^ten_[0-9A-HJKMNP-TV-Z]{26}$")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of this request."""

    user: User
    session_id: str
    tenant_id: str | None  # the tenant acted in: the user's own, or X-Tenant-ID for the operator

    @property
    def is_operator(self) -> bool:
        """True for the platform operator."""
        return bool(self.user.is_platform_operator)

    @property
    def subject(self) -> Subject:
        """The policy subject for this caller."""
        return Subject(id=self.user.id, tenant_id=self.tenant_id, roles=(self.user.role,),
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


def _load_principal() -> Principal:
    """Turns the verified bearer claims into a Principal, checking the session and account are live."""
    token_info = connexion.context.context.get("token_info") or {}
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
    return Principal(user=user, session_id=session.id, tenant_id=acting)


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
                info["user_id"] = principal.user.id
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
