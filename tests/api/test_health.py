"""Health, metrics, the published spec, request ids and security headers, on the live server."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import httpx
import yaml

from tests.conftest import assert_error
from tests.livesrv import eventually


def test_health_endpoints_answer_ok(api):
    for path in ("/health", "/health/live"):
        response = api.get(path)
        assert response.status_code == 200
        assert response.json()["data"] == {"status": "ok"}
    ready = api.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["data"] == {"status": "ok", "checks": {"database": "ok"}}


def test_request_id_is_echoed_when_well_formed_and_generated_otherwise(api):
    sent = api.get("/health", headers={"X-Request-Id": "client.req-42_A"})
    assert sent.headers["x-request-id"] == "client.req-42_A"
    assert sent.json()["meta"]["request_id"] == "client.req-42_A"
    for bad in ("has space", "x" * 129, "semi;colon"):
        response = api.get("/health", headers={"X-Request-Id": bad})
        generated = response.headers["x-request-id"]
        assert generated != bad and re.fullmatch(r"req_[0-9A-Z]{26}", generated)
        assert response.json()["meta"]["request_id"] == generated
    assert api.get("/health").headers["x-request-id"] != api.get("/health").headers["x-request-id"]


def test_request_id_appears_in_the_access_log(api, server):
    api.get("/health", headers={"X-Request-Id": "log-trace-me-123"})
    # The line is written after the response has gone: wait for it rather than read at once.
    lines = eventually(lambda: [line for line in server.log().splitlines() if "log-trace-me-123" in line])
    assert '"operation": "get_health"' in lines[0] and '"status": 200' in lines[0]


def test_security_headers_on_every_response_including_errors(api):
    for response in (api.get("/health"), api.get("/v1/users"), api.get("/nowhere")):
        headers = response.headers
        assert headers["strict-transport-security"].startswith("max-age=")
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["content-security-policy"].startswith("default-src 'none'")


def test_docs_page_has_its_own_csp_with_no_cdn(api):
    response = api.get("/docs/")
    assert response.status_code == 200
    page = response.text
    assert "swagger-ui-bundle.js" in page
    # The whole document, <head> included: every reference is to this server (a relative URL),
    # and no absolute or protocol-relative URL appears anywhere, inline script and style too.
    refs = _references(page)
    assert {"./swagger-ui.css", "./swagger-ui-bundle.js", "./swagger-ui-standalone-preset.js"} <= set(refs), refs
    external = [ref for ref in refs if urlsplit(ref).scheme or urlsplit(ref).netloc]
    assert external == [], external
    assert re.findall(r"(?:\b[a-z][a-z0-9+.-]*:)?//[^\s\"'<>()]+", page, flags=re.I) == []
    assert re.search(r'url: "/[^/"][^"]*"', page) and "validatorUrl: null" in page  # the spec here; no validator
    csp = response.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert api.get("/docs/swagger-ui-bundle.js").status_code == 200


def _references(page: str) -> list[str]:
    """Returns every URL the page's elements point at (src, href, action, ...), in order."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.extend(
                v
                for k, v in attrs
                if k in {"src", "href", "action", "data", "poster", "srcset", "formaction", "content"}
                and v
                and "/" in v
            )

    Parser().feed(page)
    return found


def test_metrics_count_requests_by_operation_and_status(api):
    api.get("/health")
    api.get("/v1/users")
    # A request is counted once its response has gone, so the next request may come first.
    text = eventually(
        lambda: (lambda t: t if 'operation="list_users",status="401"' in t else None)(api.get("/metrics").text),
        timeout=10,
    )
    assert 'tenantry_requests_total{method="GET",operation="get_health",status="200"}' in text
    assert "tenantry_request_duration_seconds_bucket" in text
    assert "tenantry_requests_in_flight" in text


