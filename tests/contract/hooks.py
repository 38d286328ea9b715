"""Schemathesis hooks for the contract run: authenticate as a fixture account (owner or operator).

Loaded through SCHEMATHESIS_HOOKS; the server, email, password and tenant come from environment
variables set by test_schemathesis.py.
"""

from __future__ import annotations

import os

import httpx
import schemathesis

LOGOUT = "/v1/auth/logout"


def _login() -> str:
    response = httpx.post(
        f"{os.environ['TENANTRY_CONTRACT_URL']}/v1/auth/login",
        json={"email": os.environ["TENANTRY_CONTRACT_EMAIL"], "password": os.environ["TENANTRY_CONTRACT_PASSWORD"],
              **({"tenant_id": tenant} if (tenant := os.environ.get("TENANTRY_CONTRACT_TENANT")) else {})},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["data"]["access_token"]


@schemathesis.auth(refresh_interval=None)
class FixtureToken:
    """The fixture account's bearer token; logout gets a session of its own, so it cannot end the run's."""

    token: str | None = None

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        if os.environ.get("TENANTRY_CONTRACT_API_KEY"):
            return os.environ["TENANTRY_CONTRACT_API_KEY"]
        if case.operation.path == LOGOUT:
            return _login()
        if FixtureToken.token is None:
            FixtureToken.token = _login()
        return FixtureToken.token

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        if data.startswith("sk_"):
            case.headers = {**(case.headers or {}), "X-API-Key": data}
        else:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
