"""kill -9 of a worker at each fault point, under load: nothing acknowledged is lost.

The worker is armed with a hidden ``--fault-point NAME@N`` and sends itself
SIGKILL there (streams/faults.py); then it is restarted without it. The region's
other worker takes its partitions meanwhile (a rebalance under load), and the
restarted one takes some back (another).
"""

from __future__ import annotations

import shutil
import time

import pytest

from streams.faults import (
    AFTER_METADATA_WRITE,
    AFTER_STORE_WRITE,
    AFTER_VIEW_RECORD,
    BEFORE_LOCAL_WRITE,
    BEFORE_OFFSET_COMMIT,
)
from tests.faults.harness import FaultFederation, Load, Poller


# after-metadata-write: a package's view derived, its record not produced yet;
# before-local-write: the record acknowledged, not yet held (served) by the worker;
# after-view-record: the batch's records acknowledged and held, the offsets not committed.
@pytest.mark.parametrize(
    "point",
    [
        AFTER_STORE_WRITE,
        AFTER_METADATA_WRITE,
        BEFORE_LOCAL_WRITE,
        AFTER_VIEW_RECORD,
        BEFORE_OFFSET_COMMIT,
    ],
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


def test_a_worker_whose_local_view_is_deleted_while_stopped_serves_nothing_older_when_back(
    fault_federation: FaultFederation,
) -> None:
    """The local view (sqlite and docroot) is a cache of the region's view topic: a worker
    that lost it rebuilds it from the topic before it answers, so what it served before
    (the poller's observations of eu/eu-1) is never missing after (no rollback)."""
    federation = fault_federation
    with Load(federation), Poller(federation):
        time.sleep(4)
        federation.workers["eu-1"].kill()
        # data_dir/nodes/<region>/view-<worker name>: sqlite and docroot
        (view_dir,) = (federation.work_dir / "node-eu-1").glob("nodes/eu/view-*")
        assert (view_dir / "view.sqlite3").exists(), "eu-1 kept no local view"
        shutil.rmtree(view_dir)
        federation.start_worker("eu-1")
        time.sleep(4)
    federation.wait_until_quiet()
    verdict = federation.history()
    assert verdict.clean, str(verdict)
    assert any(o.source == "eu/eu-1" and o.listed for o in federation.observations)
    assert (view_dir / "docroot" / "p2" / "drupal" / "alpha.json").exists()
