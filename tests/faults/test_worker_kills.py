"""kill -9 of a worker at each fault point, under load: nothing acknowledged is lost.

The worker is armed with a hidden ``--fault-point NAME@N`` and sends itself
SIGKILL there (streams/faults.py); then it is restarted without it. The region's
other worker takes its partitions meanwhile (a rebalance under load), and the
restarted one takes some back (another).
"""

from __future__ import annotations

import time

import pytest

from streams.faults import (
    AFTER_METADATA_WRITE,
    AFTER_STORE_WRITE,
    AFTER_VIEW_RECORD,
    BEFORE_OFFSET_COMMIT,
)
from tests.faults.harness import FaultFederation, Load, Poller


# after-metadata-write: the worker's local view holds the batch, its view records are not
# produced yet; after-view-record: produced and acknowledged, the offsets not committed.
@pytest.mark.parametrize(
    "point", [AFTER_STORE_WRITE, AFTER_METADATA_WRITE, AFTER_VIEW_RECORD, BEFORE_OFFSET_COMMIT]
)
def test_a_worker_killed_at_a_fault_point_loses_and_doubles_nothing(
    fault_federation: FaultFederation, point: str
) -> None:
    federation = fault_federation
    with Load(federation), Poller(federation):
        assert federation.kill_at("eu-1", point), f"eu-1 never reached {point}"
        time.sleep(3)
    federation.wait_until_quiet()
    verdict = federation.history()
    assert verdict.clean, str(verdict)
    assert len(federation.acknowledged) >= 10
