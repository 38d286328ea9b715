"""The 202 helper (tenantry.accepted): the job or resource as the body, Location to follow it."""

from __future__ import annotations

import flask
import pytest

from models.job import Job
from tenantry.accepted import accepted


@pytest.fixture
def request_context():
    with flask.Flask(__name__).test_request_context(headers={"X-Request-Id": "req_1"}):
        yield


def test_a_job_is_answered_202_with_itself_and_its_location(request_context, monkeypatch):
    monkeypatch.setattr("tenantry.accepted.attempts_of", lambda jobs: {job.id: [] for job in jobs})
    job = Job(id="job_01JDQ4F2A6B8C0D2E4F6G8H0J2", kind="test.echo", status="queued", livemode=True, attempt=0)
    body, status, headers = accepted(job)
    assert status == 202
    assert headers == {"Location": "/v1/jobs/job_01JDQ4F2A6B8C0D2E4F6G8H0J2"}
    assert body["data"]["id"] == job.id and body["data"]["status"] == "queued" and body["data"]["attempts"] == []
    assert body["meta"]["request_id"] == "req_1"


def test_a_resource_is_answered_202_at_its_own_location_which_is_required(request_context):
    body, status, headers = accepted({"id": "exp_1", "status": "pending"}, location="/v1/exports/exp_1")
    assert (status, headers, body["data"]) == (
        202,
        {"Location": "/v1/exports/exp_1"},
        {"id": "exp_1", "status": "pending"},
    )
    with pytest.raises(ValueError, match="Location"):
        accepted({"id": "exp_1"})
