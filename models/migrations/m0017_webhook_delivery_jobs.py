"""Webhook deliveries pending at the upgrade get the `webhook.deliver` job that now attempts each.

Until this version `tenantry worker` claimed deliveries themselves; now each attempt is a job
(services.webhooks.delivery), so a delivery queued before the upgrade and not yet finished would
otherwise never be sent. Each gets a job due when its next attempt was: one attempt for a manual
retry of a finished delivery, otherwise what the default retry schedule leaves it (8 attempts in
all; the schedule itself is the running worker's). Deliveries that already have an active job
are left alone, so running this step again adds nothing. No schema change.
"""

from __future__ import annotations

import json
from typing import Any

STATEMENTS: list[str] = []

#: Attempts a delivery gets under the default TENANTRY_WEBHOOK_RETRY_SCHEDULE (seven retries).
DEFAULT_ATTEMPTS = 8


def after(db: Any) -> None:
    """Writes one queued job per pending delivery that has no active job."""
    from models.base import utcnow
    from tenantry.ids import new_id

    pending = db.execute_sql(
        "SELECT d.id, d.tenant_id, e.livemode, d.attempt_count, d.final_attempt, d.next_attempt_at "
        "FROM webhook_delivery d JOIN webhook_endpoint e ON e.id = d.endpoint_id "
        "WHERE d.status = 'pending' AND NOT EXISTS (SELECT 1 FROM job j WHERE j.kind = 'webhook.deliver' "
        "AND j.resource_type = 'webhook_delivery' AND j.resource_id = d.id "
        "AND j.status IN ('queued', 'running', 'failed'))"
    ).fetchall()
    now = utcnow()
    columns = (
        "id, tenant_id, livemode, kind, payload, status, priority, run_at, attempt, max_attempts, progress, "
        "unique_key, resource_type, resource_id, created_at, updated_at"
    )
    # Only the driver's placeholder (? or %s) is formatted in; every value is a parameter.
    insert = "INSERT INTO job (" + columns + ") VALUES (" + ", ".join([db.param] * 16) + ")"  # noqa: S608
    for delivery_id, tenant_id, livemode, attempt_count, final_attempt, next_attempt_at in pending:
        attempts = 1 if final_attempt else max(1, DEFAULT_ATTEMPTS - int(attempt_count))
        db.execute_sql(
            insert,
            (
                new_id("job"),
                tenant_id,
                livemode,
                "webhook.deliver",
                json.dumps({"delivery_id": delivery_id}, sort_keys=True),
                "queued",
                0,
                next_attempt_at or now,
                0,
                attempts,
                0,
                delivery_id,
                "webhook_delivery",
                delivery_id,
                now,
                now,
            ),
        )
    # The deliveries' own leases meant something to the old worker only.
    db.execute_sql("UPDATE webhook_delivery SET lease_until = NULL, lease_owner = NULL WHERE lease_owner IS NOT NULL")
