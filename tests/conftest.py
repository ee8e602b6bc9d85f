"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra import devstack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.Stack]:
    """One embedded broker and S3 server for the whole session, stopped at its end."""
    data_dir = tmp_path_factory.mktemp("stack")
    started = devstack.up(data_dir)
    try:
        yield started
    finally:
        devstack.down(data_dir)
