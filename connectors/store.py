"""The object store: the port (``ObjectStore``) and its S3 adapter (``S3Store``).

Content-addressed artifacts, parked fetches and the trust root's copy live in
one bucket per region. ``S3Store`` reaches MinIO in production and ``rclone
serve s3`` in dev through the minio SDK; ``connectors.memory_store.MemoryStore``
keeps a bucket in the process for tests of the logic above it. ``open_store``
picks one by the URL's scheme. The embedded store ignores conditional PUTs
(DESIGN.md), so nothing here relies on them.
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import parse_qs, unquote, urlsplit

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error
from urllib3 import BaseHTTPResponse

from connectors.memory_store import MemoryStore
from connectors.metrics import record_store_write
from connectors.object_store import ByteSource, ObjectStore, StoredBody, StoredObject
from schemas.errors import ConfigurationError, StoreUnavailableError

#: minio errors that mean "not there", as opposed to "the store is unwell".
_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}


TORN_READ_ATTEMPTS = 8
#: Parts of a streamed upload (``put_stream``): each is held in memory while it is sent.
STREAM_PART_SIZE = 8 * 1024 * 1024
_PLAIN_ETAG = re.compile(r"[0-9a-f]{32}")


class _TornReadError(Exception):
    """A GET that raced an overwrite: broken off, or bytes that are not the object's."""


def _is_missing(exc: Exception) -> bool:
    """Whether a minio error means the object (or bucket) does not exist.

    rclone answers a GET of a missing key with an XML error whose content type
    (``text/xml``) the minio SDK does not take for XML: it raises
    ``InvalidResponseError`` with the status code instead of ``S3Error``.
    """
    if isinstance(exc, S3Error):
        return exc.code in _MISSING_CODES
    if isinstance(exc, InvalidResponseError):
        body = str(getattr(exc, "_body", "") or "")
        return getattr(exc, "_code", None) == 404 and "NoSuchBucket" not in body
    return False


@dataclass(frozen=True)
class StoreLocation:
    """Where a bucket lives: parsed from ``s3://ACCESS:SECRET@host:port[?tls=1&region=...]``."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    secure: bool
    region: str

    @classmethod
    def from_url(cls, url: str) -> StoreLocation:
        """Raises ``ConfigurationError`` naming what is missing."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigurationError(
                f"store URL {redact_url(url)!r} has a bad host or port ({exc}); "
                "expected s3://ACCESS:SECRET@host:port"
            ) from exc
        if parts.scheme != "s3" or not parts.hostname or port is None:
            raise ConfigurationError(
                f"store URL {redact_url(url)!r} is not s3://ACCESS:SECRET@host:port; "
                "start the embedded one with `fairstream dev up`"
            )
        if not parts.username or not parts.password:
            raise ConfigurationError(
                f"store URL {redact_url(url)!r} has no ACCESS:SECRET credentials"
            )
        query = parse_qs(parts.query)
        return cls(
            endpoint=f"[{parts.hostname}]:{port}"
            if ":" in parts.hostname
            else f"{parts.hostname}:{port}",
            access_key=unquote(parts.username),
            secret_key=unquote(parts.password),
            secure=query.get("tls", ["0"])[0] in {"1", "true", "yes"},
            # The minio SDK must be told the region against rclone (DESIGN.md).
            region=query.get("region", ["us-east-1"])[0],
        )

    def reached_at(self, url: str) -> StoreLocation:
        """The same store, credentials and region at the endpoint clients reach,
        ``https://s3.example.org``: presigned with it, a URL's signature matches the Host
        header a client sends there. Raises ``ConfigurationError`` for another kind of URL."""
        endpoint, secure = public_endpoint(url)
        return replace(self, endpoint=endpoint, secure=secure)


