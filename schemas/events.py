"""The events fairstream carries, as frozen dataclasses, and their Avro encoding.

Constructing an event checks its shape (names safe as object keys, digests,
time zones); ``check_consistency`` checks what a release's parts say about each
other, after its signatures are verified.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, ClassVar

import orjson

from schemas.codec import Decoder, decode, encode, load_schema, schema_family
from schemas.errors import (
    MalformedEventError,
    UnsafeNameError,
    WrongPackageError,
)
from schemas.names import check_jurisdiction, check_package_name, check_safe_text, is_package_name
from schemas.versions import drupal_to_composer

HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: The largest zip a node fetches and a publishing service takes, unless configured otherwise
#: (``--max-artifact-size``): a larger release is refused before download.
DEFAULT_MAX_ARTIFACT_SIZE = 1 << 30
HEX_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_VERSION_TEXT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


def check_version_text(version: str, what: str = "version") -> None:
    """Refuse a version that is unsafe as an object key or URL path segment.

    Raises ``UnsafeNameError``.
    """
    check_safe_text(version, what)
    if not _VERSION_TEXT.fullmatch(version):
        raise UnsafeNameError(
            f"{what} {version!r} has characters outside letters, digits and . _ + -"
        )


def _check_time(moment: datetime, field: str, problems: list[str]) -> None:
    if moment.tzinfo is None:
        problems.append(f"{field} has no time zone (use UTC)")
    elif moment.microsecond % 1000:
        problems.append(f"{field} is finer than the millisecond events carry")


def _raise_if(problems: list[str], what: str) -> None:
    if problems:
        raise MalformedEventError(f"{what} is invalid: " + "; ".join(problems))


@dataclass(frozen=True)
class Artifact:
    """A release zip as its publisher saw it."""

    sha256: str
    sha1: str
    size: int
    origin_url: str


@dataclass(frozen=True)
class ReleasePublished:
    """One version of one package, released by its publisher."""

    family: ClassVar[str] = "release_published"

    package: str
    drupal_version: str
    version: str
    published_at: datetime
    artifact: Artifact
    composer: dict[str, Any]
    sequence: int = 0
    #: A dev version's new build: the sha256 of the build it replaces (None: a first build).
    rebuild_of: str | None = None

    def __post_init__(self) -> None:
        check_safe_text(self.package, "package name")
        check_version_text(self.version)
        check_version_text(self.drupal_version, "drupal_version")
        problems: list[str] = []
        if not is_package_name(self.package):
            problems.append(f"package {self.package!r} is not a Composer name like drupal/token")
        if not HEX_SHA256.fullmatch(self.artifact.sha256):
            problems.append("artifact.sha256 is not 64 lower-case hex digits")
        if not HEX_SHA1.fullmatch(self.artifact.sha1):
            problems.append("artifact.sha1 is not 40 lower-case hex digits")
        if self.artifact.size < 0:
            problems.append(f"artifact.size is negative ({self.artifact.size})")
        if not self.artifact.origin_url.startswith(("http://", "https://")):
            problems.append(f"artifact.origin_url {self.artifact.origin_url!r} is not http(s)")
        if self.sequence < 0:
            problems.append(f"sequence is negative ({self.sequence})")
        if self.rebuild_of is not None and not HEX_SHA256.fullmatch(self.rebuild_of):
            problems.append("rebuild_of is not 64 lower-case hex digits")
        _check_time(self.published_at, "published_at", problems)
        _raise_if(problems, f"release event for {self.package}")

    def to_bytes(self) -> bytes:
        """The event's single-object encoding: the payload that gets signed."""
        return encode(
            load_schema(self.family),
            {
                "rebuild_of": self.rebuild_of,
                "package": self.package,
                "drupal_version": self.drupal_version,
                "version": self.version,
                "sequence": self.sequence,
                "published_at": self.published_at,
                "artifact": {
                    "sha256": self.artifact.sha256,
                    "sha1": self.artifact.sha1,
                    "size": self.artifact.size,
                    "origin_url": self.artifact.origin_url,
                },
                "composer": orjson.dumps(self.composer, option=orjson.OPT_SORT_KEYS).decode(),
            },
        )

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ReleasePublished:
        try:
            composer = orjson.loads(record["composer"])
        except orjson.JSONDecodeError as exc:
            raise MalformedEventError(f"release event's composer field is not JSON: {exc}") from exc
        if not isinstance(composer, dict):
            raise MalformedEventError("release event's composer field is not a JSON object")
        return cls(
            package=record["package"],
            drupal_version=record["drupal_version"],
            version=record["version"],
            sequence=record["sequence"],
            published_at=record["published_at"],
            artifact=Artifact(**record["artifact"]),
            composer=composer,
            rebuild_of=record.get("rebuild_of"),
        )

    @classmethod
    def from_bytes(cls, payload: bytes) -> ReleasePublished:
        """Decode any known version and validate; raises ``MalformedEventError``."""
        _, record = decode(payload, schema_family(cls.family))
        return cls.from_record(record)


