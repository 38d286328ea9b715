"""The jobs API through the live server: list, get, cancel, retry, isolation, permissions, metrics.

Jobs are made the way the code makes them, with `tenantry.jobs.enqueue` in this process against the
server's database; a worker's moves (claiming, failing, finishing) are played by writing the row as
the worker would, so each state is reached without running a worker.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tenantry import jobs
from tenantry.jobs import JobKind
from tests.conftest import PASSWORD, add_user, assert_error, register, unique_email
from tests.livesrv import eventually

KIND = "test.echo"


@pytest.fixture(scope="module")
def queue(server):
    """The live server's database bound to the models in this process, with a test kind registered."""
    from tenantry.db import init_database
    from tenantry.periodic import PURGE_KINDS

    database = init_database(server.database.url, pool_size=4)
    jobs.register_kind(JobKind(KIND, lambda ctx: ctx.payload))
    for kind in PURGE_KINDS:  # the kinds the server runs too (its app registered them)
        jobs.register_kind(kind)
    yield database
    jobs._kinds.pop(KIND, None)
    if hasattr(database, "close_all"):
        database.close_all()
    else:
        database.close()


def enqueue(tenant_id, kind=KIND, livemode=True, **changes):
    """Enqueues a job as a request would, then applies `changes` as the worker would have."""
    from models.job import Job

    job = jobs.enqueue(kind, {"n": 1}, tenant_id=tenant_id, resource=("user", "usr_1"), livemode=livemode)
    assert job is not None
    if changes:
        Job.update(**changes).where(Job.id == job.id).execute()
    return job.id


def attempt(job_id, tenant_id, number, outcome, error=None):
    from models.base import utcnow
    from models.job import JobAttempt
    from tenantry.ids import new_id

    started = utcnow() - timedelta(seconds=10 - number)
    JobAttempt.create(
        id=new_id("jat"),
        tenant_id=tenant_id,
        job_id=job_id,
        number=number,
        worker="w1",
        started_at=started,
        finished_at=started + timedelta(milliseconds=84),
        duration_ms=84,
        outcome=outcome,
        error=error,
    )


def get(api, owner, job_id):
    return api.get(f"/v1/jobs/{job_id}", headers=owner.headers)


def test_get_shows_state_resource_and_every_attempt_with_its_error(api, owner, queue):
    tenant = owner.tenant["id"]
    job_id = enqueue(tenant, status="dead", attempt=2, max_attempts=2, last_error="the endpoint answered 503")
    attempt(job_id, tenant, 1, "failed", "the endpoint answered 500")
    attempt(job_id, tenant, 2, "failed", "the endpoint answered 503")
    response = get(api, owner, job_id)
    assert response.status_code == 200, response.text
    job = response.json()["data"]
    assert job["id"] == job_id and job["kind"] == KIND and job["status"] == "dead"
    assert (job["attempt"], job["max_attempts"], job["progress"]) == (2, 2, 0)
    assert job["resource"] == {"type": "user", "id": "usr_1"}
    assert job["last_error"] == "the endpoint answered 503"
    assert [(a["number"], a["outcome"], a["error"]) for a in job["attempts"]] == [
        (1, "failed", "the endpoint answered 500"),
        (2, "failed", "the endpoint answered 503"),
    ]
    assert job["attempts"][0]["duration_ms"] == 84
    assert job["created_at"].endswith("Z") and job["run_at"].endswith("Z")


def test_a_result_is_shown_as_an_object(api, owner, queue):
    tenant = owner.tenant["id"]
    counts = enqueue(tenant, status="succeeded", progress=100, result={"events": 3})
    bare = enqueue(tenant, status="succeeded", progress=100, result=[1, 2])
    assert get(api, owner, counts).json()["data"]["result"] == {"events": 3}
    assert get(api, owner, bare).json()["data"]["result"] == {"value": [1, 2]}
    assert get(api, owner, enqueue(tenant)).json()["data"]["result"] is None


def test_another_tenants_job_a_platform_job_and_another_modes_job_are_404(api, owner, queue):
    other = register(api, "Globex")
    theirs = enqueue(other.tenant["id"])
    platform = enqueue(None)
    test_mode = enqueue(owner.tenant["id"], livemode=False)
    for job_id in (theirs, platform, test_mode):
        assert_error(get(api, owner, job_id), 404, "RESOURCE_NOT_FOUND")
        assert_error(api.post(f"/v1/jobs/{job_id}/cancel", headers=owner.headers), 404, "RESOURCE_NOT_FOUND")
        assert_error(api.post(f"/v1/jobs/{job_id}/retry", headers=owner.headers), 404, "RESOURCE_NOT_FOUND")
    listed = api.get("/v1/jobs", headers=owner.headers).json()["data"]
    assert not {theirs, platform, test_mode} & {j["id"] for j in listed}


