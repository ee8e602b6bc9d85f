"""Fixtures of the integration tests: the embedded stack's store, a download directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.kafka_producers import EventProducer
from connectors.store import StoreLocation
from infra import devstack


@pytest.fixture
def location(stack: devstack.Stack) -> StoreLocation:
    """Where the session's embedded S3 server is; each test makes its own bucket there."""
    return StoreLocation.from_url(stack.store_url)


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    """An empty directory for downloads, to check that nothing is left behind."""
    path = tmp_path / "downloads"
    path.mkdir()
    return path


@pytest.fixture
def producer(stack: devstack.Stack) -> Iterator[EventProducer]:
    """An idempotent producer on the session's embedded broker, closed after the test."""
    created = EventProducer(stack.broker_url, delivery_timeout=10.0)
    try:
        yield created
    finally:
        created.close()
