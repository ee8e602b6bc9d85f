"""The object store port: what the node asks of a bucket, whichever holds it.

Content-addressed artifacts, parked fetches and the trust root's copy live in one
bucket per region. Adapters: ``connectors.store.S3Store`` (MinIO, any S3; ``rclone
serve s3`` in dev) and ``connectors.memory_store.MemoryStore`` (in the process: the
logic above the store is unit-tested on it); ``connectors.store.open_store`` picks one
by the URL's scheme. ``tests/integration/test_store.py`` runs one contract against both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import orjson


def is_json(data: bytes) -> bool:
    """Whether ``data`` is one whole JSON document: the completeness check for metadata reads."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


@dataclass(frozen=True)
class StoredObject:
    size: int
    last_modified: datetime
    etag: str


@dataclass(frozen=True)
class StoredBody:
    data: bytes
    last_modified: datetime
    etag: str


class ByteSource(Protocol):
    """What ``ObjectStore.put_stream`` reads from: a file opened for reading, or a stream."""

    def read(self, amount: int = -1, /) -> bytes:
        """Up to ``amount`` bytes, fewer only at the end."""
        ...


class ObjectReader(Protocol):
    """An object's bytes (or a range of them), read piece by piece.

    ``size`` is how many bytes the store announced. ``close()`` gives the connection back;
    call it also when stopping early.
    """

    size: int

    def read(self, amount: int) -> bytes:
        """Up to ``amount`` bytes, fewer only at the end, ``b""`` after it.

        Raises ``StoreUnavailableError`` when the store breaks off before ``size`` bytes.
        """
        ...

    def close(self) -> None: ...


class ObjectStore(Protocol):
    """One bucket: put, get, stat, list, delete and presign objects.

    Every failure of the store itself is a ``StoreUnavailableError`` (transient: retry
    after its ``retry_after``); a missing object is ``None``, never an error.
    """

    @property
    def bucket(self) -> str: ...

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists; an existing bucket keeps its objects."""
        ...

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None: ...

    def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        """Upload a file, never holding it whole in memory."""
        ...

    def put_stream(self, key: str, source: ByteSource, size: int, *, content_type: str) -> None:
        """Upload ``size`` bytes read from ``source`` (a file, or a download streamed through
        ``connectors.streamed_upload.UploadFeed``), never holding it whole in memory.

        When ``source.read`` raises, nothing is stored under ``key`` and the error passes
        through; a stream that ends short is a ``StoreUnavailableError``.
        """
        ...

    def get(
        self, key: str, *, complete: Callable[[bytes], bool] | None = None
    ) -> StoredBody | None:
        """The object's bytes and metadata, or None. A body that ``complete`` refuses
        (torn by a concurrent overwrite) is read again."""
        ...

    def reader(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> ObjectReader | None:
        """A reader of the object's bytes from ``offset`` (``length`` of them, or to its
        end); None if there is no such object. Raises ``ValueError`` for a bad range."""
        ...

    def stat(self, key: str) -> StoredObject | None:
        """Size, modification time and etag of an object, or None if there is none."""
        ...

    def delete(self, key: str) -> None:
        """Remove an object; removing one that is not there is not an error."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """The keys of every object under ``prefix``, in key order."""
        ...

    def list_objects(self, prefix: str) -> list[tuple[str, StoredObject]]:
        """Every object under ``prefix`` with its size and modification time, in key order."""
        ...

    def presigned_url(self, key: str, *, expires: timedelta = timedelta(minutes=15)) -> str:
        """A URL that lets anyone GET the object until it expires."""
        ...
