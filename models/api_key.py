"""Scoped API keys: only a SHA-256 of the secret and a short display prefix are stored."""

from __future__ import annotations

import ipaddress
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from peewee import JOIN, CharField, fn

from models.base import CompiledSelect, JSONField, TenantScopedModel, UTCDateTimeField, database, utcnow
from models.tenant import Tenant
from models.user import User
from tenantry.crypto import lookup_hash
from tenantry.errors import Conflict, Detail, ValidationFailed
from tenantry.ids import new_id
from tenantry.times import format_datetime

_ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 40  # 40 characters of base 62: about 238 bits
LAST_USED_RESOLUTION = timedelta(minutes=1)


def normalize_ranges(ranges: list[str]) -> list[str]:
    """Returns the CIDR ranges in canonical form (`10.0.0.1/8` -> `10.0.0.0/8`), or raises ValidationFailed."""
    out, details = [], []
    for index, cidr in enumerate(ranges):
        try:
            out.append(str(ipaddress.ip_network(cidr, strict=False)))
        except ValueError:
            details.append(Detail("is not an address range in CIDR notation", f"allowed_ips[{index}]"))
    if details:
        raise ValidationFailed("The request body is invalid.", details)
    return list(dict.fromkeys(out))


def _new_secret(mode: str) -> str:
    return f"sk_{mode}_" + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))


@dataclass(frozen=True)
class KeyStanding:
    """An API key with what its authority rests on, read in one query.

    `parent` is the key that made it (None when a user made it); `creator` the user behind it: its
    maker, or its parent's maker (None when that user no longer exists, or none was recorded);
    `tenant` the key's tenant.
    """

    key: ApiKey
    parent: ApiKey | None
    creator: User | None
    tenant: Tenant | None

    @property
    def creator_id(self) -> str | None:
        """The id of the user the key acts for, as recorded (whether or not they still exist)."""
        return self.parent.created_by if self.parent is not None else self.key.created_by

    def refusal(self) -> str | None:
        """Returns why the key may not act now (its own status aside), or None when it may.

        A key acts for its creator: when the key that made it is revoked or expired, or the user
        behind it is gone, suspended or no longer in the key's tenant, it is refused at once. A
        key made before creators were recorded (no creator) acts with the admin ceiling alone.
        """
        if self.parent is not None and self.parent.status != "active":
            return f"The API key that made this key is {self.parent.status}."
        creator_id = self.creator_id
        if creator_id is None:
            return None
        if not creator_id.startswith("usr_"):
            # Made by a key that a key made, before such chains were refused: honoured no longer.
            return "The API key was made by a key made by another key."
        creator = self.creator
        if creator is None:
            return "The API key's creator no longer exists."
        if creator.status != "active":
            return "The API key's creator is suspended."
        if not creator.is_platform_operator and creator.tenant_id != self.key.tenant_id:
            return "The API key's creator is no longer in its tenant."
        return None


