"""connectors.store: the S3 adapter against the real embedded S3 server (rclone serve s3),
and the contract every ``ObjectStore`` keeps, run against it and the memory adapter alike
(the unit tests of the logic above the store rely on the memory adapter behaving so)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson
import pytest
from minio import Minio
from minio.error import InvalidResponseError
from minio.helpers import Worker

from connectors.memory_store import MemoryStore
from connectors.object_store import ObjectStore, is_json
from connectors.store import STREAM_PART_SIZE, S3Store, StoreLocation, open_store, redact_url
from infra import devstack
from schemas.errors import ConfigurationError, StoreUnavailableError, TransientError

pytestmark = pytest.mark.integration


def unique_bucket() -> str:
    return f"t-{uuid4().hex[:12]}"


@pytest.fixture(params=["s3", "memory"])
def open_bucket(request: pytest.FixtureRequest) -> Callable[[str], ObjectStore]:
    """Opens a bucket (not created) on the adapter under test, by the URL an operator gives."""
    if request.param == "memory":
        return lambda bucket: open_store("memory://contract", bucket)
    stack: devstack.Stack = request.getfixturevalue("stack")
    return lambda bucket: open_store(stack.store_url, bucket)


@pytest.fixture
def store(open_bucket: Callable[[str], ObjectStore]) -> ObjectStore:
    created = open_bucket(unique_bucket())
    created.ensure_bucket()
    return created


@pytest.fixture
def s3_store(location: StoreLocation) -> S3Store:
    created = S3Store(location, unique_bucket())
    created.ensure_bucket()
    return created


def test_open_store_picks_the_adapter_by_scheme(stack: devstack.Stack) -> None:
    assert isinstance(open_store(stack.store_url, "b"), S3Store)
    assert isinstance(open_store(StoreLocation.from_url(stack.store_url), "b"), S3Store)
    memory = open_store("memory://somewhere", "b")
    assert isinstance(memory, MemoryStore) and memory.space == "somewhere"
    with pytest.raises(ConfigurationError, match="is not s3://"):
        open_store("ftp://AK:SK@h:1", "b")


def test_ensure_bucket_is_idempotent(open_bucket: Callable[[str], ObjectStore]) -> None:
    store = open_bucket(unique_bucket())

    store.ensure_bucket()
    store.ensure_bucket()
    store.put_bytes("k", b"v", content_type="text/plain")
    store.ensure_bucket()  # an existing bucket keeps its objects

    body = store.get("k")
    assert body is not None and body.data == b"v"


def test_put_bytes_then_get_and_stat(store: ObjectStore) -> None:
    data = b'{"packages": {}}'
    before = datetime.now(UTC).replace(microsecond=0)

    store.put_bytes("p2/drupal/token.json", data, content_type="application/json")

    body = store.get("p2/drupal/token.json")
    info = store.stat("p2/drupal/token.json")
    after = datetime.now(UTC)
    assert body is not None and info is not None
    assert body.data == data
    assert body.last_modified.tzinfo is not None
    # Allow a second for the store's whole-second timestamps.
    assert before - timedelta(seconds=1) <= body.last_modified <= after + timedelta(seconds=1)
    assert info.size == len(data)
    assert info.last_modified == body.last_modified
    assert info.etag == body.etag == hashlib.md5(data).hexdigest()


def test_put_bytes_overwrites(store: ObjectStore) -> None:
    store.put_bytes("state/drupal/token.json", b"one", content_type="application/json")
    store.put_bytes("state/drupal/token.json", b"second", content_type="application/json")

    body = store.get("state/drupal/token.json")
    assert body is not None and body.data == b"second"


def test_a_missing_key_is_none(store: ObjectStore) -> None:
    store.put_bytes("present", b"x", content_type="text/plain")

    assert store.get("absent.json") is None
    assert store.stat("absent.json") is None
    assert store.get("p2/drupal/absent.json") is None
    assert store.stat("artifacts/sha256/00/absent.zip") is None


def test_rclone_answers_a_missing_key_with_a_non_xml_404(
    s3_store: S3Store, location: StoreLocation
) -> None:
    store = s3_store
    # The quirk connectors.store._is_missing exists for: if rclone ever answers like S3,
    # this fails and the special case can go.
    client = Minio(
        location.endpoint,
        access_key=location.access_key,
        secret_key=location.secret_key,
        secure=False,
        region=location.region,
    )

    with pytest.raises(InvalidResponseError) as raised:
        client.get_object(store.bucket, "absent.json")

    assert getattr(raised.value, "_code", None) == 404


def test_put_file_of_several_megabytes(store: ObjectStore, tmp_path: Path) -> None:
    # Larger than minio's 5 MiB part size: uploaded in parts.
    data = os.urandom(12 * 1024 * 1024 + 17)
    path = tmp_path / "big.zip"
    path.write_bytes(data)

    store.put_file("artifacts/big.zip", path, content_type="application/zip")

    info = store.stat("artifacts/big.zip")
    body = store.get("artifacts/big.zip")
    assert info is not None and info.size == len(data)
    assert body is not None
    assert hashlib.sha256(body.data).digest() == hashlib.sha256(data).digest()


class RefusedError(Exception):
    """What a stream's read raises in the tests of ``put_stream``."""


