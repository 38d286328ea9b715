"""Idempotency-Key on every POST: replays, reuse with another request, scoping, and concurrency."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import PASSWORD, assert_error, register, unique_email


def new_user(email: str | None = None) -> dict[str, str]:
    return {"email": email or unique_email(), "password": PASSWORD, "first_name": "Idem", "last_name": "Potent"}


def users_with(api, owner, email: str) -> int:
    listed = api.get("/v1/users", params={"search": email}, headers=owner.headers).json()
    return listed["meta"]["pagination"]["total"]


def test_a_retry_with_the_same_key_replays_the_first_answer_and_creates_nothing(api, owner):
    body, key = new_user(), str(uuid.uuid4())
    headers = {**owner.headers, "Idempotency-Key": key}
    first = api.post("/v1/users", json=body, headers=headers)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    # The same JSON written differently is the same request.
    again = api.post("/v1/users", content=httpx.Request("POST", "/", json=dict(reversed(body.items()))).content,
                     headers={**headers, "Content-Type": "application/json"})
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["x-request-id"] != first.headers["x-request-id"]  # each response is still its own
    assert users_with(api, owner, body["email"]) == 1


def test_the_same_key_with_another_request_is_refused(api, owner):
    headers = {**owner.headers, "Idempotency-Key": "reused-key"}
    assert api.post("/v1/users", json=new_user(), headers=headers).status_code == 201
    error = assert_error(api.post("/v1/users", json=new_user(), headers=headers), 422, "IDEMPOTENCY_KEY_REUSED")
    assert "different request" in error["message"]
    # Another path is another request too.
    assert_error(api.post("/v1/keys", json={"name": "k", "permissions": ["user:read"]}, headers=headers),
                 422, "IDEMPOTENCY_KEY_REUSED")


def test_the_older_header_name_works_and_the_standard_one_wins(api, owner):
    body = new_user()
    first = api.post("/v1/users", json=body, headers={**owner.headers, "X-Idempotency-Key": "old-name"})
    again = api.post("/v1/users", json=body, headers={**owner.headers, "Idempotency-Key": "old-name"})
    assert first.status_code == again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    both = api.post("/v1/users", json=body, headers={**owner.headers, "Idempotency-Key": "old-name",
                                                     "X-Idempotency-Key": "ignored"})
    assert both.headers["idempotent-replayed"] == "true" and both.json() == first.json()


def test_keys_are_out_of_range_and_scoped_to_the_credential(api, owner):
    assert_error(api.post("/v1/users", json=new_user(), headers={**owner.headers, "Idempotency-Key": "x" * 256}),
                 400, "VALIDATION_ERROR")
    other = register(api, "Other")
    body = new_user()
    mine = api.post("/v1/users", json=body, headers={**owner.headers, "Idempotency-Key": "shared"})
    theirs = api.post("/v1/users", json=body, headers={**other.headers, "Idempotency-Key": "shared"})
    assert mine.status_code == theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers and mine.json()["data"]["id"] != theirs.json()["data"]["id"]


def test_an_answered_error_is_replayed_but_a_refused_request_is_not_remembered(api, owner):
    taken = new_user(owner.email)
    headers = {**owner.headers, "Idempotency-Key": str(uuid.uuid4())}
    first = assert_error(api.post("/v1/users", json=taken, headers=headers), 409, "CONFLICT")
    replay = api.post("/v1/users", json=taken, headers=headers)
    assert replay.status_code == 409 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["error"] == {**first}
    # Refused by validation before the handler ran: the key is still free for the corrected request.
    key = {**owner.headers, "Idempotency-Key": str(uuid.uuid4())}
    bad = {**new_user(), "email": "not-an-email"}
    assert_error(api.post("/v1/users", json=bad, headers=key), 400, "VALIDATION_ERROR")
    assert api.post("/v1/users", json=new_user(), headers=key).status_code == 201


def test_a_secret_shown_once_is_replayed_to_the_retry(api, owner):
    headers = {**owner.headers, "Idempotency-Key": str(uuid.uuid4())}
    body = {"name": "ci", "permissions": ["user:read"]}
    first = api.post("/v1/keys", json=body, headers=headers)
    again = api.post("/v1/keys", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["data"]["secret"] == first.json()["data"]["secret"]
    assert len(api.get("/v1/keys", headers=owner.headers).json()["data"]) == 1


def test_anonymous_operations_are_scoped_to_the_client_address(api, owner):
    body = {"email": owner.email, "password": PASSWORD, "tenant_id": owner.tenant["id"]}
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    first = api.post("/v1/auth/login", json=body, headers=headers)
    again = api.post("/v1/auth/login", json=body, headers=headers)
    assert first.status_code == again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["data"]["refresh_token"] == first.json()["data"]["refresh_token"]
    wrong = {**body, "password": "wrong-password-here"}
    assert_error(api.post("/v1/auth/login", json=wrong, headers=headers), 422, "IDEMPOTENCY_KEY_REUSED")


def test_fifty_identical_posts_at_once_create_exactly_one_user(server, api, owner):
    body, key = new_user(), str(uuid.uuid4())
    headers = {**owner.headers, "Idempotency-Key": key}

    def post(_: int) -> httpx.Response:
        with server.client() as client:
            return client.post("/v1/users", json=body, headers=headers)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(post, range(50)))
    statuses = sorted({r.status_code for r in responses})
    assert set(statuses) <= {201, 409}, [r.text for r in responses if r.status_code not in (201, 409)]
    created = [r for r in responses if r.status_code == 201]
    assert created and len({r.json()["data"]["id"] for r in created}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in created) == 1
    for refused in (r for r in responses if r.status_code == 409):
        assert refused.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
    assert users_with(api, owner, body["email"]) == 1
    # Once the first has finished, every retry is a replay.
    final = api.post("/v1/users", json=body, headers=headers)
    assert final.status_code == 201 and final.headers["idempotent-replayed"] == "true"


def test_an_answer_that_can_no_longer_be_opened_is_forgotten_not_a_500(api, owner, server):
    from tests.test_audit import sql

    body, key = new_user(), str(uuid.uuid4())
    headers = {**owner.headers, "Idempotency-Key": key}
    assert api.post("/v1/users", json=body, headers=headers).status_code == 201
    # As if the server key had changed since: the sealed answer no longer opens.
    sql(server, "UPDATE idempotency_record SET response = %s WHERE idem_key = %s", ("not-a-fernet-token", key))
    again = api.post("/v1/users", json=body, headers=headers)
    assert again.status_code == 409 and "idempotent-replayed" not in again.headers  # run anew: the email is taken
    assert again.json()["error"]["code"] == "CONFLICT"
    replay = api.post("/v1/users", json=body, headers=headers)
    assert replay.status_code == 409 and replay.headers["idempotent-replayed"] == "true"
