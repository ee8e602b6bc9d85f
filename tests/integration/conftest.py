"""Fixtures of the integration tests: the embedded stack's store, a download directory."""

from __future__ import annotations

from pathlib import Path

import pytest

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
