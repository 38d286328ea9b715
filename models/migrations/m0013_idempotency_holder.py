"""Idempotency claims record the connection that holds them, so an abandoned one is taken over at once."""

STATEMENTS = [
    # The claiming connection's holder token (tenantry.db.claim_holder): on PostgreSQL a claim
    # whose holder's session lock is free was abandoned. NULL on SQLite, and on older claims.
    "ALTER TABLE idempotency_record ADD COLUMN holder BIGINT",
]
