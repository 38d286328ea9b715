"""The request's one transaction: rolled back on anything unexpected, never committed past its
deadline (504), and never holding SQLite's write lock while it hashes passwords."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.api.test_audit import sql
from tests.api.test_integrations import deliver, make_provider, user_event
from tests.conftest import PASSWORD, Account, assert_error, register, unique_email
from tests.livesrv import LiveServer, backend, start_server

#: The environment an in-process app needs to serve the live server's database as the server does.
_SHARED_ENV = (
    "DATABASE_URL",
    "TENANTRY_SECRET_KEY",
    "TENANTRY_INSTANCE_PATH",
    "TENANTRY_DB_ROLE",
    "TENANTRY_RATE_LIMIT_IP",
    "TENANTRY_DEFAULT_PLAN",
    "TENANTRY_ENV",
    "TENANTRY_VALIDATE_RESPONSES",
    "TENANTRY_OUTBOUND_ALLOWLIST",
)


@contextmanager
def in_process(server: LiveServer, monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[Any]:
    """A client of an app built in this process on the live server's database (the same core, with
    whatever handler the test patched in first), as tests/api/test_row_security.py does."""
    for name in _SHARED_ENV:
        if name in server.env:
            monkeypatch.setenv(name, server.env[name])
        else:
            monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("REDIS_URL", raising=False)
    from tenantry.app import create_app

    app = create_app()
    try:
        with app.test_client() as client:
            yield client
    finally:
        # Write this process's usage counts now, while the database exists (the writer is in-process).
        app.app.extensions["tenantry"].usage.flush()


def wait_for(condition: Callable[[], Any], within: float = 10.0) -> Any:
    """Returns the first truthy value of `condition`, asked every 20 ms; fails after `within` seconds."""
    end = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < end, "the condition did not hold in time"
        time.sleep(0.02)


def new_user(email: str | None = None) -> dict[str, str]:
    return {"email": email or unique_email("txn"), "password": PASSWORD, "first_name": "Tran", "last_name": "Saction"}


def written(server: LiveServer, tenant_id: str, emails: list[str]) -> dict[str, int]:
    """Counts what the database holds for these emails: users, and the tenant's user.created entries and events."""
    marks = ", ".join(["%s"] * len(emails))
    users = sql(server, f"SELECT count(*) FROM user_account WHERE email IN ({marks})", tuple(emails))[0][0]
    audit = sql(
        server, "SELECT count(*) FROM audit_entry WHERE tenant_id = %s AND action = 'user.created'", (tenant_id,)
    )[0][0]
    events = sql(server, "SELECT count(*) FROM event WHERE tenant_id = %s AND type = 'user.created'", (tenant_id,))[0][
        0
    ]
    return {"users": users, "audit": audit, "events": events}


# -- Anything unexpected rolls the whole request back -------------------------------------------


def test_an_unexpected_error_after_the_handler_wrote_rolls_the_whole_request_back(server, api, monkeypatch):
    owner = register(api, "Rollback")
    import handlers.users
    from models import User

    real_create_user = handlers.users.create_user
    seen_by_the_request: list[bool] = []

    def create_user_then_fail(body: dict[str, Any]) -> Any:
        real_create_user(body)  # the user row is inserted, in the request's transaction
        seen_by_the_request.append(User.select().where(User.email == body["email"]).exists())
        raise RuntimeError("a bug after the write")

    monkeypatch.setattr(handlers.users, "create_user", create_user_then_fail)
    body = new_user()
    key = str(uuid.uuid4())
    with in_process(server, monkeypatch) as client:
        failed = client.post("/v1/users", json=body, headers={**owner.headers, "Idempotency-Key": key})
    assert seen_by_the_request == [True]  # the handler did write
    assert failed.status_code == 500, failed.text
    assert failed.json()["error"] == {"code": "INTERNAL_ERROR", "message": "An internal error occurred."}
    assert failed.json()["meta"]["request_id"] == failed.headers["x-request-id"]
    assert written(server, owner.tenant["id"], [body["email"]]) == {"users": 0, "audit": 0, "events": 0}
    # The key was freed with the failure: a retry runs the request (on the real handler).
    retried = api.post("/v1/users", json=body, headers={**owner.headers, "Idempotency-Key": key})
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert written(server, owner.tenant["id"], [body["email"]]) == {"users": 1, "audit": 1, "events": 1}


# -- Deadlines: 504, and nothing half-written --------------------------------------------------


