"""Bad input of every kind gets a 4xx in the error envelope, never a 500 or problem+json."""

from __future__ import annotations

from tests.conftest import assert_error


def test_missing_and_malformed_credentials_are_401(api):
    assert_error(api.get("/v1/users"), 401, "AUTHENTICATION_FAILED")
    assert_error(api.get("/v1/users", headers={"Authorization": "Bearer not-a-jwt"}), 401, "AUTHENTICATION_FAILED")
    assert_error(api.get("/v1/users", headers={"Authorization": "Basic Zm9vOmJhcg=="}), 401, "AUTHENTICATION_FAILED")
    response = api.get("/v1/auth/me")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_malformed_json_is_400(api, owner):
    headers = {**owner.headers, "Content-Type": "application/json"}
    response = api.post("/v1/users", content=b'{"email": ', headers=headers)
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert error["details"][0]["field"] == "body"


def test_wrong_types_and_unknown_fields_are_named(api, owner):
    body = {"email": 42, "password": "short", "first_name": "A", "last_name": "B", "is_admin": True}
    error = assert_error(api.post("/v1/users", json=body, headers=owner.headers), 400, "VALIDATION_ERROR")
    fields = {d["field"]: d["message"] for d in error["details"]}
    assert fields["email"].startswith("must be of type string")
    assert fields["password"] == "must be at least 10 characters long"
    assert fields["is_admin"] == "is not a known field"
    assert "Failed validating" not in str(error)


def test_missing_required_fields_are_named(api, owner):
    error = assert_error(
        api.post("/v1/users", json={"email": "a@b.co"}, headers=owner.headers), 400, "VALIDATION_ERROR"
    )
    assert {d["field"] for d in error["details"]} == {"password", "first_name", "last_name"}


def test_out_of_range_pagination_is_400_not_clamped(api, owner):
    for query, field in (("limit=101", "limit"), ("limit=0", "limit"), ("offset=-1", "offset"), ("limit=x", "limit")):
        error = assert_error(api.get(f"/v1/users?{query}", headers=owner.headers), 400, "VALIDATION_ERROR")
        assert error["details"][0]["field"] == field


def test_unknown_query_parameter_is_400(api, owner):
    error = assert_error(api.get("/v1/users?colour=red", headers=owner.headers), 400, "VALIDATION_ERROR")
    assert error["details"] == [{"field": "colour", "message": "is not a known query parameter"}]


def test_bad_ids_are_400_and_unknown_ids_404(api, owner):
    assert_error(api.get("/v1/users/not-an-id", headers=owner.headers), 400, "VALIDATION_ERROR")
    assert_error(api.get("/v1/users/usr_01JDQ40B4XK3W0V9C2E5G7H8JM", headers=owner.headers), 404, "RESOURCE_NOT_FOUND")


def test_wrong_content_type_is_415(api, owner):
    response = api.post("/v1/users", content=b"email=a", headers={**owner.headers, "Content-Type": "text/plain"})
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_oversized_body_is_413_before_it_is_read(api, owner):
    response = api.post(
        "/v1/users",
        content=b"{" + b" " * (10 * 1024 * 1024 + 1) + b"}",
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_nul_characters_are_refused_not_a_database_error(api, owner):
    body = {"email": "nul@example.com", "password": "0123456789", "first_name": "A\u0000B", "last_name": "C"}
    error = assert_error(api.post("/v1/users", json=body, headers=owner.headers), 400, "VALIDATION_ERROR")
    assert error["details"][0]["field"] == "first_name"
    assert_error(api.get("/v1/users?search=a%00b", headers=owner.headers), 400, "VALIDATION_ERROR")


def test_a_path_parameter_no_operation_matches_is_404_not_500(api, owner):
    # Werkzeug's path converter admits a newline where Connexion's router does not.
    assert_error(api.get("/v1/users/usr%0A", headers=owner.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(api.put("/v1/tenants/%C2%98H%0A", json={}, headers=owner.headers), 404, "RESOURCE_NOT_FOUND")


def test_a_long_url_is_414_and_large_headers_431_in_the_envelope(api, owner):
    error = assert_error(
        api.get("/v1/users", params={"search": "x" * 9000}, headers=owner.headers), 414, "URI_TOO_LONG"
    )
    assert "8 KB" in error["message"]
    padding = {f"X-Pad-{i}": "p" * 1000 for i in range(40)}
    error = assert_error(api.get("/v1/users", headers={**owner.headers, **padding}), 431, "REQUEST_HEADERS_TOO_LARGE")
    assert "32 KB" in error["message"]
    # Just under the limits is served (and this search is then judged by its own maxLength).
    assert_error(api.get("/v1/users", params={"search": "x" * 7000}, headers=owner.headers), 400, "VALIDATION_ERROR")
    assert api.get("/v1/users", headers={**owner.headers, **dict(list(padding.items())[:25])}).status_code == 200


def test_more_than_fifty_query_parameters_is_400(api, owner):
    many = "&".join(f"p{i}=1" for i in range(51))
    error = assert_error(api.get(f"/v1/users?{many}", headers=owner.headers), 400, "VALIDATION_ERROR")
    assert error["message"] == "More than 50 query parameters."
    # Fifty are counted, then judged one by one: unknown ones are named.
    fifty = "&".join(f"p{i}=1" for i in range(50))
    error = assert_error(api.get(f"/v1/users?{fifty}", headers=owner.headers), 400, "VALIDATION_ERROR")
    assert "details" in error


def test_a_batch_over_a_hundred_items_is_400(api, owner):
    users = [
        {"email": f"u{i}@example.com", "password": "correct-horse-battery", "first_name": "A", "last_name": "B"}
        for i in range(101)
    ]
    error = assert_error(
        api.post("/v1/users/batch", json={"users": users}, headers=owner.headers), 400, "VALIDATION_ERROR"
    )
    assert error["details"][0]["field"] == "users"


def test_a_json_null_body_is_not_an_absent_one(api, owner):
    key = api.post("/v1/keys", json={"name": "n", "permissions": ["user:read"]}, headers=owner.headers).json()["data"]
    rotate = f"/v1/keys/{key['key']['id']}/rotate"
    json_headers = {**owner.headers, "Content-Type": "application/json"}
    error = assert_error(api.post(rotate, content=b"null", headers=json_headers), 400, "VALIDATION_ERROR")
    assert error["details"] == [{"field": "body", "message": "must not be null"}]
    assert api.post(rotate, headers=owner.headers).status_code == 200  # no body: the body is optional
    assert_error(api.post("/v1/users", content=b"null", headers=json_headers), 400, "VALIDATION_ERROR")
