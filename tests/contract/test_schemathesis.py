"""The contract run: Schemathesis, every check and phase, against the live server.

Authenticated as a fixture tenant's owner (see hooks.py), on the database the session runs on.
The run must find no failure. Set TENANTRY_CONTRACT_EXAMPLES to test more (or fewer) examples
per operation.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import register

pytestmark = pytest.mark.contract

ROOT = Path(__file__).resolve().parents[2]


def run_schemathesis(server, email: str, password: str, tenant_id: str | None, *extra: str,
                     api_key: str | None = None) -> str:
    """Runs Schemathesis as the given account; returns its output, asserting it found no failure."""
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.contract.hooks",
        "TENANTRY_CONTRACT_URL": server.url,
        "TENANTRY_CONTRACT_EMAIL": email,
        "TENANTRY_CONTRACT_PASSWORD": password,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("TENANTRY_CONTRACT_TENANT", None)
    env.pop("TENANTRY_CONTRACT_API_KEY", None)
    if api_key:
        env["TENANTRY_CONTRACT_API_KEY"] = api_key
    if tenant_id:
        env["TENANTRY_CONTRACT_TENANT"] = tenant_id
    examples = os.environ.get("TENANTRY_CONTRACT_EXAMPLES", "40")
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(Path(__file__).with_name("schemathesis.toml")),
        "run", f"{server.url}/openapi.json",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", examples,
        # One worker: with two, Hypothesis' concurrent ast.parse calls hit a CPython 3.11.7 bug
        # ("AST constructor recursion depth mismatch", fixed in 3.11.8) and abort the run.
        "--workers", "1",
        "--request-timeout", "30",
        "--suppress-health-check", "too_slow",
        *extra,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    output = result.stdout + result.stderr
    print(output[-6000:])
    assert result.returncode == 0, f"Schemathesis found failures:\n{output[-20000:]}"
    assert '"level": "error"' not in server.log(), "the server logged errors during the contract run"
    return output


def test_schemathesis_as_a_tenant_owner_finds_no_failure(server, api):
    owner = register(api, tenant_name="Contract Fixture")
    output = run_schemathesis(server, owner.email, owner.password, owner.tenant["id"])
    generated = re.search(r"(\d+) generated", output)
    assert generated and int(generated.group(1)) > 1000, output[-3000:]


def test_schemathesis_as_the_platform_operator_finds_no_failure(server):
    """The operator-only operations (tenants and their domains) are exercised past their 403s."""
    from tests.livesrv import OPERATOR_EMAIL

    output = run_schemathesis(server, OPERATOR_EMAIL, server.operator_password, None, "--include-tag", "tenants")
    generated = re.search(r"(\d+) generated", output)
    assert generated and int(generated.group(1)) > 300, output[-3000:]


def test_schemathesis_with_an_api_key_finds_no_failure(server, api):
    """The second security scheme: users and keys operations authenticated by an `admin` key."""
    owner = register(api, tenant_name="Contract Key Fixture")
    created = api.post("/v1/keys", json={"name": "contract", "permissions": ["admin"]}, headers=owner.headers)
    assert created.status_code == 201, created.text
    output = run_schemathesis(server, owner.email, owner.password, owner.tenant["id"],
                              "--include-tag", "users", "--include-tag", "keys",
                              api_key=created.json()["data"]["secret"])
    generated = re.search(r"(\d+) generated", output)
    assert generated and int(generated.group(1)) > 500, output[-3000:]
