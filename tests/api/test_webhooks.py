"""Outbound webhooks, end to end: a real receiver on 127.0.0.1 and real `tenantry worker` processes.

Signatures are checked with the `standardwebhooks` library unchanged, as a partner would. The
retry schedule is checked on a driven clock (`driven`): a job worker in this process, on the live
server's database, runs what is due at the time the test says, so no test waits out a retry.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import PASSWORD, assert_error, register, unique_email
from tests.livesrv import backend, start_server
from tests.receivers import Receiver, Worker, eventually


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def worker(server):
    worker = Worker(server)
    yield worker
    worker.stop()


class DrivenWorker:
    """A job worker of the webhook kinds in this process, running one tenant's due jobs at a driven time.

    The clock starts an hour ahead of the wall clock, so whatever the server enqueues during the
    test (at its wall-clock time) is due at once.
    """

    def __init__(self, worker, tenant_id):
        from models.base import utcnow

        self.worker, self.tenant_id = worker, tenant_id
        self.now = utcnow() + timedelta(hours=1)

    def run(self, seconds=0.0):
        """Moves the clock on by `seconds`, runs every job of the tenant due then; returns how many ran."""
        self.now += timedelta(seconds=seconds)
        return self.worker.run_due(now=self.now, tenant_id=self.tenant_id)


@pytest.fixture
def driven(server, monkeypatch):
    """Returns `make(owner, **env)`: a DrivenWorker for the owner's tenant, with the server's settings and
    these environment variables (a plug-in's section is read from the environment, as at start)."""
    from models.base import database
    from services import register_all
    from tenantry import jobs
    from tenantry.db import init_database
    from tenantry.host import Host, configure
    from tenantry.security import SecretBox, TokenService, install_token_service
    from tenantry.settings import Settings

    for name, value in server.env.items():
        if name.startswith("TENANTRY_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.setenv(name, value)

    def make(owner, **env):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        register_all(Host())  # first: its sections are read with the settings
        settings = Settings.from_env()
        init_database(settings.database_url, 4, settings.db_role or None)
        install_token_service(
            TokenService(settings.secret_key, settings.access_token_ttl), SecretBox(settings.secret_key)
        )
        configure(settings)  # the plug-ins' settings-dependent jobs: webhook.deliver with this schedule
        return DrivenWorker(jobs.Worker(settings, kinds=["webhook.*"]), owner.tenant["id"])

    yield make
    if hasattr(database.obj, "close_all"):
        database.obj.close_all()
    else:
        database.close()


def make_webhook(api, owner, url, events=("user.*",), **extra):
    response = api.post("/v1/webhooks", json={"url": url, "events": list(events), **extra}, headers=owner.headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def new_user(api, owner, **extra):
    body = {"email": unique_email(), "password": PASSWORD, "first_name": "Web", "last_name": "Hook", **extra}
    response = api.post("/v1/users", json=body, headers=owner.headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def deliveries(api, owner, webhook_id, **params):
    response = api.get(f"/v1/webhooks/{webhook_id}/deliveries", params=params, headers=owner.headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def verify(secret, received):
    """Verifies a delivery the way a partner does; returns the payload."""
    return Webhook(secret).verify(received.body, received.headers)


def test_creating_a_user_delivers_a_signed_user_created_that_standardwebhooks_verifies(api, owner, receiver, worker):
    created = make_webhook(api, owner, receiver.url)
    secret, webhook = created["secret"], created["webhook"]
    assert secret.startswith("whsec_") and webhook["enabled"] and webhook["events"] == ["user.*"]
    assert secret not in api.get(f"/v1/webhooks/{webhook['id']}", headers=owner.headers).text
    user = new_user(api, owner)
    (got,) = receiver.wait_for(1)
    payload = verify(secret, got)
    assert payload["type"] == "user.created" and payload["tenant_id"] == owner.tenant["id"]
    assert payload["livemode"] is True
    # The object is the user exactly as the API answered it (which never holds a password), and
    # the password sent at creation is nowhere in the delivery.
    assert payload["data"]["object"] == user
    assert PASSWORD not in got.body.decode() and "password" not in json.dumps(payload["data"]).lower()
    assert got.headers["webhook-id"].startswith("msg_") and got.headers["content-type"] == "application/json"
    # The event is the same document the events API serves.
    event = api.get(f"/v1/events/{payload['id']}", headers=owner.headers).json()["data"]
    assert event == payload
    # A tampered body or another secret fails verification.
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk=").verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        verify(secret, type(got)(got.path, got.headers, got.body.replace(b"user", b"usex"), got.at))
    listed = eventually(lambda: [d for d in deliveries(api, owner, webhook["id"]) if d["status"] == "succeeded"])
    assert listed[0]["id"] == got.headers["webhook-id"] and listed[0]["attempts"][0]["status_code"] == 200
    assert listed[0]["attempts"][0]["duration_ms"] >= 0 and listed[0]["event_type"] == "user.created"


def test_a_receiver_failing_three_times_gets_it_on_the_fourth_attempt_with_the_same_id(api, owner, driven):
    receiver = Receiver(statuses=[500, 503, 502, 200])
    clock = driven(owner)
    try:
        created = make_webhook(api, owner, receiver.url)
        new_user(api, owner)
        assert clock.run() == 1
        # The compressed schedule: each retry 1 s (+ up to 20% jitter) after the failure, never sooner.
        for _ in range(3):
            assert clock.run(0.99) == 0
            assert clock.run(0.21) == 1
        got = receiver.wait_for(4)
        assert len({r.headers["webhook-id"] for r in got}) == 1
        for attempt in got:
            assert verify(created["secret"], attempt)["type"] == "user.created"
        (delivery,) = eventually(
            lambda: [d for d in deliveries(api, owner, created["webhook"]["id"]) if d["status"] == "succeeded"]
        )
        assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 502, 200]
        assert [a["status"] for a in delivery["attempts"]] == ["failed", "failed", "failed", "succeeded"]
        assert delivery["attempt_count"] == 4 and delivery["attempts"][0]["error"]
        assert clock.run(3600) == 0
        assert len(receiver.received) == 4  # nothing more once it succeeded
    finally:
        receiver.close()


def test_after_the_last_retry_the_delivery_fails_and_an_event_says_so(api, owner, driven):
    receiver, watcher = Receiver(statuses=[500]), Receiver()
    clock = driven(owner)
    try:
        failing = make_webhook(api, owner, receiver.url)["webhook"]
        make_webhook(api, owner, watcher.url, events=["webhook.delivery_failed"])
        new_user(api, owner)
        clock.run()
        pending = deliveries(api, owner, failing["id"])[0]
        assert pending["status"] == "pending" and pending["attempt_count"] == 1
        assert pending["next_attempt_at"] is not None  # the retry's time, as the job layer scheduled it
        for _ in range(3):
            clock.run(1.2)
        receiver.wait_for(4)  # the first attempt and three retries
        (note,) = watcher.wait_for(1)
        payload = json.loads(note.body)
        assert payload["type"] == "webhook.delivery_failed"
        assert payload["data"]["object"]["endpoint_id"] == failing["id"]
        assert payload["data"]["object"]["status"] == "failed"
        (delivery,) = deliveries(api, owner, failing["id"], status="failed")
        assert delivery["attempt_count"] == 4 and delivery["next_attempt_at"] is None
        after = api.get(f"/v1/webhooks/{failing['id']}", headers=owner.headers).json()["data"]
        assert after["failing_since"] is not None and after["enabled"]
        assert clock.run(3600) == 0
        assert len(receiver.received) == 4
        # A manual retry makes exactly one more attempt, with the same webhook-id.
        receiver.statuses[:] = [200]
        retried = api.post(f"/v1/webhooks/{failing['id']}/deliveries/{delivery['id']}/retry", headers=owner.headers)
        assert retried.status_code == 202, retried.text
        assert clock.run() == 1
        fifth = receiver.wait_for(5)[4]
        assert fifth.headers["webhook-id"] == delivery["id"]
        eventually(lambda: deliveries(api, owner, failing["id"], status="succeeded"))
        healed = api.get(f"/v1/webhooks/{failing['id']}", headers=owner.headers).json()["data"]
        assert healed["failing_since"] is None
    finally:
        receiver.close()
        watcher.close()


def test_a_manual_retry_of_a_finished_delivery_gets_exactly_one_attempt(api, owner, driven):
    receiver = Receiver(statuses=[500])
    clock = driven(owner)
    try:
        hook = make_webhook(api, owner, receiver.url)["webhook"]
        new_user(api, owner)
        for step in (0, 1.2, 1.2, 1.2):
            clock.run(step)
        (delivery,) = deliveries(api, owner, hook["id"], status="failed")
        retried = api.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry", headers=owner.headers)
        assert retried.status_code == 202, retried.text
        assert clock.run() == 1
        # It failed again: no retry follows, however long the clock runs.
        assert clock.run(3600) == 0
        assert len(receiver.received) == 5
        (again,) = deliveries(api, owner, hook["id"], status="failed")
        assert again["attempt_count"] == 5
    finally:
        receiver.close()


def test_410_disables_the_endpoint(api, owner, worker):
    receiver = Receiver(statuses=[410])
    try:
        webhook = make_webhook(api, owner, receiver.url)["webhook"]
        new_user(api, owner)
        receiver.wait_for(1)
        gone = eventually(
            lambda: (lambda w: w if not w["enabled"] else None)(
                api.get(f"/v1/webhooks/{webhook['id']}", headers=owner.headers).json()["data"]
            )
        )
        assert gone["disabled_reason"] == "gone"
        new_user(api, owner)
        # Nothing is even queued for a disabled endpoint (deliveries are queued in the change's
        # own transaction), so nothing can be sent: no wait needed to see it.
        assert len(deliveries(api, owner, webhook["id"])) == 1
        assert len(receiver.received) == 1
        types = [e["type"] for e in api.get("/v1/events", headers=owner.headers).json()["data"]]
        assert "webhook.disabled" in types
        assert_error(api.post(f"/v1/webhooks/{webhook['id']}/test", headers=owner.headers), 409, "CONFLICT")
    finally:
        receiver.close()


def test_killing_the_worker_mid_delivery_loses_nothing(api, owner, server):
    receiver = Receiver(hang=30)
    first = Worker(server)
    try:
        created = make_webhook(api, owner, receiver.url)
        new_user(api, owner)
        receiver.wait_for(1)
        first.kill()  # mid-delivery: the receiver has the request and has not answered
        receiver.hang = 0
        second = Worker(server)
        try:
            got = receiver.wait_for(2, timeout=30)  # once the lease (4 s) has lapsed
            assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
            assert verify(created["secret"], got[1])["type"] == "user.created"
            eventually(lambda: deliveries(api, owner, created["webhook"]["id"], status="succeeded"))
        finally:
            second.stop()
    finally:
        first.kill()
        receiver.close()


def test_a_private_address_is_refused_at_creation_and_at_delivery(api, owner):
    # Each of these passes the schema (an http(s) URL of printable ASCII): only the SSRF guard
    # can refuse it, so a 400 here would mean the guard never ran.
    for url in (
        "http://10.0.0.7/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "https://192.168.1.10:8443/x",
        "http://user:pw@example.com/x",
    ):
        error = assert_error(
            api.post("/v1/webhooks", json={"url": url, "events": ["*"]}, headers=owner.headers), 422, "URL_NOT_ALLOWED"
        )
        assert error["details"][0]["field"] == "url", (url, error)
    # Another scheme never reaches the guard: the schema refuses it.
    assert_error(
        api.post("/v1/webhooks", json={"url": "ftp://example.com/x", "events": ["*"]}, headers=owner.headers),
        400,
        "VALIDATION_ERROR",
    )
    assert api.get("/v1/webhooks", headers=owner.headers).json()["data"] == []  # nothing saved
    strict = start_server(TENANTRY_OUTBOUND_ALLOWLIST="")
    try:
        with strict.client() as client:
            account = register(client)
            error = assert_error(
                client.post(
                    "/v1/webhooks", json={"url": "http://127.0.0.1:9/hooks", "events": ["*"]}, headers=account.headers
                ),
                422,
                "URL_NOT_ALLOWED",
            )
            # Refused without saying where the name points: that would map the private network.
            assert "127.0.0.1" not in error["message"] and "private" in error["message"]
            # A name is resolved and judged by its addresses: `localhost` is loopback.
            refused = client.post(
                "/v1/webhooks", json={"url": "http://localhost:9/hooks", "events": ["*"]}, headers=account.headers
            )
            assert refused.status_code == 422
    finally:
        strict.stop()


def test_delivery_rechecks_the_address_when_the_allowlist_no_longer_permits_it(api, owner, server, receiver):
    webhook = make_webhook(api, owner, receiver.url)["webhook"]
    strict_worker = Worker(server, TENANTRY_OUTBOUND_ALLOWLIST="")
    try:
        new_user(api, owner)
        (delivery,) = eventually(lambda: [d for d in deliveries(api, owner, webhook["id"]) if d["attempts"]])
        assert delivery["attempts"][0]["status_code"] is None
        assert "private or reserved" in delivery["attempts"][0]["error"]
        assert receiver.received == []
    finally:
        strict_worker.stop()


def test_endpoints_filter_events_and_the_test_ping_reaches_one_endpoint(api, owner, worker):
    users, keys = Receiver(), Receiver()
    try:
        make_webhook(api, owner, users.url, events=["user.created"])
        key_hook = make_webhook(api, owner, keys.url, events=["key.*"])
        new_user(api, owner)
        created = api.post("/v1/keys", json={"name": "k", "permissions": ["users:read"]}, headers=owner.headers)
        secret = created.json()["data"]["secret"]
        (user_event,) = users.wait_for(1)
        (key_event,) = keys.wait_for(1)
        assert json.loads(user_event.body)["type"] == "user.created"
        key_payload = verify(key_hook["secret"], key_event)
        assert key_payload["type"] == "key.created" and secret not in key_event.body.decode()
        # The key itself, intact: only the secret beside it (shown once) is left out.
        assert key_payload["data"]["object"] == created.json()["data"]["key"]
        ping = api.post(f"/v1/webhooks/{key_hook['webhook']['id']}/test", headers=owner.headers)
        assert ping.status_code == 202, ping.text
        assert ping.json()["data"]["event_type"] == "webhook.test" and ping.json()["data"]["status"] == "pending"
        second = keys.wait_for(2)[1]
        assert verify(key_hook["secret"], second)["type"] == "webhook.test"
        assert second.headers["webhook-id"] == ping.json()["data"]["id"]
        # The ping went to the one endpoint: the other has no delivery queued but its user.created.
        user_hook = api.get("/v1/webhooks", headers=owner.headers).json()["data"]
        (users_id,) = [w["id"] for w in user_hook if w["url"] == users.url]
        assert [d["event_type"] for d in deliveries(api, owner, users_id)] == ["user.created"]
    finally:
        users.close()
        keys.close()


def test_rotating_the_secret_signs_with_both_for_the_grace_period(api, owner, receiver, worker):
    created = make_webhook(api, owner, receiver.url)
    rotated = api.post(f"/v1/webhooks/{created['webhook']['id']}/rotate-secret", headers=owner.headers)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["data"]["secret"]
    assert new_secret != created["secret"] and new_secret.startswith("whsec_")
    new_user(api, owner)
    (got,) = receiver.wait_for(1)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert verify(new_secret, got)["type"] == "user.created"
    assert verify(created["secret"], got)["type"] == "user.created"


def test_crud_modes_and_tenant_isolation(api, owner, receiver):
    webhook = make_webhook(api, owner, receiver.url, description="CRM")["webhook"]
    updated = api.patch(
        f"/v1/webhooks/{webhook['id']}", json={"events": ["key.*"], "enabled": False}, headers=owner.headers
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["data"]["events"] == ["key.*"] and updated.json()["data"]["disabled_reason"] == "manual"
    assert_error(
        api.patch(f"/v1/webhooks/{webhook['id']}", json={"url": "http://10.1.2.3/x"}, headers=owner.headers),
        422,
        "URL_NOT_ALLOWED",
    )
    assert_error(api.patch(f"/v1/webhooks/{webhook['id']}", json={}, headers=owner.headers), 400, "VALIDATION_ERROR")
    assert_error(
        api.post("/v1/webhooks", json={"url": receiver.url, "events": ["users"]}, headers=owner.headers),
        400,
        "VALIDATION_ERROR",
    )
    other = register(api, "Other")
    for method, path in (
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/rotate-secret"),
        ("GET", "/deliveries"),
    ):
        kwargs = {"json": {"enabled": True}} if method == "PATCH" else {}
        response = api.request(method, f"/v1/webhooks/{webhook['id']}{path}", headers=other.headers, **kwargs)
        assert_error(response, 404, "RESOURCE_NOT_FOUND")
    assert api.get("/v1/webhooks", headers=other.headers).json()["data"] == []
    # A test key sees test endpoints only, and its endpoints get test events only.
    key = api.post("/v1/keys", json={"name": "t", "permissions": ["admin"], "mode": "test"}, headers=owner.headers)
    test_headers = {"X-API-Key": key.json()["data"]["secret"]}
    assert api.get("/v1/webhooks", headers=test_headers).json()["data"] == []
    assert_error(api.get(f"/v1/webhooks/{webhook['id']}", headers=test_headers), 404, "RESOURCE_NOT_FOUND")
    created = api.post("/v1/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=test_headers)
    assert created.status_code == 201 and created.json()["data"]["webhook"]["livemode"] is False
    assert api.delete(f"/v1/webhooks/{webhook['id']}", headers=owner.headers).status_code == 204
    assert_error(api.get(f"/v1/webhooks/{webhook['id']}", headers=owner.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        api.post(
            f"/v1/webhooks/{created.json()['data']['webhook']['id']}/deliveries/msg_01JDQ4D8W2X4Y6Z8A0B2C4D6E8/retry",
            headers=test_headers,
        ),
        404,
        "RESOURCE_NOT_FOUND",
    )


@pytest.mark.skipif(
    backend() != "postgres",
    reason="several workers share one queue on PostgreSQL; SQLite runs one worker (tested below)",
)
def test_two_workers_deliver_each_attempt_once(api, owner, server, receiver):
    workers = [Worker(server), Worker(server)]
    try:
        make_webhook(api, owner, receiver.url)
        users = [new_user(api, owner) for _ in range(12)]
        got = receiver.wait_for(12, timeout=30)
        time.sleep(1.5)
        assert len(receiver.received) == 12  # each delivery once, though two workers polled
        assert len({r.headers["webhook-id"] for r in got}) == 12
        assert {json.loads(r.body)["data"]["object"]["id"] for r in got} == {u["id"] for u in users}
    finally:
        for worker in workers:
            worker.stop()


@pytest.mark.skipif(backend() != "sqlite", reason="the one-worker lock is SQLite's")
def test_sqlite_runs_one_worker_and_says_so(server, worker):
    eventually(lambda: "only worker" in worker.log())
    second = Worker(server)
    assert second.process.wait(timeout=20) == 1
    assert "one worker runs per database" in second.log()


def test_an_endpoint_failing_for_longer_than_the_limit_is_disabled(api, owner, driven):
    receiver = Receiver(statuses=[500])
    clock = driven(owner, TENANTRY_WEBHOOK_DISABLE_AFTER="1")  # "days", compressed to a second
    try:
        webhook = make_webhook(api, owner, receiver.url)["webhook"]
        new_user(api, owner)
        # The first failure starts the streak; the delivery's last retry, past the limit, ends it.
        for step in (0, 1.2, 1.2, 1.2):
            clock.run(step)
        receiver.wait_for(4)
        disabled = api.get(f"/v1/webhooks/{webhook['id']}", headers=owner.headers).json()["data"]
        assert not disabled["enabled"]
        assert disabled["disabled_reason"] == "failing" and disabled["failing_since"] is not None
        event = events_of(api, owner, "webhook.disabled")[0]
        assert event["data"]["object"]["id"] == webhook["id"]
        # Enabling it again clears the streak.
        enabled = api.patch(f"/v1/webhooks/{webhook['id']}", json={"enabled": True}, headers=owner.headers)
        assert enabled.json()["data"]["failing_since"] is None and enabled.json()["data"]["disabled_reason"] is None
    finally:
        receiver.close()


def events_of(api, owner, event_type):
    response = api.get("/v1/events", params={"type": event_type}, headers=owner.headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


# Issue 13, item 3: a pattern no event type matches is refused; one delivery can be read by id.


def test_a_pattern_matching_no_event_type_is_400_naming_each(api, owner):
    body = {
        "url": "https://hooks.example.com/x",
        "events": ["user.*", "users.created", "usr.*", "key.revoked", "user.signed_up"],
    }
    error = assert_error(api.post("/v1/webhooks", json=body, headers=owner.headers), 400, "VALIDATION_ERROR")
    assert error["details"] == [
        {"field": "events[1]", "message": "matches no event type (users.created)"},
        {"field": "events[2]", "message": "matches no event type (usr.*)"},
        {"field": "events[4]", "message": "matches no event type (user.signed_up)"},
    ]
    assert api.get("/v1/webhooks", headers=owner.headers).json()["data"] == []
    webhook = make_webhook(api, owner, "https://hooks.example.com/x", events=("*", "user.created", "webhook.*"))
    webhook_id = webhook["webhook"]["id"]
    error = assert_error(
        api.patch(f"/v1/webhooks/{webhook_id}", json={"events": ["users.created"]}, headers=owner.headers),
        400,
        "VALIDATION_ERROR",
    )
    assert error["details"] == [{"field": "events[0]", "message": "matches no event type (users.created)"}]
    assert api.get(f"/v1/webhooks/{webhook_id}", headers=owner.headers).json()["data"]["events"] == [
        "*",
        "user.created",
        "webhook.*",
    ]


def test_one_delivery_is_read_by_id_and_only_through_its_endpoint(api, owner):
    first = make_webhook(api, owner, "https://hooks.example.com/a")["webhook"]
    second = make_webhook(api, owner, "https://hooks.example.com/b", events=("key.*",))["webhook"]
    new_user(api, owner)  # queues a delivery to the first endpoint (no worker needed to read it)
    (listed,) = eventually(lambda: deliveries(api, owner, first["id"]))
    response = api.get(f"/v1/webhooks/{first['id']}/deliveries/{listed['id']}", headers=owner.headers)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == listed
    assert response.json()["data"]["event_type"] == "user.created"
    # Through another endpoint, from another tenant, or an id that does not exist: 404.
    assert_error(
        api.get(f"/v1/webhooks/{second['id']}/deliveries/{listed['id']}", headers=owner.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    other = register(api, "Other")
    assert_error(
        api.get(f"/v1/webhooks/{first['id']}/deliveries/{listed['id']}", headers=other.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert_error(
        api.get(f"/v1/webhooks/{first['id']}/deliveries/msg_01JDQ4D8W2X4Y6Z8A0B2C4D6E8", headers=owner.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    # A member, without webhook:read, is refused.
    from tests.conftest import add_user

    member = add_user(api, owner, role="member")
    assert_error(
        api.get(f"/v1/webhooks/{first['id']}/deliveries/{listed['id']}", headers=member.headers),
        403,
        "PERMISSION_DENIED",
    )
