"""The audit trail: entries in a per-tenant hash chain, and each chain's head."""

STATEMENTS = [
    # No foreign key to tenant: the trail outlives a deleted tenant, and "-" is the platform's chain.
    """CREATE TABLE audit_chain (
        tenant_id VARCHAR(30) PRIMARY KEY,
        last_sequence BIGINT NOT NULL,
        last_hash VARCHAR(64) NOT NULL,
        first_sequence BIGINT NOT NULL,
        anchor_hash VARCHAR(64) NOT NULL
    )""",
    """CREATE TABLE audit_entry (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) NOT NULL,
        sequence BIGINT NOT NULL,
        action VARCHAR(64) NOT NULL,
        resource_type VARCHAR(32) NOT NULL,
        resource_id VARCHAR(128),
        actor_type VARCHAR(16) NOT NULL,
        actor_id VARCHAR(30),
        old_values TEXT,
        new_values TEXT,
        decided_by TEXT NOT NULL,
        ip_address VARCHAR(64),
        user_agent VARCHAR(512),
        request_id VARCHAR(128),
        created_at TIMESTAMP NOT NULL,
        previous_hash VARCHAR(64) NOT NULL,
        hash VARCHAR(64) NOT NULL
    )""",
    # Every filter of GET /v1/audit-logs walks an index that leads with the tenant, newest first.
    "CREATE UNIQUE INDEX audit_entry_tenant_sequence ON audit_entry (tenant_id, sequence)",
    "CREATE UNIQUE INDEX audit_entry_tenant_id ON audit_entry (tenant_id, id)",
    "CREATE INDEX audit_entry_tenant_action ON audit_entry (tenant_id, action, sequence)",
    "CREATE INDEX audit_entry_tenant_resource ON audit_entry (tenant_id, resource_type, resource_id, sequence)",
    "CREATE INDEX audit_entry_tenant_actor ON audit_entry (tenant_id, actor_id, sequence)",
    "CREATE INDEX audit_entry_tenant_created ON audit_entry (tenant_id, created_at)",
]
