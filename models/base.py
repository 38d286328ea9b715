"""The database proxy, the base models, and the field types every model shares."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Self

from peewee import DatabaseProxy, DateTimeField, Model, ModelSelect, TextField

from tenantry.errors import NotFound

#: Initialised by the app factory (tenantry.db.init_database), never at import.
database = DatabaseProxy()


def utcnow() -> datetime:
    """Returns the current time as a naive UTC datetime, the form stored in every timestamp column."""
    return datetime.now(UTC).replace(tzinfo=None)


class UTCDateTimeField(DateTimeField):
    """A timestamp stored as naive UTC on both SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> Any:
        """Returns `value` as naive UTC for storage."""
        if isinstance(value, datetime) and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return super().db_value(value)


class JSONField(TextField):
    """A JSON document stored as text, identical on SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        """Returns the JSON text for `value`."""
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value: Any) -> Any:
        """Returns the decoded document."""
        return None if value is None else json.loads(value)


class BaseModel(Model):
    """Every model: bound to the proxy, snake_case table names, no implicit id column."""

    class Meta:
        database = database
        legacy_table_names = False


class TenantScopedModel(BaseModel):
    """A model whose rows belong to one tenant. Reach its rows only through `for_tenant`.

    Scoping lives here rather than in handlers, so that a row of another tenant is
    indistinguishable from a row that does not exist: both are a 404.
    """

    #: The human name used in "No user with this id."; set by subclasses.
    label = "resource"

    @classmethod
    def for_tenant(cls, tenant_id: str) -> ModelSelect:
        """Returns a query over this tenant's rows only."""
        return cls.select().where(cls.tenant_id == tenant_id)

    @classmethod
    def get_for_tenant(cls, tenant_id: str, row_id: str) -> Self:
        """Returns the row with `row_id` in the tenant, or raises NotFound (also for another tenant's row)."""
        row = cls.for_tenant(tenant_id).where(cls._meta.primary_key == row_id).first()
        if row is None:
            raise NotFound(f"No {cls.label} with this id.")
        return row
