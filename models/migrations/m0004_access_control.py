"""Roles, role assignments, tenant permissions and ABAC policies; the tenant's access version."""

from __future__ import annotations

from typing import Any

STATEMENTS = [
    "ALTER TABLE tenant ADD COLUMN authz_version INTEGER NOT NULL DEFAULT 0",
    """CREATE TABLE permission (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
        name VARCHAR(101) NOT NULL,
        resource VARCHAR(50) NOT NULL,
        action VARCHAR(50) NOT NULL,
        description VARCHAR(500),
        created_at TIMESTAMP NOT NULL
    )""",
    "CREATE UNIQUE INDEX permission_tenant_name ON permission (tenant_id, name)",
    """CREATE TABLE role (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
        name VARCHAR(64) NOT NULL,
        name_normalized VARCHAR(64) NOT NULL,
        role_family VARCHAR(20) NOT NULL,
        description VARCHAR(500),
        permissions TEXT NOT NULL,
        is_builtin BOOLEAN NOT NULL,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL
    )""",
    "CREATE UNIQUE INDEX role_tenant_name ON role (tenant_id, name_normalized)",
    "CREATE INDEX role_tenant ON role (tenant_id, id)",
    """CREATE TABLE user_role (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
        user_id VARCHAR(30) NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
        role_id VARCHAR(30) NOT NULL REFERENCES role (id) ON DELETE CASCADE,
        created_at TIMESTAMP NOT NULL
    )""",
    "CREATE UNIQUE INDEX user_role_assignment ON user_role (tenant_id, user_id, role_id)",
    "CREATE INDEX user_role_role ON user_role (tenant_id, role_id)",
    """CREATE TABLE policy (
        id VARCHAR(30) PRIMARY KEY,
        tenant_id VARCHAR(30) NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
        name VARCHAR(100) NOT NULL,
        name_normalized VARCHAR(100) NOT NULL,
        description VARCHAR(500),
        resource VARCHAR(50) NOT NULL,
        action VARCHAR(50) NOT NULL,
        effect VARCHAR(8) NOT NULL,
        conditions TEXT NOT NULL,
        is_enabled BOOLEAN NOT NULL,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL
    )""",
    "CREATE UNIQUE INDEX policy_tenant_name ON policy (tenant_id, name_normalized)",
    "CREATE INDEX policy_tenant_target ON policy (tenant_id, resource, action)",
]


def after(db: Any) -> None:
    """Seeds the built-in roles of every tenant that existed before this migration."""
    from models.access import Role

    for (tenant_id,) in db.execute_sql("SELECT id FROM tenant").fetchall():
        Role.seed_builtin(tenant_id)
