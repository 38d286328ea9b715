"""`tenantry spec diff`: breaking changes are told apart from the rest, and the released contract holds."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

from tenantry.spec import bundle
from tenantry.specdiff import diff, release_problems

ROOT = Path(__file__).resolve().parents[3]
CURRENT = bundle(ROOT / "openapi" / "openapi.yaml")
RELEASED = json.loads((ROOT / "openapi" / "released" / "v1.json").read_text())


def changed(mutate):
    new = copy.deepcopy(CURRENT)
    mutate(new)
    return diff(CURRENT, new)


def test_identical_contracts_differ_in_nothing():
    report = diff(CURRENT, copy.deepcopy(CURRENT))
    assert report.breaking == [] and report.non_breaking == []


def test_removed_response_field_is_breaking():
    report = changed(lambda d: d["components"]["schemas"]["User"]["properties"].pop("last_login_at"))
    assert any("GET /v1/users/{user_id} 200.data.last_login_at: response field removed" in b for b in report.breaking)


def test_removed_operation_is_breaking_and_added_one_is_not():
    def mutate(d):
        d["paths"]["/v1/users/{user_id}"].pop("delete")
        d["paths"]["/v1/things"] = {"get": copy.deepcopy(d["paths"]["/health"]["get"])}

    report = changed(mutate)
    assert "DELETE /v1/users/{user_id}: operation removed" in report.breaking
    assert "GET /v1/things: operation added" in report.non_breaking


def test_required_request_field_is_breaking_optional_is_not():
    def mutate(d):
        schema = d["components"]["schemas"]["UserCreate"]
        schema["properties"]["department"] = {"type": "string", "description": "x"}
        schema["properties"]["cost_center"] = {"type": "string", "description": "x"}
        schema["required"].append("department")

    report = changed(mutate)
    assert any("request.department: new required request field" in b for b in report.breaking)
    assert any("request.cost_center: new optional request field" in n for n in report.non_breaking)


def test_type_change_auth_change_and_error_code_meaning_are_breaking():
    def mutate(d):
        d["components"]["schemas"]["Pagination"]["properties"]["total"] = {"type": "string", "description": "x"}
        d["paths"]["/v1/users"]["get"]["security"] = []
        codes = d["components"]["schemas"]["ErrorCode"]
        codes["description"] = codes["description"].replace("CONFLICT (409)", "CONFLICT (422)")
        codes["enum"].remove("TOKEN_EXPIRED")
        codes["enum"].append("BRAND_NEW")

    report = changed(mutate)
    text = "\n".join(report.breaking)
    assert "meta.pagination.total: type changed from integer to string" in text
    assert "GET /v1/users: authentication changed" in text
    assert "error code CONFLICT: status changed from 409 to 422" in text
    assert "error code TOKEN_EXPIRED: removed" in text
    assert "error code BRAND_NEW: added" in report.non_breaking


def test_cli_exits_1_on_a_breaking_change(tmp_path):
    broken = copy.deepcopy(CURRENT)
    broken["components"]["schemas"]["Tenant"]["properties"].pop("settings")
    (tmp_path / "new.json").write_text(json.dumps(broken))
    (tmp_path / "old.json").write_text(json.dumps(CURRENT))
    result = subprocess.run(
        [sys.executable, "-m", "tenantry.cli", "spec", "diff", str(tmp_path / "old.json"), str(tmp_path / "new.json")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "BREAKING" in result.stdout and "settings: response field removed" in result.stdout


CHANGELOG = (ROOT / "CHANGELOG.md").read_text()


def test_working_spec_does_not_break_the_released_contract():
    assert release_problems(RELEASED, CURRENT, CHANGELOG) == []


def _broken(version: str):
    """The working spec with an operation and a response field removed, at `version`."""
    broken = copy.deepcopy(CURRENT)
    broken["paths"]["/v1/users/{user_id}"].pop("delete")
    broken["components"]["schemas"]["User"]["properties"].pop("email")
    broken["info"]["version"] = version
    return broken


def test_a_breaking_change_fails_the_release_gate_unless_the_major_version_moves():
    released_major = int(RELEASED["info"]["version"].split(".")[0])
    current = CURRENT["info"]["version"]
    # Today's version (a minor above the release, with its changelog entry) is no licence to break.
    problems = release_problems(RELEASED, _broken(current), CHANGELOG)
    assert len(problems) == 1 and "need a new major version" in problems[0], problems
    assert "DELETE /v1/users/{user_id}: operation removed" in problems[0]
    assert "200.data.email: response field removed" in problems[0]
    for minor_bump in (f"{released_major}.9.0", f"{released_major}.99.1"):
        entry = f"{CHANGELOG}\n## {minor_bump}\n\n- Removed things.\n"
        assert release_problems(RELEASED, _broken(minor_bump), entry), minor_bump
    # A new major version passes only with its changelog entry.
    major = f"{released_major + 1}.0.0"
    missing = release_problems(RELEASED, _broken(major), CHANGELOG)
    assert missing == [f"CHANGELOG.md has no '## {major}' entry, and {major} breaks the released contract"]
    assert release_problems(RELEASED, _broken(major), f"# Changelog\n\n## {major} (unreleased)\n\n- x\n") == []
    assert release_problems(RELEASED, _broken("next"), CHANGELOG)  # not a version at all


def test_accepting_one_more_scheme_is_not_breaking_but_dropping_one_is():
    def widen(d):
        d["paths"]["/v1/users"]["get"]["security"] = [{"bearerAuth": []}, {"otherAuth": []}]

    def narrow(d):
        d["paths"]["/v1/users"]["get"]["security"] = [{"otherAuth": []}]

    def secure_public(d):
        d["paths"]["/health"]["get"]["security"] = [{"bearerAuth": []}]

    base = copy.deepcopy(CURRENT)
    base["paths"]["/v1/users"]["get"]["security"] = [{"bearerAuth": []}]
    widened, narrowed, secured = (copy.deepcopy(base) for _ in range(3))
    widen(widened), narrow(narrowed), secure_public(secured)
    assert "GET /v1/users: authentication widened" in diff(base, widened).non_breaking
    assert "GET /v1/users: authentication changed" in diff(base, narrowed).breaking
    assert "GET /health: authentication changed" in diff(base, secured).breaking


def test_a_nullable_field_rewritten_as_anyof_with_null_is_the_same_contract():
    """A nullable inline object and `anyOf: [{$ref: X}, {nullable: true, enum: [null]}]` compare as X."""
    old = copy.deepcopy(CURRENT)
    verification = old["components"]["schemas"]["AuditVerification"]["properties"]
    inline = copy.deepcopy(old["components"]["schemas"]["AuditBreak"])
    verification["broken"] = {**inline, "nullable": True}
    assert diff(old, CURRENT).breaking == []

    def drop_reason(d):
        d["components"]["schemas"]["AuditBreak"]["properties"].pop("reason")

    report = changed(drop_reason)
    assert any("200.data.broken.reason: response field removed" in b for b in report.breaking), report.breaking
