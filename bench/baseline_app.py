"""The bare Flask baseline: the database work of Tenantry's `GET /v1/users/{id}`, without Connexion.

Serve with `gunicorn -w 2 -k sync bench.baseline_app:app` and `DATABASE_URL` (and `TENANTRY_SECRET_KEY`)
in the environment. Each sync worker handles one request at a time, so it keeps one psycopg2 connection
(autocommit), opened on its first request, after the fork.

Per request, like Tenantry: verify the bearer JWT (HS256, the same secret), load session + user + tenant
in one query by primary keys and check they are live and active, then read the target user scoped by
the caller's tenant and answer it in the same envelope (`{"data": user, "meta": {...}}`), with the
user's roles from a per-process snapshot of the tenant's roles kept by its `authz_version`, as
Tenantry's access cache does (two more queries when the version changes, none otherwise).
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from typing import Any

import jwt
import psycopg2
from flask import Flask, jsonify, request

app = Flask(__name__)

_SECRET = os.environ.get("TENANTRY_SECRET_KEY", "")
_connection: Any = None

_PRINCIPAL_SQL = """
    SELECT s.id, s.tenant_id, s.user_id, s.created_at, s.expires_at, s.revoked_at, s.ip, s.user_agent,
           u.id, u.tenant_id, u.email, u.email_normalized, u.password_hash, u.first_name, u.last_name,
           u.role, u.status, u.is_platform_operator, u.created_at, u.updated_at, u.last_login_at,
           t.id, t.name, t.status, t.settings, t.created_at, t.updated_at, t.authz_version
    FROM "session" AS s
    JOIN user_account AS u ON u.id = s.user_id
    LEFT OUTER JOIN tenant AS t ON t.id = u.tenant_id
    WHERE s.id = %s AND s.user_id = %s
    LIMIT 1
"""
_USER_SQL = """
    SELECT id, tenant_id, email, email_normalized, password_hash, first_name, last_name, role, status,
           is_platform_operator, created_at, updated_at, last_login_at, livemode,
           mfa_enabled, external_id, metadata, phone
    FROM user_account WHERE tenant_id = %s AND id = %s AND livemode = TRUE LIMIT 1
"""


_ROLES_SQL = "SELECT id, name, name_normalized, is_builtin FROM role WHERE tenant_id = %s"
_USER_ROLES_SQL = "SELECT user_id, role_id FROM user_role WHERE tenant_id = %s"
_access: dict[str, tuple[int, dict[str, str], dict[str, str], dict[str, list[str]]]] = {}


def _role_refs(cur: Any, tenant_id: str, version: int, user: Any) -> list[dict[str, Any]]:
    """Returns the user's roles (id, name, is_builtin) from the tenant's snapshot, loading it when stale."""
    snapshot = _access.get(tenant_id)
    if snapshot is None or snapshot[0] != version:
        cur.execute(_ROLES_SQL, (tenant_id,))
        roles = cur.fetchall()
        cur.execute(_USER_ROLES_SQL, (tenant_id,))
        held: dict[str, list[str]] = {}
        for user_id, role_id in cur.fetchall():
            held.setdefault(user_id, []).append(role_id)
        snapshot = _access[tenant_id] = (version, {r[2]: r[0] for r in roles}, {r[0]: r[1] for r in roles}, held)
    _, ids_by_name, names, held = snapshot
    refs = []
    if user[7] in ids_by_name:
        refs.append({"id": ids_by_name[user[7]], "name": user[7], "is_builtin": True})
    refs.extend({"id": r, "name": names[r], "is_builtin": False} for r in held.get(user[0], ()) if r in names)
    return refs


def _cursor() -> Any:
    """Returns a cursor on this process's connection, opening it on first use."""
    global _connection
    if _connection is None or _connection.closed:
        _connection = psycopg2.connect(os.environ["DATABASE_URL"])
        _connection.autocommit = True
    return _connection.cursor()


def _rfc3339(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _envelope(data: Any, status: int = 200) -> Any:
    meta = {"request_id": "req_" + secrets.token_hex(13), "timestamp": _rfc3339(datetime.now(UTC))}
    return jsonify({"data": data, "meta": meta}), status


def _error(status: int, code: str) -> Any:
    return jsonify({"error": {"code": code}}), status


@app.get("/health")
def health() -> Any:
    """Answers {"status": "ok"}."""
    return jsonify({"status": "ok"})


@app.get("/v1/users/<user_id>")
def get_user(user_id: str) -> Any:
    """Answers the user in the caller's tenant (200), 401 for a bad or dead credential, 404 if not there."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return _error(401, "AUTHENTICATION_FAILED")
    try:
        claims = jwt.decode(
            header[7:],
            _SECRET,
            algorithms=["HS256"],
            issuer="tenantry",
            options={"require": ["exp", "iat", "sub", "sid", "iss"]},
        )
    except jwt.PyJWTError:
        return _error(401, "AUTHENTICATION_FAILED")
    with _cursor() as cur:
        cur.execute(_PRINCIPAL_SQL, (claims["sid"], claims["sub"]))
        row = cur.fetchone()
        now = datetime.now(UTC).replace(tzinfo=None)
        if row is None or row[5] is not None or row[4] <= now:
            return _error(401, "SESSION_REVOKED")
        tenant_id, user_status, tenant_status = row[9], row[16], row[23]
        if user_status != "active" or (row[21] is not None and tenant_status != "active"):
            return _error(403, "FORBIDDEN")
        cur.execute(_USER_SQL, (tenant_id, user_id))
        user = cur.fetchone()
        if user is None:
            return _error(404, "NOT_FOUND")
        roles = _role_refs(cur, tenant_id, row[27] or 0, user)
    return _envelope(
        {
            "id": user[0],
            "tenant_id": user[1],
            "email": user[2],
            "first_name": user[5],
            "last_name": user[6],
            "role": user[7],
            "status": user[8],
            "is_platform_operator": user[9],
            "livemode": user[13],
            "created_at": _rfc3339(user[10]),
            "updated_at": _rfc3339(user[11]),
            "last_login_at": _rfc3339(user[12]),
            "mfa_enabled": bool(user[14]),
            "external_id": user[15],
            # the same column Tenantry reads: JSON text, NULL reads as {}
            "metadata": (json.loads(user[16]) if isinstance(user[16], str) else user[16]) or {},
            "phone": user[17],
            "roles": roles,
        }
    )
