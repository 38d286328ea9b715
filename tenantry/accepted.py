"""The one way a long operation answers: `202 Accepted`, the job (or resource) as the body, `Location` to follow.

An operation whose work outlasts the request enqueues a job (tenantry.jobs.enqueue, in the
request's transaction) and returns `accepted(job)`: the client gets the job in the usual
envelope and polls `Location` (`/v1/jobs/{id}`) until the job's status is final. An operation
that makes a resource asynchronously may point at the resource instead:
`accepted(view, location="/v1/things/thg_...")`. The pattern is documented once, in the spec's
`info` ("Long operations"); each such operation declares its 202 with `Location`.
"""

from __future__ import annotations

from typing import Any

from models.job import Job, attempts_of
from tenantry.envelope import one


def job_location(job: Job) -> str:
    """Returns the URL a client follows a job at."""
    return f"/v1/jobs/{job.id}"


def job_view(job: Job) -> dict[str, Any]:
    """Returns the job as the API shows it, with its attempts."""
    return job.as_dict(attempts_of([job])[job.id])


def accepted(subject: Job | dict[str, Any], location: str | None = None) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Returns a `202 Accepted` answer for the handler to return.

    `subject` is the job doing the work (the body is the job with its attempts; `Location` is
    `/v1/jobs/{id}` unless `location` says otherwise) or a resource's API view (a dict; then
    `location`, the resource's URL, is required).
    """
    if isinstance(subject, Job):
        return one(job_view(subject), 202, location or job_location(subject))
    if not location:
        raise ValueError("accepted(resource): give the Location of the resource being made")
    return one(subject, 202, location)
