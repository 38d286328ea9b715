"""Tenants and their domains."""

from __future__ import annotations

from typing import Any

from peewee import BooleanField, CharField, IntegerField, IntegrityError, fn

from models.base import BaseModel, JSONField, TenantScopedModel, UTCDateTimeField, database, utcnow
from tenantry.errors import Conflict, Detail, NotFound
from tenantry.ids import new_id
from tenantry.times import format_datetime

DEFAULT_SETTINGS = {"timezone": "UTC", "language": "en"}


class Tenant(BaseModel):
    """A customer organisation; the root of every scoped row."""

    id = CharField(primary_key=True, max_length=30)
    name = CharField(max_length=200)
    status = CharField(max_length=20, default="active")
    settings = JSONField(default=dict)
    plan = CharField(max_length=20, default="standard")
    rate_limits = JSONField(null=True)  # {"requests_per_minute": n, "burst_per_10_seconds": n}, or the plan's
    authz_version = IntegerField(default=0)  # bumped by every role/policy change (models.access)
    created_at = UTCDateTimeField(default=utcnow)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "tenant"

    @classmethod
    def get_by_id_or_404(cls, tenant_id: str) -> Tenant:
        """Returns the tenant, or raises NotFound."""
        tenant = cls.get_or_none(cls.id == tenant_id)
        if tenant is None:
            raise NotFound("No tenant with this id.")
        return tenant

    @classmethod
    def search(cls, status: str | None = None, search: str | None = None) -> Any:
        """Returns tenants filtered by status and a case-insensitive name search, newest first."""
        query = cls.select()
        if status:
            query = query.where(cls.status == status)
        if search:
            query = query.where(fn.LOWER(cls.name).contains(search.lower()))
        return query.order_by(cls.id.desc())

    def apply(
        self,
        name: str | None = None,
        status: str | None = None,
        settings: dict[str, str] | None = None,
        replace_settings: bool = False,
        plan: str | None = None,
        rate_limits: dict[str, int] | bool | None = False,
    ) -> Tenant:
        """Changes the given fields and saves; settings are merged unless `replace_settings`.

        `rate_limits` False leaves them; None goes back to the plan's.
        """
        if name is not None:
            self.name = name
        if status is not None:
            self.status = status
        if plan is not None:
            self.plan = plan
        if rate_limits is not False:
            self.rate_limits = rate_limits
        if settings is not None:
            base = DEFAULT_SETTINGS if replace_settings else {**DEFAULT_SETTINGS, **(self.settings or {})}
            self.settings = {**base, **settings}
        self.updated_at = utcnow()
        # Never `authz_version`: a concurrent role or policy change may have bumped it since this row was read.
        self.save(
            only=[Tenant.name, Tenant.status, Tenant.plan, Tenant.rate_limits, Tenant.settings, Tenant.updated_at]
        )
        return self

    def as_dict(self) -> dict[str, Any]:
        """Returns the tenant as the API shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "plan": self.plan,
            "rate_limits": self.rate_limits,
            "settings": {**DEFAULT_SETTINGS, **(self.settings or {})},
            "created_at": format_datetime(self.created_at),
            "updated_at": format_datetime(self.updated_at),
        }


class Domain(TenantScopedModel):
    """A host name owned by a tenant; a verified one routes logins on that host to it."""

    label = "domain"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30)
    domain = CharField(max_length=253, unique=True)
    is_primary = BooleanField(default=False)
    verified = BooleanField(default=False)
    created_at = UTCDateTimeField(default=utcnow)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "domain"

    @classmethod
    def upsert(cls, tenant_id: str, domain: str, is_primary: bool | None, verified: bool | None) -> tuple[Domain, bool]:
        """Adds or updates the tenant's domain; returns (domain, created).

        Making a domain primary demotes the tenant's other primary domain in the same
        transaction. Raises Conflict when another tenant has the domain.
        """
        name = domain.lower()
        with database.atomic():
            row = cls.get_or_none(cls.domain == name)
            if row is not None and row.tenant_id != tenant_id:
                raise Conflict("Another tenant has this domain.", [Detail("is already taken", "domain")])
            created = row is None
            if row is None:
                row = cls(
                    id=new_id("dom"),
                    tenant_id=tenant_id,
                    domain=name,
                    is_primary=bool(is_primary),
                    verified=bool(verified),
                )
            else:
                if is_primary is not None:
                    row.is_primary = is_primary
                if verified is not None:
                    row.verified = verified
                row.updated_at = utcnow()
            if row.is_primary:
                (
                    cls.update(is_primary=False, updated_at=utcnow())
                    .where(cls.tenant_id == tenant_id, cls.is_primary == True, cls.id != row.id)  # noqa: E712
                    .execute()
                )
            try:
                row.save(force_insert=created)
            except IntegrityError:
                raise Conflict("Another tenant has this domain.", [Detail("is already taken", "domain")]) from None
        return row, created

    @classmethod
    def of_tenant(cls, tenant_id: str) -> Any:
        """Returns the tenant's domains, primary first, then by name."""
        return cls.for_tenant(tenant_id).order_by(cls.is_primary.desc(), cls.domain)

    @classmethod
    def verified_tenant_for_host(cls, host: str) -> str | None:
        """Returns the id of the tenant whose verified domain is `host` (port ignored), if any."""
        name = host.rsplit(":", 1)[0].lower() if host and not host.startswith("[") else ""
        if not name:
            return None
        row = cls.select(cls.tenant_id).where(cls.domain == name, cls.verified == True).first()  # noqa: E712
        return row.tenant_id if row else None

    def as_dict(self) -> dict[str, Any]:
        """Returns the domain as the API shows it."""
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "domain": self.domain,
            "is_primary": self.is_primary,
            "verified": self.verified,
            "created_at": format_datetime(self.created_at),
            "updated_at": format_datetime(self.updated_at),
        }
