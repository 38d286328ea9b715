"""Users of a tenant (and the platform operator, who belongs to none)."""

from __future__ import annotations

from typing import Any

from peewee import BigIntegerField, BooleanField, CharField, IntegerField, IntegrityError, ModelSelect, TextField, fn

from models.base import TenantScopedModel, UTCDateTimeField, current_livemode, database, utcnow
from tenantry.errors import Conflict, Detail, format_datetime
from tenantry.ids import new_id

ORDERINGS = {"created_at", "email", "last_name"}


def normalize_email(email: str) -> str:
    """Returns the form emails are compared in: trimmed and case-folded."""
    return email.strip().casefold()


class User(TenantScopedModel):
    """A person who logs in to one tenant; `tenant_id` is null only for the platform operator."""

    label = "user"
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
    mfa_secret = TextField(null=True)  # sealed (tenantry.security.SecretBox), never plaintext
    mfa_pending_secret = TextField(null=True)
    mfa_last_step = BigIntegerField(null=True)
    mfa_failures = IntegerField(default=0)
    mfa_locked_until = UTCDateTimeField(null=True)
    livemode = BooleanField(default=True)  # False: test data, made with a test key

    class Meta:
        table_name = "user_account"

    @classmethod
    def build(cls, tenant_id: str | None, email: str, password_hash: str, first_name: str, last_name: str,
              role: str = "member", status: str = "active", is_platform_operator: bool = False) -> User:
        """Returns an unsaved user with a fresh id."""
        return cls(id=new_id("usr"), tenant_id=tenant_id, email=email.strip(),
                   email_normalized=normalize_email(email), password_hash=password_hash,
                   first_name=first_name, last_name=last_name, role=role, status=status,
                   is_platform_operator=is_platform_operator, livemode=current_livemode())

    @classmethod
    def insert_many_checked(cls, users: list[User], field_prefix: str = "") -> None:
        """Inserts every user in one transaction, or none.

        Raises Conflict naming each email that the tenant already has or that appears twice,
        as `<field_prefix>[i].email` (or `email` for a single user).
        """
        def field(index: int) -> str:
            return f"{field_prefix}[{index}].email" if field_prefix else "email"

        details: list[Detail] = []
        seen: dict[tuple[str | None, bool, str], int] = {}
        for index, user in enumerate(users):
            key = (user.tenant_id, user.livemode, user.email_normalized)
            if key in seen:
                details.append(Detail(f"is the same email as item {seen[key]}", field(index)))
            seen.setdefault(key, index)
        tenant_ids = {u.tenant_id for u in users}
        taken = {
            (row.tenant_id, row.livemode, row.email_normalized)
            for row in cls.select(cls.tenant_id, cls.livemode, cls.email_normalized).where(
                cls.tenant_id.in_([t for t in tenant_ids if t]),
                cls.email_normalized.in_([u.email_normalized for u in users]),
            )
        }
        details.extend(Detail("is already taken", field(i)) for i, u in enumerate(users)
                       if (u.tenant_id, u.livemode, u.email_normalized) in taken)
        if details:
            raise Conflict("A user with this email already exists in the tenant.", details)
        try:
            with database.atomic():
                for user in users:
                    user.save(force_insert=True)
        except IntegrityError:
            # A concurrent request took an email between the check and the insert.
            raise Conflict("A user with this email already exists in the tenant.",
                           [Detail("is already taken", field(0))]) from None

    @classmethod
    def search(cls, tenant_id: str, status: str | None = None, role: str | None = None,
               search: str | None = None, ordering: str = "-created_at") -> ModelSelect:
        """Returns the tenant's users filtered and ordered; ties break by id."""
        query = cls.for_tenant(tenant_id)
        if status:
            query = query.where(cls.status == status)
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

    def apply_changes(self, changes: dict[str, Any], password_hash: str | None = None) -> None:
        """Applies `changes` (email, names, role, status) and an optional new password hash.

        Raises Conflict when it would leave the tenant without an active owner, or when the email
        is taken. A new password or a suspension revokes the user's sessions in the same
        transaction.
        """
        from models.session import Session

        stays_owner = changes.get("role", self.role) == "owner" and changes.get("status", self.status) == "active"
        with database.atomic():
            if self.role == "owner" and self.status == "active" and not stays_owner:
                self._require_another_owner("demoted or suspended")
            for name in ("email", "first_name", "last_name", "role", "status"):
                if name in changes:
                    setattr(self, name, changes[name])
            self.email_normalized = normalize_email(self.email)
            if password_hash:
                self.password_hash = password_hash
            self.save_checked()
            if password_hash or self.status == "suspended":
                Session.revoke_all_for_user(self.id)

    def delete_checked(self) -> None:
        """Deletes the user and their sessions; Conflict if they are the tenant's last active owner."""
        from models.session import RefreshToken, Session

        with database.atomic():
            if self.role == "owner" and self.status == "active":
                self._require_another_owner("deleted")
            from models.access import UserRole
            from models.mfa import RecoveryCode

            UserRole.remove_user(self.tenant_id, self.id)
            RecoveryCode.delete().where(RecoveryCode.user_id == self.id).execute()
            sessions = Session.select(Session.id).where(Session.user_id == self.id)
            RefreshToken.delete().where(RefreshToken.session_id.in_(sessions)).execute()
            Session.delete().where(Session.user_id == self.id).execute()
            self.delete_instance()

    def _require_another_owner(self, what: str) -> None:
        owners = User.for_tenant(self.tenant_id).where(User.role == "owner", User.status == "active")
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
        fields = [User.last_login_at]
        if new_password_hash:
            self.password_hash = new_password_hash
            fields.append(User.password_hash)
        self.save(only=fields)

    def save_checked(self) -> None:
        """Saves the user, answering Conflict when the email is taken in the tenant."""
        self.updated_at = utcnow()
        try:
            with database.atomic():
                self.save()
        except IntegrityError:
            raise Conflict("A user with this email already exists in the tenant.",
                           [Detail("is already taken", "email")]) from None

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
        }
