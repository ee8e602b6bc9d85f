"""A region's one public URL, recorded in its bucket by its first worker (real S3 server)."""

from __future__ import annotations

import logging
from uuid import uuid4

import orjson
import pytest

from connectors.object_store import ObjectStore
from connectors.store import S3Store, StoreLocation
from schemas import layout
from streams.node_settings import region_public_url


@pytest.fixture
def bucket(location: StoreLocation) -> ObjectStore:
    store = S3Store(location, f"region-{uuid4().hex[:10]}")
    store.ensure_bucket()
    return store


def recorded(store: ObjectStore) -> str:
    stored = store.get(layout.REGION_JSON)
    assert stored is not None
    return str(orjson.loads(stored.data)["public_url"])


def test_the_first_worker_records_its_url_and_later_ones_take_it(bucket: ObjectStore) -> None:
    assert region_public_url(bucket, None, "http://10.0.0.1:8081") == "http://10.0.0.1:8081"
    assert recorded(bucket) == "http://10.0.0.1:8081"
    # A second worker on another address renders with the region's URL, not its own.
    assert region_public_url(bucket, None, "http://10.0.0.2:8081") == "http://10.0.0.1:8081"


def test_an_explicit_url_is_recorded_with_a_warning_when_it_changes(
    bucket: ObjectStore, caplog: pytest.LogCaptureFixture
) -> None:
    region_public_url(bucket, "https://eu.example.org/", "http://10.0.0.1:8081")
    assert recorded(bucket) == "https://eu.example.org"
    with caplog.at_level(logging.WARNING):
        assert region_public_url(bucket, "https://eu.example.org", "http://x") == (
            "https://eu.example.org"
        )
    assert caplog.records == []
    with caplog.at_level(logging.WARNING):
        region_public_url(bucket, "https://mirror.example.net", "http://10.0.0.1:8081")
    assert recorded(bucket) == "https://mirror.example.net"
    assert "node rebuild --public-url https://mirror.example.net" in caplog.text


def test_an_unreadable_record_is_replaced(bucket: ObjectStore) -> None:
    bucket.put_bytes(layout.REGION_JSON, b"{not json", content_type="application/json")
    assert region_public_url(bucket, None, "http://10.0.0.3:8081") == "http://10.0.0.3:8081"
    assert recorded(bucket) == "http://10.0.0.3:8081"
