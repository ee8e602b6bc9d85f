"""``ObjectStore`` in the process's memory: the adapter the logic above the store is
unit-tested on, and what ``memory://NAME`` opens.

It keeps what callers may rely on from the real store, checked by the contract tests
that run against both (``tests/integration/test_store.py``): whole-second
Last-Modified times as S3 sends them, md5 ETags, keys listed in key order, a missing
object as ``None``, a missing bucket as ``StoreUnavailableError``. It is shared by
every ``MemoryStore`` of the same space and bucket in the process, and lost with it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from connectors.object_store import ByteSource, StoredBody, StoredObject
from schemas.errors import StoreUnavailableError

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class _Object:
    data: bytes
    last_modified: datetime
    etag: str
    content_type: str


#: Every bucket of the process: (space, bucket) -> key -> object.
_SPACES: dict[tuple[str, str], dict[str, _Object]] = {}
_LOCK = threading.Lock()


class _BytesReader:
    """``ObjectReader`` over bytes already in memory."""

    def __init__(self, data: bytes) -> None:
        self.size = len(data)
        self._data = data
        self._at = 0

    def read(self, amount: int) -> bytes:
        piece = self._data[self._at : self._at + amount]
        self._at += len(piece)
        return piece

    def close(self) -> None:
        self._data = b""


class MemoryStore:
    """One bucket in memory; thread-safe (the node calls its store from threads)."""

    def __init__(
        self,
        bucket: str,
        *,
        space: str = "default",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.bucket = bucket
        self.space = space
        self._clock = clock

    def _objects(self, action: str, key: str) -> dict[str, _Object]:
        objects = _SPACES.get((self.space, self.bucket))
        if objects is None:
            raise StoreUnavailableError(
                f"memory store {self.space!r} has no bucket {self.bucket!r} to {action} "
                f"{key!r} in; create it with ensure_bucket()",
                retry_after=2.0,
            )
        return objects

    def ensure_bucket(self) -> None:
        with _LOCK:
            _SPACES.setdefault((self.space, self.bucket), {})

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        self._write(key, data, content_type)

    def _write(self, key: str, data: bytes, content_type: str) -> None:
        stored = _Object(
            bytes(data),
            # S3 sends Last-Modified in whole seconds; so does this.
            self._clock().astimezone(UTC).replace(microsecond=0),
            hashlib.md5(data).hexdigest(),  # noqa: S324 - the S3 ETag of a one-part upload
            content_type,
        )
        with _LOCK:
            self._objects("write", key)[key] = stored

    def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        try:
            with path.open("rb") as source:
                data = b"".join(iter(lambda: source.read(_CHUNK), b""))
        except OSError as exc:
            raise StoreUnavailableError(
                f"memory store cannot read {path} to write {self.bucket}/{key}: {exc}",
                retry_after=2.0,
            ) from exc
        self._write(key, data, content_type)

    def put_stream(self, key: str, source: ByteSource, size: int, *, content_type: str) -> None:
        # Read whole before anything is stored: a read that raises stores nothing.
        pieces = []
        left = size
        while left > 0:
            piece = source.read(min(_CHUNK, left))
            if not piece:
                break
            pieces.append(piece)
            left -= len(piece)
        data = b"".join(pieces)
        if len(data) != size:
            raise StoreUnavailableError(
                f"memory store: the stream for {self.bucket}/{key} ended after {len(data)} "
                f"of its {size} bytes",
                retry_after=2.0,
            )
        self._write(key, data, content_type)

    def get(
        self, key: str, *, complete: Callable[[bytes], bool] | None = None
    ) -> StoredBody | None:
        # Writes replace an object whole: no read here is ever torn, ``complete`` holds.
        with _LOCK:
            found = self._objects("read", key).get(key)
        if found is None:
            return None
        return StoredBody(found.data, found.last_modified, found.etag)

    def reader(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> _BytesReader | None:
        if offset < 0 or (length is not None and length < 1):
            raise ValueError(f"cannot read {length} bytes from offset {offset} of {key}")
        with _LOCK:
            found = self._objects("read", key).get(key)
        if found is None:
            return None
        end = len(found.data) if length is None else offset + length
        return _BytesReader(found.data[offset:end])

    def stat(self, key: str) -> StoredObject | None:
        with _LOCK:
            found = self._objects("stat", key).get(key)
        if found is None:
            return None
        return StoredObject(len(found.data), found.last_modified, found.etag)

    def delete(self, key: str) -> None:
        with _LOCK:
            self._objects("delete", key).pop(key, None)

    def list_keys(self, prefix: str) -> list[str]:
        return [key for key, _ in self.list_objects(prefix)]

    def list_objects(self, prefix: str) -> list[tuple[str, StoredObject]]:
        with _LOCK:
            objects = self._objects("list", prefix)
            found = [(key, value) for key, value in objects.items() if key.startswith(prefix)]
        return [
            (key, StoredObject(len(value.data), value.last_modified, value.etag))
            for key, value in sorted(found, key=lambda item: item[0])
        ]

    def presigned_url(self, key: str, *, expires: timedelta = timedelta(minutes=15)) -> str:
        """A ``memory://`` URL naming the object: only this process can read it (with
        ``get``); nothing outside it serves such URLs."""
        until = int((self._clock() + expires).timestamp())
        return f"memory://{self.space}/{self.bucket}/{quote(key)}?expires={until}"

    def content_type(self, key: str) -> str | None:
        """The content type the object was written with (tests check what was sent)."""
        with _LOCK:
            found = self._objects("read", key).get(key)
        return None if found is None else found.content_type
