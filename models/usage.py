"""Request counts per tenant, day, credential and operation, added to in batches."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from peewee import EXCLUDED, BigIntegerField, CharField, CompositeKey, DateField, fn

from models.base import BaseModel, database, row_tuples

#: (tenant id, day, credential, operation) -> requests
Counts = Mapping[tuple[str, date, str, str], int]


class UsageCounter(BaseModel):
    """How many requests one credential made to one operation of a tenant on one day (UTC)."""

    tenant_id = CharField(max_length=30)
    day = DateField()
    credential = CharField(max_length=40)  # "usr_..." or "key_..."
    operation = CharField(max_length=64)
    requests = BigIntegerField()

    class Meta:
        primary_key = CompositeKey("tenant_id", "day", "credential", "operation")

    @classmethod
    def add(cls, counts: Counts) -> None:
        """Adds the counts in one transaction (an upsert per row, on SQLite and PostgreSQL alike)."""
        if not counts:
            return
        rows = [
            {"tenant_id": t, "day": d, "credential": c, "operation": o, "requests": n}
            for (t, d, c, o), n in sorted(counts.items())
        ]  # one order everywhere: no deadlocks
        with database.atomic():
            for start in range(0, len(rows), 200):
                (
                    cls.insert_many(rows[start : start + 200])
                    .on_conflict(
                        conflict_target=[cls.tenant_id, cls.day, cls.credential, cls.operation],
                        update={cls.requests: cls.requests + EXCLUDED.requests},
                    )
                    .execute()
                )

    @classmethod
    def report(cls, tenant_id: str, date_from: date, date_to: date) -> dict[str, Any]:
        """Returns the tenant's counts in the range: in all, per day, per credential, per operation."""
        scope = (cls.tenant_id == tenant_id) & (cls.day >= date_from) & (cls.day <= date_to)
        total = fn.SUM(cls.requests)

        def grouped(column: Any) -> list[tuple[Any, int]]:
            query = cls.select(column, total).where(scope).group_by(column).order_by(total.desc(), column)
            return [(key, int(count)) for key, count in row_tuples(query)]

        days = sorted(grouped(cls.day))
        return {
            "tenant_id": tenant_id,
            "date_from": date_from.isoformat(),
            "date_to": date_to.isoformat(),
            "total_requests": sum(count for _, count in days),
            "days": [{"date": _day(day).isoformat(), "requests": count} for day, count in days],
            "credentials": [
                {
                    "credential_type": "api_key" if cred.startswith("key_") else "user",
                    "credential_id": cred,
                    "requests": count,
                }
                for cred, count in grouped(cls.credential)
            ],
            "operations": [{"operation_id": op, "requests": count} for op, count in grouped(cls.operation)],
        }


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
