"""Tenants and domains: operator powers, owner/admin limits, suspension and isolation."""

from __future__ import annotations

from tests.conftest import add_user, assert_error, register
from tests.livesrv import eventually


def test_operator_creates_lists_filters_and_deletes_tenants(api, operator):
    created = api.post(
        "/v1/tenants", json={"name": "Globex Unique-7731", "settings": {"timezone": "Europe/Berlin"}}, headers=operator
    )
    assert created.status_code == 201, created.text
    tenant = created.json()["data"]
    assert created.headers["location"] == f"/v1/tenants/{tenant['id']}"
    assert tenant["settings"] == {"timezone": "Europe/Berlin", "language": "en"}
    listed = api.get("/v1/tenants", params={"search": "unique-7731"}, headers=operator).json()
    assert [t["id"] for t in listed["data"]] == [tenant["id"]]
    assert listed["meta"]["pagination"] == {"limit": 20, "offset": 0, "total": 1}
    suspended = api.get("/v1/tenants", params={"status": "suspended", "search": "unique-7731"}, headers=operator)
    assert suspended.json()["data"] == []
    assert api.delete(f"/v1/tenants/{tenant['id']}", headers=operator).status_code == 204
    assert_error(api.get(f"/v1/tenants/{tenant['id']}", headers=operator), 404, "RESOURCE_NOT_FOUND")
    assert_error(api.delete(f"/v1/tenants/{tenant['id']}", headers=operator), 404, "RESOURCE_NOT_FOUND")