@dataclass(frozen=True)
class ReleaseYanked:
    """A version withdrawn from metadata; its artifact stays for existing lock files."""

    family: ClassVar[str] = "release_yanked"

    package: str
    version: str
    sequence: int
    reason: str
    yanked_at: datetime

    def __post_init__(self) -> None:
        check_package_name(self.package)
        check_version_text(self.version)
        problems: list[str] = []
        _check_time(self.yanked_at, "yanked_at", problems)
        _raise_if(problems, f"yank of {self.package}")

    def to_bytes(self) -> bytes:
        return encode(load_schema(self.family), _fields(self))

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ReleaseYanked:
        return cls(**record)


@dataclass(frozen=True)
class ReleaseExpunged:
    """A version deleted everywhere, metadata and artifact (a known severe defect)."""

    family: ClassVar[str] = "release_expunged"

    package: str
    version: str
    sha256: str
    sequence: int
    reason: str
    expunged_at: datetime

    def __post_init__(self) -> None:
        check_package_name(self.package)
        check_version_text(self.version)
        problems: list[str] = []
        if not HEX_SHA256.fullmatch(self.sha256):
            problems.append("sha256 is not 64 lower-case hex digits")
        _check_time(self.expunged_at, "expunged_at", problems)
        _raise_if(problems, f"expunge of {self.package}")

    def to_bytes(self) -> bytes:
        return encode(load_schema(self.family), _fields(self))

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ReleaseExpunged:
        return cls(**record)


@dataclass(frozen=True)
class AdvisorySource:
    name: str
    remote_id: str


@dataclass(frozen=True)
class SecurityAdvisory:
    """A security advisory for one package, in Composer's security-advisories terms."""

    family: ClassVar[str] = "security_advisory"

    package: str
    sequence: int
    advisory_id: str
    affected_versions: str
    title: str
    link: str
    reported_at: str
    sources: tuple[AdvisorySource, ...]
    published_at: datetime
    cve: str | None = None
    severity: str | None = None

    def __post_init__(self) -> None:
        check_package_name(self.package)
        check_version_text(self.advisory_id, "advisory_id")
        problems: list[str] = []
        if not self.link.startswith(("http://", "https://")):
            problems.append(f"link {self.link!r} is not http(s)")
        _check_time(self.published_at, "published_at", problems)
        _raise_if(problems, f"advisory {self.advisory_id}")

    def to_bytes(self) -> bytes:
        fields = _fields(self)
        fields["sources"] = [s.__dict__ for s in self.sources]
        return encode(load_schema(self.family), fields)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SecurityAdvisory:
        sources = tuple(AdvisorySource(**s) for s in record.pop("sources"))
        return cls(sources=sources, **record)


PackageEvent = ReleasePublished | ReleaseYanked | ReleaseExpunged | SecurityAdvisory
PACKAGE_EVENT_TYPES: tuple[type[PackageEvent], ...] = (
    ReleasePublished,
    ReleaseYanked,
    ReleaseExpunged,
    SecurityAdvisory,
)


@cache
def _package_decoder() -> Decoder:
    return Decoder(*(schema_family(kind.family) for kind in PACKAGE_EVENT_TYPES))


def decode_package_event(payload: bytes) -> PackageEvent:
    """Decode a publisher's event of any type and known schema version.

    Raises ``UnknownSchemaError``, ``MalformedEventError`` or ``UnsafeNameError``.
    """
    writer, record = _package_decoder().decode(payload)
    for kind in PACKAGE_EVENT_TYPES:
        if writer.family == kind.family:
            try:
                return kind.from_record(record)
            except (TypeError, KeyError) as exc:
                raise MalformedEventError(f"{kind.__name__} record is incomplete: {exc}") from exc
    raise MalformedEventError(f"{writer.name} is not a package event")  # pragma: no cover


def check_consistency(event: PackageEvent) -> None:
    """Check that a release's parts agree: the metadata is of this package and version.

    Raises ``WrongPackageError`` when the Composer metadata names another
    package (wrong software), ``MalformedEventError`` or ``InvalidVersionError``
    when the versions disagree.
    """
    if not isinstance(event, ReleasePublished):
        return
    named = event.composer.get("name")
    if named != event.package:
        raise WrongPackageError(
            f"release event for {event.package} carries Composer metadata of {named!r}: "
            "the metadata or the artifact belongs to another package"
        )
    unset = sorted(key for key, value in event.composer.items() if value == "__unset")
    if unset:
        raise MalformedEventError(
            f"{event.package} {event.version}: Composer metadata {unset} has the value "
            "'__unset', which the minified composer/2.0 format reads as 'key removed'"
        )
    expected = drupal_to_composer(event.drupal_version)
    if event.version != expected or event.composer.get("version") != event.version:
        raise MalformedEventError(
            f"{event.package}: Drupal version {event.drupal_version} maps to {expected}, "
            f"the event says {event.version} and its metadata {event.composer.get('version')!r}"
        )


