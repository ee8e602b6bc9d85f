"""connectors.state_store.PackageStates against the real embedded S3 server: two workers
saving one package at once end with the newest state. The rest of its logic is tested on
the memory store (``tests/unit/test_state_store.py``)."""

from __future__ import annotations

import threading
import time
from uuid import uuid4

import pytest

from connectors.state_store import KEPT_STATES, PRUNE_SLACK, PackageStates, Saved
from connectors.store import S3Store, StoreLocation
from schemas.errors import StoreUnavailableError
from schemas.package_state import PackageState
from tests.unit.test_state_store import (
    PACKAGE,
    render_sequence,
    rendered_from,
    state,
)

pytestmark = pytest.mark.integration

#: Tries of one save before its transient errors count as failures.
SAVE_ATTEMPTS = 10


@pytest.fixture
def bucket(location: StoreLocation) -> str:
    name = f"t-{uuid4().hex[:12]}"
    S3Store(location, name).ensure_bucket()
    return name


def test_two_workers_saving_interleaved_sequences_end_with_the_newest(
    location: StoreLocation, bucket: str
) -> None:
    rounds = 30
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []
    superseded: list[int] = []
    retried: list[int] = []

    def save_retrying(states: PackageStates, saved_state: PackageState) -> Saved:
        # Two PUTs of the same key at once sometimes get a 500 from the embedded store: a
        # transient error that a worker retries, as the replicator does ("a retry is safe").
        for _ in range(SAVE_ATTEMPTS - 1):
            try:
                return states.save(saved_state)
            except StoreUnavailableError:
                retried.append(saved_state.sequence)
                time.sleep(0.01)
        return states.save(saved_state)

    def work(first: int) -> None:
        states = PackageStates(S3Store(location, bucket), render_sequence)
        try:
            for sequence in range(first, 2 * rounds + 1, 2):
                barrier.wait()  # both save at once, every round
                saved = save_retrying(states, state(sequence))
                if saved.superseded_by is not None:
                    superseded.append(sequence)
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(first,)) for first in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    reader_store = S3Store(location, bucket)
    reader = PackageStates(reader_store, render_sequence)
    assert rendered_from(reader_store) == 2 * rounds
    assert reader.load(PACKAGE) == state(2 * rounds)
    kept = reader.sequences(PACKAGE)
    assert kept[-3:] == [2 * rounds - 2, 2 * rounds - 1, 2 * rounds]
    assert len(kept) <= KEPT_STATES + 1 + PRUNE_SLACK
    # Only a worker whose state was older than another's can have been superseded.
    assert all(sequence < 2 * rounds for sequence in superseded)
