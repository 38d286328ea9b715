"""The schema itself: every index on a tenant-owned table leads with tenant_id, unless it must not."""

from __future__ import annotations

from tenantry.db import GLOBAL_INDEXES
from tests.livesrv import backend


def indexes(server) -> dict[str, tuple[str, list[str], bool]]:
    """Returns {index name: (table, columns in order, is the primary key)} of the server's database."""
    url = server.env["DATABASE_URL"]
    found: dict[str, tuple[str, list[str], bool]] = {}
    if backend() == "postgres":
        import psycopg2

        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cur:
                cur.execute("""
                    SELECT i.relname, t.relname, ix.indisprimary,
                           array(SELECT a.attname FROM unnest(ix.indkey) WITH ORDINALITY k(attnum, n)
                                 JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.n)
                    FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class t ON t.oid = ix.indrelid
                    JOIN pg_namespace ns ON ns.oid = t.relnamespace WHERE ns.nspname = 'public'""")
                for name, table, primary, columns in cur.fetchall():
                    found[name] = (table, list(columns), primary)
        finally:
            conn.close()
        return found
    import sqlite3

    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for _, name, _, origin, _ in conn.execute(f'PRAGMA index_list("{table}")'):
                columns = [row[2] for row in conn.execute(f'PRAGMA index_info("{name}")')]
                found[name] = (table, columns, origin == "pk")
    finally:
        conn.close()
    return found


def tenant_owned_tables(server) -> set[str]:
    tables = set()
    for table, columns, _ in indexes(server).values():
        if "tenant_id" in columns:
            tables.add(table)
    return tables - {"tenant"}


def test_every_index_on_a_tenant_owned_table_leads_with_tenant_id(server):
    owned = tenant_owned_tables(server)
    assert {
        "user_account",
        "api_key",
        "audit_entry",
        "role",
        "policy",
        "usage_counter",
        "integration_provider",
        "integration_event",
    } <= owned
    offenders = []
    for name, (table, columns, primary) in sorted(indexes(server).items()):
        if table not in owned or name in GLOBAL_INDEXES:
            continue
        # A single-column primary key on a globally unique id (a ULID) is the row's identity,
        # not a lookup path; composite primary keys must lead with the tenant like any index.
        if primary and columns == ["id"]:
            continue
        if columns[0] != "tenant_id":
            offenders.append(f"{name} on {table}{tuple(columns)}")
    assert offenders == []
    # Every exception still exists: the list does not outlive the index it excuses.
    assert set(GLOBAL_INDEXES) <= set(indexes(server))


#: Tables of a tenant that outlive it on purpose: they keep no reference to the tenant's row.
OUTLIVE_THE_TENANT = {"audit_chain", "audit_entry", "usage_counter", "idempotency_record", "event", "event_head"}


def tenant_tables_and_cascades(server) -> tuple[set[str], dict[str, set[str]]]:
    """Returns (the tables with a tenant_id column, {table: the tables it references ON DELETE CASCADE})."""
    url = server.env["DATABASE_URL"]
    cascades: dict[str, set[str]] = {}
    if backend() == "postgres":
        import psycopg2

        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT table_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND column_name = 'tenant_id'"
                )
                owned = {row[0] for row in cur.fetchall()}
                cur.execute("""
                    SELECT t.relname, r.relname FROM pg_constraint c
                    JOIN pg_class t ON t.oid = c.conrelid JOIN pg_class r ON r.oid = c.confrelid
                    WHERE c.contype = 'f' AND c.confdeltype = 'c'""")
                for table, referenced in cur.fetchall():
                    cascades.setdefault(table, set()).add(referenced)
        finally:
            conn.close()
        return owned, cascades
    import sqlite3

    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        owned = {t for t in tables if any(row[1] == "tenant_id" for row in conn.execute(f'PRAGMA table_info("{t}")'))}
        for table in tables:
            for row in conn.execute(f'PRAGMA foreign_key_list("{table}")'):
                if row[6] == "CASCADE":
                    cascades.setdefault(table, set()).add(row[2])
    finally:
        conn.close()
    return owned, cascades


def test_deleting_a_tenant_deletes_every_table_of_its_rows_by_cascade(server):
    """models.accounts.delete_tenant deletes the tenant's row and nothing else: every tenant-owned table
    reaches `tenant` through ON DELETE CASCADE references, but those that outlive it on purpose."""
    owned, cascades = tenant_tables_and_cascades(server)

    def goes_with_the_tenant(table: str, seen: frozenset[str] = frozenset()) -> bool:
        parents = cascades.get(table, set())
        return "tenant" in parents or any(goes_with_the_tenant(p, seen | {table}) for p in parents - seen)

    assert owned - {"tenant"} > OUTLIVE_THE_TENANT
    assert sorted(t for t in owned - {"tenant"} - OUTLIVE_THE_TENANT if not goes_with_the_tenant(t)) == []
    assert sorted(t for t in OUTLIVE_THE_TENANT if "tenant" in cascades.get(t, set())) == []