def test_owner_reads_and_updates_own_tenant_but_not_status(api, owner):
    path = f"/v1/tenants/{owner.tenant['id']}"
    assert api.get(path, headers=owner.headers).json()["data"]["name"] == "Acme"
    patched = api.patch(path, json={"name": "Acme 2", "settings": {"language": "de-DE"}}, headers=owner.headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["data"]["settings"] == {"timezone": "UTC", "language": "de-DE"}
    assert_error(api.patch(path, json={"status": "suspended"}, headers=owner.headers), 403, "PERMISSION_DENIED")
    assert_error(
        api.put(path, json={"name": "X", "status": "active", "settings": {}}, headers=owner.headers),
        403,
        "PERMISSION_DENIED",
    )
    assert_error(api.delete(path, headers=owner.headers), 403, "PERMISSION_DENIED")
    assert_error(api.get("/v1/tenants", headers=owner.headers), 403, "PERMISSION_DENIED")


def test_invalid_settings_are_400(api, owner):
    path = f"/v1/tenants/{owner.tenant['id']}"
    for settings in ({"timezone": "Mars/Olympus"}, {"language": "english!"}, {"currency": "EUR"}):
        assert_error(api.patch(path, json={"settings": settings}, headers=owner.headers), 400, "VALIDATION_ERROR")
    assert_error(api.patch(path, json={}, headers=owner.headers), 400, "VALIDATION_ERROR")


def test_member_cannot_read_the_tenant(api, owner):
    member = add_user(api, owner, role="member")
    assert_error(api.get(f"/v1/tenants/{owner.tenant['id']}", headers=member.headers), 403, "PERMISSION_DENIED")


def test_another_tenants_id_is_404(api, owner):
    other = register(api, tenant_name="Other")
    assert_error(api.get(f"/v1/tenants/{other.tenant['id']}", headers=owner.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        api.patch(f"/v1/tenants/{other.tenant['id']}", json={"name": "pwned"}, headers=owner.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert_error(api.get(f"/v1/tenants/{other.tenant['id']}/domains", headers=owner.headers), 404, "RESOURCE_NOT_FOUND")


def test_suspended_tenant_credentials_are_403(api, owner, operator):
    path = f"/v1/tenants/{owner.tenant['id']}"
    assert api.patch(path, json={"status": "suspended"}, headers=operator).json()["data"]["status"] == "suspended"
    assert_error(api.get("/v1/users", headers=owner.headers), 403, "TENANT_SUSPENDED")
    login = api.post("/v1/auth/login", json={"email": owner.email, "password": owner.password})
    assert_error(login, 403, "TENANT_SUSPENDED")
    api.put(path, json={"name": "Acme", "status": "active", "settings": {"timezone": "UTC"}}, headers=operator)
    assert api.get("/v1/users", headers=owner.headers).status_code == 200


def test_domains_one_primary_per_tenant_and_one_tenant_per_domain(api, owner):
    path = f"/v1/tenants/{owner.tenant['id']}/domains"
    first = api.put(path, json={"domain": "a.owner-dom.example.com", "is_primary": True}, headers=owner.headers)
    assert first.status_code == 201, first.text
    second = api.put(path, json={"domain": "B.owner-dom.example.com", "is_primary": True}, headers=owner.headers)
    assert second.status_code == 201 and second.json()["data"]["domain"] == "b.owner-dom.example.com"
    again = api.put(path, json={"domain": "b.owner-dom.example.com"}, headers=owner.headers)
    assert again.status_code == 200 and again.json()["data"]["is_primary"] is True
    listed = api.get(path, headers=owner.headers).json()["data"]
    assert [(d["domain"], d["is_primary"]) for d in listed] == [
        ("b.owner-dom.example.com", True),
        ("a.owner-dom.example.com", False),
    ]
    other = register(api, tenant_name="Other")
    taken = api.put(
        f"/v1/tenants/{other.tenant['id']}/domains", json={"domain": "a.owner-dom.example.com"}, headers=other.headers
    )
    assert_error(taken, 409, "CONFLICT")
    assert_error(
        api.put(path, json={"domain": "c.owner-dom.example.com", "verified": True}, headers=owner.headers),
        403,
        "PERMISSION_DENIED",
    )
    domain_id = first.json()["data"]["id"]
    assert api.get(f"{path}/{domain_id}", headers=owner.headers).json()["data"]["domain"] == "a.owner-dom.example.com"
    assert_error(api.get(f"{path}/{domain_id}", headers=other.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        api.delete(f"/v1/tenants/{other.tenant['id']}/domains/{domain_id}", headers=other.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert api.delete(f"{path}/{domain_id}", headers=owner.headers).status_code == 204
    assert_error(api.get(f"{path}/{domain_id}", headers=owner.headers), 404, "RESOURCE_NOT_FOUND")
    # Released, the domain can be claimed by another tenant.
    assert (
        api.put(
            f"/v1/tenants/{other.tenant['id']}/domains",
            json={"domain": "a.owner-dom.example.com"},
            headers=other.headers,
        ).status_code
        == 201
    )


def test_operator_acts_inside_a_tenant_with_x_tenant_id(api, owner, operator):
    assert_error(api.get("/v1/users", headers=operator), 400, "TENANT_REQUIRED")
    listed = api.get("/v1/users", headers={**operator, "X-Tenant-ID": owner.tenant["id"]})
    assert [u["id"] for u in listed.json()["data"]] == [owner.user["id"]]
    assert_error(
        api.get("/v1/users", headers={**operator, "X-Tenant-ID": "ten_01JDQ3ZK5T8W6Y2M4N7P9R1S3V"}),
        404,
        "RESOURCE_NOT_FOUND",
    )
    other = register(api, tenant_name="Other")
    assert_error(
        api.get("/v1/users", headers={**owner.headers, "X-Tenant-ID": other.tenant["id"]}), 403, "PERMISSION_DENIED"
    )


def test_usage_counts_requests_per_day_credential_and_operation(api, owner, operator):
    key = api.post("/v1/keys", json={"name": "u", "permissions": ["user:read"]}, headers=owner.headers)
    key_id, secret = key.json()["data"]["key"]["id"], key.json()["data"]["secret"]
    for _ in range(3):
        assert api.get("/v1/users", headers={"X-API-Key": secret}).status_code == 200
    assert api.get(f"/v1/users/{owner.user['id']}", headers=owner.headers).status_code == 200

    def counted() -> dict | None:
        # The server writes its counts about every second, after the responses: wait for them.
        usage = api.get(f"/v1/tenants/{owner.tenant['id']}/usage", headers=owner.headers)
        assert usage.status_code == 200, usage.text
        data = usage.json()["data"]
        by_operation = {o["operation_id"]: o["requests"] for o in data["operations"]}
        return data if by_operation.get("list_users") == 3 and by_operation.get("get_user") == 1 else None

    data = eventually(counted, timeout=15)
    by_credential = {c["credential_id"]: c for c in data["credentials"]}
    assert by_credential[key_id] == {"credential_type": "api_key", "credential_id": key_id, "requests": 3}
    assert by_credential[owner.user["id"]]["credential_type"] == "user"
    by_operation = {o["operation_id"]: o["requests"] for o in data["operations"]}
    assert by_operation["list_users"] == 3 and by_operation["get_user"] == 1
    assert by_operation["create_key"] == 1
    assert data["total_requests"] == sum(d["requests"] for d in data["days"]) == sum(by_operation.values())
    assert len(data["days"]) == 1 and data["date_to"] == data["days"][0]["date"]
    # The operator reads any tenant's; nobody else reads another's; ranges are checked.
    assert api.get(f"/v1/tenants/{owner.tenant['id']}/usage", headers=operator).status_code == 200
    other = register(api, "Other")
    assert_error(api.get(f"/v1/tenants/{owner.tenant['id']}/usage", headers=other.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        api.get(f"/v1/tenants/{owner.tenant['id']}/usage", params={"date_from": "2026-02-30"}, headers=owner.headers),
        400,
        "VALIDATION_ERROR",
    )
    assert_error(
        api.get(
            f"/v1/tenants/{owner.tenant['id']}/usage", params={"date_from": "", "date_to": ""}, headers=owner.headers
        ),
        400,
        "VALIDATION_ERROR",
    )
    backwards = api.get(
        f"/v1/tenants/{owner.tenant['id']}/usage",
        params={"date_from": "2026-11-30", "date_to": "2026-11-01"},
        headers=owner.headers,
    )
    assert backwards.status_code == 200 and backwards.json()["data"]["total_requests"] == 0
    january = {"date_from": "2020-01-01", "date_to": "2020-01-31"}
    past = api.get(f"/v1/tenants/{owner.tenant['id']}/usage", params=january, headers=owner.headers).json()["data"]
    assert past["total_requests"] == 0 and past["days"] == [] and past["credentials"] == []
