"""The database proxy, the base models, and the field types every model shares."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, cast

from peewee import BooleanField, CharField, DatabaseProxy, DateTimeField, Field, Model, ModelSelect, TextField, Value

from tenantry.errors import NotFound

# utcnow is re-exported: models take the time the stored way from here (tenantry.times defines it).
from tenantry.times import utcnow as utcnow

#: Initialised by the app factory (tenantry.db.init_database), never at import.
database = DatabaseProxy()

#: The mode of the data the current request works on: True (live) unless a test key set it.
_livemode: ContextVar[bool] = ContextVar("tenantry_livemode", default=True)


def current_livemode() -> bool:
    """Returns whether the current request works on live data (True) or test data (False)."""
    return _livemode.get()


def use_livemode(livemode: bool) -> None:
    """Sets the mode of the data the rest of this request works on (the enforcement point calls it)."""
    _livemode.set(livemode)


def row_tuples(query: ModelSelect[Any]) -> Iterable[tuple[Any, ...]]:
    """`query.tuples()`, typed as what it yields: peewee's stubs say `tuples()` returns the model query."""
    return cast(Iterable[tuple[Any, ...]], query.tuples())


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


class OrderedJSONField(JSONField):
    """A JSON document whose object keys keep the order they were written in (policy conditions)."""

    def db_value(self, value: Any) -> str | None:
        """Returns the JSON text for `value`, keys in their given order."""
        return None if value is None else json.dumps(value)


_statement_numbers = itertools.count(1)


class CompiledSelect:
    """A select whose SQL is compiled once per database; each run only binds new parameters.

    Peewee rebuilds a query's SQL text on every execution, about 1 ms for a three-table join,
    which on the queries every request runs costs more than the database does. `build` makes the
    query from placeholder values; `rows` runs it with real ones and returns one dict of model
    instances (keyed by model class) per row.
    """

    def __init__(self, build: Callable[..., ModelSelect[Any]], arity: int) -> None:
        self.build = build
        self.arity = arity
        self._compiled: dict[int, tuple[str, list[Any], list[int | None], list[Field]]] = {}
        self._name = f"tenantry_q{next(_statement_numbers)}"  # its prepared statement's, on PostgreSQL

    def _compile(self) -> tuple[str, list[Any], list[int | None], list[Field]]:
        markers = [f"\x01compiled-param-{i}\x01" for i in range(self.arity)]
        query = self.build(*markers)
        sql, params = query.sql()
        slots = [markers.index(p) if isinstance(p, str) and p in markers else None for p in params]
        if sorted(s for s in slots if s is not None) != list(range(self.arity)):
            raise ValueError("every placeholder must appear once as a query parameter")
        return sql, list(params), slots, list(query._returning)  # type: ignore[attr-defined]  # peewee's stubs omit it

    def rows(self, *values: Any) -> list[dict[type[Model], Model]]:
        """Runs the query with `values` in place of the placeholders; returns the rows as model instances."""
        key = id(database.obj)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._compile()
        sql, params, slots, fields = compiled
        bound = [values[slot] if slot is not None else param for param, slot in zip(params, slots, strict=True)]
        # On PostgreSQL each connection prepares the query once (tenantry.db); SQLite caches its own.
        execute_prepared = getattr(database.obj, "execute_prepared", None)
        cursor = (
            execute_prepared(self._name, sql, bound)
            if execute_prepared is not None
            else database.execute_sql(sql, bound)
        )
        out = []
        for row in cursor.fetchall():
            data: dict[type[Model], dict[str, Any]] = {}
            for field, value in zip(fields, row, strict=True):
                data.setdefault(field.model, {})[field.name] = None if value is None else field.python_value(value)
            instances = {}
            for model, attrs in data.items():
                instance = model(**attrs)
                instance._dirty.clear()  # type: ignore[attr-defined]  # peewee's stubs omit `_dirty`
                instances[model] = instance
            out.append(instances)
        return out


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
    #: The permission resource whose operations target one of these rows by the path parameter
    #: `<resource>_id` (`user` for `user:read` on /users/{user_id}); None for rows no operation targets.
    #: Declaring it registers the model, so the enforcement point needs no list of tables.
    api_resource: ClassVar[str | None] = None
    #: Every tenant-scoped model that declares a `resource`, by that resource.
    registry: ClassVar[dict[str, type[TenantScopedModel]]] = {}
    #: True for data that is live or test (a `livemode` column): then only the request's mode is seen.
    mode_scoped = False
    # Annotations only (peewee reads no annotations, so no column is added here): every subclass
    # declares `tenant_id`, and the mode-scoped ones `livemode`, as columns of their own.
    tenant_id: CharField[Any]  # some models allow a null tenant (an account with none yet)
    livemode: BooleanField[bool]
    #: get_for_tenant's query, compiled once per model class.
    _by_id: ClassVar[CompiledSelect]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        resource = cls.__dict__.get("api_resource")
        if isinstance(resource, str):
            TenantScopedModel.registry[resource] = cls

    @classmethod
    def for_tenant(cls, tenant_id: str) -> ModelSelect[Self]:
        """Returns a query over this tenant's rows only (in the request's mode, for mode-scoped data)."""
        query = cls.select().where(cls.tenant_id == tenant_id)
        if cls.mode_scoped:
            query = query.where(cls.livemode == current_livemode())
        return query

    @classmethod
    def get_for_tenant(cls, tenant_id: str, row_id: str) -> Self:
        """Returns the row with `row_id` in the tenant, or raises NotFound (also for another tenant's
        row, or another mode's)."""
        compiled = cls.__dict__.get("_by_id")
        if compiled is None:
            if cls.mode_scoped:
                # Value(converter=False): the placeholder must reach the SQL as itself, not as bool("...").
                compiled = CompiledSelect(
                    lambda t, i, m: (
                        cls.select()
                        .where(
                            (cls.tenant_id == t)
                            & (cls._meta.primary_key == i)
                            & (cls.livemode == Value(m, converter=False))
                        )
                        .limit(1)
                    ),
                    3,
                )
            else:
                compiled = CompiledSelect(lambda t, i: cls.for_tenant(t).where(cls._meta.primary_key == i).limit(1), 2)
            cls._by_id = compiled
        rows = (
            compiled.rows(tenant_id, row_id, current_livemode())
            if cls.mode_scoped
            else compiled.rows(tenant_id, row_id)
        )
        if not rows:
            raise NotFound(f"No {cls.label} with this id.")
        # CompiledSelect.rows keys each row's instances by their model class, so this one is a `cls`.
        return cast(Self, rows[0][cls])
