"""Users carry an external id (from a customer's own system), a small metadata object and a phone number."""

STATEMENTS = [
    # The id a provisioning system knows the user by; unique in the tenant's live or test data.
    # NULLs never collide in a unique index, on SQLite and on PostgreSQL alike, so users without
    # one need no partial index.
    "ALTER TABLE user_account ADD COLUMN external_id VARCHAR(255)",
    # A JSON object of string values (the API bounds its size); NULL reads as {}.
    "ALTER TABLE user_account ADD COLUMN metadata TEXT",
    # E.164 (+ and up to 15 digits), checked by the API.
    "ALTER TABLE user_account ADD COLUMN phone VARCHAR(16)",
    "CREATE UNIQUE INDEX user_account_tenant_external_id ON user_account (tenant_id, livemode, external_id)",
    # The session list shows when each session was last used (its last refresh).
    "ALTER TABLE session ADD COLUMN last_used_at TIMESTAMP",
]
