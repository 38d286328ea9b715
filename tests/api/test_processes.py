"""Two Tenantry processes behind one address answer exactly as one would (PostgreSQL and Redis)."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import PASSWORD, register, unique_email
from tests.livesrv import backend, start_server


@pytest.fixture(scope="module")
def two_workers():
    if backend() != "postgres":
        pytest.skip(
            "the SQLite default runs on one host; shared state across processes is the postgres "
            "environment's (its servers keep limits in Redis)"
        )
    live = start_server(workers=2)
    yield live
    live.stop()


def fresh(live):
    """A client on a new connection: the kernel spreads new connections over both workers."""
    return live.client(headers={"Connection": "close"})


def test_a_revoked_key_fails_on_every_process_at_once(two_workers):
    with fresh(two_workers) as api:
        owner = register(api)
        made = api.post("/v1/keys", json={"name": "k", "permissions": ["user:read"]}, headers=owner.headers)
        key_id, secret = made.json()["data"]["key"]["id"], made.json()["data"]["secret"]
    answers = []
    for _ in range(10):
        with fresh(two_workers) as api:
            answers.append(api.get("/v1/users", headers={"X-API-Key": secret}).status_code)
    assert answers == [200] * 10
    with fresh(two_workers) as api:
        assert api.delete(f"/v1/keys/{key_id}", headers=owner.headers).status_code == 204
    answers = []
    for _ in range(10):
        with fresh(two_workers) as api:
            answers.append(api.get("/v1/users", headers={"X-API-Key": secret}).status_code)
    assert answers == [401] * 10


def test_an_idempotency_key_holds_across_processes(two_workers):
    with fresh(two_workers) as api:
        owner = register(api)
    body = {"email": unique_email(), "password": PASSWORD, "first_name": "Two", "last_name": "Workers"}
    headers = {**owner.headers, "Idempotency-Key": str(uuid.uuid4())}
    created = []
    for _ in range(10):
        with fresh(two_workers) as api:
            response = api.post("/v1/users", json=body, headers=headers)
            assert response.status_code == 201
            created.append((response.json()["data"]["id"], response.headers.get("idempotent-replayed")))
    assert len({user_id for user_id, _ in created}) == 1
    assert [replayed for _, replayed in created] == [None] + ["true"] * 9
    with fresh(two_workers) as api:
        listed = api.get("/v1/users", params={"search": body["email"]}, headers=owner.headers).json()
    assert listed["meta"]["pagination"]["total"] == 1
