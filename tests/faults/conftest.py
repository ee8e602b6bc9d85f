"""Fixtures of the fault tests: a federation on a stack of its own, under load."""

from __future__ import annotations

import pytest

from tests.faults.harness import WORKERS, fault_federation

__all__ = ["fault_federation"]


@pytest.fixture(autouse=True)
def healed(request: pytest.FixtureRequest) -> None:
    """Before each test on the shared federation: every worker running and the origin
    answering, so one test's failure is reported once, not again by every test after it."""
    if "fault_federation" not in request.fixturenames:
        return
    federation = request.getfixturevalue("fault_federation")
    federation.origin.come_back()
    for names in WORKERS.values():
        for name in names:
            worker = federation.workers.get(name)
            if worker is None or not worker.alive():
                federation.start_worker(name)
