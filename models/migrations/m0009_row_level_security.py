"""Row-level security on PostgreSQL: every tenant-owned table shows a request only its tenant's rows.

Each table gets one policy: a row is visible, and may be written, when its tenant_id is the
connection's `tenantry.tenant_id` setting, or when that setting is empty (the server before it
knows the caller's tenant: authentication, login; the CLI; the usage writer). The enforcement
point sets it for every request of a tenant's user or key (tenantry.db.scope_rows_to). The
server acts as the role `tenantry_app`, which does not bypass row-level security; FORCE binds
the tables' owner too. SQLite has no row-level security: there the data layer's scoping is the
guard.
"""

from __future__ import annotations

from typing import Any

from tenantry.db import secure_tables as db_secure_tables

STATEMENTS: list[str] = []

#: Every table with a tenant_id column (tests/test_schema.py checks that none is missing).
TABLES = (
    "domain",
    "user_account",
    "session",
    "refresh_token",
    "api_key",
    "mfa_recovery_code",
    "permission",
    "role",
    "user_role",
    "policy",
    "idempotency_record",
    "audit_chain",
    "audit_entry",
    "usage_counter",
)


def after(db: Any) -> None:
    """Creates the server's role (once per cluster) and the policies (PostgreSQL only)."""
    from playhouse.pool import PooledPostgresqlDatabase

    if not isinstance(db, PooledPostgresqlDatabase):
        return
    # Roles belong to the cluster, and several databases may be migrated at once.
    db.execute_sql("""DO $$ BEGIN
        CREATE ROLE tenantry_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END $$""")
    secure_tables(db, TABLES)


def secure_tables(db: Any, tables: tuple[str, ...]) -> None:
    """Binds each table to the tenant policy (PostgreSQL only). It moved to tenantry.db.secure_tables,
    which does exactly what this did when it was applied; kept here for the migrations that call it."""
    db_secure_tables(db, tables)
