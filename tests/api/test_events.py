"""Domain events: written with every change, listed with filters, and streamed as Server-Sent Events."""

from __future__ import annotations

import json
import queue
import threading
import time

import httpx

from tests.api.test_audit import backdate
from tests.conftest import PASSWORD, assert_error, register, unique_email
from tests.livesrv import LiveServer, eventually

ROLE = {"name": "Auditor", "role_family": "Internal", "permissions": ["user:read"]}


def new_user(api, headers, **extra):
    body = {"email": unique_email(), "password": PASSWORD, "first_name": "Ev", "last_name": "Ent", **extra}
    response = api.post("/v1/users", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def events(api, headers, **params):
    response = api.get("/v1/events", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_every_change_writes_its_event_with_the_changed_object(api, owner):
    user = new_user(api, owner.headers)
    api.patch(f"/v1/users/{user['id']}", json={"role": "admin"}, headers=owner.headers)
    api.delete(f"/v1/users/{user['id']}", headers=owner.headers)
    listed = events(api, owner.headers)["data"]
    types = [e["type"] for e in listed]
    # The owner's tenant was created at signup: its first event. Logins are not events.
    assert types[:3] == ["user.deleted", "user.updated", "user.created"] and types[-1] == "tenant.created"
    deleted, updated, created = listed[:3]
    assert created["data"]["object"]["id"] == user["id"] and created["livemode"] is True
    assert updated["data"]["object"]["role"] == "admin"
    assert updated["data"]["previous_attributes"] == {"role": "member"}
    assert deleted["data"]["object"]["id"] == user["id"]
    assert created["request_id"].startswith("req_") and created["tenant_id"] == owner.tenant["id"]
    assert all(not e["type"].startswith("user.login") for e in listed)


def test_secrets_never_appear_in_events(api, owner):
    made = api.post("/v1/keys", json={"name": "k", "permissions": ["users:read"]}, headers=owner.headers)
    secret = made.json()["data"]["secret"]
    new_user(api, owner.headers)
    text = json.dumps(events(api, owner.headers, type="key.created")["data"])
    assert secret not in text and PASSWORD not in json.dumps(events(api, owner.headers)["data"])


def test_filters_patterns_dates_cursor_and_get(api, owner):
    for _ in range(3):
        new_user(api, owner.headers)
    role = api.post("/v1/roles", json=ROLE, headers=owner.headers)
    assert role.status_code == 201, role.text
    users = events(api, owner.headers, type="user.*")["data"]
    assert len(users) == 3 and {e["type"] for e in users} == {"user.created"}
    both = events(api, owner.headers, type=["user.created", "role.*"])["data"]
    assert next(e["type"] for e in both) == "role.created" and len(both) == 4
    first = events(api, owner.headers, limit=2)
    assert len(first["data"]) == 2 and first["meta"]["pagination"]["has_more"] is True
    after = first["meta"]["pagination"]["next_starting_after"]
    second = events(api, owner.headers, limit=2, starting_after=after)["data"]
    assert second[0]["id"] != first["data"][1]["id"]
    newest = first["data"][0]
    assert events(api, owner.headers, created_from=newest["created_at"])["data"][0]["id"] == newest["id"]
    assert events(api, owner.headers, created_to="2000-01-01T00:00:00Z")["data"] == []
    got = api.get(f"/v1/events/{newest['id']}", headers=owner.headers)
    assert got.status_code == 200 and got.json()["data"] == newest
    assert_error(api.get("/v1/events", params={"type": "users"}, headers=owner.headers), 400, "VALIDATION_ERROR")
    assert_error(
        api.get("/v1/events", params={"created_from": "yesterday"}, headers=owner.headers), 400, "VALIDATION_ERROR"
    )


def test_another_tenants_or_modes_events_are_404(api, owner):
    new_user(api, owner.headers)
    event_id = events(api, owner.headers)["data"][0]["id"]
    other = register(api, "Other")
    assert_error(api.get(f"/v1/events/{event_id}", headers=other.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        api.get("/v1/events", params={"starting_after": event_id}, headers=other.headers), 404, "RESOURCE_NOT_FOUND"
    )
    assert event_id not in json.dumps(events(api, other.headers))
    key = api.post("/v1/keys", json={"name": "t", "permissions": ["admin"], "mode": "test"}, headers=owner.headers)
    test_headers = {"X-API-Key": key.json()["data"]["secret"]}
    assert_error(api.get(f"/v1/events/{event_id}", headers=test_headers), 404, "RESOURCE_NOT_FOUND")
    test_user = new_user(api, test_headers)
    test_events = events(api, test_headers)["data"]
    assert [e["type"] for e in test_events] == ["user.created"] and test_events[0]["livemode"] is False
    assert test_events[0]["data"]["object"]["id"] == test_user["id"]
    assert test_user["id"] not in json.dumps(events(api, owner.headers))


def test_members_cannot_read_events(api, owner):
    from tests.conftest import add_user

    member = add_user(api, owner)
    assert_error(api.get("/v1/events", headers=member.headers), 403, "PERMISSION_DENIED")
    assert_error(api.get("/v1/events/stream", headers=member.headers), 403, "PERMISSION_DENIED")


class SseClient:
    """A real streaming client: reads the stream on a thread and parses its messages."""

    def __init__(self, server: LiveServer, headers: dict[str, str], **params: object) -> None:
        self.messages: queue.Queue[dict[str, str]] = queue.Queue()
        self.comments: list[str] = []
        self.status: int | None = None
        self.content_type = ""
        self.content_encoding: str | None = None
        self.opened = threading.Event()
        self._client = httpx.Client(base_url=server.url, timeout=httpx.Timeout(30, read=30))
        self._stop = False
        self.thread = threading.Thread(target=self._run, args=(headers, params), daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "the stream did not open"

    def _run(self, headers: dict[str, str], params: dict[str, object]) -> None:
        try:
            with self._client.stream("GET", "/v1/events/stream", headers=headers, params=params) as response:
                self.status, self.content_type = response.status_code, response.headers.get("content-type", "")
                self.content_encoding = response.headers.get("content-encoding")
                self.opened.set()
                message: dict[str, str] = {}
                for line in response.iter_lines():
                    if self._stop:
                        return
                    if line.startswith(":"):
                        self.comments.append(line)
                    elif line == "":
                        if message:
                            self.messages.put({**message, "at": str(time.monotonic())})
                        message = {}
                    else:
                        field, _, value = line.partition(":")
                        message[field] = value.lstrip(" ")
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()

    def next(self, timeout: float = 10.0) -> dict[str, str]:
        """Returns the next message with an id (an event), waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if "id" in message:
                return message

    def close(self) -> None:
        self._stop = True
        self._client.close()


def test_the_stream_delivers_an_event_within_a_second_of_its_commit(server, api, owner):
    # A client that accepts gzip gets the stream as it is: compressing would hold events back.
    stream = SseClient(server, {**owner.headers, "Accept-Encoding": "gzip"})
    try:
        assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
        assert stream.content_encoding is None
        # The stream is open and idle once it has sent a heartbeat (TENANTRY_SSE_HEARTBEAT=1 here).
        eventually(lambda: ": heartbeat" in stream.comments, timeout=10)
        heartbeats = len(stream.comments)
        before = time.monotonic()
        user = new_user(api, owner.headers)
        committed = time.monotonic()  # the 201 came back: the change and its event are committed
        message = stream.next(timeout=5)
        assert float(message["at"]) - committed < 1.0, float(message["at"]) - before
        assert message["event"] == "user.created"
        payload = json.loads(message["data"])
        assert payload["id"] == message["id"] and payload["data"]["object"]["id"] == user["id"]
        # Quiet again after the event: another heartbeat comes (waited for, not slept for).
        eventually(lambda: len(stream.comments) > heartbeats, timeout=10)
        assert set(stream.comments) == {": heartbeat"}
    finally:
        stream.close()


def test_the_stream_resumes_after_last_event_id_and_filters_by_type(server, api, owner):
    first = new_user(api, owner.headers)
    first_event = events(api, owner.headers, type="user.created")["data"][0]
    assert first_event["data"]["object"]["id"] == first["id"]
    missed = [new_user(api, owner.headers) for _ in range(2)]
    assert api.post("/v1/roles", json=ROLE, headers=owner.headers).status_code == 201
    stream = SseClient(server, {**owner.headers, "Last-Event-ID": first_event["id"]}, type="user.*")
    try:
        got = [json.loads(stream.next()["data"]) for _ in range(2)]
        assert [e["data"]["object"]["id"] for e in got] == [u["id"] for u in missed]
        later = new_user(api, owner.headers)
        assert json.loads(stream.next()["data"])["data"]["object"]["id"] == later["id"]  # role.created skipped
    finally:
        stream.close()
    other = register(api, "Other")
    assert_error(
        api.get("/v1/events/stream", headers={**other.headers, "Last-Event-ID": first_event["id"]}),
        404,
        "RESOURCE_NOT_FOUND",
    )


def test_the_stream_shows_only_the_callers_tenant(server, api, owner):
    other = register(api, "Other")
    stream = SseClient(server, other.headers)
    try:
        new_user(api, owner.headers)
        mine = new_user(api, other.headers)
        message = stream.next()
        assert json.loads(message["data"])["data"]["object"]["id"] == mine["id"]
    finally:
        stream.close()


def test_purge_removes_old_events_but_keeps_those_a_pending_delivery_needs(server, api, owner):
    import subprocess
    import sys

    from tests.livesrv import ROOT

    hook = api.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/never", "events": ["user.*"], "enabled": True},
        headers=owner.headers,
    )
    assert hook.status_code == 201, hook.text
    pending_user = new_user(api, owner.headers)  # no worker runs here: its delivery stays pending
    # Aged two hours in the database instead of waited for: only this tenant's events are that old.
    backdate(server, "event", owner.tenant["id"], hours=2)
    command = [sys.executable, "-m", "tenantry.cli", "events", "purge"]
    bad = subprocess.run([*command, "--older-than", "soon"], env=server.env, cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "duration" in bad.stderr
    done = subprocess.run([*command, "--older-than", "3600s"], env=server.env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    left = events(api, owner.headers)["data"]
    assert [e["type"] for e in left] == ["user.created"]
    assert left[0]["data"]["object"]["id"] == pending_user["id"]


def test_a_revocation_answered_204_carries_the_object_as_it_is_now(api, owner):
    made = api.post("/v1/keys", json={"name": "k", "permissions": ["users:read"]}, headers=owner.headers)
    key_id = made.json()["data"]["key"]["id"]
    assert api.delete(f"/v1/keys/{key_id}", headers=owner.headers).status_code == 204
    (revoked,) = events(api, owner.headers, type="key.revoked")["data"]
    assert revoked["data"]["object"]["id"] == key_id and revoked["data"]["object"]["status"] == "revoked"
    assert revoked["data"]["object"]["revoked_at"] is not None


def test_revoking_the_key_ends_its_open_stream(server, api, owner):
    made = api.post("/v1/keys", json={"name": "s", "permissions": ["event:read"]}, headers=owner.headers)
    assert made.status_code == 201, made.text
    key = made.json()["data"]
    stream = SseClient(server, {"X-API-Key": key["secret"]})
    try:
        assert stream.status == 200
        assert api.delete(f"/v1/keys/{key['key']['id']}", headers=owner.headers).status_code == 204
        stream.thread.join(timeout=12)  # re-checked every 5 s
        assert not stream.thread.is_alive(), "the stream outlived its revoked key"
    finally:
        stream.close()


def test_suspending_the_tenant_ends_a_keys_open_stream(server, api, owner, operator):
    """Review (issue 12): a suspended tenant's keys are refused on every request (403), and a
    user's open stream ends at its next check; a key's stream checked the key and its creator
    only, so it went on delivering the suspended tenant's events."""
    made = api.post("/v1/keys", json={"name": "s", "permissions": ["event:read"]}, headers=owner.headers)
    assert made.status_code == 201, made.text
    stream = SseClient(server, {"X-API-Key": made.json()["data"]["secret"]})
    try:
        assert stream.status == 200
        path = f"/v1/tenants/{owner.tenant['id']}"
        assert api.patch(path, json={"status": "suspended"}, headers=operator).status_code == 200
        stream.thread.join(timeout=12)  # re-checked every 5 s
        assert not stream.thread.is_alive(), "the stream outlived its tenant's suspension"
    finally:
        stream.close()