def test_openapi_json_is_the_bundled_spec_with_named_components(api):
    response = api.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"] == "3.0.3"
    # No TENANTRY_PUBLIC_URL: the one server is the one the document came from (not 127.0.0.1:8000).
    assert spec["servers"] == [{"url": "/", "description": "The server that serves this document"}]
    assert {"User", "Tenant", "ErrorResponse", "UserEnvelope"} <= set(spec["components"]["schemas"])
    create = spec["paths"]["/v1/users"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/UserCreate"}
    assert "$ref" not in str(spec).replace("'$ref': '#/components/", "")
    yaml_response = api.get("/openapi.yaml")
    assert yaml_response.headers["content-type"] == "application/yaml"
    assert yaml.safe_load(yaml_response.text) == spec
    # A client that reads YAML only as text/yaml gets that, and the same document.
    as_text = api.get("/openapi.yaml", headers={"Accept": "text/yaml"})
    assert as_text.headers["content-type"].startswith("text/yaml") and yaml.safe_load(as_text.text) == spec


def test_published_spec_keeps_partner_facts_and_drops_the_server_wiring(api):
    text = api.get("/openapi.json").text
    spec = json.loads(text)
    # Internal Python paths and storage details are not published...
    assert "x-bearerInfoFunc" not in text and "x-apikeyInfoFunc" not in text and "tenantry.security" not in text
    assert "x-hashed" not in text
    assert set(spec["components"]["securitySchemes"]["bearerAuth"]) == {"type", "scheme", "bearerFormat", "description"}
    # ...what an operation needs, how it is limited and what it records are.
    list_users = spec["paths"]["/v1/users"]["get"]
    assert list_users["x-permission"] == "user:read" and list_users["x-rate-limit"] == "standard"
    assert spec["paths"]["/v1/users"]["post"]["x-audit-action"] == "user.created"
    assert spec["paths"]["/v1/users"]["get"]["operationId"] == "list_users"


def test_responses_are_gzipped_for_clients_that_accept_it(server):
    with httpx.Client(base_url=server.url) as client:
        plain = client.get("/openapi.json", headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200 and "content-encoding" not in plain.headers
        assert int(plain.headers["content-length"]) == len(plain.content)
        packed = client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
        assert packed.status_code == 200 and packed.headers["content-encoding"] == "gzip"
        assert "Accept-Encoding" in packed.headers["vary"]
        assert int(packed.headers["content-length"]) == packed.num_bytes_downloaded < len(plain.content) / 4
        assert packed.json() == plain.json()  # decoded, the same document
        assert packed.headers["x-request-id"] and packed.headers["content-security-policy"]
        # An error in the envelope is compressed too when it is big enough; a small one is sent as is.
        small = client.get("/v1/nothing-here", headers={"Accept-Encoding": "gzip"})
        assert small.status_code == 404 and "content-encoding" not in small.headers
        # Swagger UI's assets carry an ETag: the gzip copy's is weak, as it is not the same bytes.
        asset = client.get("/docs/swagger-ui-bundle.js", headers={"Accept-Encoding": "gzip"})
        assert asset.headers["content-encoding"] == "gzip" and asset.headers["etag"].startswith('W/"')
        assert (
            not client.get("/docs/swagger-ui-bundle.js", headers={"Accept-Encoding": "identity"})
            .headers["etag"]
            .startswith("W/")
        )


#: A server published at a public URL and answering one browser origin: what the two tests below
#: check does not depend on the other setting, so they share it (tests/conftest.py `shared_server`).
PUBLISHED = {"TENANTRY_PUBLIC_URL": "https://api.example.com/", "TENANTRY_CORS_ORIGINS": "https://app.example.com"}


def test_published_servers_name_the_public_url(shared_server):
    with shared_server(**PUBLISHED).client() as client:
        assert client.get("/openapi.json").json()["servers"] == [
            {"url": "https://api.example.com", "description": "This API"}
        ]
        assert yaml.safe_load(client.get("/openapi.yaml").text)["servers"][0]["url"] == "https://api.example.com"


def test_unknown_route_and_wrong_method_use_the_envelope(api):
    assert_error(api.get("/v1/nothing-here"), 404, "RESOURCE_NOT_FOUND")
    response = api.delete("/v1/users")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST", "HEAD"}


def test_head_answers_gets_status_and_headers_without_a_body(api, owner):
    # Every GET takes HEAD; with response validation on (tests, contract runs) the body-less answer
    # was read as a JSON body of null and HEAD /health, /openapi.json, /v1/users answered 500.
    for path, headers in (("/health", {}), ("/openapi.json", {}), ("/v1/users", owner.headers)):
        for encoding in ("identity", "gzip"):
            response = api.head(path, headers={**headers, "Accept-Encoding": encoding})
            assert response.status_code == 200, (path, encoding, response.status_code)
            assert response.headers["content-type"].startswith("application/json")
            assert response.content == b""


def test_head_says_what_get_would_about_compression(api):
    # HEAD has no body, so the gzip layer never saw 1 KB and left HEAD /openapi.json saying identity
    # (its full Content-Length, no Vary) where GET answers gzip: a cache or client using HEAD to
    # learn about the GET answer was told the wrong encoding.
    get = api.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    head = api.head("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert get.headers["content-encoding"] == head.headers.get("content-encoding") == "gzip"
    assert "accept-encoding" in head.headers.get("vary", "").lower()
    assert "content-length" not in head.headers  # GET's compressed length is known only by compressing
    plain = api.head("/openapi.json", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and "accept-encoding" in plain.headers["vary"].lower()
    assert int(plain.headers["content-length"]) == len(api.get("/openapi.json").content)
    small = api.head("/health", headers={"Accept-Encoding": "gzip"})  # under 1 KB: never compressed
    assert "content-encoding" not in small.headers and "vary" not in small.headers


def test_a_trailing_slash_is_a_404_in_the_envelope_not_a_redirect(api, owner):
    user_id = owner.user["id"]
    for method, path in (
        ("GET", "/v1/users/"),
        ("POST", "/v1/users/"),
        ("GET", f"/v1/users/{user_id}/"),
        ("GET", "/health/"),
        ("GET", "/openapi.json/"),
        ("DELETE", "/v1/keys/"),
        ("GET", "/v1/users//"),
        ("GET", "/v1/nothing-here/"),
    ):
        response = api.request(method, path, headers=owner.headers, follow_redirects=False)
        assert "location" not in response.headers, (method, path)
        error = assert_error(response, 404, "RESOURCE_NOT_FOUND")
        assert error["message"], (method, path)
    assert api.get("/v1/users", headers=owner.headers).status_code == 200  # without the slash, as ever


def test_a_concrete_path_wins_over_a_templated_one(api, owner):
    response = api.put("/v1/users/batch", json={}, headers=owner.headers)
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "POST"


def test_database_down_is_503_in_the_envelope_and_liveness_stays_up():
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.livesrv import ROOT, free_port

    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",
        "TENANTRY_SECRET_KEY": "k" * 48,
        "TENANTRY_ENV": "test",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tenantry.asgi:application",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert httpx.get(f"{url}/health").status_code == 200
        assert_error(httpx.get(f"{url}/health/ready"), 503, "SERVICE_UNAVAILABLE")
        login = httpx.post(f"{url}/v1/auth/login", json={"email": "a@example.com", "password": "x" * 10})
        assert_error(login, 503, "SERVICE_UNAVAILABLE")
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_cors_allows_exactly_the_configured_origins(shared_server):
    server = shared_server(**PUBLISHED)
    with server.client() as client:
        preflight = client.options(
            "/v1/users",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        assert preflight.headers["x-request-id"]
        simple = client.get("/health", headers={"Origin": "https://app.example.com"})
        assert simple.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "X-Request-Id" in simple.headers["access-control-expose-headers"]
        other = client.get("/health", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in other.headers
