"""Database set-up: SQLite (WAL) by default, pooled PostgreSQL when DATABASE_URL says so; migrations."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
import secrets
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from peewee import (  # type: ignore[attr-defined]  # peewee has __exception_wrapper__; its stubs omit it
    Database,
    InterfaceError,
    OperationalError,
    SqliteDatabase,
    __exception_wrapper__,
)
from playhouse.pool import PooledPostgresqlDatabase

from models.base import database, utcnow

log = logging.getLogger("tenantry.db")

_MIGRATION_LOCK = 7_243_811  # advisory lock key: one migrator at a time on PostgreSQL

#: Indexes on tenant-owned tables that do not lead with tenant_id, each because the lookup it
#: serves happens before the tenant is known (tests/api/test_schema.py holds every other index to it).
GLOBAL_INDEXES: dict[str, str] = {
    "domain_domain": "a login on a tenant's host name finds the tenant by its domain",
    "user_account_email": "a login without a tenant finds the email's accounts in every tenant",
    "session_by_user": "the platform operator's sessions belong to no tenant",
    "refresh_token_hash": "a refresh token names no tenant: it is found by its hash",
    "api_key_secret_hash": "an API key names no tenant: it is found by its hash",
    "api_key_previous_secret_hash": "so is a rotated key's previous secret, in its grace period",
    "mfa_recovery_code_hash": "recovery codes are unique platform-wide, found by their hash",
    "webhook_delivery_due": "the delivery worker serves every tenant: it finds due deliveries across them",
    "job_due": "the job worker serves every tenant (and the platform): it finds due jobs across them",
    "job_unique_active": "leads with the tenant as coalesce(tenant_id, ''), so platform jobs' keys are unique too",
    "job_fair": "leads with the tenant as coalesce(tenant_id, ''): the fair claim walks the waiting tenants",
    "job_attempt_number": "a job's attempts are numbered by its globally unique id, platform jobs' too",
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
        # Each connection's holder token: a session advisory lock the connection takes when it
        # opens and keeps until it closes (see `holder_token`).
        self._holders: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        # Whether this thread may have committed anything since `track_writes` (see `may_have_written`).
        self._writes = threading.local()
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

    def track_writes(self) -> None:
        """Starts a unit of work on this thread (a request): nothing is written in it yet."""
        self._writes.sent = False

    def may_have_written(self) -> bool:
        """True when this thread's unit of work may have changed the database since `track_writes`.

        That is once a COMMIT was sent (whether or not it answered: a COMMIT the connection lost
        has an unknown outcome), or a statement other than a read ran outside a transaction,
        where it commits by itself. A statement inside a transaction writes nothing until its
        COMMIT. Unknown statements count as writes.
        """
        return getattr(self._writes, "sent", True)

    def commit(self) -> None:
        """Commits this thread's transaction (and records that it may have written)."""
        self._writes.sent = True
        super().commit()

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        """Runs `sql`, preceded in the same round trip by a deferred statement, if any."""
        if not self.in_transaction() and not sql.lstrip()[:8].upper().startswith(_READS):
            self._writes.sent = True
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
            with __exception_wrapper__:  # the driver's errors as Peewee's, as every other statement's
                self.cursor().execute(deferred)
        super().begin(*args, **kwargs)

    def _initialize_connection(self, conn: Any) -> None:
        super()._initialize_connection(conn)
        # One round trip: the role (the name is checked by Settings) and the holder token's lock.
        role = f'SET ROLE "{self.role}";\n' if self.role else ""
        with conn.cursor() as cursor:
            for _ in range(3):  # a token another session holds (a 1 in 2**63 chance) is drawn again
                token = secrets.randbits(63)
                cursor.execute(f"{role}SELECT pg_try_advisory_lock(%s)", (token,))
                role = ""
                if cursor.fetchone()[0]:
                    self._holders[conn] = token
                    break
        conn.commit()

    def holder_token(self) -> int | None:
        """Returns the token of this thread's connection (connecting if need be), or None if it has none.

        The connection holds a session advisory lock on its token for as long as it lives, and
        PostgreSQL frees it the moment the session ends, whether it was closed, its process
        died or the server restarted. A row that records the token of the connection that
        claimed it can thus tell whether its holder is still there (`holder_alive`).
        """
        return self._holders.get(self.connection())

    def holder_alive(self, token: int) -> bool:
        """True while the connection with `token` (another one, or this one) still holds its lock.

        Taking the lock for an instant shows whether it is free. Advisory locks count their
        holds per session, so this connection's own token answers False: a claim this very
        connection made earlier belongs to a request that has finished, since a connection
        serves one request at a time.
        """
        row = self.execute_sql(
            "SELECT CASE WHEN pg_try_advisory_lock(%s) THEN NOT pg_advisory_unlock(%s) ELSE TRUE END", (token, token)
        ).fetchone()
        return bool(row[0])


