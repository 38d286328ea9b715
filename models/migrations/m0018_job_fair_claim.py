"""The worker's fair claim reads each tenant's first due jobs from an index, not every due row.

The claim (tenantry.jobs.Worker.claim) walks the tenants with waiting jobs (a loose index scan:
one index probe per tenant) and, per tenant, its first due jobs in priority order. Both read
`job_fair`, a partial index on the waiting jobs only (queued, or failed and waiting for a retry),
so its size is the queue's, not the table's history. Its predicate is written in the claim's own
words: SQLite and PostgreSQL use a partial index only for a query that states it.
"""

from __future__ import annotations

STATEMENTS = [
    """CREATE INDEX job_fair ON job (coalesce(tenant_id, ''), priority DESC, run_at, id)
        WHERE status IN ('queued', 'failed')""",
]