class RefusingSource:
    """Hands out ``data`` and raises ``RefusedError`` on the read that would complete it, as an
    ``UploadFeed`` does when the download's checks failed."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self._size = len(data)
        self.handed = 0
        self.refused = False

    def read(self, amount: int = -1, /) -> bytes:
        piece = self._data.read(amount)
        if self.handed + len(piece) >= self._size:
            self.refused = True
            raise RefusedError(f"the read of bytes {self.handed} to {self.handed + len(piece)}")
        self.handed += len(piece)
        return piece


#: Larger than two parts of a streamed upload: three parts, the last a short one.
STREAMED_SIZE = 2 * STREAM_PART_SIZE + 4 * 1024 * 1024 + 17


def test_put_stream_of_several_parts(store: ObjectStore) -> None:
    data = os.urandom(STREAMED_SIZE)

    store.put_stream(
        "artifacts/big.zip", io.BytesIO(data), len(data), content_type="application/zip"
    )

    info = store.stat("artifacts/big.zip")
    body = store.get("artifacts/big.zip")
    assert info is not None and info.size == len(data)
    assert body is not None and body.data == data


@pytest.mark.parametrize("size", [300_000, STREAMED_SIZE], ids=["one part", "multipart"])
def test_put_stream_stores_nothing_when_the_last_read_raises(store: ObjectStore, size: int) -> None:
    source = RefusingSource(os.urandom(size))

    with pytest.raises(RefusedError):
        store.put_stream("artifacts/refused.zip", source, size, content_type="application/zip")

    assert source.refused  # the store read up to the object's last bytes
    assert store.stat("artifacts/refused.zip") is None
    assert store.get("artifacts/refused.zip") is None
    assert store.list_keys("artifacts/") == []


def test_an_abandoned_multipart_put_stream_leaves_no_upload_threads(s3_store: S3Store) -> None:
    # minio's parallel part uploads (its default) leave their pool's threads waiting for
    # ever, each holding a part, when the stream's read raises: a node abandoning uploads
    # of zips that failed their checks would leak them.
    def uploaders() -> int:
        return sum(isinstance(thread, Worker) for thread in threading.enumerate())

    before = uploaders()
    for _ in range(3):
        with pytest.raises(RefusedError):
            s3_store.put_stream(
                "k",
                RefusingSource(os.urandom(STREAMED_SIZE)),
                STREAMED_SIZE,
                content_type="application/zip",
            )

    assert uploaders() == before


@pytest.mark.parametrize("size", [300_000, STREAMED_SIZE], ids=["one part", "multipart"])
def test_put_stream_of_a_stream_that_ends_short_is_store_unavailable(
    store: ObjectStore, size: int
) -> None:
    short = io.BytesIO(os.urandom(size - 1000))

    with pytest.raises(StoreUnavailableError, match=r"artifacts/short\.zip") as raised:
        store.put_stream("artifacts/short.zip", short, size, content_type="application/zip")

    assert raised.value.retry_after > 0
    assert store.stat("artifacts/short.zip") is None
    assert store.list_keys("artifacts/") == []


def test_presigned_url_downloads_the_same_bytes(s3_store: S3Store, tmp_path: Path) -> None:
    store = s3_store
    data = os.urandom(300_000)
    path = tmp_path / "token.zip"
    path.write_bytes(data)
    store.put_file("artifacts/token.zip", path, content_type="application/zip")

    url = store.presigned_url("artifacts/token.zip", expires=timedelta(minutes=1))

    assert url.startswith(f"http://{store.location.endpoint}/{store.bucket}/artifacts/token.zip?")
    assert store.location.secret_key not in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.read() == data


def test_a_tampered_presigned_url_is_refused(s3_store: S3Store) -> None:
    store = s3_store
    store.put_bytes("secret.json", b"{}", content_type="application/json")
    store.put_bytes("other.json", b"[]", content_type="application/json")
    url = store.presigned_url("secret.json")

    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(url.replace("secret.json", "other.json"), timeout=10)

    assert raised.value.code == 403
    raised.value.close()


def _store_calls(store: ObjectStore, tmp_path: Path) -> dict[str, Callable[[], Any]]:
    path = tmp_path / "f.zip"
    path.write_bytes(b"zip")
    return {
        "ensure_bucket": store.ensure_bucket,
        "put_bytes": lambda: store.put_bytes("k", b"v", content_type="text/plain"),
        "put_file": lambda: store.put_file("k", path, content_type="application/zip"),
        "get": lambda: store.get("k"),
        "get missing": lambda: store.get("absent"),
        "stat": lambda: store.stat("k"),
        "stat missing": lambda: store.stat("absent"),
    }


def test_a_wrong_secret_is_store_unavailable(
    s3_store: S3Store, location: StoreLocation, tmp_path: Path
) -> None:
    store = s3_store
    store.put_bytes("k", b"v", content_type="text/plain")
    wrong = S3Store(dataclasses.replace(location, secret_key="not-the-secret"), store.bucket)

    for name, call in _store_calls(wrong, tmp_path).items():
        with pytest.raises(StoreUnavailableError) as raised:
            call()
        assert type(raised.value) is StoreUnavailableError, name
        assert isinstance(raised.value, TransientError)
        assert raised.value.retry_after > 0
        message = str(raised.value)
        assert location.endpoint in message, name
        assert store.bucket in message, name
        assert location.secret_key not in message, name
    # The right credentials still see the object untouched.
    body = store.get("k")
    assert body is not None and body.data == b"v"


def test_a_closed_endpoint_is_store_unavailable_quickly(
    location: StoreLocation, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    closed = S3Store(
        dataclasses.replace(location, endpoint=f"127.0.0.1:{closed_port}"), unique_bucket()
    )

    for name, call in _store_calls(closed, tmp_path).items():
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{closed_port}"):
            call()
        assert time.monotonic() - started < 5, name


def test_keys_are_listed_under_their_prefix_in_key_order(store: ObjectStore) -> None:
    sizes = {"pending/ab/2.json": 1, "artifacts/sha256/0f/1.zip": 3, "pending/0c/3.json": 2}
    keys = [*sizes, "pending.txt"]
    for key in keys:
        store.put_bytes(key, b"x" * sizes.get(key, 0), content_type="application/octet-stream")

    assert store.list_keys("pending/") == ["pending/0c/3.json", "pending/ab/2.json"]
    assert store.list_keys("") == sorted(keys)
    assert store.list_keys("state/") == []
    listed = dict(store.list_objects("pending/"))
    assert sorted(listed) == ["pending/0c/3.json", "pending/ab/2.json"]
    assert listed["pending/ab/2.json"].size == 1
    assert listed["pending/0c/3.json"].size == 2
    assert listed["pending/0c/3.json"].etag == hashlib.md5(b"xx").hexdigest()


def test_a_delete_removes_the_object_and_deleting_again_is_no_error(store: ObjectStore) -> None:
    store.put_bytes("pending/ab/1.json", b"{}", content_type="application/json")
    store.put_bytes("pending/ab/2.json", b"{}", content_type="application/json")

    store.delete("pending/ab/1.json")
    store.delete("pending/ab/1.json")
    store.delete("never/written")

    assert store.get("pending/ab/1.json") is None
    assert store.list_keys("pending/") == ["pending/ab/2.json"]


def test_a_reader_reads_the_range_asked_for(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40
    store.put_bytes("artifacts/r.zip", data, content_type="application/zip")

    def read_all(offset: int = 0, length: int | None = None) -> tuple[int, bytes]:
        reader = store.reader("artifacts/r.zip", offset=offset, length=length)
        assert reader is not None
        try:
            pieces = []
            while piece := reader.read(1000):
                pieces.append(piece)
            return reader.size, b"".join(pieces)
        finally:
            reader.close()

    assert read_all() == (len(data), data)
    assert read_all(100) == (len(data) - 100, data[100:])
    assert read_all(100, 50) == (50, data[100:150])
    assert store.reader("artifacts/absent.zip") is None
    with pytest.raises(ValueError, match="from offset -1"):
        store.reader("artifacts/r.zip", offset=-1)
    with pytest.raises(ValueError, match="0 bytes"):
        store.reader("artifacts/r.zip", length=0)


def test_a_bucket_never_created_is_store_unavailable(
    open_bucket: Callable[[str], ObjectStore],
) -> None:
    missing = open_bucket(unique_bucket())

    calls: dict[str, Callable[[], object]] = {
        "put_bytes": lambda: missing.put_bytes("k", b"v", content_type="text/plain"),
        "get": lambda: missing.get("k"),
        "list_keys": lambda: missing.list_keys(""),
    }
    for name, call in calls.items():
        with pytest.raises(StoreUnavailableError, match=missing.bucket) as raised:
            call()
        assert raised.value.retry_after > 0, name


# ---------------------------------------------------------------------------
# StoreLocation
# ---------------------------------------------------------------------------

SECRET = "s3cr3t-Value"


def test_from_url_parses_the_parts() -> None:
    assert StoreLocation.from_url("s3://AK:s%2Fe%40c@store.example:9000") == StoreLocation(
        endpoint="store.example:9000",
        access_key="AK",
        secret_key="s/e@c",
        secure=False,
        region="us-east-1",
    )
    parsed = StoreLocation.from_url("s3://AK:SK@10.0.0.1:443?tls=1&region=eu-central-1")
    assert parsed.secure is True
    assert parsed.region == "eu-central-1"
    assert parsed.endpoint == "10.0.0.1:443"


def test_from_url_reads_the_stack_url(stack: devstack.Stack) -> None:
    location = StoreLocation.from_url(stack.store_url)

    assert location.endpoint == next(p.address for p in stack.processes if p.name == "store")
    assert location.secret_key in stack.store_url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"http://AK:{SECRET}@store.example:9000", "is not s3://ACCESS:SECRET@host:port"),
        (f"minio://AK:{SECRET}@store.example:9000", "is not s3://ACCESS:SECRET@host:port"),
        (f"s3://AK:{SECRET}@store.example", "is not s3://ACCESS:SECRET@host:port"),
        (f"s3://AK:{SECRET}@:9000", "is not s3://ACCESS:SECRET@host:port"),
        ("s3://store.example:9000", "has no ACCESS:SECRET credentials"),
        ("s3://AK@store.example:9000", "has no ACCESS:SECRET credentials"),
        (f"s3://:{SECRET}@store.example:9000", "has no ACCESS:SECRET credentials"),
        ("", "is not s3://"),
        ("store.example:9000", "is not s3://"),
    ],
)
def test_from_url_errors_are_configuration_errors_without_the_secret(
    url: str, problem: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        StoreLocation.from_url(url)

    message = str(raised.value)
    assert problem in message
    assert SECRET not in message
    if SECRET in url:
        assert ":***@" in message


@pytest.mark.parametrize(
    "url",
    [
        f"s3://AK:{SECRET}@store.example:abc",
        f"s3://AK:{SECRET}@store.example:70000",
        f"s3://AK:{SECRET}@[::1:9000",
    ],
)
def test_from_url_bad_ports_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        StoreLocation.from_url(url)

    assert SECRET not in str(raised.value)


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url(f"s3://AK:{SECRET}@h:1?tls=1") == "s3://AK:***@h:1?tls=1"
    assert redact_url("s3://h:1") == "s3://h:1"


def test_json_reads_racing_overwrites_are_never_torn(store: ObjectStore) -> None:
    """rclone rewrites objects in place; a metadata read must still be one whole version."""
    versions = [orjson.dumps({"n": n, "pad": "x" * (20_000 + n * 1_000)}) for n in range(10)]
    store.put_bytes("p2/drupal/token.json", versions[0], content_type="application/json")
    stop = threading.Event()
    writes = 0

    def rewrite() -> None:
        nonlocal writes
        while not stop.is_set():
            store.put_bytes(
                "p2/drupal/token.json", versions[writes % 10], content_type="application/json"
            )
            writes += 1
            # Far more often than a node rewrites one package's metadata (once per event).
            time.sleep(0.005)

    writer = threading.Thread(target=rewrite)
    writer.start()
    seen = []
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            body = store.get("p2/drupal/token.json", complete=is_json)
            assert body is not None
            seen.append(body.data)
    finally:
        stop.set()
        writer.join()

    assert writes > 50, "the writer must really race the reader"
    assert len(seen) > 100
    assert seen and all(data in versions for data in seen)