def test_a_batch_past_its_time_limit_answers_504_writes_nothing_and_frees_its_key(monkeypatch):
    # 50 argon2id hashes take a second or more: far past a batch limit of 0.3 s. The standard
    # limit stays at its default, so signing up and logging in are unaffected.
    slow = start_server(TENANTRY_BATCH_TIMEOUT="0.3")
    try:
        with slow.client() as api:
            owner = register(api, "Deadline")
            users = [new_user() for _ in range(50)]
            emails = [u["email"] for u in users]
            headers = {**owner.headers, "Idempotency-Key": str(uuid.uuid4())}
            started = time.monotonic()
            answer = api.post("/v1/users/batch", json={"users": users}, headers=headers)
            took = time.monotonic() - started
            error = assert_error(answer, 504, "GATEWAY_TIMEOUT")
            assert "nothing was changed" in error["message"]
            assert took < 5, took  # answered at the limit, not when the work ended

            # A retry with the same key, on an app with the default batch limit, runs the request:
            # the claim was freed (while the abandoned work winds down, the key answers 409).
            def retry() -> httpx.Response | None:
                response = client.post("/v1/users/batch", json={"users": users}, headers=headers)
                return None if response.status_code == 409 else response

            with in_process(slow, monkeypatch) as client:
                retried = wait_for(retry)
            # Only now has the abandoned request certainly ended: it had written nothing.
            assert retried.status_code == 201, retried.text
            assert "idempotent-replayed" not in retried.headers
            assert len(retried.json()["data"]) == 50
            assert written(slow, owner.tenant["id"], emails) == {"users": 50, "audit": 50, "events": 50}
            assert "could not release" not in slow.log()
    finally:
        slow.stop()


def test_a_standard_operation_past_its_limit_answers_504_and_never_commits(server, api, monkeypatch):
    owner = register(api, "Slow handler")
    import handlers.users
    from tenantry import deadline

    real_create_user, real_list_users = handlers.users.create_user, handlers.users.list_users

    def create_user_too_slowly(body: dict[str, Any]) -> Any:
        answer = real_create_user(body)  # written, in the request's transaction...
        wait_for(deadline.expired)  # ...and finished only after the event loop answered 504
        return answer

    def list_users_too_slowly(limit: int = 20) -> Any:
        wait_for(deadline.expired)
        return real_list_users(limit=limit)

    monkeypatch.setattr(handlers.users, "create_user", create_user_too_slowly)
    monkeypatch.setattr(handlers.users, "list_users", list_users_too_slowly)
    body = new_user()
    key = str(uuid.uuid4())
    with in_process(server, monkeypatch, TENANTRY_REQUEST_TIMEOUT="0.5") as client:
        created = client.post("/v1/users", json=body, headers={**owner.headers, "Idempotency-Key": key})
        listed = client.get("/v1/users", headers=owner.headers)
    for answer in (created, listed):
        assert answer.status_code == 504, answer.text
        assert answer.json()["error"]["code"] == "GATEWAY_TIMEOUT"
        assert answer.json()["meta"]["request_id"] == answer.headers["x-request-id"]
        assert answer.headers["content-type"] == "application/json"

    # The handler's thread went on after the 504 and refused to commit; once it has ended, its
    # claim is free (until then the key answers 409) and a retry runs the request anew.
    def retry() -> httpx.Response | None:
        response = api.post("/v1/users", json=body, headers={**owner.headers, "Idempotency-Key": key})
        return None if response.status_code == 409 else response

    retried = wait_for(retry)
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert written(server, owner.tenant["id"], [body["email"]]) == {"users": 1, "audit": 1, "events": 1}


def test_a_request_that_waited_for_a_thread_past_its_deadline_is_answered_504_and_never_run(server, api, monkeypatch):
    import threading

    import handlers.users

    owner = register(api, "Queued")
    real_list_users, real_get_user = handlers.users.list_users, handlers.users.get_user
    ran: list[str] = []
    release = threading.Event()

    def list_users_holding_the_thread(limit: int = 20) -> Any:
        ran.append("list")
        release.wait(30)  # holds the only handler thread until the test has seen the queued request's 504
        return real_list_users(limit=limit)

    def get_user_counted(user_id: str) -> Any:
        ran.append("get")
        return real_get_user(user_id)

    monkeypatch.setattr(handlers.users, "list_users", list_users_holding_the_thread)
    monkeypatch.setattr(handlers.users, "get_user", get_user_counted)
    one = f"/v1/users/{owner.user['id']}"
    with (
        in_process(server, monkeypatch, TENANTRY_REQUEST_TIMEOUT="2", TENANTRY_THREADS="1") as client,
        ThreadPoolExecutor(2) as pool,
    ):
        holding = pool.submit(client.get, "/v1/users", headers=owner.headers)
        wait_for(lambda: ran)
        queued = pool.submit(client.get, one, headers=owner.headers).result()  # waits in the pool's queue
        release.set()
        held = holding.result()
        after = client.get(one, headers=owner.headers)  # queued behind the abandoned one: it ran or was skipped
    assert queued.status_code == held.status_code == 504
    assert queued.json()["error"]["code"] == "GATEWAY_TIMEOUT"
    assert after.status_code == 200, after.text
    assert ran == ["list", "get"]  # the 504'd GET never ran: only the one after it did


# -- Slow work outside the write lock ----------------------------------------------------------


