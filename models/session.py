"""Login sessions and their single-use refresh tokens."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any, cast

from peewee import JOIN, CharField, ModelSelect

from models.base import CompiledSelect, TenantScopedModel, UTCDateTimeField, database, utcnow
from models.tenant import Tenant
from models.user import User
from tenantry.crypto import lookup_hash
from tenantry.errors import NotFound
from tenantry.ids import new_id
from tenantry.times import format_datetime


class Session(TenantScopedModel):
    """One login: lives until logout, revocation, or its refresh tokens run out."""

    label = "session"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30, null=True)
    user_id = CharField(max_length=30)
    created_at = UTCDateTimeField(default=utcnow)
    expires_at = UTCDateTimeField()
    revoked_at = UTCDateTimeField(null=True)
    ip = CharField(max_length=64, null=True)
    user_agent = CharField(max_length=255, null=True)
    last_used_at = UTCDateTimeField(null=True)  # its last refresh (None: never refreshed)

    class Meta:
        table_name = "session"

    @classmethod
    def start(cls, user: User, ttl_seconds: int, ip: str | None, user_agent: str | None) -> tuple[Session, str]:
        """Opens a session for `user`; returns it and its first refresh token (shown once)."""
        with database.atomic():
            session = cls.create(
                id=new_id("ses"),
                tenant_id=user.tenant_id,
                user_id=user.id,
                expires_at=utcnow() + timedelta(seconds=ttl_seconds),
                ip=ip,
                user_agent=(user_agent or "")[:255] or None,
            )
            token = RefreshToken.issue(session)
        return session, token

    @classmethod
    def load_principal(cls, session_id: str, user_id: str) -> tuple[Session, User, Tenant | None] | None:
        """Returns (session, user, tenant) for an access token's claims in one query, or None."""
        rows = _PRINCIPAL.rows(session_id, user_id)
        if not rows:
            return None
        # CompiledSelect.rows keys each row's instances by their model class: these are a Session, a User, a Tenant.
        session, user = cast(Session, rows[0][Session]), cast(User, rows[0][User])
        tenant = cast("Tenant | None", rows[0].get(Tenant))
        return session, user, tenant if tenant is not None and tenant.id else None

    @property
    def is_live(self) -> bool:
        """True while the session is neither revoked nor expired."""
        return self.revoked_at is None and self.expires_at > utcnow()

    @classmethod
    def revoke(cls, session_id: str) -> None:
        """Revokes the session and every refresh token of it."""
        now = utcnow()
        with database.atomic():
            cls.update(revoked_at=now).where(cls.id == session_id, cls.revoked_at.is_null()).execute()
            (
                RefreshToken.update(used_at=now)
                .where(RefreshToken.session_id == session_id, RefreshToken.used_at.is_null())
                .execute()
            )

    @classmethod
    def revoke_all_for_user(cls, user_id: str, keep: str | None = None) -> None:
        """Revokes every live session of the user (password change, suspension, deletion, MFA reset),
        but `keep` (the caller's own, when they changed their password themselves)."""
        ids = [s.id for s in cls.select(cls.id).where(cls.user_id == user_id, cls.revoked_at.is_null()) if s.id != keep]
        for session_id in ids:
            cls.revoke(session_id)

    @classmethod
    def live_for_user(cls, user_id: str) -> ModelSelect[Session]:
        """Returns the user's sessions that are neither revoked nor expired, newest first."""
        return (
            cls.select()
            .where(cls.user_id == user_id, cls.revoked_at.is_null(), cls.expires_at > utcnow())
            .order_by(cls.created_at.desc(), cls.id.desc())
        )

    @classmethod
    def own(cls, user_id: str, session_id: str) -> Session:
        """Returns the user's live session `session_id`; NotFound for another user's, an ended or an unknown one."""
        session = cls.live_for_user(user_id).where(cls.id == session_id).first()
        if session is None:
            raise NotFound("You have no live session with this id.")
        return session

    def touch(self) -> None:
        """Stamps `last_used_at` (a refresh)."""
        self.last_used_at = utcnow()
        Session.update(last_used_at=self.last_used_at).where(Session.id == self.id).execute()

    def as_dict(self, current_session_id: str | None = None) -> dict[str, Any]:
        """Returns the session as the API shows it (never a token)."""
        return {
            "id": self.id,
            "created_at": format_datetime(self.created_at),
            "last_used_at": format_datetime(self.last_used_at) if self.last_used_at else None,
            "expires_at": format_datetime(self.expires_at),
            "ip": self.ip,
            "user_agent": self.user_agent,
            "current": self.id == current_session_id,
        }


class RefreshToken(TenantScopedModel):
    """A single-use refresh token, stored only as its SHA-256 hash."""

    label = "refresh token"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30, null=True)
    session_id = CharField(max_length=30)
    token_hash = CharField(max_length=64, unique=True)
    created_at = UTCDateTimeField(default=utcnow)
    expires_at = UTCDateTimeField()
    used_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "refresh_token"

    @classmethod
    def issue(cls, session: Session) -> str:
        """Returns a new refresh token for the session; only its hash is stored."""
        token = "rt_" + secrets.token_urlsafe(32)
        cls.create(
            id=new_id("rtk"),
            tenant_id=session.tenant_id,
            session_id=session.id,
            token_hash=lookup_hash(token),
            expires_at=session.expires_at,
        )
        return token

    @classmethod
    def find(cls, token: str) -> RefreshToken | None:
        """Returns the stored token matching `token`, if any."""
        return cls.get_or_none(cls.token_hash == lookup_hash(token))

    def spend(self) -> bool:
        """Marks the token used; returns False when it was already used (a replay or a race)."""
        # The conditional update is the compare-and-set that makes rotation safe under
        # concurrency: of two requests spending one token, exactly one updates a row.
        updated = (
            RefreshToken.update(used_at=utcnow())
            .where(RefreshToken.id == self.id, RefreshToken.used_at.is_null())
            .execute()
        )
        return updated == 1

    @property
    def expired(self) -> bool:
        """True once the token's lifetime is over."""
        return self.expires_at <= utcnow()


# Every authenticated request runs this, so its SQL is compiled once (see CompiledSelect).
_PRINCIPAL = CompiledSelect(
    lambda session_id, user_id: (
        Session.select(Session, User, Tenant)
        .join(User, on=(User.id == Session.user_id))
        .join(Tenant, JOIN.LEFT_OUTER, on=(Tenant.id == User.tenant_id))
        .where(Session.id == session_id, Session.user_id == user_id)
        .limit(1)
    ),
    2,
)
