"""The contract: the spec bundles, passes `tenantry spec check`, and its examples are true."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tenantry.formats import FORMAT_CHECKER
from tenantry.spec import SpecError, bundle, check, operations

ROOT = Path(__file__).resolve().parents[3]
SPEC = bundle(ROOT / "openapi" / "openapi.yaml")


def test_spec_check_passes():
    assert check(SPEC) == []
    result = subprocess.run(
        [sys.executable, "-m", "tenantry.cli", "spec", "check"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_operation_declares_a_permission_and_a_stable_operation_id():
    for method, path, op in operations(SPEC):
        assert op.get("x-permission"), f"{method} {path}"
        # A bare snake_case name (generated clients name functions after it), the handler's in
        # the module of the operation's first tag.
        assert re.fullmatch(r"[a-z][a-z0-9_]*", op["operationId"]), op["operationId"]
        assert callable(getattr(importlib.import_module(f"handlers.{op['tags'][0]}"), op["operationId"], None))


def test_check_reports_a_qualified_operation_id():
    broken = bundle(ROOT / "openapi" / "openapi.yaml")
    broken["paths"]["/v1/users"]["get"]["operationId"] = "users.list_users"
    problems = "\n".join(check(broken))
    assert "GET /v1/users: operationId users.list_users is not a snake_case function name" in problems


def test_check_reports_a_missing_permission_and_an_unknown_handler():
    broken = bundle(ROOT / "openapi" / "openapi.yaml")
    del broken["paths"]["/v1/users"]["get"]["x-permission"]
    broken["paths"]["/v1/users"]["post"]["operationId"] = "no_such_handler"
    problems = "\n".join(check(broken))
    assert "GET /v1/users: no x-permission" in problems
    assert "users has no no_such_handler" in problems
    assert "handlers.users.create_user is a public handler no operation routes to" in problems


def test_check_requires_every_operation_to_declare_415():
    broken = bundle(ROOT / "openapi" / "openapi.yaml")
    del broken["paths"]["/v1/users"]["get"]["responses"]["415"]
    assert "GET /v1/users: must declare 415" in "\n".join(check(broken))


def test_check_requires_every_offset_list_to_take_the_page_style_too():
    broken = bundle(ROOT / "openapi" / "openapi.yaml")
    op = broken["paths"]["/v1/auth/sessions"]["get"]
    op["parameters"] = [p for p in op["parameters"] if not p["$ref"].endswith(("/Page", "/PageSize", "/Size"))]
    assert "GET /v1/auth/sessions: is an offset list: must take page, page_size and size" in "\n".join(check(broken))


def test_check_refuses_a_request_schema_generators_cannot_name():
    broken = bundle(ROOT / "openapi" / "openapi.yaml")
    broken["components"]["schemas"]["LoginRequest"]["anyOf"] = [{"required": ["email"]}, {"required": ["username"]}]
    problems = "\n".join(check(broken))
    assert "POST /v1/auth/login: application/json body: a top-level anyOf/oneOf costs generated clients" in problems


def test_check_requires_a_404_of_every_operation_with_a_path_parameter():
    broken = bundle(ROOT / "openapi" / "openapi.yaml")
    del broken["paths"]["/v1/integrations/webhooks/{integration_id}"]["post"]["responses"]["404"]
    problems = "\n".join(check(broken))
    assert "POST /v1/integrations/webhooks/{integration_id}: has a path parameter: must declare 404" in problems


def test_bundle_refuses_a_dangling_ref(tmp_path):
    (tmp_path / "openapi.yaml").write_text("openapi: 3.0.3\npaths:\n  /x:\n    $ref: 'paths/missing.yaml#/x'\n")
    with pytest.raises(SpecError):
        bundle(tmp_path / "openapi.yaml")


def _resolve(node, spec):
    while isinstance(node, dict) and "$ref" in node:
        section, name = node["$ref"].split("/")[-2:]
        node = spec["components"][section][name]
    return node


def _examples():
    for method, path, op in operations(SPEC):
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body and "example" in body:
            yield f"{method} {path} request", body["schema"], body["example"]
        for status, response in op["responses"].items():
            for media, content in _resolve(response, SPEC).get("content", {}).items():
                if "example" in content and media == "application/json":
                    yield f"{method} {path} {status}", content["schema"], content["example"]
    for name, schema in SPEC["components"]["schemas"].items():
        if "example" in schema:
            yield f"schema {name}", {"$ref": f"#/components/schemas/{name}"}, schema["example"]


@pytest.mark.parametrize(
    ("where", "schema", "example"), list(_examples()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_examples_validate_against_their_schemas(where, schema, example):
    from openapi_schema_validator import OAS30Validator

    resolver_spec = {**SPEC, **schema}
    # With the server's own format checker (tenantry.formats), which requests and responses use.
    OAS30Validator(resolver_spec, format_checker=FORMAT_CHECKER).validate(example)