def test_argon2_never_runs_while_the_request_holds_its_transaction(server, api, monkeypatch):
    """Every password hash and verification of signup, user creation (one, a batch), a password
    change and logins (right, wrong, unknown email) happens before the transaction begins."""
    from models.base import database
    from tenantry import crypto

    calls: list[tuple[str, bool]] = []

    class Recording:
        def __init__(self, hasher: Any) -> None:
            self.hasher = hasher

        def hash(self, password: str) -> str:
            calls.append(("hash", database.in_transaction()))
            return self.hasher.hash(password)

        def verify(self, stored: str, password: str) -> bool:
            calls.append(("verify", database.in_transaction()))
            return self.hasher.verify(stored, password)

        def check_needs_rehash(self, stored: str) -> bool:
            return self.hasher.check_needs_rehash(stored)

    monkeypatch.setattr(crypto, "_hasher", Recording(crypto._hasher))
    with in_process(server, monkeypatch) as client:
        email = unique_email("owner")
        signup = {
            "email": email,
            "password": PASSWORD,
            "first_name": "Ada",
            "last_name": "Lovelace",
            "tenant_name": "Hashing",
        }
        assert client.post("/v1/auth/register", json=signup).status_code == 201
        token = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()["data"]
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        one = client.post("/v1/users", json=new_user(), headers=headers)
        assert one.status_code == 201, one.text
        batch = client.post("/v1/users/batch", json={"users": [new_user(), new_user(), new_user()]}, headers=headers)
        assert batch.status_code == 201, batch.text
        changed = client.patch(
            f"/v1/users/{one.json()['data']['id']}", json={"password": "another-password-2"}, headers=headers
        )
        assert changed.status_code == 200, changed.text
        assert client.post("/v1/auth/login", json={"email": email, "password": "wrong-password-1"}).status_code == 401
        assert client.post("/v1/auth/login", json={"email": unique_email(), "password": PASSWORD}).status_code == 401
        # An integration's user.created makes a user without a password: no argon2 work at all.
        owner = Account({}, {}, email, PASSWORD, token["access_token"], token["refresh_token"])
        provider = make_provider(client, owner)
        hooked = unique_email("hooked")
        assert deliver(client, provider, user_event("user.created", hooked, name="John Doe")).status_code == 202
        assert client.post("/v1/auth/login", json={"email": hooked, "password": PASSWORD}).status_code == 401
    assert [kind for kind, _ in calls] == [
        "hash",
        "verify",
        "hash",
        "hash",
        "hash",
        "hash",
        "hash",
        "verify",
        "verify",
        "verify",
    ]
    assert not any(in_transaction for _, in_transaction in calls), calls


def test_batches_of_new_users_do_not_starve_other_writes(server, api):
    """Two clients import 50-user batches while a third makes single writes: on SQLite the
    batches once held the write lock while argon2 ran, and single writes failed with 503."""
    owner = register(api, "Importer")
    target = api.post("/v1/users", json=new_user(), headers=owner.headers).json()["data"]
    batches_per_client = 3
    importing = True

    def importer(_: int) -> list[tuple[int, list[str]]]:
        done = []
        with server.client() as client:
            for _ in range(batches_per_client):
                users = [new_user() for _ in range(50)]
                response = client.post("/v1/users/batch", json={"users": users}, headers=owner.headers)
                done.append((response.status_code, [u["email"] for u in users]))
        return done

    def single_writes() -> list[int]:
        statuses = []
        with server.client() as client:
            n = 0
            while importing or n < 10:
                n += 1
                response = client.patch(
                    f"/v1/users/{target['id']}", json={"first_name": f"Single{n}"}, headers=owner.headers
                )
                statuses.append(response.status_code)
        return statuses

    with ThreadPoolExecutor(3) as pool:
        singles = pool.submit(single_writes)
        imports = list(pool.map(importer, range(2)))
        importing = False
        statuses = singles.result()
    batches = [batch for client in imports for batch in client]
    assert [status for status, _ in batches] == [201] * (2 * batches_per_client)
    assert len(statuses) >= 10 and statuses.count(200) == len(statuses), statuses
    emails = [email for _, batch in batches for email in batch]
    assert written(server, owner.tenant["id"], emails)["users"] == 100 * batches_per_client

    def logs_in(email: str) -> int:
        with server.client() as client:
            return client.post(
                "/v1/auth/login", json={"email": email, "password": PASSWORD, "tenant_id": owner.tenant["id"]}
            ).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(logs_in, emails)) == [200] * len(emails)


@pytest.mark.skipif(
    backend() != "sqlite",
    reason="SQLite's write lock: PostgreSQL writers wait on row locks, "
    "which the request's deadline bounds (its statement_timeout) instead",
)
def test_a_write_lock_held_past_the_busy_timeout_is_a_retryable_503_database_busy(server, api):
    import sqlite3

    owner: Account = register(api, "Busy")
    holder = sqlite3.connect(server.env["DATABASE_URL"].removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer that keeps the lock past the 10 s busy timeout
        busy = api.post("/v1/users", json=new_user(), headers=owner.headers)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    error = assert_error(busy, 503, "DATABASE_BUSY")
    assert "Retry" in error["message"] and busy.headers["retry-after"] == "1"
    # Nothing was broken: the same request now succeeds.
    assert api.post("/v1/users", json=new_user(), headers=owner.headers).status_code == 201
