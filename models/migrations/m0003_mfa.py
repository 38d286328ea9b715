"""TOTP multi-factor authentication: the encrypted secret, replay and attempt state, recovery codes."""

STATEMENTS = [
    "ALTER TABLE user_account ADD COLUMN mfa_enabled BOOLEAN NOT NULL DEFAULT FALSE",
    "ALTER TABLE user_account ADD COLUMN mfa_secret TEXT",
    "ALTER TABLE user_account ADD COLUMN mfa_pending_secret TEXT",
    "ALTER TABLE user_account ADD COLUMN mfa_last_step BIGINT",
    "ALTER TABLE user_account ADD COLUMN mfa_failures INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE user_account ADD COLUMN mfa_locked_until TIMESTAMP",
    """CREATE TABLE mfa_recovery_code (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) REFERENCES tenant (id) ON DELETE CASCADE,
        user_id VARCHAR(30) NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
        code_hash VARCHAR(64) NOT NULL,
        created_at TIMESTAMP NOT NULL,
        used_at TIMESTAMP
    )""",
    "CREATE UNIQUE INDEX mfa_recovery_code_hash ON mfa_recovery_code (code_hash)",
    "CREATE INDEX mfa_recovery_code_user ON mfa_recovery_code (tenant_id, user_id)",
]
