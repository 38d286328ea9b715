"""Database set-up: SQLite (WAL) by default, pooled PostgreSQL when DATABASE_URL says so; migrations."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from peewee import Database, SqliteDatabase, __exception_wrapper__
from playhouse.pool import PooledPostgresqlDatabase

from models.base import database, utcnow

log = logging.getLogger("tenantry.db")

_MIGRATION_LOCK = 7_243_811  # advisory lock key: one migrator at a time on PostgreSQL

#: Indexes on tenant-owned tables that do not lead with tenant_id, each because the lookup it
#: serves happens before the tenant is known (tests/test_schema.py holds every other index to it).
GLOBAL_INDEXES: dict[str, str] = {
    "domain_domain": "a login on a tenant's host name finds the tenant by its domain",
    "user_account_email": "a login without a tenant finds the email's accounts in every tenant",
    "session_by_user": "the platform operator's sessions belong to no tenant",
    "refresh_token_hash": "a refresh token names no tenant: it is found by its hash",
    "api_key_secret_hash": "an API key names no tenant: it is found by its hash",
    "api_key_previous_secret_hash": "so is a rotated key's previous secret, in its grace period",
    "mfa_recovery_code_hash": "recovery codes are unique platform-wide, found by their hash",
    "webhook_delivery_due": "the delivery worker serves every tenant: it finds due deliveries across them",
}


#: The PostgreSQL role migrations create for the server: no login, no superuser, no BYPASSRLS.
APP_ROLE = "tenantry_app"
#: The setting that scopes every tenant-owned table's rows (row-level security); empty: unscoped.
TENANT_SETTING = "tenantry.tenant_id"


class ScopedPostgresqlDatabase(PooledPostgresqlDatabase):
    """Pooled PostgreSQL whose connections act as `role` (SET ROLE), so row-level security binds them.

    A superuser, a table owner without FORCE, or a role with BYPASSRLS is not bound by the
    tenant policies: the server switches to a role that is (TENANTRY_DB_ROLE), or connects as one.
    """

    def __init__(self, *args: Any, role: str | None = None, **kwargs: Any) -> None:
        self.role = role
        self._deferred = threading.local()
        # The names of the statements each open connection has prepared (a connection is used by
        # one thread at a time; a closed one drops out with its entry).
        self._prepared: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
        super().__init__(*args, **kwargs)

    def defer(self, statement: str) -> None:
        """Sends `statement` (no parameters) with this thread's next statement, in the same round trip.

        A change of the row-level-security scope costs no round trip of its own: the scope set
        once the caller is known rides on the request's next query, and the reset at its end on
        the next request's first. Before a transaction begins it is sent alone, outside the
        transaction, so that a rollback cannot undo it.
        """
        self._deferred.sql = statement

    def _take_deferred(self) -> str | None:
        statement = getattr(self._deferred, "sql", None)
        self._deferred.sql = None
        return statement

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        """Runs `sql`, preceded in the same round trip by a deferred statement, if any."""
        deferred = self._take_deferred()
        if deferred is not None:
            if self.in_transaction():
                super().execute_sql(deferred)
            else:
                # psycopg2 returns the last statement's result; `%` must be doubled once there are params.
                sql = f"{deferred.replace('%', '%%') if params else deferred};\n{sql}"
        return super().execute_sql(sql, params)

    def execute_prepared(self, name: str, sql: str, params: list[Any]) -> Any:
        """Runs `sql` (with `%s` placeholders) as the prepared statement `name`; returns the cursor.

        The statement is prepared once per connection, then each run is an EXECUTE: PostgreSQL
        neither parses nor plans it again (a plan with row-security quals costs more than the
        lookup itself). Preparing is a round trip of its own: a prepared statement outlives a
        failed or rolled-back command, so it is recorded only once it exists for sure.
        """
        conn = self.connection()
        prepared = self._prepared.get(conn)
        if prepared is None:
            prepared = self._prepared[conn] = set()
        if name not in prepared:
            with __exception_wrapper__, conn.cursor() as cursor:
                cursor.execute(f"PREPARE {name} AS {_numbered_placeholders(sql)}")
            prepared.add(name)
        if not params:
            return self.execute_sql(f"EXECUTE {name}")
        return self.execute_sql(f"EXECUTE {name} ({', '.join(['%s'] * len(params))})", params)

    def begin(self, *args: Any, **kwargs: Any) -> None:
        """Begins a transaction, after sending any deferred statement on its own."""
        deferred = self._take_deferred()
        if deferred is not None:
            self.cursor().execute(deferred)
        super().begin(*args, **kwargs)

    def _initialize_connection(self, conn: Any) -> None:
        super()._initialize_connection(conn)
        if self.role:
            with conn.cursor() as cursor:
                cursor.execute(f'SET ROLE "{self.role}"')  # the name is checked by Settings
            conn.commit()


_PLACEHOLDER = re.compile(r"%[%s]")


def _numbered_placeholders(sql: str) -> str:
    """Returns `sql` with its psycopg2 placeholders (`%s`) numbered as PREPARE wants them ($1, $2, ...)."""
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        if match.group() == "%%":
            return "%"  # PREPARE is sent without parameters: a literal percent sign stands alone
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(number, sql)


def make_database(url: str, pool_size: int = 20, role: str | None = None) -> Database:
    """Returns an (unconnected) peewee database for `url`.

    `sqlite:///path/to/file.db` (WAL mode, foreign keys on) or `postgresql://user:pw@host:port/db`
    (a connection pool of `pool_size`, each connection acting as `role` when given). Raises
    ValueError for any other scheme.
    """
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else parsed.path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteDatabase(path, pragmas={
            "journal_mode": "wal",
            "foreign_keys": 1,
            "busy_timeout": 10_000,
            "synchronous": "normal",
        # A write transaction takes the write lock when it begins: a deferred one that read first
        # fails at once (SQLITE_BUSY, no busy wait) if another writer committed in between.
        }, lock_type="IMMEDIATE")
    if parsed.scheme in {"postgres", "postgresql"}:
        return ScopedPostgresqlDatabase(
            unquote(parsed.path.lstrip("/")),
            role=role,
            user=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            host=parsed.hostname or None,
            port=parsed.port or 5432,
            max_connections=pool_size,
            stale_timeout=300,
            timeout=10,
            connect_timeout=5,
        )
    raise ValueError(f"DATABASE_URL scheme {parsed.scheme!r} is not supported (use sqlite or postgresql)")


def init_database(url: str, pool_size: int = 20, role: str | None = None) -> Database:
    """Points the models' proxy at the database for `url` and returns it."""
    db = make_database(url, pool_size, role)
    database.initialize(db)
    return db