#: Statements that change no data: outside a transaction they commit nothing (see `may_have_written`).
#: EXECUTE runs the prepared lookups of models.base.CompiledSelect, which are all selects.
_READS = ("SELECT", "EXECUTE", "PREPARE", "SET", "SHOW", "BEGIN", "ROLLBACK")

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
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else parsed.path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteDatabase(
            path,
            pragmas={
                "journal_mode": "wal",
                "foreign_keys": 1,
                "busy_timeout": 10_000,
                "synchronous": "normal",
                # A write transaction takes the write lock when it begins: a deferred one that read first
                # fails at once (SQLITE_BUSY, no busy wait) if another writer committed in between.
            },
            lock_type="IMMEDIATE",
        )
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
                        if is_pg
                        else "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
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


#: A row is visible, and may be written, when its tenant_id is the connection's `tenantry.tenant_id`
#: setting, or when that setting is empty (unscoped: before the caller's tenant is known, the CLI).
_VISIBLE = (
    "(coalesce(current_setting('tenantry.tenant_id', true), '') = '' "
    "OR tenant_id = current_setting('tenantry.tenant_id', true))"
)


def secure_tables(db: Any, tables: tuple[str, ...]) -> None:
    """Binds each table to the tenant-isolation policy (PostgreSQL only; a no-op elsewhere).

    A migration that adds a tenant-owned table calls it in its `after(db)`, and lists the table
    in its TABLES (tests/api/test_row_security.py checks that every tenant table is bound).
    """
    if not isinstance(db, PooledPostgresqlDatabase):
        return
    for table in tables:
        db.execute_sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        db.execute_sql(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        db.execute_sql(f"CREATE POLICY tenant_isolation ON {table} USING {_VISIBLE} WITH CHECK {_VISIBLE}")


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
    row = database.execute_sql("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def ping() -> None:
    """Runs a trivial query; raises the driver's error when the database does not answer.

    Answers for the database as it is now, not for this thread's connection: a connection
    found broken (the server restarted since it opened) is replaced and the query sent once
    more on a fresh one, and any failure drops the connection, so the next ping connects afresh.
    """
    try:
        database.execute_sql("SELECT 1").fetchone()
    except (OperationalError, InterfaceError):
        lost = connection_lost()
        drop_connection()
        if not lost:
            raise
        try:
            database.execute_sql("SELECT 1").fetchone()
        except (OperationalError, InterfaceError):
            drop_connection()
            raise


def connection_lost() -> bool:
    """True when this thread's open PostgreSQL connection is broken: closed under it, or its state unknown.

    psycopg2 marks a connection so the moment a statement finds it gone (the server restarted or
    the network cut it), without a round trip. False on SQLite, and when no connection is open
    (a failed connect is the database being unreachable, not a connection to replace).
    """
    db = database.obj
    if not isinstance(db, PooledPostgresqlDatabase) or db.is_closed():
        return False
    from psycopg2.extensions import TRANSACTION_STATUS_UNKNOWN

    conn = db._state.conn
    try:
        return bool(conn.closed) or conn.get_transaction_status() == TRANSACTION_STATUS_UNKNOWN
    except Exception:  # a driver that cannot even say: treat it as gone
        return True


def drop_connection() -> None:
    """Closes and discards this thread's connection, so its next statement connects afresh.

    After a failure: a pooled connection is closed rather than handed back (the pool would give a
    broken one out again). Never raises; a no-op when no connection is open. Every thread that
    keeps a connection (request threads, the usage writer, the delivery worker) uses this one.
    """
    db = database.obj
    try:
        if db.is_closed():
            return
        if db.in_transaction():
            # Only after a transaction block is left can its connection be closed; a caller
            # inside one lets the failure propagate and drops it on the way out.
            log.debug("not dropping a connection inside a transaction")
            return
        if isinstance(db, PooledPostgresqlDatabase):
            db.manual_close()  # closed, and removed from the pool's books
        else:
            db.close()
    except Exception:
        log.debug("closing a failed connection failed", exc_info=True)


def track_writes() -> None:
    """Starts a unit of work on this thread (a request) for `may_have_written` (PostgreSQL; else a no-op)."""
    db = database.obj
    if isinstance(db, ScopedPostgresqlDatabase):
        db.track_writes()


def retry_safe() -> bool:
    """True when this thread's unit of work failed on a lost connection before it could have written anything.

    Then it can run again, once, on a fresh connection with the same outcome as if the first
    connection had never broken. Never after a COMMIT was sent (its outcome is unknown) nor after
    a statement that commits by itself; never on SQLite, whose connection cannot be lost.
    """
    db = database.obj
    return isinstance(db, ScopedPostgresqlDatabase) and connection_lost() and not db.may_have_written()


def claim_holder() -> int | None:
    """Returns the holder token of this thread's connection (PostgreSQL), recorded with a claim; None on SQLite."""
    db = database.obj
    return db.holder_token() if isinstance(db, ScopedPostgresqlDatabase) else None


def holder_alive(token: int) -> bool:
    """True while the connection with the holder token `token` lives (always True on SQLite: unknown)."""
    db = database.obj
    return db.holder_alive(token) if isinstance(db, ScopedPostgresqlDatabase) else True
