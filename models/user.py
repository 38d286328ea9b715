"""Users of a tenant (and the platform operator, who belongs to none)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    Field,
    IntegerField,
    IntegrityError,
    ModelSelect,
    TextField,
    fn,
)

from models.base import JSONField, TenantScopedModel, UTCDateTimeField, current_livemode, database, utcnow
from tenantry.errors import Conflict, Detail, ValidationFailed
from tenantry.ids import new_id
from tenantry.times import format_datetime

ORDERINGS = {"created_at", "email", "last_name"}

#: The bounds of a user's metadata (as Stripe's): keys, key length, value length.
METADATA_MAX_KEYS = 50
METADATA_MAX_KEY_LENGTH = 40
METADATA_MAX_VALUE_LENGTH = 500


def checked_metadata(metadata: dict[str, Any] | None, field: str = "metadata") -> dict[str, str] | None:
    """Returns `metadata` when it is within the bounds (the spec checks the count and the values; the
    key lengths, which OpenAPI 3.0 cannot say, are checked here); raises a 400 ValidationFailed naming
    each key that is empty or longer than METADATA_MAX_KEY_LENGTH."""
    if metadata is None:
        return None
    details = [
        Detail(f"keys must be 1 to {METADATA_MAX_KEY_LENGTH} characters", f"{field}.{key[:40]}")
        for key in metadata
        if not 1 <= len(key) <= METADATA_MAX_KEY_LENGTH
    ]
    if len(metadata) > METADATA_MAX_KEYS:
        details.append(Detail(f"has more than {METADATA_MAX_KEYS} keys", field))
    details.extend(
        Detail(f"must be a string of at most {METADATA_MAX_VALUE_LENGTH} characters", f"{field}.{key[:40]}")
        for key, value in metadata.items()
        if not isinstance(value, str) or len(value) > METADATA_MAX_VALUE_LENGTH
    )
    if details:
        raise ValidationFailed("The metadata is invalid.", details)
    return metadata


def normalize_email(email: str) -> str:
    """Returns the form emails are compared in: trimmed and case-folded."""
    return email.strip().casefold()


class User(TenantScopedModel):
    """A person who logs in to one tenant; `tenant_id` is null only for the platform operator."""

    label = "user"
    api_resource = "user"
    mode_scoped = True

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30, null=True)
    email = CharField(max_length=254)
    email_normalized = CharField(max_length=254)
    password_hash = CharField(max_length=255)
    first_name = CharField(max_length=100)
    last_name = CharField(max_length=100)
    role = CharField(max_length=20, default="member")
    status = CharField(max_length=20, default="active")
    is_platform_operator = BooleanField(default=False)
    created_at = UTCDateTimeField(default=utcnow)
    updated_at = UTCDateTimeField(default=utcnow)
    last_login_at = UTCDateTimeField(null=True)
    mfa_enabled = BooleanField(default=False)
    mfa_secret = TextField(null=True)  # sealed (tenantry.crypto.SecretBox), never plaintext
    mfa_pending_secret = TextField(null=True)
    mfa_last_step = BigIntegerField(null=True)
    mfa_failures = IntegerField(default=0)
    mfa_locked_until = UTCDateTimeField(null=True)
    livemode = BooleanField(default=True)  # False: test data, made with a test key
    external_id = CharField(max_length=255, null=True)  # the id in the customer's own system
    metadata = JSONField(null=True)  # string values, bounded by the API; None reads as {}
    phone = CharField(max_length=16, null=True)  # E.164

    class Meta:
        table_name = "user_account"

    @classmethod
    def build(
        cls,
        tenant_id: str | None,
        email: str,
        password_hash: str,
        first_name: str,
        last_name: str,
        role: str = "member",
        status: str = "active",
        is_platform_operator: bool = False,
        external_id: str | None = None,
        metadata: dict[str, str] | None = None,
        phone: str | None = None,
    ) -> User:
        """Returns an unsaved user with a fresh id."""
        return cls(
            id=new_id("usr"),
            tenant_id=tenant_id,
            email=email.strip(),
            email_normalized=normalize_email(email),
            password_hash=password_hash,
            first_name=first_name,
            last_name=last_name,
            role=role,
            status=status,
            is_platform_operator=is_platform_operator,
            livemode=current_livemode(),
            external_id=external_id,
            metadata=metadata or None,
            phone=phone,
        )

    @classmethod
    def insert_many_checked(cls, users: list[User], field_prefix: str = "") -> None:
        """Inserts every user in one transaction, or none.

        Raises Conflict naming each email or external_id that the tenant already has or that
        appears twice, as `<field_prefix>[i].email` (or `email` for a single user).
        """

        def field(index: int, name: str) -> str:
            return f"{field_prefix}[{index}].{name}" if field_prefix else name

        details: list[Detail] = []
        seen: dict[tuple[str | None, bool, str, str], int] = {}
        for index, user in enumerate(users):
            for name, value in (("email", user.email_normalized), ("external_id", user.external_id)):
                if value is None:
                    continue
                key = (user.tenant_id, bool(user.livemode), name, value)
                if key in seen:
                    details.append(Detail(f"is the same {name} as item {seen[key]}", field(index, name)))
                seen.setdefault(key, index)
        tenant_ids = [t for t in {u.tenant_id for u in users} if t]
        taken = {
            (row.tenant_id, bool(row.livemode), row.email_normalized)
            for row in cls.select(cls.tenant_id, cls.livemode, cls.email_normalized).where(
                cls.tenant_id.in_(tenant_ids),
                cls.email_normalized.in_([u.email_normalized for u in users]),
            )
        }
        details.extend(
            Detail("is already taken", field(i, "email"))
            for i, u in enumerate(users)
            if (u.tenant_id, bool(u.livemode), u.email_normalized) in taken
        )
        external_ids = [u.external_id for u in users if u.external_id is not None]
        if external_ids:
            taken_external = {
                (row.tenant_id, bool(row.livemode), row.external_id)
                for row in cls.select(cls.tenant_id, cls.livemode, cls.external_id).where(
                    cls.tenant_id.in_(tenant_ids), cls.external_id.in_(external_ids)
                )
            }
            details.extend(
                Detail("is already taken", field(i, "external_id"))
                for i, u in enumerate(users)
                if (u.tenant_id, bool(u.livemode), u.external_id) in taken_external
            )
        if details:
            raise Conflict(_conflict_message(details), details)
        try:
            with database.atomic():
                for user in users:
                    user.save(force_insert=True)
        except IntegrityError:
            # A concurrent request took an email or external_id between the check and the insert.
            details = [
                Detail("is already taken", field(i, name)) for i, u in enumerate(users) for name in u._colliding()
            ]
            details = details or [Detail("is already taken", field(0, "email"))]
            raise Conflict(_conflict_message(details), details) from None

    def _colliding(self) -> list[str]:
        """Returns which of this user's unique fields (email, external_id) another user of the tenant holds."""
        others = User.select(User.email_normalized, User.external_id).where(
            User.tenant_id == self.tenant_id, User.livemode == self.livemode, User.id != self.id
        )
        names = []
        if others.where(User.email_normalized == self.email_normalized).exists():
            names.append("email")
        if self.external_id is not None and others.where(User.external_id == self.external_id).exists():
            names.append("external_id")
        return names

    @classmethod
    def search(
        cls,
        tenant_id: str,
        statuses: list[str] | None = None,
        role: str | None = None,
        search: str | None = None,
        ordering: str = "-created_at",
        external_id: str | None = None,
        email: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> ModelSelect[User]:
        """Returns the tenant's users filtered and ordered; ties break by id.

        `statuses`: any of them; `email`: exactly, compared as emails are (case-insensitively);
        `created_from`/`created_to`: inclusive.
        """
        query = cls.for_tenant(tenant_id)
        if statuses:
            query = query.where(cls.status.in_(statuses))
        if external_id is not None:
            query = query.where(cls.external_id == external_id)
        if email is not None:
            query = query.where(cls.email_normalized == normalize_email(email))
        if created_from is not None:
            query = query.where(cls.created_at >= created_from)
        if created_to is not None:
            # Inclusive at the millisecond the API shows: a user created at 06:12:27.123456 was
            # created "at" 06:12:27.123Z.
            try:
                end = created_to.replace(microsecond=created_to.microsecond // 1000 * 1000) + timedelta(milliseconds=1)
            except OverflowError:  # the last millisecond of year 9999: every user was created before it
                end = None
            if end is not None:
                query = query.where(cls.created_at < end)
        if role:
            query = query.where(cls.role == role)
        if search:
            needle = search.lower()
            query = query.where(
                cls.email_normalized.contains(search.casefold())
                | fn.LOWER(cls.first_name).contains(needle)
                | fn.LOWER(cls.last_name).contains(needle)
            )
        descending = ordering.startswith("-")
        name = ordering.lstrip("-")
        if name not in ORDERINGS:
            name = "created_at"
        column = {"created_at": cls.id, "email": cls.email_normalized, "last_name": cls.last_name}[name]
        tie = cls.id.desc() if descending else cls.id.asc()
        return query.order_by(column.desc() if descending else column.asc(), tie)

    @classmethod
    def candidates_for_login(cls, email: str, tenant_id: str | None) -> list[User]:
        """Returns the accounts with this email: in `tenant_id` if given, else across all tenants.

        Only live users sign in: a test-mode user is test data.
        """
        query = cls.select().where(cls.email_normalized == normalize_email(email), cls.livemode == True)  # noqa: E712
        if tenant_id:
            query = query.where(cls.tenant_id == tenant_id)
        return list(query.limit(2))

    def assign(self, changes: dict[str, Any], password_hash: str | None = None) -> bool:
        """Applies `changes` (email, names, role, status, external_id, metadata, phone) and an optional new
        password hash, and saves; returns True when the user's sessions must end (a new password, a
        suspension). Use models.accounts.change_user, which ends them in the same transaction.

        Raises Conflict when it would leave the tenant without an active owner, or when the email
        is taken.
        """
        stays_owner = changes.get("role", self.role) == "owner" and changes.get("status", self.status) == "active"
        with database.atomic():
            if self.role == "owner" and self.status == "active" and not stays_owner:
                self._require_another_owner("demoted or suspended")
            for name in ("email", "first_name", "last_name", "role", "status", "external_id", "metadata", "phone"):
                if name in changes:
                    setattr(self, name, changes[name])
            self.email_normalized = normalize_email(self.email)
            if password_hash:
                self.password_hash = password_hash
            self.save_checked()
        return bool(password_hash) or self.status == "suspended"

    def check_deletable(self) -> None:
        """Raises Conflict when the user is the tenant's last active owner (models.accounts.delete_user
        deletes them with their sessions, roles and recovery codes)."""
        if self.role == "owner" and self.status == "active":
            self._require_another_owner("deleted")

    def _require_another_owner(self, what: str) -> None:
        # For the platform operator (tenant_id None) this is the rows with no tenant (IS NULL), as it always was.
        tenant_id: str = self.tenant_id  # type: ignore[assignment]  # None only for the platform operator
        owners = User.for_tenant(tenant_id).where(User.role == "owner", User.status == "active")
        if database.for_update:
            # Lock the owners' rows so two concurrent demotions cannot each count on the other.
            # (SQLite has no row locks; its single writer makes the second one fail instead.)
            owners = owners.for_update()
        others = [row.id for row in owners.select(User.id) if row.id != self.id]
        if not others:
            raise Conflict(f"The tenant's last active owner cannot be {what}.")

    def record_login(self, new_password_hash: str | None = None) -> None:
        """Stamps `last_login_at`, and stores a rehashed password when the hash parameters changed."""
        self.last_login_at = utcnow()
        fields: list[Field[Any]] = [User.last_login_at]
        if new_password_hash:
            self.password_hash = new_password_hash
            fields.append(User.password_hash)
        self.save(only=fields)

    def save_checked(self) -> None:
        """Saves the user, answering Conflict when the email or external_id is taken in the tenant."""
        self.updated_at = utcnow()
        if self.metadata == {}:
            self.metadata = None
        try:
            with database.atomic():
                self.save()
        except IntegrityError:
            details = [Detail("is already taken", name) for name in self._colliding()]
            details = details or [Detail("is already taken", "email")]
            raise Conflict(_conflict_message(details), details) from None

    def as_dict(self) -> dict[str, Any]:
        """Returns the user as the API shows it: never a password hash."""
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "role": self.role,
            "status": self.status,
            "is_platform_operator": self.is_platform_operator,
            "livemode": bool(self.livemode),
            "created_at": format_datetime(self.created_at),
            "updated_at": format_datetime(self.updated_at),
            "last_login_at": format_datetime(self.last_login_at) if self.last_login_at else None,
            "mfa_enabled": bool(self.mfa_enabled),
            "external_id": self.external_id,
            "metadata": dict(self.metadata or {}),
            "phone": self.phone,
        }


def _conflict_message(details: list[Detail]) -> str:
    """Returns the Conflict message naming the unique fields (email, external_id) the details are about."""
    names = sorted({(d.field or "email").rpartition(".")[2] for d in details})
    return f"A user with this {' and '.join(names)} already exists in the tenant."
