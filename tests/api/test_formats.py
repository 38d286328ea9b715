"""Issue 13, item 4: every `format` the spec declares is enforced on input with the meaning it has on
output, so nothing is stored that a response could not carry (tenantry/formats.py)."""

from __future__ import annotations

import uuid

import jsonschema_rs
import pytest

from tenantry.formats import FORMAT_CHECKER, HINT_ONLY_FORMATS
from tests.api.test_integrations import make_provider, new_secret
from tests.conftest import PASSWORD, assert_error, unique_email
from tests.livesrv import ROOT

#: (format, value): samples at the edges of each format. What the server accepts must be what
#: jsonschema-rs (Schemathesis's response check) accepts; the server may only be stricter.
SAMPLES = [
    ("uri", "https://hooks.example.com/tenantry"),
    ("uri", "https://A<P"),
    ("uri", "https://<Pe"),
    ("uri", "https://exa mple.com"),
    ("uri", "https://example.com/a b"),
    ("uri", "http://[::1]:80/x"),
    ("uri", "https://example.com/%zz"),
    ("uri", "https://é.example.com"),
    ("uri", "/relative"),
    ("uri", "https://example.com/?q=a|b"),
    ("uri", "https://example.com/a^b"),
    ("uri", "https://a.example.com:8443/"),
    ("email", "a" * 64 + "@example.com"),
    ("email", "a" * 65 + "@example.com"),
    ("email", "a" * 70 + "@example.com"),
    ("email", "a..b@example.com"),
    ("email", "ada@acme.example.com"),
    ("email", "x@" + "a" * 63 + ".com"),
    ("email", "x@" + "a" * 64 + ".com"),
    ("email", ".a@example.com"),
    ("date-time", "2026-11-22T06:12:27.123Z"),
    ("date-time", "2026-13-01T00:00:00Z"),
    ("date-time", "2026-02-30T00:00:00Z"),
    ("date-time", "2026-11-22T06:12:27+25:00"),
    ("date", "2024-02-29"),
    ("date", "2026-02-30"),
    ("date", "2024-2-29"),
    ("uri-reference", "/v1/users/usr_1"),
    ("uri-reference", "/v1/x y"),
]


