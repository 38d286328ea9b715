"""Idempotency-Key on every POST: replays, reuse with another request, scoping, and concurrency."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from models.base import utcnow
from tests.conftest import PASSWORD, assert_error, register, unique_email
from tests.livesrv import backend


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
    again = api.post(
        "/v1/users",
        content=httpx.Request("POST", "/", json=dict(reversed(body.items()))).content,
        headers={**headers, "Content-Type": "application/json"},
    )
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
    assert_error(
        api.post("/v1/keys", json={"name": "k", "permissions": ["user:read"]}, headers=headers),
        422,
        "IDEMPOTENCY_KEY_REUSED",
    )


def test_the_older_header_name_works_and_the_standard_one_wins(api, owner):
    body = new_user()
    first = api.post("/v1/users", json=body, headers={**owner.headers, "X-Idempotency-Key": "old-name"})
    again = api.post("/v1/users", json=body, headers={**owner.headers, "Idempotency-Key": "old-name"})
    assert first.status_code == again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    both = api.post(
        "/v1/users", json=body, headers={**owner.headers, "Idempotency-Key": "old-name", "X-Idempotency-Key": "ignored"}
    )
    assert both.headers["idempotent-replayed"] == "true" and both.json() == first.json()


def test_keys_are_out_of_range_and_scoped_to_the_credential(api, owner):
    assert_error(
        api.post("/v1/users", json=new_user(), headers={**owner.headers, "Idempotency-Key": "x" * 256}),
        400,
        "VALIDATION_ERROR",
    )
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


def test_a_form_body_counts_in_the_key_so_another_accounts_token_pair_is_never_replayed(api, owner):
    # POST /v1/auth/token takes an OAuth form. The form was parsed before the request's fingerprint
    # was taken, so every form body looked empty: the same key from the same address with another
    # account's refresh token, or with any token at all, was answered with the first account's pair.
    other = register(api)
    form = {"Content-Type": "application/x-www-form-urlencoded", "Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = api.post("/v1/auth/token", content=f"refresh_token={owner.refresh_token}", headers=form)
    assert first.status_code == 200, first.text
    for token in (other.refresh_token, "rt_guessed"):
        again = api.post("/v1/auth/token", content=f"refresh_token={token}", headers=form)
        assert_error(again, 422, "IDEMPOTENCY_KEY_REUSED")
        assert owner.email not in again.text
    # the same form again is the same request: replayed, as a JSON body's retry is
    retry = api.post("/v1/auth/token", content=f"refresh_token={owner.refresh_token}", headers=form)
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["data"]["refresh_token"] == first.json()["data"]["refresh_token"]


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
    from tests.api.test_audit import sql

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


def test_a_5xx_frees_the_key_and_the_retry_runs_the_request(api, owner, server):
    from tests.api.test_audit import sql

    body, key = new_user(), str(uuid.uuid4())
    headers = {**owner.headers, "Idempotency-Key": key}
    # The handler's insert of this one user fails inside the database (a server error, not a
    # refusal): on PostgreSQL a trigger raises, on SQLite it overflows an integer.
    if backend() == "postgres":
        sql(
            server,
            "CREATE FUNCTION fail_for_test() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'failing on purpose'; END $$",
        )
        sql(
            server,
            f"CREATE TRIGGER fail_once BEFORE INSERT ON user_account FOR EACH ROW "
            f"WHEN (NEW.email = '{body['email']}') EXECUTE FUNCTION fail_for_test()",
        )
    else:
        sql(
            server,
            f"CREATE TRIGGER fail_once BEFORE INSERT ON user_account WHEN NEW.email = '{body['email']}' "
            "BEGIN SELECT abs(-9223372036854775807 - 1); END",
        )
    try:
        failed = api.post("/v1/users", json=body, headers=headers)
        assert 500 <= failed.status_code < 600, failed.text
    finally:
        sql(server, "DROP TRIGGER fail_once ON user_account" if backend() == "postgres" else "DROP TRIGGER fail_once")
    assert users_with(api, owner, body["email"]) == 0  # nothing half-written
    again = api.post("/v1/users", json=body, headers=headers)
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers  # run, not replayed, not 409 IDEMPOTENCY_IN_PROGRESS
    assert users_with(api, owner, body["email"]) == 1


@pytest.fixture
def in_process_db(server):
    """The live server's database bound to the models in this process (tenantry.db), on its own connections."""
    from tenantry.db import init_database

    db = init_database(server.database.url)
    yield db
    if hasattr(db, "close_all"):
        db.close_all()
    else:
        db.close()


class _Holder:
    """Another connection (a thread of its own) that claims a key and keeps the connection until told."""

    def __init__(self, scope, fingerprint: str, now, request_deadline=None) -> None:
        from models.idempotency import IdempotencyRecord
        from tenantry import deadline as deadlines

        self.claimed, self.drop, self.done = threading.Event(), threading.Event(), threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                deadlines.install(request_deadline)  # the claiming request's deadline, if it has one
                assert IdempotencyRecord.claim(scope, fingerprint, now=now) is None
                self.claimed.set()
                self.drop.wait(30)
            except BaseException as exc:  # reported by the test thread
                self.error = exc
                self.claimed.set()
            finally:
                from tenantry.db import drop_connection

                drop_connection()  # its connection closes: on PostgreSQL its holder token's lock is freed
                self.done.set()

        threading.Thread(target=run, daemon=True).start()
        assert self.claimed.wait(10) and self.error is None, self.error

    def end(self) -> None:
        self.drop.set()
        assert self.done.wait(10)


