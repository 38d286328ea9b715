"""Operations that span several aggregates: tenants with their roles, users with their sessions.

Tenant, user, session, role and MFA rows each have a model of their own that imports none of its
siblings; what must change several of them in one transaction (create a tenant with its built-in
roles, delete a user with their sessions, self-signup, refresh-token rotation) lives here.
"""

from __future__ import annotations

from typing import Any

from models.access import Role, UserRole
from models.base import database
from models.mfa import RecoveryCode
from models.session import RefreshToken, Session
from models.tenant import DEFAULT_SETTINGS, Domain, Tenant
from models.user import User
from tenantry.errors import AuthenticationFailed, SessionRevoked
from tenantry.ids import new_id


def register(tenant_name: str, tenant_domain: str | None, owner: User, plan: str = "standard") -> tuple[Tenant, User]:
    """Creates a tenant, its optional primary domain and its owner in one transaction.

    Raises Conflict (and writes nothing) when the domain belongs to another tenant.
    """
    tenant, _ = create_tenant(tenant_name, tenant_domain, owner, plan=plan)
    return tenant, owner  # the same object create_tenant returns, typed as present


def create_tenant(
    name: str,
    domain: str | None,
    owner: User | None,
    status: str = "active",
    settings: dict[str, str] | None = None,
    plan: str = "standard",
    rate_limits: dict[str, int] | None = None,
) -> tuple[Tenant, User | None]:
    """Creates a tenant with its optional primary domain (unverified) and first owner, in one transaction.

    Raises Conflict (and writes nothing) when the domain belongs to another tenant.
    """
    with database.atomic():
        tenant = Tenant.create(
            id=new_id("ten"),
            name=name,
            status=status,
            plan=plan,
            rate_limits=rate_limits,
            settings={**DEFAULT_SETTINGS, **(settings or {})},
        )
        Role.seed_builtin(tenant.id)
        if owner is not None:
            owner.tenant_id = tenant.id
            owner.role = "owner"
            User.insert_many_checked([owner])
        if domain:
            Domain.upsert(tenant.id, domain, is_primary=True, verified=False)
    return tenant, owner


def delete_tenant(tenant: Tenant) -> None:
    """Deletes the tenant and every row that belongs to it, in one transaction.

    One mechanism: every table with a tenant's rows reaches `tenant (id)` by ON DELETE CASCADE
    references (tests/api/test_schema.py holds each new table to it), so deleting the tenant's row
    deletes them all, and a table a new domain adds needs no line here. The audit trail, usage
    counters, idempotency records and the event outbox keep no reference on purpose: they outlive
    the tenant, as they always have.
    """
    with database.atomic():
        tenant.delete_instance()


def delete_user(user: User) -> None:
    """Deletes the user with their sessions, refresh tokens, role assignments and recovery codes.

    Raises Conflict (and deletes nothing) when they are the tenant's last active owner.
    """
    with database.atomic():
        user.check_deletable()
        UserRole.remove_user(user.tenant_id, user.id)
        RecoveryCode.delete().where(RecoveryCode.user_id == user.id).execute()
        sessions = Session.select(Session.id).where(Session.user_id == user.id)
        RefreshToken.delete().where(RefreshToken.session_id.in_(sessions)).execute()
        Session.delete().where(Session.user_id == user.id).execute()
        user.delete_instance()


def change_user(
    user: User, changes: dict[str, Any], password_hash: str | None = None, keep_session: str | None = None
) -> None:
    """Applies `changes` (email, names, role, status, external_id, metadata, phone) and an optional new
    password hash to `user`.

    Raises Conflict when it would leave the tenant without an active owner, or when the email is
    taken. A new password or a suspension revokes the user's sessions in the same transaction (all
    but `keep_session`, the caller's own when they change their own password).
    """
    with database.atomic():
        if user.assign(changes, password_hash):
            Session.revoke_all_for_user(user.id, keep=None if user.status == "suspended" else keep_session)


_ENDED = "The session behind this refresh token has ended (logged out, revoked or expired); log in again."


def own_session_of(token: str, user_id: str) -> str:
    """Returns the id of the live session `token` (an unspent refresh token) belongs to, when it is `user_id`'s.

    Raises AuthenticationFailed, the same for an unknown, spent or expired token and another
    account's, so nothing is learnt about other sessions.
    """
    stored = RefreshToken.find(token)
    session = Session.get_or_none(Session.id == stored.session_id) if stored is not None else None
    if (
        stored is None
        or session is None
        or session.user_id != user_id
        or not session.is_live
        or stored.used_at is not None
        or stored.expired
    ):
        raise AuthenticationFailed("The refresh token is invalid.")
    return session.id


def rotate_refresh_token(token: str) -> tuple[Session, str]:
    """Spends `token` and returns its session with a new refresh token.

    A token that was already spent is a replay: the whole session is revoked and SessionRevoked
    raised. A token that was still unspent when its session ended (logout, revocation) is no
    replay: SessionRevoked says the session has ended. An unknown token raises
    AuthenticationFailed.
    """
    stored = RefreshToken.find(token)
    if stored is None:
        raise AuthenticationFailed("The refresh token is invalid.")
    with database.atomic():
        spent = stored.used_at is None and stored.spend()
        if spent:
            session = Session.get_or_none(Session.id == stored.session_id)
            if session is None or not session.is_live or stored.expired:
                raise SessionRevoked(_ENDED)
            session.touch()
            return session, RefreshToken.issue(session)
    # Spent before: by a rotation (a replay), or by the end of its session, which spends every
    # unspent token at the moment it is revoked (Session.revoke).
    current = RefreshToken.get_or_none(RefreshToken.id == stored.id)
    session = Session.get_or_none(Session.id == stored.session_id)
    if session is None or (
        session.revoked_at is not None
        and current is not None
        and current.used_at is not None
        and current.used_at >= session.revoked_at
    ):
        raise SessionRevoked(_ENDED)
    # Outside the transaction above, so the revocation is committed even though we refuse.
    Session.revoke(stored.session_id)
    raise SessionRevoked("This refresh token was already used; the session is now revoked.")
