"""Tenants, domains, users, sessions and refresh tokens."""

STATEMENTS = [
    """CREATE TABLE tenant (
        id VARCHAR(30) PRIMARY KEY,
        name VARCHAR(200) NOT NULL,
        status VARCHAR(20) NOT NULL,
        settings TEXT NOT NULL,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL
    )""",
    "CREATE INDEX tenant_status ON tenant (status, id)",
    """CREATE TABLE domain (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
        domain VARCHAR(253) NOT NULL,
        is_primary BOOLEAN NOT NULL DEFAULT FALSE,
        verified BOOLEAN NOT NULL DEFAULT FALSE,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL
    )""",
    # A domain belongs to one tenant, whichever tenant asks.
    "CREATE UNIQUE INDEX domain_domain ON domain (domain)",
    "CREATE INDEX domain_tenant ON domain (tenant_id, is_primary)",
    # One primary domain per tenant, enforced by the database against races.
    "CREATE UNIQUE INDEX domain_one_primary ON domain (tenant_id) WHERE is_primary = TRUE",
    """CREATE TABLE user_account (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) REFERENCES tenant (id) ON DELETE CASCADE,
        email VARCHAR(254) NOT NULL,
        email_normalized VARCHAR(254) NOT NULL,
        password_hash VARCHAR(255) NOT NULL,
        first_name VARCHAR(100) NOT NULL,
        last_name VARCHAR(100) NOT NULL,
        role VARCHAR(20) NOT NULL,
        status VARCHAR(20) NOT NULL,
        is_platform_operator BOOLEAN NOT NULL DEFAULT FALSE,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL,
        last_login_at TIMESTAMP
    )""",
    "CREATE UNIQUE INDEX user_account_tenant_email ON user_account (tenant_id, email_normalized)",
    "CREATE INDEX user_account_tenant_role ON user_account (tenant_id, role, status)",
    # Login without a named tenant looks an email up across tenants.
    "CREATE INDEX user_account_email ON user_account (email_normalized)",
    """CREATE TABLE session (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) REFERENCES tenant (id) ON DELETE CASCADE,
        user_id VARCHAR(30) NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
        created_at TIMESTAMP NOT NULL,
        expires_at TIMESTAMP NOT NULL,
        revoked_at TIMESTAMP,
        ip VARCHAR(64),
        user_agent VARCHAR(255)
    )""",
    "CREATE INDEX session_tenant_user ON session (tenant_id, user_id)",
    "CREATE INDEX session_by_user ON session (user_id)",
    """CREATE TABLE refresh_token (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) REFERENCES tenant (id) ON DELETE CASCADE,
        session_id VARCHAR(30) NOT NULL REFERENCES session (id) ON DELETE CASCADE,
        token_hash VARCHAR(64) NOT NULL,
        created_at TIMESTAMP NOT NULL,
        expires_at TIMESTAMP NOT NULL,
        used_at TIMESTAMP
    )""",
    "CREATE UNIQUE INDEX refresh_token_hash ON refresh_token (token_hash)",
    "CREATE INDEX refresh_token_session ON refresh_token (tenant_id, session_id)",
]
