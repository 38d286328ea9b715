"""Users: CRUD, filters, batch, uniqueness, owner rules and tenant isolation on the live server."""

from __future__ import annotations

from tests.conftest import PASSWORD, add_user, assert_error, login, register, unique_email


def new_user(**extra):
    return {"email": unique_email(), "password": PASSWORD, "first_name": "Grace", "last_name": "Hopper", **extra}


def test_create_get_update_replace_delete(api, owner):
    created = api.post("/v1/users", json=new_user(role="admin"), headers=owner.headers)
    assert created.status_code == 201, created.text
    user = created.json()["data"]
    assert created.headers["location"] == f"/v1/users/{user['id']}"
    assert user["role"] == "admin" and user["status"] == "active" and user["tenant_id"] == owner.tenant["id"]
    path = f"/v1/users/{user['id']}"
    assert api.get(path, headers=owner.headers).json()["data"] == user
    patched = api.patch(path, json={"first_name": "Amazing"}, headers=owner.headers).json()["data"]
    assert patched["first_name"] == "Amazing" and patched["last_name"] == "Hopper"
    replaced = api.put(
        path,
        json={"email": user["email"], "first_name": "G", "last_name": "H", "role": "member", "status": "active"},
        headers=owner.headers,
    )
    assert replaced.status_code == 200 and replaced.json()["data"]["role"] == "member"
    assert api.delete(path, headers=owner.headers).status_code == 204
    assert_error(api.get(path, headers=owner.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(api.delete(path, headers=owner.headers), 404, "RESOURCE_NOT_FOUND")


def test_email_is_unique_per_tenant_case_insensitively(api, owner):
    body = new_user()
    assert api.post("/v1/users", json=body, headers=owner.headers).status_code == 201
    error = assert_error(
        api.post("/v1/users", json={**body, "email": body["email"].upper()}, headers=owner.headers), 409, "CONFLICT"
    )
    assert error["details"] == [{"field": "email", "message": "is already taken"}]
    other = register(api, tenant_name="Other")
    assert api.post("/v1/users", json=body, headers=other.headers).status_code == 201


def test_list_filters_search_ordering_and_pagination(api, owner):
    for first, last, role in (("Zed", "Alpha", "admin"), ("Yan", "Beta", "member"), ("Xia", "Gamma", "member")):
        api.post("/v1/users", json=new_user(first_name=first, last_name=last, role=role), headers=owner.headers)
    members = api.get("/v1/users", params={"role": "member"}, headers=owner.headers).json()
    assert {u["last_name"] for u in members["data"]} == {"Beta", "Gamma"}
    assert members["meta"]["pagination"]["total"] == 2
    found = api.get("/v1/users", params={"search": "gAmM"}, headers=owner.headers).json()["data"]
    assert [u["last_name"] for u in found] == ["Gamma"]
    by_name = api.get("/v1/users", params={"ordering": "last_name"}, headers=owner.headers).json()["data"]
    assert [u["last_name"] for u in by_name] == ["Alpha", "Beta", "Gamma", "Lovelace"]
    newest = api.get("/v1/users", headers=owner.headers).json()["data"]
    assert newest[0]["last_name"] == "Gamma" and newest[-1]["id"] == owner.user["id"]
    page = api.get("/v1/users", params={"limit": 2, "offset": 1, "ordering": "last_name"}, headers=owner.headers).json()
    assert [u["last_name"] for u in page["data"]] == ["Beta", "Gamma"]
    assert page["meta"]["pagination"] == {"limit": 2, "offset": 1, "total": 4}
    suspended = api.get("/v1/users", params={"status": "suspended"}, headers=owner.headers).json()
    assert suspended["data"] == [] and suspended["meta"]["pagination"]["total"] == 0


def test_batch_is_all_or_nothing_with_item_errors(api, owner):
    taken = new_user()
    api.post("/v1/users", json=taken, headers=owner.headers)
    dup = new_user()
    body = {"users": [new_user(), dup, {**dup, "email": dup["email"].upper()}, {**taken}]}
    error = assert_error(api.post("/v1/users/batch", json=body, headers=owner.headers), 409, "CONFLICT")
    assert {d["field"] for d in error["details"]} == {"users[2].email", "users[3].email"}
    total = api.get("/v1/users", headers=owner.headers).json()["meta"]["pagination"]["total"]
    assert total == 2  # the owner and `taken`: nothing of the batch was written
    invalid = {"users": [new_user(), {**new_user(), "email": "nope"}]}
    error = assert_error(api.post("/v1/users/batch", json=invalid, headers=owner.headers), 400, "VALIDATION_ERROR")
    assert error["details"][0]["field"] == "users[1].email"
    ok = api.post("/v1/users/batch", json={"users": [new_user(), new_user()]}, headers=owner.headers)
    assert ok.status_code == 201 and len(ok.json()["data"]) == 2
    too_many = {"users": [new_user() for _ in range(101)]}
    assert_error(api.post("/v1/users/batch", json=too_many, headers=owner.headers), 400, "VALIDATION_ERROR")


def test_second_tenant_cannot_see_or_touch_first_tenants_users(api, owner):
    victim = api.post("/v1/users", json=new_user(), headers=owner.headers).json()["data"]
    attacker = register(api, tenant_name="Evil")
    path = f"/v1/users/{victim['id']}"
    assert_error(api.get(path, headers=attacker.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(api.patch(path, json={"first_name": "x"}, headers=attacker.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        api.put(
            path,
            json={"email": "a@b.co", "first_name": "a", "last_name": "b", "role": "member", "status": "active"},
            headers=attacker.headers,
        ),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert_error(api.delete(path, headers=attacker.headers), 404, "RESOURCE_NOT_FOUND")
    listed = api.get("/v1/users", headers=attacker.headers).json()["data"]
    assert [u["id"] for u in listed] == [attacker.user["id"]]
    assert api.get(path, headers=owner.headers).status_code == 200


def test_member_reads_but_cannot_write(api, owner):
    member = add_user(api, owner, role="member")
    assert api.get("/v1/users", headers=member.headers).status_code == 200
    error = assert_error(api.post("/v1/users", json=new_user(), headers=member.headers), 403, "PERMISSION_DENIED")
    assert "user:create" in error["message"]
    assert_error(api.delete(f"/v1/users/{owner.user['id']}", headers=member.headers), 403, "PERMISSION_DENIED")


def test_admin_cannot_create_change_or_delete_owners(api, owner):
    admin = add_user(api, owner, role="admin")
    assert_error(api.post("/v1/users", json=new_user(role="owner"), headers=admin.headers), 403, "PERMISSION_DENIED")
    owner_path = f"/v1/users/{owner.user['id']}"
    assert_error(api.patch(owner_path, json={"role": "member"}, headers=admin.headers), 403, "PERMISSION_DENIED")
    assert_error(api.delete(owner_path, headers=admin.headers), 403, "PERMISSION_DENIED")
    member = add_user(api, owner, role="member")
    assert_error(
        api.patch(f"/v1/users/{member.user['id']}", json={"role": "owner"}, headers=admin.headers),
        403,
        "PERMISSION_DENIED",
    )
    promoted = api.patch(f"/v1/users/{member.user['id']}", json={"role": "admin"}, headers=admin.headers)
    assert promoted.status_code == 200


def test_nobody_locks_themselves_out_and_the_last_owner_stays(api, owner, operator):
    me = f"/v1/users/{owner.user['id']}"
    assert_error(api.delete(me, headers=owner.headers), 403, "PERMISSION_DENIED")
    for change in (
        {"role": "admin"},
        {"status": "suspended"},
        {"password": "a-new-password-1"},
        {"email": unique_email()},
    ):
        assert_error(api.patch(me, json=change, headers=owner.headers), 403, "PERMISSION_DENIED")
    # Restating an unchanged value is not a change.
    assert api.patch(me, json={"first_name": "Ada", "role": "owner"}, headers=owner.headers).status_code == 200
    as_operator = {**operator, "X-Tenant-ID": owner.tenant["id"]}
    assert_error(api.patch(me, json={"role": "admin"}, headers=as_operator), 409, "CONFLICT")
    assert_error(api.delete(me, headers=as_operator), 409, "CONFLICT")
    second = add_user(api, owner, role="owner")
    assert api.patch(me, json={"role": "admin"}, headers=second.headers).status_code == 200


def test_password_change_and_suspension_end_sessions(api, owner):
    member = add_user(api, owner)
    path = f"/v1/users/{member.user['id']}"
    assert api.patch(path, json={"password": "a-brand-new-password"}, headers=owner.headers).status_code == 200
    assert_error(api.get("/v1/auth/me", headers=member.headers), 401, "SESSION_REVOKED")
    tokens = login(api, member.email, "a-brand-new-password")
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert api.patch(path, json={"status": "suspended"}, headers=owner.headers).status_code == 200
    assert api.get("/v1/auth/me", headers=headers).status_code == 401
    login_again = api.post("/v1/auth/login", json={"email": member.email, "password": "a-brand-new-password"})
    assert_error(login_again, 403, "USER_SUSPENDED")


def test_full_journey(api):
    """register -> login -> me -> create users -> list with filters -> update -> delete -> refresh -> logout."""
    account = register(api, tenant_name="Journey")
    assert api.get("/v1/auth/me", headers=account.headers).json()["data"]["id"] == account.user["id"]
    ids = [
        api.post("/v1/users", json=new_user(role=r), headers=account.headers).json()["data"]["id"]
        for r in ("admin", "member")
    ]
    admins = api.get("/v1/users?role=admin", headers=account.headers).json()["data"]
    assert [u["id"] for u in admins] == [ids[0]]
    assert api.patch(f"/v1/users/{ids[1]}", json={"last_name": "Updated"}, headers=account.headers).status_code == 200
    assert api.delete(f"/v1/users/{ids[0]}", headers=account.headers).status_code == 204
    refreshed = api.post("/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": account.refresh_token})
    headers = {"Authorization": f"Bearer {refreshed.json()['data']['access_token']}"}
    assert api.get("/v1/users", headers=headers).json()["meta"]["pagination"]["total"] == 2
    assert api.post("/v1/auth/logout", headers=headers).status_code == 204
    assert api.get("/v1/users", headers=headers).status_code == 401


def test_concurrent_demotions_never_leave_a_tenant_without_an_owner(api, server):
    from concurrent.futures import ThreadPoolExecutor

    for _ in range(3):
        first = register(api, tenant_name="Race")
        second = add_user(api, first, role="owner")

        def demote(actor, target):
            with server.client() as client:
                return client.patch(
                    f"/v1/users/{target.user['id']}", json={"role": "admin"}, headers=actor.headers
                ).status_code

        with ThreadPoolExecutor(2) as pool:
            statuses = sorted(pool.map(lambda pair: demote(*pair), [(first, second), (second, first)]))
        owners = api.get("/v1/users", params={"role": "owner"}, headers=first.headers).json()
        # One demotion wins; the other is refused (403 once its actor is an admin, 409 for the
        # last owner), never both applied.
        assert owners["meta"]["pagination"]["total"] == 1, statuses
        assert statuses.count(200) == 1, statuses