#: How much of a refused record its rejection carries: enough to audit what was sent, small
#: enough that a rejection is always recordable, whatever the size of what it refuses.
REJECTED_PREFIX_BYTES = 64 * 1024
#: How much of a refused record's key and of the reason's detail a rejection carries.
REJECTED_KEY_CHARS = 512
REJECTED_DETAIL_CHARS = 2048


@dataclass(frozen=True)
class ReleaseRejected:
    """A node's record of an event it refused: the first ``REJECTED_PREFIX_BYTES`` of the
    refused bytes (``record``), their whole size and SHA-256. Build one with ``refusing``."""

    region: str
    topic: str
    partition: int
    offset: int
    key: str | None
    reason: str
    detail: str
    rejected_at: datetime
    record: bytes
    record_size: int
    record_sha256: str

    @classmethod
    # Long because a rejection record carries each of these fields, named at the call.
    def refusing(
        cls,
        value: bytes,
        *,
        region: str,
        topic: str,
        partition: int,
        offset: int,
        key: str | None,
        reason: str,
        detail: str,
        rejected_at: datetime,
    ) -> ReleaseRejected:
        """The rejection of ``value``, bounded whatever ``value``, its key and detail are."""
        return cls(
            region=region,
            topic=topic,
            partition=partition,
            offset=offset,
            key=None if key is None else _bounded(key, REJECTED_KEY_CHARS),
            reason=reason,
            detail=_bounded(detail, REJECTED_DETAIL_CHARS),
            rejected_at=rejected_at,
            record=value[:REJECTED_PREFIX_BYTES],
            record_size=len(value),
            record_sha256=hashlib.sha256(value).hexdigest(),
        )

    @property
    def truncated(self) -> bool:
        """Whether ``record`` is only a prefix of what was refused."""
        return self.record_size > len(self.record)

    def to_bytes(self) -> bytes:
        return encode(load_schema("release_rejected"), self.__dict__)

    @classmethod
    def from_bytes(cls, data: bytes) -> ReleaseRejected:
        _, record = decode(data, schema_family("release_rejected"))
        if record.get("record_size", -1) < 0:  # a v1 record: it carried the whole record
            record["record_size"] = len(record["record"])
            record["record_sha256"] = hashlib.sha256(record["record"]).hexdigest()
        return cls(**record)


def _bounded(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters in all)"


def _fields(event: object) -> dict[str, Any]:
    return dict(event.__dict__)


def utc_now() -> datetime:
    """Now, in UTC, at the millisecond precision events carry."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class ReplicaAvailable:
    """A region announces a verified copy of an artifact: a source other regions may fetch from."""

    node_id: str
    region: str
    package: str
    version: str
    sha256: str
    size: int
    url: str
    verified_at: datetime
    #: The announcing node's declared jurisdiction (None: not declared).
    jurisdiction: str | None = None

    def __post_init__(self) -> None:
        if self.jurisdiction is not None:
            check_jurisdiction(self.jurisdiction)

    def to_bytes(self) -> bytes:
        return encode(load_schema("replica_available"), self.__dict__)

    @classmethod
    def from_bytes(cls, data: bytes) -> ReplicaAvailable:
        """Raises ``MalformedEventError`` or ``UnknownSchemaError``."""
        _, record = decode(data, schema_family("replica_available"))
        return cls(**record)


@dataclass(frozen=True)
class DownloadCount:
    package: str
    version: str
    downloads: int
    sha256: str | None = None


@dataclass(frozen=True)
class DownloadCounts:
    """Downloads a region served in one period, per package version."""

    node_id: str
    region: str
    period_start: datetime
    period_end: datetime
    counts: tuple[DownloadCount, ...]

    def to_bytes(self) -> bytes:
        record = {**self.__dict__, "counts": [count.__dict__ for count in self.counts]}
        return encode(load_schema("download_counts"), record)

    @classmethod
    def from_bytes(cls, data: bytes) -> DownloadCounts:
        """Reads every version of the family. Raises ``MalformedEventError``."""
        _, record = decode(data, schema_family("download_counts"))
        counts = tuple(DownloadCount(**count) for count in record.pop("counts"))
        return cls(**record, counts=counts)
