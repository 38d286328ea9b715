"""Inbound integrations: providers (secret sealed) and the events they sent, under row-level security."""

from __future__ import annotations

from typing import Any

from tenantry.db import secure_tables

STATEMENTS = [
    """CREATE TABLE integration_provider (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
        name VARCHAR(100) NOT NULL,
        webhook_url VARCHAR(2048) NOT NULL,
        api_base_url VARCHAR(2048) NOT NULL,
        health_url VARCHAR(2048),
        auth_type VARCHAR(16) NOT NULL,
        signature_scheme VARCHAR(32) NOT NULL,
        secret_sealed TEXT NOT NULL,
        is_active BOOLEAN NOT NULL DEFAULT TRUE,
        allowed_ips TEXT NOT NULL,
        created_by VARCHAR(30),
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL,
        health_status VARCHAR(16),
        last_checked_at TIMESTAMP,
        response_time_ms INTEGER
    )""",
    "CREATE UNIQUE INDEX integration_provider_tenant_name ON integration_provider (tenant_id, name)",
    "CREATE INDEX integration_provider_tenant ON integration_provider (tenant_id, id)",
    """CREATE TABLE integration_event (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
        provider_id VARCHAR(30) NOT NULL REFERENCES integration_provider (id) ON DELETE CASCADE,
        event_id VARCHAR(255) NOT NULL,
        event_type VARCHAR(100) NOT NULL,
        status VARCHAR(16) NOT NULL,
        error VARCHAR(500),
        payload TEXT NOT NULL,
        created_at TIMESTAMP NOT NULL,
        processed_at TIMESTAMP
    )""",
    # Stored once per provider and event id: a repeated delivery finds its first one.
    "CREATE UNIQUE INDEX integration_event_once ON integration_event (tenant_id, provider_id, event_id)",
    "CREATE INDEX integration_event_tenant ON integration_event (tenant_id, id)",
    "CREATE INDEX integration_event_tenant_provider ON integration_event (tenant_id, provider_id, id)",
    "CREATE INDEX integration_event_tenant_created ON integration_event (tenant_id, created_at)",
]

#: The tenant-owned tables this migration adds; each gets m0009's policy (tests/test_row_security.py).
TABLES = ("integration_provider", "integration_event")


def after(db: Any) -> None:
    """Puts the new tables under m0009's tenant-isolation policy (PostgreSQL only)."""
    secure_tables(db, TABLES)
