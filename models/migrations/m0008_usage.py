"""Request counts per tenant, day, credential and operation (GET /v1/tenants/{tenant_id}/usage)."""

STATEMENTS = [
    # No foreign key: counts are written in the background, and outlive nothing they describe.
    """CREATE TABLE usage_counter (
        tenant_id VARCHAR(30) NOT NULL,
        day DATE NOT NULL,
        credential VARCHAR(40) NOT NULL,
        operation VARCHAR(64) NOT NULL,
        requests BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, day, credential, operation)
    )""",
]
