"""Liveness and readiness (streams/health.py): each way to be unhealthy or not ready."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streams.health import HealthRules, Vitals, liveness, readiness

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
RULES = HealthRules(
    stuck_after=timedelta(seconds=120), ready_lag=100, answered_within=timedelta(seconds=60)
)


def healthy(now: datetime = T0) -> Vitals:
    """A worker that joined, caught up, applies, and hears from its broker and store."""
    return Vitals(
        assigned_at=now - timedelta(minutes=9),
        view_caught_up=True,
        progressed_at=now - timedelta(seconds=5),
        behind=0,
        broker_answered_at=now - timedelta(seconds=5),
        store_answered_at=now - timedelta(seconds=5),
        root_expires=now + timedelta(days=30),
    )


def test_a_worker_doing_its_work_is_alive_and_ready() -> None:
    assert liveness(healthy(), T0, RULES).ok
    verdict = readiness(healthy(), T0, RULES)
    assert verdict.ok and verdict.status == "ok"


def test_a_batch_in_progress_too_long_is_a_stuck_loop() -> None:
    vitals = healthy()
    vitals.batch_since = T0 - timedelta(seconds=119)
    assert liveness(vitals, T0, RULES).ok  # a long batch is not yet a stuck one
    vitals.batch_since = T0 - timedelta(seconds=121)
    verdict = liveness(vitals, T0, RULES)
    assert not verdict.ok
    assert verdict.reasons == ("stuck: one batch in progress for 121 s (more than 120 s)",)
    assert not readiness(vitals, T0, RULES).ok


def test_records_waiting_with_no_batch_finishing_is_a_stuck_loop() -> None:
    vitals = healthy()
    vitals.behind = 40
    vitals.progressed_at = T0 - timedelta(seconds=200)
    verdict = liveness(vitals, T0, RULES)
    assert not verdict.ok and "40 records waiting" in verdict.status
    vitals.behind = 0  # nothing to do is not stuck, however long ago the last batch was
    assert liveness(vitals, T0, RULES).ok


def test_rejections_it_could_not_record_fail_liveness_until_they_are() -> None:
    vitals = healthy()
    vitals.unrecorded_rejections = 2
    verdict = liveness(vitals, T0, RULES)
    assert not verdict.ok and "2 rejections not recorded" in verdict.status
    vitals.unrecorded_rejections = 0
    assert liveness(vitals, T0, RULES).ok


def test_an_expired_trust_root_is_a_frozen_worker() -> None:
    vitals = healthy()
    vitals.root_expires = T0
    verdict = liveness(vitals, T0, RULES)
    assert not verdict.ok and verdict.status.startswith("frozen: the trust root expired")


def test_not_ready_before_its_partitions_are_assigned() -> None:
    vitals = healthy()
    vitals.assigned_at = None
    assert liveness(vitals, T0, RULES).ok
    verdict = readiness(vitals, T0, RULES)
    assert not verdict.ok and "has not given it its partitions" in verdict.status


def test_not_ready_while_reading_the_view_to_its_end() -> None:
    vitals = healthy()
    vitals.view_caught_up = False
    assert "reading the region's view" in readiness(vitals, T0, RULES).status


def test_not_ready_when_too_far_behind_or_the_lag_is_unknown() -> None:
    vitals = healthy()
    vitals.behind = 100
    assert readiness(vitals, T0, RULES).ok
    vitals.behind = 101
    assert "101 records behind" in readiness(vitals, T0, RULES).status
    vitals.behind = None
    assert "lag has not been measured" in readiness(vitals, T0, RULES).status


def test_not_ready_when_the_broker_or_the_store_stopped_answering() -> None:
    vitals = healthy()
    vitals.broker_answered_at = T0 - timedelta(seconds=61)
    vitals.broker_error = "broker 127.0.0.1:9092 unreachable"
    verdict = readiness(vitals, T0, RULES)
    assert not verdict.ok
    assert verdict.reasons == (
        "not ready: the broker has not answered for 61 s (broker 127.0.0.1:9092 unreachable)",
    )
    vitals = healthy()
    vitals.store_answered_at = None
    assert "the store has not answered yet" in readiness(vitals, T0, RULES).status
    assert liveness(vitals, T0, RULES).ok  # alive: a silent store is not a stuck loop