def public_endpoint(url: str) -> tuple[str, bool]:
    """The ``host[:port]`` and TLS flag of a store endpoint given as ``http(s)://HOST[:PORT]``.

    Raises ``ConfigurationError`` for anything else (credentials, a path, a query: the S3
    client signs for a bare endpoint, and the store's credentials come from the store URL).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(
            f"store public URL {redact_url(url)!r} has a bad host or port ({exc}); "
            "give http(s)://HOST[:PORT], e.g. https://s3.example.org"
        ) from exc
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ConfigurationError(
            f"store public URL {redact_url(url)!r} is not http(s)://HOST[:PORT] (no "
            "credentials, path or query); give the store's endpoint as clients reach it, "
            "e.g. https://s3.example.org"
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return (host if port is None else f"{host}:{port}"), parts.scheme == "https"


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs; never raises."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def open_store(url: str | StoreLocation, bucket: str) -> ObjectStore:
    """The bucket behind ``url``: ``s3://ACCESS:SECRET@host:port`` (MinIO, any S3) or
    ``memory://NAME`` (this process only: tests and dry runs). The one place an adapter
    is chosen. Raises ``ConfigurationError`` naming what is wrong with the URL."""
    if isinstance(url, StoreLocation):
        return S3Store(url, bucket)
    if urlsplit(url).scheme == "memory":
        return MemoryStore(bucket, space=urlsplit(url).netloc or "default")
    return S3Store(StoreLocation.from_url(url), bucket)


class _S3Reader:
    """An object's bytes (or a range of them) as the store sends them, read piece by piece.

    ``size`` is how many bytes the store announced. ``close()`` gives the connection back;
    call it also when stopping early.
    """

    def __init__(
        self,
        response: BaseHTTPResponse,
        size: int,
        unavailable: Callable[[Exception], StoreUnavailableError],
    ) -> None:
        self.size = size
        self._response = response
        self._unavailable = unavailable

    def read(self, amount: int) -> bytes:
        """Up to ``amount`` bytes, fewer only at the end, ``b""`` after it.

        Raises ``StoreUnavailableError`` when the store breaks off before ``size`` bytes.
        """
        try:
            return self._response.read(amount)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable(exc) from exc

    def close(self) -> None:
        """Give the connection back (dropped if the body was not read to its end)."""
        self._response.close()
        self._response.release_conn()


class S3Store:
    """``ObjectStore`` on S3 through the minio SDK; IO errors become ``StoreUnavailableError``."""

    def __init__(self, location: StoreLocation, bucket: str) -> None:
        self.location = location
        self.bucket = bucket
        self._client = Minio(
            location.endpoint,
            access_key=location.access_key,
            secret_key=location.secret_key,
            secure=location.secure,
            region=location.region,
            http_client=urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=5.0, read=60.0),
                retries=urllib3.Retry(total=2, backoff_factor=0.2),
                maxsize=16,
            ),
        )

    def _unavailable(self, action: str, key: str, exc: Exception) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"object store {self.location.endpoint} failed to {action} {self.bucket}/{key}: {exc}",
            retry_after=2.0,
        )

    def ensure_bucket(self) -> None:
        try:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                return
            raise self._unavailable("create bucket", "", exc) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable("create bucket", "", exc) from exc

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        try:
            self._client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable("write", key, exc) from exc
        record_store_write(self.bucket, key)

    def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        """Upload a file in parts, never holding it whole in memory."""
        try:
            self._client.fput_object(self.bucket, key, str(path), content_type=content_type)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable("write", key, exc) from exc
        record_store_write(self.bucket, key)

    def put_stream(self, key: str, source: ByteSource, size: int, *, content_type: str) -> None:
        """Upload ``size`` bytes read from ``source``, in parts of ``STREAM_PART_SIZE``.

        When a read raises, nothing is stored: minio aborts a multipart upload it began
        (``put_object``'s ``except``), and a single-part object is never sent. An upload
        the process did not live to abort stays in the store, never under ``key``: MinIO
        deletes it after a day (``stale_uploads_expiry``), on S3 a lifecycle rule's
        ``AbortIncompleteMultipartUpload`` does, ``rclone serve s3`` forgets it on restart.
        """
        try:
            self._client.put_object(
                self.bucket,
                key,
                cast(BinaryIO, source),  # minio calls only read()
                size,
                content_type=content_type,
                part_size=STREAM_PART_SIZE,
                # minio's parallel part uploads leak their threads, each holding a part,
                # when a read raises (7.2.20 never stops the pool): one part at a time,
                # while UploadFeed queues the next.
                num_parallel_uploads=1,
            )
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable("write", key, exc) from exc
        record_store_write(self.bucket, key)

    def get(
        self, key: str, *, complete: Callable[[bytes], bool] | None = None
    ) -> StoredBody | None:
        """The object's bytes and metadata, or None if there is no such object.

        A read that races an overwrite of the same key can be torn on the
        embedded store: rclone rewrites the file in place, and a reader gets a
        prefix of the new bytes with a matching ETag, or a connection that
        breaks off (measured: 78 short bodies and 786 broken reads in 2,091
        GETs while a writer rewrote the key in a loop). So a body that broke
        off, whose md5 is not its ETag, or that ``complete`` refuses (for a
        JSON document: it must parse, which no strict prefix of one does) is
        read again. Raises ``StoreUnavailableError`` when it stays torn or the
        store fails.
        """
        last_error: Exception | None = None
        for attempt in range(TORN_READ_ATTEMPTS):
            try:
                body = self._get_once(key)
                if body is not None and complete is not None and not complete(body.data):
                    raise _TornReadError(f"{key} is incomplete (read during a write?)")
            except _TornReadError as exc:
                last_error = exc
                time.sleep(0.005 * 2**attempt)
                continue
            return body
        raise self._unavailable("read", key, last_error or ValueError("torn read"))

    def _get_once(self, key: str) -> StoredBody | None:
        response = None
        try:
            response = self._client.get_object(self.bucket, key)
            data = response.read()
            modified = response.headers.get("Last-Modified")
            etag = (response.headers.get("ETag") or "").strip('"')
        except urllib3.exceptions.ProtocolError as exc:
            raise _TornReadError(str(exc)) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            if _is_missing(exc):
                return None
            raise self._unavailable("read", key, exc) from exc
        finally:
            if response is not None:
                response.close()
                response.release_conn()
        # A single-part upload's ETag is the md5 of its bytes (MinIO and rclone alike);
        # multipart ETags ("...-N") are not, and are not checked.
        if _PLAIN_ETAG.fullmatch(etag) and hashlib.md5(data).hexdigest() != etag:  # noqa: S324
            raise _TornReadError(f"body of {key} does not match its ETag {etag}")
        return StoredBody(
            data=data,
            last_modified=parsedate_to_datetime(modified) if modified else datetime.now(UTC),
            etag=etag,
        )

    def reader(self, key: str, *, offset: int = 0, length: int | None = None) -> _S3Reader | None:
        """A reader of the object's bytes from ``offset`` (``length`` of them, or to its
        end), never holding them whole in memory; None if there is no such object.

        Unlike ``get``, nothing here detects a read torn by a concurrent overwrite: the
        caller checks what it read (a zip against its signed digests). Raises
        ``StoreUnavailableError``.
        """
        if offset < 0 or (length is not None and length < 1):
            raise ValueError(f"cannot read {length} bytes from offset {offset} of {key}")
        try:
            # minio reads length 0 as "to the end".
            response = self._client.get_object(self.bucket, key, offset=offset, length=length or 0)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            if _is_missing(exc):
                return None
            raise self._unavailable("read", key, exc) from exc
        announced = response.headers.get("Content-Length")
        if announced is None or not announced.isdigit():
            response.close()
            response.release_conn()
            raise self._unavailable("read", key, ValueError("no Content-Length in the answer"))
        return _S3Reader(response, int(announced), lambda exc: self._unavailable("read", key, exc))

    def stat(self, key: str) -> StoredObject | None:
        """Size, modification time and etag of an object, or None if there is none."""
        try:
            info = self._client.stat_object(self.bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            if _is_missing(exc):
                return None
            raise self._unavailable("stat", key, exc) from exc
        if info.last_modified is None or info.size is None:
            raise self._unavailable("stat", key, ValueError("no size or Last-Modified"))
        return StoredObject(size=info.size, last_modified=info.last_modified, etag=info.etag or "")

    def delete(self, key: str) -> None:
        """Remove an object; removing one that is not there is not an error."""
        try:
            self._client.remove_object(self.bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            if _is_missing(exc):
                return
            raise self._unavailable("delete", key, exc) from exc

    def list_keys(self, prefix: str) -> list[str]:
        """The keys of every object under ``prefix``."""
        try:
            return [
                str(item.object_name)
                for item in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
            ]
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable("list", prefix, exc) from exc

    def list_objects(self, prefix: str) -> list[tuple[str, StoredObject]]:
        """Every object under ``prefix`` with its size and modification time (one listing)."""
        try:
            found = []
            for item in self._client.list_objects(self.bucket, prefix=prefix, recursive=True):
                found.append(
                    (
                        str(item.object_name),
                        StoredObject(
                            size=item.size or 0,
                            last_modified=item.last_modified or datetime.now(UTC),
                            etag=(item.etag or "").strip('"'),
                        ),
                    )
                )
            return found
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable("list", prefix, exc) from exc

    def presigned_url(self, key: str, *, expires: timedelta = timedelta(minutes=15)) -> str:
        """A URL that lets anyone GET the object until it expires; computed locally."""
        try:
            return str(self._client.presigned_get_object(self.bucket, key, expires=expires))
        except (MinioException, ValueError) as exc:
            raise self._unavailable("presign", key, exc) from exc
