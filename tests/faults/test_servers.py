"""The broker paused past the session timeout, the object store stopped and restarted, under load."""

from __future__ import annotations

import time

from tests.faults.harness import FaultFederation, Load, Poller


def test_a_broker_paused_past_the_session_timeout_loses_nothing(
    fault_federation: FaultFederation,
) -> None:
    federation = fault_federation
    with Load(federation), Poller(federation):
        time.sleep(3)
        before = len(federation.acknowledged)
        # Workers run with a 6 s session timeout: 12 s frozen expires every member.
        federation.pause_broker(12)
        time.sleep(5)
    federation.wait_until_quiet(timeout=180)
    verdict = federation.history()
    assert verdict.clean, str(verdict)
    assert len(federation.acknowledged) > before, "no release was acknowledged after the pause"
    for worker in federation.workers.values():
        assert worker.alive(), f"{worker.name} died of the pause:\n{worker.log_tail(30)}"


def test_an_object_store_stopped_and_restarted_loses_nothing(
    fault_federation: FaultFederation,
) -> None:
    federation = fault_federation
    with Load(federation), Poller(federation):
        time.sleep(3)
        federation.restart_store(downtime=8)
        time.sleep(5)
    federation.wait_until_quiet(timeout=180)
    verdict = federation.history()
    assert verdict.clean, str(verdict)
    for worker in federation.workers.values():
        assert worker.alive(), f"{worker.name} died of the store restart:\n{worker.log_tail(30)}"