def test_list_is_newest_first_with_a_cursor_and_filters(api, owner, queue):
    tenant = owner.tenant["id"]
    made = {
        "queued": enqueue(tenant),
        "dead": enqueue(tenant, status="dead"),
        "purge": enqueue(tenant, kind="event.purge"),
    }
    # Newest first is id order (ULIDs: time first; jobs made in one millisecond in id order).
    newest = sorted(made.values(), reverse=True)
    page = api.get("/v1/jobs", params={"limit": 2}, headers=owner.headers)
    assert page.status_code == 200, page.text
    body = page.json()
    assert [j["id"] for j in body["data"]] == newest[:2]
    assert body["meta"]["pagination"] == {"limit": 2, "has_more": True, "next_starting_after": newest[1]}
    rest = api.get("/v1/jobs", params={"limit": 2, "starting_after": newest[1]}, headers=owner.headers).json()
    assert [j["id"] for j in rest["data"]] == newest[2:]
    assert rest["meta"]["pagination"]["has_more"] is False

    def ids(**params):
        response = api.get("/v1/jobs", params=params, headers=owner.headers)
        assert response.status_code == 200, response.text
        return set(j["id"] for j in response.json()["data"])

    assert ids(kind=KIND) == {made["queued"], made["dead"]}
    assert ids(kind=["event.purge", KIND]) == set(made.values())
    assert ids(status="dead") == {made["dead"]}
    assert ids(status=["dead", "queued"]) == set(made.values())
    assert ids(created_from="2999-01-01T00:00:00Z") == set()
    assert ids(created_to="2000-01-01T00:00:00Z") == set()
    assert_error(api.get("/v1/jobs", params={"status": "done"}, headers=owner.headers), 400, "VALIDATION_ERROR")
    assert_error(
        api.get("/v1/jobs", params={"created_from": "yesterday"}, headers=owner.headers), 400, "VALIDATION_ERROR"
    )
    other = register(api, "Initech")
    assert_error(
        api.get("/v1/jobs", params={"starting_after": enqueue(other.tenant["id"])}, headers=owner.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )


def test_cancel_a_queued_or_failed_job_cancels_it_at_once(api, owner, queue):
    for status in ("queued", "failed"):
        job_id = enqueue(owner.tenant["id"], status=status)
        response = api.post(f"/v1/jobs/{job_id}/cancel", headers=owner.headers)
        assert response.status_code == 200, response.text
        job = response.json()["data"]
        assert job["status"] == "cancelled" and job["finished_at"] is not None
        assert get(api, owner, job_id).json()["data"]["status"] == "cancelled"


def test_cancel_a_running_job_answers_202_pointing_at_it_and_asks_it_to_stop(api, owner, queue):
    from models.base import utcnow

    job_id = enqueue(
        owner.tenant["id"], status="running", attempt=1, lease_owner="w1", lease_until=utcnow() + timedelta(minutes=1)
    )
    response = api.post(f"/v1/jobs/{job_id}/cancel", headers=owner.headers)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/jobs/{job_id}"
    job = response.json()["data"]
    assert job["id"] == job_id and job["status"] == "running" and job["cancel_requested"] is True
    again = api.post(f"/v1/jobs/{job_id}/cancel", headers=owner.headers)
    assert again.status_code == 202  # still running: asking again is harmless


def test_cancel_a_final_job_is_409(api, owner, queue):
    for status in ("succeeded", "dead", "cancelled"):
        job_id = enqueue(owner.tenant["id"], status=status)
        error = assert_error(api.post(f"/v1/jobs/{job_id}/cancel", headers=owner.headers), 409, "CONFLICT")
        assert status in error["message"]
        assert get(api, owner, job_id).json()["data"]["status"] == status


def test_retry_a_dead_job_queues_it_now_with_a_fresh_attempt_budget(api, owner, queue):
    from models.job import Job

    tenant = owner.tenant["id"]
    # A kind this server runs: the budget is the kind's attempts on top of those made.
    known = enqueue(tenant, kind="event.purge", status="dead", attempt=4, max_attempts=4, last_error="boom")
    attempt(known, tenant, 4, "failed", "boom")
    response = api.post(f"/v1/jobs/{known}/retry", headers=owner.headers)
    assert response.status_code == 200, response.text
    job = response.json()["data"]
    assert job["status"] == "queued" and job["finished_at"] is None
    assert (job["attempt"], job["max_attempts"]) == (4, 4 + jobs.kind("event.purge").max_attempts)
    assert [a["number"] for a in job["attempts"]] == [4]  # the history stays
    assert Job.get_by_id(known).run_at <= Job.get_by_id(known).updated_at  # due now
    # A kind this server does not run (here: only the test process registered it): one more attempt.
    unknown = enqueue(tenant, status="cancelled", attempt=1, max_attempts=3)
    response = api.post(f"/v1/jobs/{unknown}/retry", headers=owner.headers)
    assert response.status_code == 200, response.text
    assert (response.json()["data"]["status"], response.json()["data"]["max_attempts"]) == ("queued", 2)


def test_retry_in_any_other_state_is_409(api, owner, queue):
    for status in ("succeeded", "queued", "running", "failed"):
        job_id = enqueue(owner.tenant["id"], status=status)
        error = assert_error(api.post(f"/v1/jobs/{job_id}/retry", headers=owner.headers), 409, "CONFLICT")
        assert status in error["message"]


def test_retry_while_the_same_work_is_queued_again_is_409(api, owner, queue):
    from models.job import Job

    tenant = owner.tenant["id"]
    first = jobs.enqueue(KIND, {}, tenant_id=tenant, unique_key="sync-1")
    Job.update(status="dead").where(Job.id == first.id).execute()
    assert jobs.enqueue(KIND, {}, tenant_id=tenant, unique_key="sync-1") is not None  # the key is free again
    assert_error(api.post(f"/v1/jobs/{first.id}/retry", headers=owner.headers), 409, "CONFLICT")


def test_cancel_and_retry_are_audited(api, owner, queue):
    job_id = enqueue(owner.tenant["id"])
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=owner.headers).status_code == 200
    assert api.post(f"/v1/jobs/{job_id}/retry", headers=owner.headers).status_code == 200
    entries = api.get("/v1/audit-logs", params={"resource_id": job_id}, headers=owner.headers).json()["data"]
    assert [e["action"] for e in entries] == ["job.retried", "job.cancelled"]


