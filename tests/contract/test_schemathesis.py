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


def test_schemathesis_finds_no_failure(server, api):
    owner = register(api, tenant_name="Contract Fixture")
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.contract.hooks",
        "TENANTRY_CONTRACT_URL": server.url,
        "TENANTRY_CONTRACT_EMAIL": owner.email,
        "TENANTRY_CONTRACT_PASSWORD": owner.password,
        "TENANTRY_CONTRACT_TENANT": owner.tenant["id"],
        "PYTHONPATH": str(ROOT),
    }
    examples = os.environ.get("TENANTRY_CONTRACT_EXAMPLES", "40")
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(Path(__file__).with_name("schemathesis.toml")),
        "run", f"{server.url}/openapi.json",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", examples,
        "--workers", "2",
        "--request-timeout", "30",
        "--suppress-health-check", "too_slow",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    output = result.stdout + result.stderr
    print(output[-6000:])
    generated = re.search(r"(\d+) generated", output)
    assert result.returncode == 0, f"Schemathesis found failures:\n{output[-20000:]}"
    assert generated and int(generated.group(1)) > 1000, output[-3000:]
    assert '"level": "error"' not in server.log(), "the server logged errors during the contract run"
