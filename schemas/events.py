"""The events fairstream carries, as frozen dataclasses, and their Avro encoding."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.codec import decode, encode, load_schema
from schemas.errors import MalformedEventError

PACKAGE_NAME = re.compile(r"^[a-z0-9]([_.-]?[a-z0-9]+)*/[a-z0-9](([_.]|-{1,2})?[a-z0-9]+)*$")
HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
HEX_SHA1 = re.compile(r"^[0-9a-f]{40}$")


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

    package: str
    drupal_version: str
    version: str
    published_at: datetime
    artifact: Artifact
    composer: dict[str, Any]

    def __post_init__(self) -> None:
        problems = []
        if not PACKAGE_NAME.fullmatch(self.package):
            problems.append(f"package {self.package!r} is not a Composer name like drupal/token")
        if not HEX_SHA256.fullmatch(self.artifact.sha256):
            problems.append("artifact.sha256 is not 64 lower-case hex digits")
        if not HEX_SHA1.fullmatch(self.artifact.sha1):
            problems.append("artifact.sha1 is not 40 lower-case hex digits")
        if self.artifact.size < 0:
            problems.append(f"artifact.size is negative ({self.artifact.size})")
        if not self.artifact.origin_url.startswith(("http://", "https://")):
            problems.append(f"artifact.origin_url {self.artifact.origin_url!r} is not http(s)")
        if self.published_at.tzinfo is None:
            problems.append("published_at has no time zone (use UTC)")
        elif self.published_at.microsecond % 1000:
            problems.append("published_at is finer than the millisecond events carry")
        if self.composer.get("name") != self.package:
            problems.append("composer.name differs from the event's package")
        if self.composer.get("version") != self.version:
            problems.append("composer.version differs from the event's version")
        if problems:
            raise MalformedEventError("release event is invalid: " + "; ".join(problems))

    def to_bytes(self) -> bytes:
        """The event's single-object encoding: the payload that gets signed."""
        return encode(
            load_schema("release_published"),
            {
                "package": self.package,
                "drupal_version": self.drupal_version,
                "version": self.version,
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
    def from_bytes(cls, payload: bytes) -> ReleasePublished:
        """Decode and validate; raises ``MalformedEventError`` saying what is wrong."""
        _, record = decode(payload, load_schema("release_published"))
        try:
            composer = orjson.loads(record["composer"])
        except orjson.JSONDecodeError as exc:
            raise MalformedEventError(f"release event's composer field is not JSON: {exc}") from exc
        if not isinstance(composer, dict):
            raise MalformedEventError("release event's composer field is not a JSON object")
        artifact = record["artifact"]
        return cls(
            package=record["package"],
            drupal_version=record["drupal_version"],
            version=record["version"],
            published_at=record["published_at"],
            artifact=Artifact(
                sha256=artifact["sha256"],
                sha1=artifact["sha1"],
                size=artifact["size"],
                origin_url=artifact["origin_url"],
            ),
            composer=composer,
        )


@dataclass(frozen=True)
class ReleaseRejected:
    """A node's record of an event it refused, with the refused bytes."""

    region: str
    topic: str
    partition: int
    offset: int
    key: str | None
    reason: str
    detail: str
    rejected_at: datetime
    record: bytes

    def to_bytes(self) -> bytes:
        return encode(load_schema("release_rejected"), self.__dict__)

    @classmethod
    def from_bytes(cls, data: bytes) -> ReleaseRejected:
        _, record = decode(data, load_schema("release_rejected"))
        return cls(**record)


def utc_now() -> datetime:
    """Now, in UTC, at the millisecond precision events carry."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
