"""Schemathesis hooks for the contract run: authenticate as a fixture account (owner or operator).

Loaded through SCHEMATHESIS_HOOKS; the server, email, password and tenant come from environment
variables set by test_schemathesis.py.
"""

from __future__ import annotations

import itertools
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


_calls = itertools.count()


@schemathesis.hook
def before_call(ctx: schemathesis.HookContext, case: schemathesis.Case, **kwargs: object) -> None:
    """Makes every Idempotency-Key the generator sends unique to its call.

    The generator repeats header values across cases (the spec's example above all), and the
    same key with another request is a 422 IDEMPOTENCY_KEY_REUSED by design, or a replay of the
    first answer: left as generated, most POSTs of the run would test the key instead of the
    operation. A valid key stays valid (its first 200 characters and a suffix: at most 255); an
    invalid one is left as it is, to be refused. Reuse and replay are tested in tests/test_idempotency.py.
    """
    for name in ("Idempotency-Key", "X-Idempotency-Key"):
        value = (case.headers or {}).get(name)
        if isinstance(value, str) and 1 <= len(value) <= 255:
            case.headers[name] = f"{value[:200]}-{os.getpid()}-{next(_calls)}"
