"""Scoped API keys, stored as hashes."""

STATEMENTS = [
    """CREATE TABLE api_key (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
        name VARCHAR(100) NOT NULL,
        prefix VARCHAR(16) NOT NULL,
        secret_hash VARCHAR(64) NOT NULL,
        previous_secret_hash VARCHAR(64),
        previous_expires_at TIMESTAMP,
        mode VARCHAR(8) NOT NULL,
        permissions TEXT NOT NULL,
        allowed_ips TEXT NOT NULL,
        expires_at TIMESTAMP,
        created_by VARCHAR(30),
        created_at TIMESTAMP NOT NULL,
        last_used_at TIMESTAMP,
        revoked_at TIMESTAMP
    )""",
    "CREATE UNIQUE INDEX api_key_secret_hash ON api_key (secret_hash)",
    "CREATE UNIQUE INDEX api_key_previous_secret_hash ON api_key (previous_secret_hash)",
    "CREATE INDEX api_key_tenant ON api_key (tenant_id, id)",
]
