"""Test and live mode: users are live or test data; audit entries record the mode of their change."""

STATEMENTS = [
    "ALTER TABLE user_account ADD COLUMN livemode BOOLEAN NOT NULL DEFAULT TRUE",
    # An email is unique per tenant and mode: test data may reuse a live user's email.
    "DROP INDEX user_account_tenant_email",
    "CREATE UNIQUE INDEX user_account_tenant_email ON user_account (tenant_id, livemode, email_normalized)",
    "ALTER TABLE audit_entry ADD COLUMN livemode BOOLEAN NOT NULL DEFAULT TRUE",
    "CREATE INDEX audit_entry_tenant_mode ON audit_entry (tenant_id, livemode, sequence)",
]
