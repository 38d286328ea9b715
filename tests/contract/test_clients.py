"""What partners do with the spec: lint it, generate clients from it, and use them for real.

Everything runs against the spec the live server publishes, the way a partner would, with each
generator's default settings (no config file). Needs Node.js (npm ci at the repository root
installs Spectral, openapi-typescript and tsc) and openapi-python-client (the `clients` tox
environment installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.clients

ROOT = Path(__file__).resolve().parents[2]
NPX = ROOT / "node_modules" / ".bin"


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600, **kwargs)
    return result, result.stdout + result.stderr


#: Names a default-generated client must not have: numbered union members (`AuditBreakType0`,
#: `..._type_2_type_1`), inline response models (`MetaGetOpenapiJsonResponse200`) and inline
#: objects.
UNREADABLE = re.compile(r"type_?\d|response_?\d|^inline", re.IGNORECASE)


@pytest.fixture(scope="module")
def spec_file(server, tmp_path_factory):
    """The exact bytes the live server publishes at /openapi.json (what partners download)."""
    if not (NPX / "spectral").exists():
        pytest.fail("node_modules is missing: run `npm ci` first (the clients tox environment does)")
    path = tmp_path_factory.mktemp("spec") / "openapi.json"
    response = httpx.get(f"{server.url}/openapi.json", timeout=30)
    assert response.status_code == 200
    path.write_bytes(response.content)
    return path


def test_spectral_finds_no_error_and_no_warning(spec_file):
    result, output = run(
        [str(NPX / "spectral"), "lint", str(spec_file), "--ruleset", ".spectral.yaml", "--fail-severity", "warn"]
    )
    assert result.returncode == 0, output
    assert "0 errors" in output or "No results" in output, output


def test_spectral_ruleset_catches_a_missing_permission(spec_file, tmp_path):
    broken = json.loads(spec_file.read_text())
    del broken["paths"]["/v1/users"]["get"]["x-permission"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    result, output = run(
        [
            str(NPX / "spectral"),
            "lint",
            str(tmp_path / "broken.json"),
            "--ruleset",
            ".spectral.yaml",
            "--fail-severity",
            "warn",
        ]
    )
    assert result.returncode != 0 and "tenantry-operation-permission" in output, output


def test_typescript_types_type_check_the_usage_file(server):
    """openapi-typescript with its defaults, from the served URL: no warning, and the usage file type-checks."""
    generated = ROOT / "clients" / "typescript" / "generated"
    shutil.rmtree(generated, ignore_errors=True)
    result, output = run(
        [str(NPX / "openapi-typescript"), f"{server.url}/openapi.json", "-o", str(generated / "api.d.ts")]
    )
    assert result.returncode == 0, output
    assert "warn" not in output.lower() and "error" not in output.lower(), output
    result, output = run([str(NPX / "tsc"), "-p", "clients/typescript"])
    assert result.returncode == 0, output


def test_generated_python_client_runs_the_scenario(server, tmp_path):
    """openapi-python-client with its defaults (no config file), from the served URL, then the scenario."""
    result, output = run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--url",
            f"{server.url}/openapi.json",
            "--meta",
            "setup",
            "--output-path",
            str(tmp_path / "client"),
        ],
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output
    package = tmp_path / "client" / "tenantry_api_client"
    models = {p.stem for p in (package / "models").glob("*.py")} - {"__init__"}
    assert {
        "user",
        "tenant",
        "error_response",
        "user_envelope",
        "token_pair",
        "open_api_document",
        "audit_break",
        "tenant_rate_limits",
        "webhook_disabled_reason",
    } <= models
    assert not [name for name in models if UNREADABLE.search(name)]
    # A module per tag, a function per operationId: api/users/list_users.py, not users_list_users.
    api = {f"{p.parent.name}/{p.stem}" for p in (package / "api").glob("*/*.py")} - {
        f"{p.name}/__init__" for p in (package / "api").iterdir()
    }
    assert {
        "users/list_users",
        "users/get_user",
        "auth/login",
        "meta/get_openapi_yaml",
        "integrations/list_integration_events",
    } <= api
    assert not [name for name in api if name.split("/")[1].startswith(name.split("/")[0] + "_")]
    assert not [name for name in api if UNREADABLE.search(name)]
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    result, output = run([str(python), "-m", "pip", "install", "--quiet", str(tmp_path / "client")])
    assert result.returncode == 0, output
    result, output = run([str(python), "clients/python/scenario.py", server.url])
    assert result.returncode == 0, output
    assert "scenario: ok" in output


def test_docs_render_offline_under_their_csp(server, tmp_path):
    """Headless Chromium, on a machine with no network, renders every operation at /docs."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        message = (
            "Chromium is not installed (apt-get install chromium; ./scripts/test installs it when run as "
            "root); /docs is checked without a browser in tests/api/test_health.py"
        )
        if os.environ.get("CI", "").lower() in {"1", "true"}:
            pytest.fail(f"{message}, but CI must render it in a browser", pytrace=False)
        pytest.skip(message)
    result, output = run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path}",
            "--virtual-time-budget=8000",
            "--dump-dom",
            f"{server.url}/docs/",
        ]
    )
    assert result.returncode == 0, output
    assert 'class="title">Tenantry API' in result.stdout
    assert 'data-path="/v1/users/{user_id}"' in result.stdout
    assert "Refused to" not in result.stderr, result.stderr  # no CSP violation was reported
