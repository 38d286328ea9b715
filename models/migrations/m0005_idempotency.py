"""Idempotency records: the first answer to each (tenant, credential, Idempotency-Key), kept 24 hours."""

STATEMENTS = [
    # No foreign key on tenant_id: anonymous operations (login, register) are kept under "-".
    """CREATE TABLE idempotency_record (
        tenant_id VARCHAR(30) NOT NULL,
        credential VARCHAR(80) NOT NULL,
        idem_key VARCHAR(255) NOT NULL,
        fingerprint VARCHAR(64) NOT NULL,
        state VARCHAR(10) NOT NULL,
        locked_until TIMESTAMP NOT NULL,
        status_code INTEGER,
        response TEXT,
        created_at TIMESTAMP NOT NULL,
        expires_at TIMESTAMP NOT NULL,
        PRIMARY KEY (tenant_id, credential, idem_key)
    )""",
    "CREATE INDEX idempotency_record_expiry ON idempotency_record (tenant_id, expires_at)",
]
