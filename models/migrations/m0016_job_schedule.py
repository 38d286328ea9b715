"""Periodic jobs' schedule (tenantry.periodic): the last slot enqueued of each periodic work.

A platform table (no tenant: the schedule is Tenantry's own), so it is not under row-level
security. Each worker tick moves `last_slot` forward with a compare-and-set, in the transaction
that enqueues the slot's job: however many workers tick at once, one of them enqueues a slot.
"""

STATEMENTS = [
    """CREATE TABLE job_schedule (
        name VARCHAR(64) PRIMARY KEY,
        last_slot TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL
    )""",
]