def _migrations() -> list[tuple[str, list[str], Callable[[Database], None] | None]]:
    import models.migrations as package

    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("m") and info.name[1:5].isdigit():
            module = importlib.import_module(f"models.migrations.{info.name}")
            found.append((info.name, list(module.STATEMENTS), getattr(module, "after", None)))
    return found


def upgrade() -> list[str]:
    """Applies every migration not yet applied, each in its own transaction; returns their names.

    Safe to run from several processes at once: on PostgreSQL an advisory lock serialises them,
    on SQLite the write lock does.
    """
    db = database.obj
    is_pg = isinstance(db, PooledPostgresqlDatabase)
    applied: list[str] = []
    with db.connection_context():
        if is_pg:
            db.execute_sql("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            db.execute_sql(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version VARCHAR(64) PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
            )
            done = {row[0] for row in db.execute_sql("SELECT version FROM schema_migrations").fetchall()}
            for name, statements, after in _migrations():
                if name in done:
                    continue
                with db.atomic():
                    for statement in statements:
                        db.execute_sql(statement)
                    if after is not None:
                        after(db)  # a data step, in the same transaction as the schema change
                    db.execute_sql(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)"
                        if is_pg else "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                        (name, utcnow()),
                    )
                log.info("applied migration", extra={"migration": name})
                applied.append(name)
            if is_pg:
                # The server's role may use every table, current and future; row-level security
                # decides which rows. Granted on every upgrade: tables come with migrations.
                with db.atomic():
                    db.execute_sql(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")
                    db.execute_sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}")
        finally:
            if is_pg:
                db.execute_sql("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied


def row_secured_tables() -> set[str]:
    """Returns every table the migrations bind to the tenant policy (m0009's and later ones' SECURED_TABLES)."""
    tables: set[str] = set()
    for name, _, _ in _migrations():
        module = importlib.import_module(f"models.migrations.{name}")
        tables |= set(getattr(module, "TABLES", ())) | set(getattr(module, "SECURED_TABLES", ()))
    return tables


def scope_rows_to(tenant_id: str | None) -> None:
    """Binds this connection's row-level security to one tenant (None: unscoped) on PostgreSQL.

    Called by the enforcement point once the caller's tenant is known, and with None when the
    request ends, since a worker thread's connection serves its next request too. A no-op on
    SQLite, where the data layer's scoping is the guard.
    """
    db = database.obj
    if isinstance(db, ScopedPostgresqlDatabase):
        from psycopg2.extensions import QuotedString

        literal = QuotedString(tenant_id or "").getquoted().decode()
        db.defer(f"SELECT set_config('{TENANT_SETTING}', {literal}, false)")


def bypasses_row_security() -> bool:
    """True when the server's PostgreSQL role is not bound by row-level security (a warning at start)."""
    if not isinstance(database.obj, PooledPostgresqlDatabase):
        return False
    row = database.execute_sql(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def ping() -> None:
    """Runs a trivial query; raises the driver's error when the database does not answer."""
    database.execute_sql("SELECT 1").fetchone()
