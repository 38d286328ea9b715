"""Row-level security on PostgreSQL: a handler's unscoped query still sees only its request's tenant.

SQLite has no row-level security: on the embedded default the data layer's scoping
(TenantScopedModel) is the guard, as the README says, so these tests run in the postgres
environment only.
"""

from __future__ import annotations

from typing import Any

import pytest

from tenantry.db import row_secured_tables
from tests.conftest import add_user, register
from tests.livesrv import backend

TABLES = row_secured_tables()

pytestmark = pytest.mark.skipif(
    backend() != "postgres", reason="row-level security is PostgreSQL's; SQLite relies on the data layer's scoping"
)


def _sql(server, statement: str) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(server.env["DATABASE_URL"])  # the superuser the migrations ran as
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall()
    finally:
        conn.close()


def test_every_tenant_owned_table_has_a_forced_tenant_policy(server):
    with_tenant = {
        row[0]
        for row in _sql(
            server,
            """
        SELECT table_name FROM information_schema.columns
        WHERE table_schema = 'public' AND column_name = 'tenant_id'""",
        )
    }
    assert with_tenant == set(TABLES)
    secured = {
        name: (enabled, forced)
        for name, enabled, forced in _sql(
            server,
            """
        SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class
        WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'""",
        )
    }
    assert all(secured[table] == (True, True) for table in TABLES)
    policies = {
        row[0] for row in _sql(server, "SELECT tablename FROM pg_policies WHERE policyname = 'tenant_isolation'")
    }
    assert policies == set(TABLES)
    role = _sql(server, "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = 'tenantry_app'")
    assert role == [(False, False, False)]


def test_an_unscoped_query_inside_a_request_for_tenant_b_gets_none_of_tenant_as_rows(
    server, api, operator, monkeypatch
):
    tenant_a, tenant_b = register(api, "Tenant A"), register(api, "Tenant B")
    add_user(api, tenant_a)
    add_user(api, tenant_b)

    # A handler with a bug: it forgets the tenant and reads and writes every user there is.
    import handlers.users
    from models import User

    def leaky_list_users(**_: Any) -> dict[str, Any]:
        emails = sorted(u.email for u in User.select())  # no tenant filter
        touched = User.update(last_name="Leaked").where(User.tenant_id == tenant_a.tenant["id"]).execute()
        return {"data": emails, "touched": touched}

    monkeypatch.setattr(handlers.users, "list_users", leaky_list_users)
    for name in (
        "DATABASE_URL",
        "TENANTRY_SECRET_KEY",
        "TENANTRY_INSTANCE_PATH",
        "TENANTRY_DB_ROLE",
        "TENANTRY_RATE_LIMIT_IP",
    ):
        monkeypatch.setenv(name, server.env[name])
    monkeypatch.delenv("REDIS_URL", raising=False)
    from tenantry.app import create_app

    app = create_app()  # in this process, on the live server's database: the same core, the leaky handler
    with app.test_client() as client:
        seen = client.get("/v1/users", headers=tenant_b.headers).json()
        assert set(seen["data"]) == set(_emails_of(server, tenant_b.tenant["id"]))
        assert not set(seen["data"]) & set(_emails_of(server, tenant_a.tenant["id"]))
        assert seen["touched"] == 0  # nor can it write them
        assert _sql(server, "SELECT count(*) FROM user_account WHERE last_name = 'Leaked'") == [(0,)]
        # The same handler in a request outside any tenant (the platform operator's) reads every
        # tenant's rows: it is the policy bound to tenant B's request that kept tenant A's out.
        everyone = client.get("/v1/users", headers=operator).json()
    assert set(_emails_of(server, tenant_a.tenant["id"])) <= set(everyone["data"])
    assert everyone["touched"] == 2
    # Write this process's usage counts now, while the database exists (the writer is in-process).
    app.app.extensions["tenantry"].usage.flush()


def _emails_of(server, tenant_id: str | None) -> list[str]:
    where = f"WHERE tenant_id = '{tenant_id}'" if tenant_id else "WHERE tenant_id IS NOT NULL"
    return [row[0] for row in _sql(server, f"SELECT email FROM user_account {where}")]