def test_a_claim_whose_request_died_is_taken_over_after_60_seconds(in_process_db):
    from datetime import timedelta

    from models.idempotency import LOCK_FOR, IdempotencyRecord, Scope
    from tenantry.errors import IdempotencyInProgress

    assert LOCK_FOR == timedelta(seconds=60)
    scope, t0 = Scope("-", "test:takeover", str(uuid.uuid4())), utcnow()
    first = _Holder(scope, "fp", t0)  # claims at t0 and keeps its connection: its process is hung, not gone
    try:
        with in_process_db.connection_context():
            for later in (timedelta(0), timedelta(seconds=30), timedelta(seconds=59, microseconds=999_999)):
                with pytest.raises(IdempotencyInProgress):
                    IdempotencyRecord.claim(scope, "fp", now=t0 + later)
            second = _Holder(scope, "fp", t0 + timedelta(seconds=60))  # takes it over (asserted), and holds it
            try:
                # The takeover holds it for 60 seconds of its own: another request is refused meanwhile.
                for later in (timedelta(seconds=60), timedelta(seconds=119)):
                    with pytest.raises(IdempotencyInProgress):
                        IdempotencyRecord.claim(scope, "fp", now=t0 + later)
                assert IdempotencyRecord.claim(scope, "fp", now=t0 + timedelta(seconds=120)) is None
            finally:
                second.end()
            IdempotencyRecord.release(scope)
    finally:
        first.end()


def test_a_claim_whose_connection_is_gone_is_taken_over_at_once_on_postgresql(in_process_db):
    from datetime import timedelta

    from models.idempotency import IdempotencyRecord, Scope
    from tenantry.errors import IdempotencyInProgress

    scope, t0 = Scope("-", "test:holder", str(uuid.uuid4())), utcnow()
    holder = _Holder(scope, "fp", t0)
    with in_process_db.connection_context():
        with pytest.raises(IdempotencyInProgress):  # its holder is alive: its request may still answer
            IdempotencyRecord.claim(scope, "fp", now=t0 + timedelta(seconds=1))
        token = IdempotencyRecord.get(IdempotencyRecord._where(scope)).holder
        holder.end()  # its connection ends (its process died, the server restarted, or its release failed)
        if backend() == "postgres":
            _wait_until_unlocked(in_process_db, token)  # its session has ended on the server's side too
            assert IdempotencyRecord.claim(scope, "fp", now=t0 + timedelta(seconds=2)) is None
        else:  # SQLite cannot tell a live holder from a dead one: the claim lapses after its 60 seconds
            with pytest.raises(IdempotencyInProgress):
                IdempotencyRecord.claim(scope, "fp", now=t0 + timedelta(seconds=2))
            assert IdempotencyRecord.claim(scope, "fp", now=t0 + timedelta(seconds=61)) is None
        IdempotencyRecord.release(scope)


def _wait_until_unlocked(db, token: int, timeout: float = 10) -> None:
    """Waits until no PostgreSQL session holds the advisory lock on `token` (a bigint key: classid, objid)."""
    import time

    deadline = time.monotonic() + timeout
    while db.execute_sql(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
        "AND ((classid::bigint << 32) | objid::bigint) = %s)",
        (token,),
    ).fetchone()[0]:
        assert time.monotonic() < deadline, f"the lock on {token} was still held after {timeout} s"
        time.sleep(0.02)


def test_a_claim_lasts_as_long_as_its_request_may_still_commit(in_process_db):
    """Review (issue 12): a batch operation may run (and commit) for 120 s, an upload for 300 s,
    while a claim lapsed after 60 s: a retry then took the claim over and ran the request a
    second time while the first, alive and within its deadline, went on to commit too (a
    double write). A claim must last until its request can no longer commit."""
    from datetime import timedelta

    from models.idempotency import IdempotencyRecord, Scope
    from tenantry.deadline import Deadline
    from tenantry.errors import IdempotencyInProgress

    scope, t0 = Scope("-", "test:long", str(uuid.uuid4())), utcnow()
    first = _Holder(scope, "fp", t0, request_deadline=Deadline(120))  # a batch request, still running
    try:
        with in_process_db.connection_context():
            for later in (timedelta(seconds=61), timedelta(seconds=119)):
                with pytest.raises(IdempotencyInProgress):
                    IdempotencyRecord.claim(scope, "fp", now=t0 + later)
            # Once its deadline (and a grace for its COMMIT) has passed, it can no longer commit.
            assert IdempotencyRecord.claim(scope, "fp", now=t0 + timedelta(seconds=200)) is None
            IdempotencyRecord.release(scope)
    finally:
        first.end()
