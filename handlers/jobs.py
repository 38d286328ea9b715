"""Jobs: the tenant's background work, its attempts, and cancel and retry."""

from __future__ import annotations

from typing import Any

from models import job as queue
from models.base import current_livemode
from tenantry.accepted import accepted, job_view
from tenantry.authz import acting_tenant, target
from tenantry.envelope import cursor_page, one
from tenantry.jobs import cancel, kinds
from tenantry.paging import query_moment


def list_jobs(
    kind: list[str] | None = None,
    status: list[str] | None = None,
    created_from: str | None = None,
    created_to: str | None = None,
    limit: int = 20,
    starting_after: str | None = None,
) -> dict[str, Any]:
    """The tenant's jobs of the caller's mode, newest first, each with its attempts, a cursor page at a time."""
    jobs, has_more = queue.page_jobs(
        acting_tenant(),
        current_livemode(),
        limit,
        starting_after,
        kind or None,
        status or None,
        query_moment(created_from, "created_from"),
        query_moment(created_to, "created_to"),
    )
    attempts = queue.attempts_of(jobs)
    return cursor_page([job.as_dict(attempts[job.id]) for job in jobs], limit, has_more)


def get_job(job_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """One job of the tenant with its attempts."""
    return one(job_view(target()))


def cancel_job(job_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Cancels a queued or failed job at once (200); asks a running one to stop (202, Location: the job)."""
    job, running = cancel(target())
    return accepted(job) if running else one(job_view(job))


def retry_job(job_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Queues a dead or cancelled job again, with its kind's attempt budget on top of the attempts made."""
    job = target()
    spec = kinds().get(job.kind)
    # A kind this process does not run (a plug-in removed since) still gets one more attempt.
    return one(job_view(queue.retry_job(job, spec.max_attempts if spec else 1)))
