"""The origin down, answering 5xx, trickling one byte a second: releases published meanwhile
are parked, block nothing behind them, and are served once the origin is back."""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import FaultFederation, Load, Poller


@pytest.mark.parametrize("fault", ["down", "5xx", "trickle"])
def test_releases_published_while_the_origin_fails_are_served_once_it_is_back(
    fault_federation: FaultFederation, fault: str
) -> None:
    federation = fault_federation
    with Load(federation), Poller(federation):
        time.sleep(2)
        before = len(federation.acknowledged)
        federation.origin_fault(fault, 15)
        during = len(federation.acknowledged) - before
        time.sleep(3)
    assert during >= 10, f"only {during} releases published during the fault"
    federation.wait_until_quiet(timeout=240)
    verdict = federation.history()
    assert verdict.clean, str(verdict)