def test_a_member_without_job_permissions_is_refused(api, owner, queue):
    member = add_user(api, owner, role="member")
    job_id = enqueue(owner.tenant["id"])
    assert_error(api.get("/v1/jobs", headers=member.headers), 403, "PERMISSION_DENIED")
    assert_error(get(api, member, job_id), 403, "PERMISSION_DENIED")
    assert_error(api.post(f"/v1/jobs/{job_id}/cancel", headers=member.headers), 403, "PERMISSION_DENIED")
    assert get(api, owner, job_id).json()["data"]["status"] == "queued"


def test_metrics_show_queue_depth_and_the_oldest_due_jobs_age(api, owner, queue):
    from models.base import utcnow

    enqueue(owner.tenant["id"], kind="idempotency.purge", run_at=utcnow() - timedelta(minutes=10))

    def scraped():
        text = api.get("/metrics").text
        depth = [line for line in text.splitlines() if line.startswith("tenantry_job_queue_depth{")]
        age = [line for line in text.splitlines() if line.startswith("tenantry_job_oldest_due_seconds{")]
        return (depth, age) if depth and age else None

    depth, age = eventually(scraped)
    assert any('kind="idempotency.purge"' in line and 'status="queued"' in line for line in depth)
    (line,) = [line for line in age if 'kind="idempotency.purge"' in line]
    assert float(line.rsplit(" ", 1)[1]) >= 600


def test_cancelling_a_waiting_delivery_job_ends_its_delivery_too(api, owner, queue):
    """Else the delivery shows `pending` for ever, and its event is kept from the purge for ever."""
    hook = api.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/never", "events": ["user.*"], "enabled": True},
        headers=owner.headers,
    )
    assert hook.status_code == 201, hook.text
    webhook_id = hook.json()["data"]["webhook"]["id"]
    made = api.post(
        "/v1/users",
        json={"email": unique_email(), "password": PASSWORD, "first_name": "C", "last_name": "D"},
        headers=owner.headers,
    )
    assert made.status_code == 201, made.text
    (waiting,) = api.get("/v1/jobs", params={"kind": "webhook.deliver"}, headers=owner.headers).json()["data"]
    delivery_id = waiting["resource"]["id"]
    cancelled = api.post(f"/v1/jobs/{waiting['id']}/cancel", headers=owner.headers)
    assert cancelled.status_code == 200, cancelled.text
    delivery = api.get(f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}", headers=owner.headers).json()["data"]
    assert delivery["status"] == "failed" and delivery["next_attempt_at"] is None
    assert delivery["last_error"] == "The delivery's job was cancelled."
    # A retry of the delivery sends it again (one attempt), as for any finished delivery.
    retried = api.post(f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", headers=owner.headers)
    assert retried.status_code in (200, 202), retried.text
    jobs_now = api.get("/v1/jobs", params={"kind": "webhook.deliver", "status": "queued"}, headers=owner.headers)
    assert [j["resource"]["id"] for j in jobs_now.json()["data"]] == [delivery_id]
