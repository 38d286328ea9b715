"""The durable job queue (models.job): jobs and their attempts, under row-level security.

A platform job has no tenant (tenant_id NULL): m0009's policy shows it only to an unscoped
connection (the worker claiming, the CLI), never to a tenant's request.
"""

from __future__ import annotations

from typing import Any

from models.migrations.m0009_row_level_security import secure_tables

STATEMENTS = [
    """CREATE TABLE job (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) REFERENCES tenant (id) ON DELETE CASCADE,
        livemode BOOLEAN NOT NULL DEFAULT TRUE,
        kind VARCHAR(64) NOT NULL,
        payload TEXT NOT NULL,
        status VARCHAR(16) NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        run_at TIMESTAMP NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        progress INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        last_error VARCHAR(1000),
        unique_key VARCHAR(255),
        lease_owner VARCHAR(64),
        lease_until TIMESTAMP,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
        request_id VARCHAR(128),
        resource_type VARCHAR(32),
        resource_id VARCHAR(64),
        created_at TIMESTAMP NOT NULL,
        started_at TIMESTAMP,
        finished_at TIMESTAMP,
        updated_at TIMESTAMP NOT NULL
    )""",
    # The claim: due jobs by state and time.
    "CREATE INDEX job_due ON job (status, run_at)",
    # The API's list: a tenant's jobs, newest first.
    "CREATE INDEX job_tenant ON job (tenant_id, livemode, id)",
    "CREATE INDEX job_resource ON job (tenant_id, resource_type, resource_id)",
    # One active job per unique key (per tenant, platform jobs under ''): a second enqueue while one
    # is queued, running or waiting for a retry creates nothing. Partial and expression indexes work
    # alike on SQLite and PostgreSQL.
    """CREATE UNIQUE INDEX job_unique_active ON job (coalesce(tenant_id, ''), kind, unique_key)
        WHERE unique_key IS NOT NULL AND status IN ('queued', 'running', 'failed')""",
    """CREATE TABLE job_attempt (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) REFERENCES tenant (id) ON DELETE CASCADE,
        job_id VARCHAR(30) NOT NULL REFERENCES job (id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        worker VARCHAR(64),
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP,
        duration_ms INTEGER,
        outcome VARCHAR(16) NOT NULL,
        error VARCHAR(1000)
    )""",
    "CREATE UNIQUE INDEX job_attempt_number ON job_attempt (job_id, number)",
]

#: The tenant-owned tables this migration adds; each gets m0009's policy (tests/api/test_row_security.py).
TABLES = ("job", "job_attempt")


def after(db: Any) -> None:
    """Puts the new tables under m0009's tenant-isolation policy (PostgreSQL only)."""
    secure_tables(db, TABLES)