def _declared_formats() -> set[str]:
    from tenantry.spec import bundle

    spec = bundle(ROOT / "openapi" / "openapi.yaml")
    found: set[str] = set()
    stack = [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("format"), str) and isinstance(node.get("type"), str):
                found.add(node["format"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def test_every_declared_format_has_a_checker():
    declared = _declared_formats()
    assert {"uri", "email", "date-time", "date", "int64"} <= declared
    unchecked = declared - set(FORMAT_CHECKER.checkers) - HINT_ONLY_FORMATS
    assert not unchecked, f"formats the spec declares without a checker: {unchecked}"


@pytest.mark.parametrize(("name", "value"), SAMPLES)
def test_what_input_accepts_the_output_check_accepts(name, value):
    ours = FORMAT_CHECKER.conforms(value, name)
    theirs = jsonschema_rs.Draft4Validator({"format": name}, validate_formats=True).is_valid(value)
    assert not ours or theirs, f"{name} {value!r}: accepted on input, refused on output"
    if name in {"uri", "email", "date"}:
        assert ours == theirs, f"{name} {value!r}: ours {ours}, jsonschema-rs {theirs}"


def test_a_webhook_url_that_is_no_uri_is_400_and_nothing_is_stored(api, owner):
    for url in ("https://A<P", "https://exa mple.com/x", "https://hooks.example.com/a b"):
        error = assert_error(
            api.post("/v1/webhooks", json={"url": url, "events": ["user.*"]}, headers=owner.headers),
            400,
            "VALIDATION_ERROR",
        )
        # (A space breaks the schema's pattern too: a detail for each.)
        assert {"field": "url", "message": "is not a valid uri"} in error["details"], error
        assert {d["field"] for d in error["details"]} == {"url"}
    assert api.get("/v1/webhooks", headers=owner.headers).json()["data"] == []
    created = api.post(
        "/v1/webhooks", json={"url": "https://hooks.example.com/x", "events": ["user.*"]}, headers=owner.headers
    )
    assert created.status_code == 201, created.text
    webhook_id = created.json()["data"]["webhook"]["id"]
    error = assert_error(
        api.patch(f"/v1/webhooks/{webhook_id}", json={"url": "https://A<P"}, headers=owner.headers),
        400,
        "VALIDATION_ERROR",
    )
    assert error["details"] == [{"field": "url", "message": "is not a valid uri"}]
    assert (
        api.get(f"/v1/webhooks/{webhook_id}", headers=owner.headers).json()["data"]["url"]
        == "https://hooks.example.com/x"
    )


def test_a_provider_url_that_is_no_uri_is_400_and_nothing_is_stored(api, owner):
    provider = make_provider(api, owner)
    error = assert_error(
        api.patch(
            f"/v1/integrations/providers/{provider['id']}", json={"health_url": "https://<Pe"}, headers=owner.headers
        ),
        400,
        "VALIDATION_ERROR",
    )
    assert error["details"] == [{"field": "health_url", "message": "is not a valid uri"}]
    assert (
        api.get(f"/v1/integrations/providers/{provider['id']}", headers=owner.headers).json()["data"]["health_url"]
        is None
    )
    body = {
        "name": f"svc-{uuid.uuid4().hex[:8]}",
        "webhook_url": "https://h.example.com/<x>",
        "api_base_url": "https://a.example.com",
        "secret_key": new_secret(),
    }
    error = assert_error(
        api.post("/v1/integrations/providers", json=body, headers=owner.headers), 400, "VALIDATION_ERROR"
    )
    assert error["details"] == [{"field": "webhook_url", "message": "is not a valid uri"}]


def test_an_email_past_rfc_5321_sizes_is_400_and_one_at_the_limit_is_served_back(api, owner):
    suffix = uuid.uuid4().hex[:8]
    too_long = "a" * (65 - len(suffix)) + suffix + "@example.com"  # a 65-character local part
    body = {"email": too_long, "password": PASSWORD, "first_name": "Long", "last_name": "Local"}
    error = assert_error(api.post("/v1/users", json=body, headers=owner.headers), 400, "VALIDATION_ERROR")
    assert error["details"] == [{"field": "email", "message": "is not a valid email"}]
    error = assert_error(
        api.post("/v1/users", json={**body, "email": "x" * 70 + suffix + "@example.com"}, headers=owner.headers),
        400,
        "VALIDATION_ERROR",
    )
    assert error["details"][0]["field"] == "email"
    at_limit = "a" * (64 - len(suffix)) + suffix + "@example.com"
    created = api.post("/v1/users", json={**body, "email": at_limit}, headers=owner.headers)
    assert created.status_code == 201, created.text
    # The list (validated against the spec by the suite's server) carries it.
    listed = api.get("/v1/users", params={"search": suffix}, headers=owner.headers)
    assert listed.status_code == 200, listed.text
    assert [u["email"] for u in listed.json()["data"]] == [at_limit]
    # The same check on the other operations that take an email: register and the batch.
    error = assert_error(
        api.post("/v1/auth/register", json={**body, "email": too_long, "tenant_name": "Long"}), 400, "VALIDATION_ERROR"
    )
    assert error["details"] == [{"field": "email", "message": "is not a valid email"}]
    error = assert_error(
        api.post(
            "/v1/users/batch",
            json={"users": [{**body, "email": unique_email()}, {**body, "email": too_long}]},
            headers=owner.headers,
        ),
        400,
        "VALIDATION_ERROR",
    )
    assert error["details"] == [{"field": "users[1].email", "message": "is not a valid email"}]


def test_a_query_date_that_is_no_day_is_400(api, owner):
    tenant = owner.tenant["id"]
    for bad in ("2026-02-30", "2026-2-1", "20261101"):
        error = assert_error(
            api.get(f"/v1/tenants/{tenant}/usage", params={"date_from": bad}, headers=owner.headers),
            400,
            "VALIDATION_ERROR",
        )
        assert error["details"] == [{"field": "date_from", "message": "is not a valid date"}]
    assert (
        api.get(f"/v1/tenants/{tenant}/usage", params={"date_from": "2024-02-29"}, headers=owner.headers).status_code
        == 200
    )


def test_a_provider_event_with_an_email_past_rfc_5321_sizes_fails_and_makes_no_user(api, owner):
    """Inbound provider events create users without passing request validation: the same email rule holds."""
    from tests.api.test_integrations import deliver, find_user, user_event

    provider = make_provider(api, owner)
    suffix = uuid.uuid4().hex[:8]
    too_long = "a" * (65 - len(suffix)) + suffix + "@example.com"
    failed = deliver(api, provider, user_event("user.created", too_long, name="Long Local"))
    assert failed.status_code == 202, failed.text
    assert failed.json()["data"]["status"] == "failed" and "email" in failed.json()["data"]["error"]
    assert find_user(api, owner, too_long) is None
    listed = api.get("/v1/users", headers=owner.headers)  # validated against the spec by the suite's server
    assert listed.status_code == 200, listed.text
    at_limit = "a" * (64 - len(suffix)) + suffix + "@example.com"
    made = deliver(api, provider, user_event("user.created", at_limit, name="Long Local"))
    assert made.json()["data"]["status"] == "processed", made.text
    assert find_user(api, owner, at_limit) is not None
