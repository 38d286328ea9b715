"""Rate limits against live servers with the real defaults: headers, 429s, plans, a shared Redis budget."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD, Account, add_user, assert_error, login, register, unique_email
from tests.livesrv import (
    OPERATOR_EMAIL,
    REDIS_URL,
    HungRedis,
    LatencyProxy,
    LiveServer,
    eventually,
    free_port,
    start_server,
)

SHM = Path("/dev/shm")  # where `tenantry serve` puts the workers' table on Linux

#: The server defaults, undoing what tests/livesrv.py raises for the rest of the suite.
DEFAULTS = {
    "TENANTRY_DEFAULT_PLAN": "standard",
    "TENANTRY_RATE_LIMIT_IP": "1200/minute",
    "TENANTRY_RATE_LIMIT_AUTH_IP": "30/minute",
    "TENANTRY_RATE_LIMIT_AUTH_ACCOUNT": "10/minute",
}


#: The defaults behind a trusted proxy: the tests' client is the proxy, so a test names the client
#: address it speaks for in X-Forwarded-For and gets a budget per address of its own; without the
#: header it is 127.0.0.1. Shared (tests/conftest.py `shared_server`), with tests/api/test_keys.py too.
STRICT = {"TENANTRY_TRUSTED_PROXIES": "127.0.0.1/32", **DEFAULTS}
#: Two workers sharing their budgets in Redis, under a prefix of this module's own.
SHARED_REDIS = {"REDIS_URL": REDIS_URL, "TENANTRY_RATE_LIMIT_PREFIX": f"test-{uuid.uuid4().hex[:12]}", **DEFAULTS}


@pytest.fixture
def strict(shared_server) -> LiveServer:
    return shared_server(**STRICT)


def limited(response: httpx.Response) -> tuple[int, int, int]:
    return (
        int(response.headers["x-ratelimit-limit"]),
        int(response.headers["x-ratelimit-remaining"]),
        int(response.headers["x-ratelimit-reset"]),
    )


def test_every_operation_answers_with_the_headers_of_the_callers_plan(strict):
    with strict.client() as api:
        owner = register(api)
        assert owner.tenant["plan"] == "standard" and owner.tenant["rate_limits"] is None
        first = api.get("/v1/users", headers=owner.headers)
        limit, remaining, reset = limited(first)
        assert limit == 100 and 0 < remaining < 100 and time.time() - 5 < reset <= time.time() + 61
        second = api.get("/v1/users", headers=owner.headers)
        assert limited(second)[1] == remaining - 1
        # Errors answered by an operation carry them too; so does an anonymous operation.
        missing = api.get("/v1/users/usr_01JDQ40B4XK3W0V9C2E5G7H8JM", headers=owner.headers)
        assert missing.status_code == 404 and limited(missing)[0] == 100
        signed_in = api.post(
            "/v1/auth/login", json={"email": owner.email, "password": PASSWORD, "tenant_id": owner.tenant["id"]}
        )
        assert signed_in.status_code == 200 and limited(signed_in)[0] == 10  # per account, the hardest
        # Monitoring is never limited.
        assert "x-ratelimit-limit" not in api.get("/health").headers


def test_a_burst_gets_429_with_retry_after(strict):
    with strict.client() as api:
        owner = register(api)
        # A sliding window counter is exact inside one 10-second window and may let a few more
        # through when the burst straddles two (the previous window's share decays): 80 requests
        # always meet the limit, and the first 50 always pass.
        statuses = [api.get("/v1/auth/me", headers=owner.headers) for _ in range(80)]
        refused = [r for r in statuses if r.status_code == 429]
        assert [r.status_code for r in statuses[:50]] == [200] * 50 and refused
        error = assert_error(refused[0], 429, "RATE_LIMIT_EXCEEDED")
        assert "10 second" in error["message"]
        assert 1 <= int(refused[0].headers["retry-after"]) <= 10
        assert limited(refused[0])[:2] == (50, 0)
        # Another tenant's owner has a budget of their own.
        other = register(api)
        assert api.get("/v1/auth/me", headers=other.headers).status_code == 200


def test_the_operator_sets_the_plan_and_custom_limits(strict):
    with strict.client() as api:
        owner = register(api)
        assert_error(
            api.patch(f"/v1/tenants/{owner.tenant['id']}", json={"plan": "enterprise"}, headers=owner.headers),
            403,
            "PERMISSION_DENIED",
        )
        operator = {"Authorization": f"Bearer {login(api, OPERATOR_EMAIL, strict.operator_password)['access_token']}"}
        body = {
            "name": "Acme",
            "status": "active",
            "settings": {},
            "plan": "enterprise",
            "rate_limits": {"requests_per_minute": 5, "burst_per_10_seconds": 5},
        }
        replaced = api.put(f"/v1/tenants/{owner.tenant['id']}", json=body, headers=operator)
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["data"]["plan"] == "enterprise"
        assert replaced.json()["data"]["rate_limits"] == body["rate_limits"]
        answers = [api.get("/v1/auth/me", headers=owner.headers).status_code for _ in range(12)]
        # Five a minute: the owner's one refused PATCH already counted, so four pass at least,
        # and a window boundary may let a few more through (see the burst test).
        assert answers[:4] == [200] * 4 and 429 in answers[:9]
        assert limited(api.get("/v1/auth/me", headers=owner.headers))[0] == 5
        # Back to the plan's own limits: null.
        api.patch(
            f"/v1/tenants/{owner.tenant['id']}", json={"plan": "professional", "rate_limits": None}, headers=operator
        )
        tenant = api.get(f"/v1/tenants/{owner.tenant['id']}", headers=operator).json()["data"]
        assert tenant["plan"] == "professional" and tenant["rate_limits"] is None


def from_address(live: LiveServer, address: str) -> httpx.Client:
    """A client whose requests come from `address` (through the trusted proxy that the test client is)."""
    return live.client(headers={"X-Forwarded-For": address})


def test_signup_is_limited_per_address(strict):
    # TENANTRY_RATE_LIMIT_AUTH_IP: 30 signups a minute from one address, each for another account.
    def signup(api: httpx.Client) -> httpx.Response:
        return api.post(
            "/v1/auth/register",
            json={
                "email": unique_email("owner"),
                "password": PASSWORD,
                "first_name": "Ada",
                "last_name": "Lovelace",
                "tenant_name": "Acme",
            },
        )

    with from_address(strict, "203.0.113.10") as api:
        answers = [signup(api) for _ in range(31)]
    assert [r.status_code for r in answers] == [201] * 30 + [429], [r.status_code for r in answers]
    error = assert_error(answers[-1], 429, "RATE_LIMIT_EXCEEDED")
    assert "minute" in error["message"]
    assert limited(answers[-1])[:2] == (30, 0) and 1 <= int(answers[-1].headers["retry-after"]) <= 60
    with from_address(strict, "203.0.113.11") as other:  # another address has its own budget
        assert signup(other).status_code == 201


def test_token_refresh_is_limited_per_address(strict):
    with from_address(strict, "203.0.113.20") as home:
        owner = register(home)

    def refresh(api: httpx.Client, token: str) -> httpx.Response:
        return api.post("/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": token})

    with from_address(strict, "203.0.113.21") as api:
        # Thirty refresh tokens tried from one address, each another account (a token): 401 each.
        answers = [refresh(api, f"rt_{uuid.uuid4().hex}") for _ in range(30)]
        assert {r.status_code for r in answers} == {401}
        # The 31st is refused before it is looked at: a valid token too, which stays unspent.
        refused = refresh(api, owner.refresh_token)
    assert_error(refused, 429, "RATE_LIMIT_EXCEEDED")
    assert limited(refused)[:2] == (30, 0)
    with from_address(strict, "203.0.113.22") as other:
        exchanged = refresh(other, owner.refresh_token)
    assert exchanged.status_code == 200, exchanged.text


def test_mfa_is_limited_per_address(strict):
    with from_address(strict, "203.0.113.30") as home:
        owner = register(home)
        # Four accounts, so the address's 30 are spent before any account's 10.
        users = [add_user(home, owner) for _ in range(4)]

    def setup(api: httpx.Client, user: Account) -> httpx.Response:
        return api.post("/v1/auth/mfa/setup", json={"type": "totp"}, headers=user.headers)

    with from_address(strict, "203.0.113.31") as api:
        answers = [setup(api, users[i % 4]) for i in range(31)]
    assert [r.status_code for r in answers] == [200] * 30 + [429], [r.status_code for r in answers]
    assert_error(answers[-1], 429, "RATE_LIMIT_EXCEEDED")
    assert limited(answers[-1])[:2] == (30, 0)
    with from_address(strict, "203.0.113.32") as other:
        assert setup(other, users[3]).status_code == 200


def test_login_is_limited_per_account_and_per_address(strict):
    # An address of this test's own: its budget starts with this test.
    with from_address(strict, "203.0.113.40") as api:
        owner = register(api)  # a signup and a login: two of the address's 30
        wrong = {"email": owner.email, "password": "wrong-password!", "tenant_id": owner.tenant["id"]}
        answers = [api.post("/v1/auth/login", json=wrong).status_code for _ in range(20)]
        # The account's 10 a minute, its signup and first login included: exactly, since the
        # account's window starts at its first request (the signup) and the run is shorter.
        assert answers == [401] * 8 + [429] * 12, answers
        error = assert_error(
            api.post("/v1/auth/login", json={**wrong, "password": PASSWORD}), 429, "RATE_LIMIT_EXCEEDED"
        )
        assert "minute" in error["message"]
        # Other accounts from the same address are still answered, until the address's 30 are
        # spent; the signup, its login and the attempts above took about half of them.
        others = [
            api.post("/v1/auth/login", json={"email": unique_email(), "password": PASSWORD}).status_code
            for _ in range(40)
        ]
        first_refusal = others.index(429)
        assert 1 <= first_refusal <= 25 and set(others[:first_refusal]) == {401}


def test_a_login_by_username_spends_the_same_account_budget_as_by_email(strict):
    # Issue 13: seed 004's `username` alias must not be a way around the per-account limit.
    with from_address(strict, "203.0.113.50") as api:
        owner = register(api)  # a signup and a login: two of the account's 10
        wrong = {"password": "wrong-password!", "tenant_id": owner.tenant["id"]}
        answers = [
            api.post("/v1/auth/login", json={**wrong, name: owner.email}).status_code
            for name in ["email", "username"] * 5
        ]
        assert answers == [401] * 8 + [429] * 2, answers
        # A refresh token as `refresh`, in a form, counts for that token like `refresh_token` in JSON.
        token = {"refresh_token": f"rt_{uuid.uuid4().hex}"}
        tries = [
            api.post("/v1/auth/token", json=token),
            api.post("/v1/auth/token", data=token),
            api.post("/v1/auth/token", json={"refresh": token["refresh_token"]}),
        ]
        assert [limited(r)[1] for r in tries] == [9, 8, 7], [r.headers for r in tries]


def test_two_processes_on_one_redis_share_one_budget(shared_server):
    live = shared_server(workers=2, **SHARED_REDIS)
    with live.client() as api:
        owner = register(api)
        operator = {"Authorization": f"Bearer {login(api, OPERATOR_EMAIL, live.operator_password)['access_token']}"}
        body = {
            "name": "Acme",
            "status": "active",
            "settings": {},
            "plan": "enterprise",
            "rate_limits": {"requests_per_minute": 20, "burst_per_10_seconds": 20},
        }
        assert api.put(f"/v1/tenants/{owner.tenant['id']}", json=body, headers=operator).status_code == 200
    statuses = []
    for _ in range(30):
        # A new connection each time: the kernel spreads connections over both workers.
        with live.client(headers={"Connection": "close"}) as client:
            response = client.get("/v1/auth/me", headers=owner.headers)
            statuses.append(response.status_code)
    # Twenty in any 10 seconds for both processes together (two budgets of their own would
    # have passed all 30); a window boundary may let a few more through (see the burst test).
    assert statuses[:20] == [200] * 20 and 20 <= statuses.count(200) <= 26, statuses


def test_an_unreachable_redis_fails_open_with_one_warning():
    live = start_server(REDIS_URL="redis://127.0.0.1:9/0", **DEFAULTS)  # nothing listens on port 9
    try:
        with live.client() as api:
            owner = register(api)
            answers = [api.get("/v1/auth/me", headers=owner.headers) for _ in range(60)]
            assert {r.status_code for r in answers} == {200}  # past the burst of 50: nothing counted
            assert "x-ratelimit-limit" not in answers[0].headers
        # The outage is reported once, when the breaker opens, not once a request.
        warnings = eventually(lambda: [line for line in live.log().splitlines() if "failing open" in line])
        assert len(warnings) == 1, warnings
        assert '"level": "warning"' in warnings[0] and "ConnectionError" in warnings[0]
    finally:
        live.stop()


def test_a_hung_redis_is_asked_once_and_adds_no_wait_to_later_requests():
    hung = HungRedis()  # accepts connections, never answers
    live = start_server(REDIS_URL=f"redis://127.0.0.1:{hung.port}/0", TENANTRY_REDIS_RETRY_AFTER="600", **DEFAULTS)
    try:
        with live.client() as api:
            owner = register(api)  # the first limited request waits for the timeout and opens the breaker
            answers = [api.get("/v1/auth/me", headers=owner.headers) for _ in range(60)]
        assert {r.status_code for r in answers} == {200}
        assert "x-ratelimit-limit" not in answers[0].headers
        # Redis was tried by the first limited request only (one worker: one connection), not once
        # a request: the breaker answers the others at once until TENANTRY_REDIS_RETRY_AFTER.
        assert len(hung.accepted) == 1, len(hung.accepted)
        warnings = [line for line in live.log().splitlines() if "failing open" in line]
        assert len(warnings) == 1 and "TimeoutError" in warnings[0], warnings
    finally:
        live.stop()
        hung.close()


def test_limits_apply_again_once_redis_answers_again():
    from urllib.parse import urlparse

    port = free_port()  # Redis "stopped": nothing listens here yet
    live = start_server(
        REDIS_URL=f"redis://127.0.0.1:{port}/0",
        TENANTRY_REDIS_RETRY_AFTER="1",
        TENANTRY_RATE_LIMIT_PREFIX=f"test-{uuid.uuid4().hex[:12]}",
        **DEFAULTS,
    )
    proxy = None
    try:
        with live.client() as api:
            owner = register(api)
            assert "x-ratelimit-limit" not in api.get("/v1/auth/me", headers=owner.headers).headers
            # Redis "started": the port now leads to the real one. Within a retry period or two a
            # request probes it, and the limits (and their headers) apply again.
            proxy = LatencyProxy(urlparse(REDIS_URL).port or 6379, delay=0, port=port)
            deadline = time.monotonic() + 15
            while "x-ratelimit-limit" not in (me := api.get("/v1/auth/me", headers=owner.headers)).headers:
                assert time.monotonic() < deadline, "the limits never applied again"
                time.sleep(0.1)
            assert limited(me)[0] == 100
        lines = live.log().splitlines()
        assert len([line for line in lines if "failing open" in line]) == 1
        recovered = [line for line in lines if "reachable again" in line]
        assert len(recovered) == 1 and '"level": "info"' in recovered[0]
    finally:
        live.stop()
        if proxy is not None:
            proxy.close()


def answered_by(live: LiveServer, responses: list[httpx.Response]) -> set[int]:
    """Returns the worker processes that answered `responses`, from their access log lines (by request id)."""
    import json

    wanted = {response.headers["x-request-id"] for response in responses}
    deadline = time.monotonic() + 10  # a worker writes its access line just after it answered
    while True:
        pids = {}
        for line in live.log().splitlines():
            if line.startswith("{") and '"msg": "request"' in line:
                entry = json.loads(line)
                if entry.get("request_id") in wanted:
                    pids[entry["request_id"]] = entry["pid"]
        if len(pids) == len(wanted) or time.monotonic() > deadline:
            assert set(pids) == wanted, "some requests have no access log line"
            return set(pids.values())
        time.sleep(0.05)


@pytest.mark.parametrize("redis", [False, True], ids=["shared-memory", "redis"])
def test_limits_hold_exactly_across_two_workers(redis, shared_server):
    # The README offers `tenantry serve --workers N` without Redis on SQLite and on PostgreSQL:
    # the documented limits must hold exactly there too, whichever worker answers. With Redis, the
    # server is the one the test above shares (its own tenant and account here); without, it is
    # stopped below to see the workers' shared-memory table removed.
    live = shared_server(workers=2, **SHARED_REDIS) if redis else start_server(workers=2, REDIS_URL="", **DEFAULTS)
    try:
        with live.client() as api:
            owner = register(api)
            # A user made by the owner (not a signup): no login has counted for this account yet.
            email = unique_email()
            created = api.post(
                "/v1/users",
                json={"email": email, "password": PASSWORD, "first_name": "Ten", "last_name": "Tries"},
                headers=owner.headers,
            )
            assert created.status_code == 201, created.text
        wrong = {"email": email, "password": "wrong-password!", "tenant_id": owner.tenant["id"]}
        answers = []
        for body in [wrong] * 12 + [{**wrong, "password": PASSWORD}]:
            with live.client(headers={"Connection": "close"}) as client:  # new connections reach both workers
                answers.append(client.post("/v1/auth/login", json=body))
        # Exactly ten attempts a minute for the account are answered; every later one is refused,
        # the right password included, and the remaining count falls by one each time.
        assert [r.status_code for r in answers] == [401] * 10 + [429] * 3, [r.status_code for r in answers]
        assert [limited(r)[:2] for r in answers[:10]] == [(10, left) for left in range(9, -1, -1)]
        assert_error(answers[-1], 429, "RATE_LIMIT_EXCEEDED")
        # A credential's minute budget: X-RateLimit-Remaining strictly falls whichever worker answers.
        me = []
        for _ in range(20):
            with live.client(headers={"Connection": "close"}) as client:
                me.append(client.get("/v1/auth/me", headers=owner.headers))
        assert {r.status_code for r in me} == {200}
        remaining = [limited(r)[1] for r in me]
        assert remaining == list(range(remaining[0], remaining[0] - 20, -1)), remaining
        assert len(answered_by(live, answers + me)) == 2  # both workers answered
        tables = list(SHM.glob(f"tenantry-ratelimits-{live.process.pid}-*")) if SHM.is_dir() else []
        assert len(tables) == (0 if redis or not SHM.is_dir() else 1)
    finally:
        if not redis:
            live.stop()
    assert not any(table.exists() for table in tables)  # the serve parent removes its table when it stops