class ApiKey(TenantScopedModel):
    """A tenant's API key: its scopes, address ranges, expiry and revocation."""

    label = "API key"
    api_resource = "key"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30)
    name = CharField(max_length=100)
    prefix = CharField(max_length=16)
    secret_hash = CharField(max_length=64, unique=True)
    previous_secret_hash = CharField(max_length=64, null=True, unique=True)
    previous_expires_at = UTCDateTimeField(null=True)
    mode = CharField(max_length=8)
    permissions = JSONField()
    allowed_ips = JSONField()
    expires_at = UTCDateTimeField(null=True)
    created_by = CharField(max_length=30, null=True)
    created_at = UTCDateTimeField(default=utcnow)
    last_used_at = UTCDateTimeField(null=True)
    revoked_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "api_key"

    @classmethod
    def issue(
        cls,
        tenant_id: str,
        name: str,
        permissions: list[str],
        mode: str,
        allowed_ips: list[str],
        expires_at: datetime | None,
        created_by: str | None,
    ) -> tuple[ApiKey, str]:
        """Creates a key; returns it and its secret, which is not kept and cannot be shown again."""
        secret = _new_secret(mode)
        key = cls.create(
            id=new_id("key"),
            tenant_id=tenant_id,
            name=name,
            prefix=secret[:12],
            secret_hash=lookup_hash(secret),
            mode=mode,
            permissions=permissions,
            allowed_ips=allowed_ips,
            expires_at=expires_at,
            created_by=created_by,
        )
        return key, secret

    @classmethod
    def find_live(cls, secret: str) -> KeyStanding | None:
        """Returns the key whose current secret, or previous secret within its grace period, is `secret`,
        with its creator, parent key and tenant (one query).

        Revoked and expired keys are returned too (the caller refuses them with the reason);
        None means no key has this secret.
        """
        digest = lookup_hash(secret)
        rows = _BY_SECRET.rows(digest, digest)
        if not rows:
            return None
        standing = _standing(rows[0])
        key = standing.key
        if key.secret_hash != digest and (key.previous_expires_at is None or key.previous_expires_at <= utcnow()):
            return None
        return standing

    @classmethod
    def standing_of(cls, key_id: str) -> KeyStanding | None:
        """Returns the key with this id and what its authority rests on (one query), or None."""
        rows = _BY_ID.rows(key_id)
        return _standing(rows[0]) if rows else None

    @property
    def status(self) -> str:
        """`revoked`, `expired` or `active`."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= utcnow():
            return "expired"
        return "active"

    def admits(self, address: str | None) -> bool:
        """True when the key may be used from `address` (any address when it has no ranges)."""
        if not self.allowed_ips:
            return True
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(cidr, strict=False) for cidr in self.allowed_ips)

    def touch(self) -> None:
        """Records a use, writing at most once a minute per key rather than on every request."""
        now = utcnow()
        if self.last_used_at is not None and now - self.last_used_at < LAST_USED_RESOLUTION:
            return
        (
            ApiKey.update(last_used_at=now)
            .where(
                ApiKey.id == self.id, ApiKey.last_used_at.is_null() | (ApiKey.last_used_at < now - LAST_USED_RESOLUTION)
            )
            .execute()
        )

    def revoke(self) -> None:
        """Revokes the key (again is harmless: the first revocation time stays)."""
        if self.revoked_at is None:
            self.revoked_at = utcnow()
            ApiKey.update(revoked_at=self.revoked_at).where(ApiKey.id == self.id, ApiKey.revoked_at.is_null()).execute()

    def rotate(self, grace_seconds: int) -> str:
        """Gives the key a new secret; the old one works `grace_seconds` longer. Returns the new secret."""
        if self.status != "active":
            raise Conflict(f"A {self.status} key cannot be rotated.")
        secret = _new_secret(self.mode)
        with database.atomic():
            if grace_seconds > 0:
                self.previous_secret_hash = self.secret_hash
                self.previous_expires_at = utcnow() + timedelta(seconds=grace_seconds)
            else:
                self.previous_secret_hash = None
                self.previous_expires_at = None
            self.secret_hash = lookup_hash(secret)
            self.prefix = secret[:12]
            self.save()
        return secret

    def as_dict(self) -> dict[str, Any]:
        """Returns the key as the API shows it: never its secret or hash."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "mode": self.mode,
            "livemode": self.mode == "live",
            "permissions": list(self.permissions),
            "allowed_ips": list(self.allowed_ips),
            "expires_at": format_datetime(self.expires_at) if self.expires_at else None,
            "created_at": format_datetime(self.created_at),
            "last_used_at": format_datetime(self.last_used_at) if self.last_used_at else None,
            "revoked_at": format_datetime(self.revoked_at) if self.revoked_at else None,
            "status": self.status,
        }


_Parent = ApiKey.alias("parent_key")
_Creator = User.alias("creator")


def _with_standing(query_filter: Any) -> Any:
    """The key, the key that made it, the user behind them and the key's tenant, in one select.

    The creator is joined on `COALESCE(parent.created_by, key.created_by)`: the parent's maker for
    a key made by a key, else the key's own (an indexed primary-key probe either way).
    """
    return (
        ApiKey.select(ApiKey, _Parent, _Creator, Tenant)
        .join_from(ApiKey, _Parent, JOIN.LEFT_OUTER, on=(_Parent.id == ApiKey.created_by))
        .join_from(
            ApiKey, _Creator, JOIN.LEFT_OUTER, on=(_Creator.id == fn.COALESCE(_Parent.created_by, ApiKey.created_by))
        )
        .join_from(ApiKey, Tenant, JOIN.LEFT_OUTER, on=(Tenant.id == ApiKey.tenant_id))
        .where(query_filter)
        .limit(1)
    )


def _standing(row: dict[Any, Any]) -> KeyStanding:
    parent, creator, tenant = row.get(_Parent), row.get(_Creator), row.get(Tenant)
    return KeyStanding(
        row[ApiKey],
        parent if parent is not None and parent.id else None,
        creator if creator is not None and creator.id else None,
        tenant if tenant is not None and tenant.id else None,
    )


# Every key-authenticated request runs this, so its SQL is compiled once (see CompiledSelect).
_BY_SECRET = CompiledSelect(
    lambda current, previous: _with_standing(
        (ApiKey.secret_hash == current) | (ApiKey.previous_secret_hash == previous)
    ),
    2,
)
# An open event stream re-checks its key with this.
_BY_ID = CompiledSelect(lambda key_id: _with_standing(ApiKey.id == key_id), 1)
