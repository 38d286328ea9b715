"""Database faults on PostgreSQL: connections cut as a restart cuts them, and an outage mid-request.

The server reaches PostgreSQL through tests.dbproxy.FaultProxy, which these tests cut; the shared
PostgreSQL server itself is never restarted. SQLite is embedded: it has no connection to lose.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.api.test_idempotency import new_user, users_with
from tests.conftest import Account, assert_error, register
from tests.dbproxy import FaultProxy
from tests.livesrv import POSTGRES_ADMIN_URL, LiveServer, backend, postgres_reachable, start_server

pytestmark = pytest.mark.skipif(
    backend() != "postgres", reason="a connection to lose is PostgreSQL's; SQLite is embedded in the server's process"
)

THREADS = 8  # the server's handler threads (TENANTRY_THREADS), each keeping its own connection


@pytest.fixture(scope="module")
def proxied() -> Iterator[tuple[LiveServer, FaultProxy]]:
    """A live server whose every database connection goes through a FaultProxy."""
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable")
    proxy = FaultProxy()
    server = start_server(url_transform=proxy.url_for, TENANTRY_THREADS=str(THREADS))
    try:
        yield server, proxy
    finally:
        server.stop()
        proxy.close()


@pytest.fixture
def account(proxied: tuple[LiveServer, FaultProxy]) -> Account:
    server, proxy = proxied
    proxy.up()
    with server.client() as client:
        try:
            return register(client)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nthe server's log ends:\n{server.log()[-4000:]}") from None


def _get_user(server: LiveServer, account: Account) -> httpx.Response:
    with server.client() as client:
        return client.get(f"/v1/users/{account.user['id']}", headers=account.headers)


def _every_thread_connected(server: LiveServer, proxy: FaultProxy, account: Account) -> None:
    """Sends concurrent GETs until every handler thread holds a connection (at most 20 rounds)."""
    with ThreadPoolExecutor(THREADS * 2) as pool:
        for _ in range(20):
            assert {r.status_code for r in pool.map(lambda _: _get_user(server, account), range(THREADS * 2))} == {200}
            if proxy.connections >= THREADS + 1:  # and the usage writer's (tenantry.usage)
                return
    pytest.fail(f"only {proxy.connections} connections after 20 rounds of {THREADS * 2} concurrent GETs")


def _backends(server: LiveServer) -> int:
    """How many PostgreSQL sessions the server's database has (seen from outside the proxy)."""
    import psycopg2

    conn = psycopg2.connect(POSTGRES_ADMIN_URL)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (server.database.name,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def _wait_for(condition, timeout: float = 10, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


def test_after_a_restart_of_an_idle_database_the_next_gets_answer_200(proxied, account):
    server, proxy = proxied
    _every_thread_connected(server, proxy, account)
    proxy.cut()  # every connection the server keeps is now dead, and it does not know yet
    with ThreadPoolExecutor(THREADS) as pool:
        statuses = [r.status_code for r in pool.map(lambda _: _get_user(server, account), range(40))]
    assert statuses == [200] * 40, statuses
    assert "running the request again on a new one" in server.log()


def test_after_a_restart_the_next_posts_are_created_once_each(proxied, account):
    server, proxy = proxied
    _every_thread_connected(server, proxy, account)
    proxy.cut()
    bodies = [new_user() for _ in range(THREADS * 2)]

    def create(body: dict[str, str]) -> httpx.Response:
        with server.client() as client:
            key = {"Idempotency-Key": str(uuid.uuid4())}
            return client.post("/v1/users", json=body, headers={**account.headers, **key})

    with ThreadPoolExecutor(THREADS) as pool:
        responses = list(pool.map(create, bodies))
    refused = [r.text for r in responses if r.status_code != 201]
    assert not refused, refused
    with server.client() as client:
        assert [users_with(client, account, body["email"]) for body in bodies] == [1] * len(bodies)


def test_readiness_recovers_on_its_next_poll_after_a_restart(proxied, account):
    server, proxy = proxied
    _every_thread_connected(server, proxy, account)
    proxy.down()  # restarting: nothing answers
    with server.client() as client:
        assert_error(client.get("/health/ready"), 503, "SERVICE_UNAVAILABLE")
    proxy.up()  # back: every poll, on whichever thread it lands, finds the database
    with ThreadPoolExecutor(THREADS) as pool:
        polls = list(pool.map(lambda _: httpx.get(f"{server.url}/health/ready", timeout=10), range(THREADS * 3)))
    assert [p.status_code for p in polls] == [200] * len(polls), [p.text for p in polls if p.status_code != 200]


def test_a_restart_under_load_loses_no_get(proxied, account):
    server, proxy = proxied
    _every_thread_connected(server, proxy, account)
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with server.client() as client:
            while not stop.is_set() and len(statuses) < 400:
                statuses.append(client.get(f"/v1/users/{account.user['id']}", headers=account.headers).status_code)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        _wait_for(lambda: len(statuses) >= 40, what="40 answers")
        # One restart, while requests are in flight. (Each request is run again once: two cuts
        # within one request's retry would be two restarts, and a 503 then is the right answer.)
        proxy.cut()
        _wait_for(lambda: len(statuses) >= 120, what="80 answers after the restart")
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert "running the request again on a new one" in server.log()


def test_a_post_answered_503_in_an_outage_is_processed_when_retried_after_it(proxied, account):
    server, proxy = proxied
    body, key = new_user(), str(uuid.uuid4())
    headers = {**account.headers, "Idempotency-Key": key}
    # The claim is committed; the database goes away when the handler first sends the email.
    proxy.cut_when_sent(body["email"].encode())
    with server.client() as client:
        assert_error(client.post("/v1/users", json=body, headers=headers), 503, "SERVICE_UNAVAILABLE")
        proxy.up()  # the outage is over
        # PostgreSQL has seen every cut connection end (their sessions, and what they held, are gone).
        _wait_for(lambda: _backends(server) <= proxy.connections, what="the cut sessions' end")
        again = client.post("/v1/users", json=body, headers=headers)
        assert again.status_code == 201, again.text
        assert "idempotent-replayed" not in again.headers
        assert users_with(client, account, body["email"]) == 1
        replay = client.post("/v1/users", json=body, headers=headers)
        assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
