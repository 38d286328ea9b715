"""Job metrics (tenantry.metrics): what the worker observes, and the queue read at scrape time."""

from __future__ import annotations

from tenantry.metrics import Metrics, observe_job


def test_attempts_are_timed_by_kind_and_outcome_and_failures_counted_by_kind():
    metrics = Metrics()
    observe_job("test.metrics", "succeeded", 0.2)
    observe_job("test.metrics", "failed", 1.5)
    observe_job("test.metrics", "lost", 3.0)
    text = metrics.render()[0].decode()
    assert 'tenantry_job_duration_seconds_count{kind="test.metrics",outcome="succeeded"} 1.0' in text
    assert 'tenantry_job_duration_seconds_count{kind="test.metrics",outcome="failed"} 1.0' in text
    assert 'tenantry_job_failures_total{kind="test.metrics"} 2.0' in text


def test_the_queue_is_read_at_each_scrape_and_a_failing_read_still_answers():
    reads = []

    def read():
        reads.append(1)
        if len(reads) > 1:
            raise RuntimeError("the database is down")
        return [("webhook.deliver", "queued", 3)], [("webhook.deliver", 42.0)]

    metrics = Metrics(queue=read)
    assert reads == []  # registering reads nothing
    text = metrics.render()[0].decode()
    assert 'tenantry_job_queue_depth{kind="webhook.deliver",status="queued"} 3.0' in text
    assert 'tenantry_job_oldest_due_seconds{kind="webhook.deliver"} 42.0' in text
    text = metrics.render()[0].decode()  # the read fails: the scrape answers, without queue samples
    assert "tenantry_requests_in_flight" in text and "tenantry_job_queue_depth{" not in text
