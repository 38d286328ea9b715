"""Domain events (the outbox), each tenant's event sequence, webhook endpoints, deliveries and attempts."""

from __future__ import annotations

from typing import Any

from tenantry.db import secure_tables

#: The tenant-owned tables this migration adds, bound to the tenant policy on PostgreSQL.
SECURED_TABLES = ("event_head", "event", "webhook_endpoint", "webhook_delivery", "webhook_attempt")

STATEMENTS = [
    """CREATE TABLE event_head (
        tenant_id VARCHAR(30) PRIMARY KEY,
        last_sequence BIGINT NOT NULL
    )""",
    # No foreign key to tenant: like the audit trail, events are history.
    """CREATE TABLE event (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) NOT NULL,
        sequence BIGINT NOT NULL,
        type VARCHAR(64) NOT NULL,
        livemode BOOLEAN NOT NULL DEFAULT TRUE,
        data TEXT NOT NULL,
        request_id VARCHAR(128),
        created_at TIMESTAMP NOT NULL
    )""",
    "CREATE UNIQUE INDEX event_tenant_sequence ON event (tenant_id, sequence)",
    "CREATE INDEX event_tenant_mode_sequence ON event (tenant_id, livemode, sequence)",
    "CREATE INDEX event_tenant_type ON event (tenant_id, livemode, type, sequence)",
    "CREATE INDEX event_tenant_created ON event (tenant_id, created_at)",
    """CREATE TABLE webhook_endpoint (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
        url VARCHAR(2048) NOT NULL,
        description VARCHAR(500),
        events TEXT NOT NULL,
        enabled BOOLEAN NOT NULL DEFAULT TRUE,
        livemode BOOLEAN NOT NULL DEFAULT TRUE,
        secret TEXT NOT NULL,
        previous_secret TEXT,
        previous_expires_at TIMESTAMP,
        disabled_reason VARCHAR(32),
        failing_since TIMESTAMP,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL
    )""",
    "CREATE INDEX webhook_endpoint_tenant ON webhook_endpoint (tenant_id, livemode, enabled)",
    """CREATE TABLE webhook_delivery (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) NOT NULL,
        endpoint_id VARCHAR(30) NOT NULL REFERENCES webhook_endpoint (id) ON DELETE CASCADE,
        event_id VARCHAR(30) NOT NULL,
        event_type VARCHAR(64) NOT NULL,
        status VARCHAR(16) NOT NULL,
        attempt_count INTEGER NOT NULL DEFAULT 0,
        final_attempt BOOLEAN NOT NULL DEFAULT FALSE,
        next_attempt_at TIMESTAMP,
        lease_until TIMESTAMP,
        lease_owner VARCHAR(64),
        last_status_code INTEGER,
        last_error VARCHAR(500),
        created_at TIMESTAMP NOT NULL,
        completed_at TIMESTAMP
    )""",
    "CREATE INDEX webhook_delivery_tenant_endpoint ON webhook_delivery (tenant_id, endpoint_id, id)",
    # The worker serves every tenant: it finds due deliveries across them (tenantry.db.GLOBAL_INDEXES).
    "CREATE INDEX webhook_delivery_due ON webhook_delivery (status, next_attempt_at)",
    """CREATE TABLE webhook_attempt (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) NOT NULL,
        delivery_id VARCHAR(30) NOT NULL REFERENCES webhook_delivery (id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        started_at TIMESTAMP NOT NULL,
        duration_ms INTEGER NOT NULL,
        status_code INTEGER,
        succeeded BOOLEAN NOT NULL,
        error VARCHAR(500),
        response_body TEXT
    )""",
    "CREATE INDEX webhook_attempt_tenant_delivery ON webhook_attempt (tenant_id, delivery_id, number)",
]


def after(db: Any) -> None:
    """Binds the new tables to the tenant policy (PostgreSQL)."""
    secure_tables(db, SECURED_TABLES)
