"""The request's context: who is calling, in which tenant, from where, under which settings.

The enforcement point (tenantry.authz) puts the caller in `g.principal`; everything else that
needs to know about the request (audit, events, limits, handlers) reads it here. It has a module
of its own so the recorders need not import the enforcement point (which imports them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from flask import current_app, g, request

from models.api_key import ApiKey
from models.tenant import Tenant
from models.user import User
from policies import Subject
from tenantry.access import TenantAccess, access_for
from tenantry.errors import AuthenticationFailed, TenantRequired
from tenantry.net import client_ip, parse_networks


def settings() -> Any:
    """Returns the running app's settings (tenantry.settings.Settings, with its registered sections)."""
    return current_app.extensions["tenantry"].settings


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
    return client_ip(
        request.remote_addr, request.headers.get("X-Forwarded-For"), parse_networks(settings().trusted_proxies)
    )


def request_context() -> dict[str, Any]:
    """Returns the context conditions see: `now`, the client `ip`, the credential's `mode`."""
    principal = g.get("principal")
    ip = caller_address()
    mode = principal.key.mode if principal is not None and principal.key is not None else "live"
    return {"now": datetime.now(UTC), "ip": ip, "mode": mode}
