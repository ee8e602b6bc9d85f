"""Publishing a release: inspect the zip, build the signed event, produce it to the releases topic."""

from __future__ import annotations

import hashlib
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from connectors.kafka_producers import Delivered, EventProducer
from schemas.errors import ConfigurationError, UnsafeNameError, WrongPackageError
from schemas.events import Artifact, ReleasePublished, utc_now
from schemas.names import PACKAGE_NAME
from schemas.signing import SigningKey, seal
from schemas.version_entries import version_entry
from schemas.versions import drupal_to_composer

#: Fields of a project's own composer.json that the version entry carries over.
CARRIED_FIELDS = (
    "description",
    "type",
    "license",
    "keywords",
    "homepage",
    "authors",
    "support",
    "require",
    "require-dev",
    "conflict",
    "replace",
    "provide",
    "suggest",
    "extra",
)


#: A project's composer.json is a few KB; more is a zip bomb, not metadata.
MAX_COMPOSER_JSON = 1 << 20


class PublishInputError(ConfigurationError):
    """The release to publish is not acceptable (bad zip, name or version)."""


@dataclass(frozen=True)
class ZipDigest:
    """What the publisher learns of a release zip before signing it."""

    sha256: str
    sha1: str
    size: int
    top_directory: str
    composer_json: dict[str, Any] | None


def inspect_zip(path: Path) -> ZipDigest:
    """Hash a release zip and check its shape: exactly one top directory, as Drupal's zips.

    Raises ``PublishInputError`` saying what is wrong with the file.
    """
    if not path.is_file():
        raise PublishInputError(f"zip {path} does not exist or is not a file")
    sha256, sha1, size = hashlib.sha256(), hashlib.sha1(), 0  # noqa: S324 - Composer's shasum
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            sha256.update(chunk)
            sha1.update(chunk)
            size += len(chunk)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            unsafe = [
                name
                for name in names
                if name.startswith("/") or "\\" in name or "\x00" in name or ".." in name.split("/")
            ]
            if unsafe:
                raise UnsafeNameError(
                    f"zip {path} has entries unsafe to extract ({unsafe[:3]}): absolute paths, "
                    "'..' segments or backslashes; rebuild the zip"
                )
            tops = {name.split("/", 1)[0] for name in names if name.strip("/")}
            if len(tops) != 1 or not any("/" in name for name in names):
                raise PublishInputError(
                    f"zip {path} must hold exactly one top directory (like token/...), "
                    f"found {sorted(tops)[:5] or 'nothing'}"
                )
            top = tops.pop()
            composer_json = None
            if f"{top}/composer.json" in names:
                if archive.getinfo(f"{top}/composer.json").file_size > MAX_COMPOSER_JSON:
                    raise PublishInputError(
                        f"{path}: {top}/composer.json is over {MAX_COMPOSER_JSON} bytes"
                    )
                try:
                    composer_json = orjson.loads(archive.read(f"{top}/composer.json"))
                except orjson.JSONDecodeError as exc:
                    raise PublishInputError(
                        f"{path}: {top}/composer.json is not JSON: {exc}"
                    ) from exc
    except zipfile.BadZipFile as exc:
        raise PublishInputError(f"{path} is not a zip file: {exc}") from exc
    return ZipDigest(sha256.hexdigest(), sha1.hexdigest(), size, top, composer_json)


def build_release(
    *,
    package: str,
    drupal_version: str,
    zip_path: Path,
    origin_url: str,
    metadata: Mapping[str, Any] | None = None,
    published_at: datetime | None = None,
    sequence: int | None = None,
    rebuild_of: str | None = None,
) -> ReleasePublished:
    """The release event for a zip; metadata from its composer.json, overridden by ``metadata``.

    Raises ``PublishInputError`` or ``InvalidVersionError``.
    """
    if not PACKAGE_NAME.fullmatch(package):
        raise PublishInputError(f"{package!r} is not a Composer package name like drupal/token")
    if not origin_url.startswith(("http://", "https://")):
        raise PublishInputError(f"origin URL {origin_url!r} must be http:// or https://")
    digest = inspect_zip(zip_path)
    project = package.split("/", 1)[1]
    if digest.top_directory != project:
        raise WrongPackageError(
            f"the zip of {package} holds {[digest.top_directory]}, not one {project}/ "
            "directory; nodes refuse a release whose zip is another project's: check package "
            "and zip"
        )
    carried = {k: v for k, v in (digest.composer_json or {}).items() if k in CARRIED_FIELDS}
    entry = version_entry(
        name=package,
        drupal_version=drupal_version,
        sha1=digest.sha1,
        metadata={**carried, **(metadata or {})},
    )
    if drupal_version.endswith("-dev"):
        # A dev release is rebuilt on every commit: its reference names the build, so that
        # `composer update` sees each new build and installs it (nodes serve it as signed).
        entry["dist"] = {**entry["dist"], "reference": digest.sha1}
    return ReleasePublished(
        package=package,
        drupal_version=drupal_version,
        version=drupal_to_composer(drupal_version),
        published_at=_to_millisecond(published_at) if published_at else utc_now(),
        artifact=Artifact(
            sha256=digest.sha256, sha1=digest.sha1, size=digest.size, origin_url=origin_url
        ),
        composer=entry,
        sequence=next_sequence() if sequence is None else sequence,
        rebuild_of=rebuild_of,
    )


_last_sequence = 0


def next_sequence() -> int:
    """A per-package sequence number: microseconds since the epoch, strictly increasing here.

    Any strictly increasing number per package will do for nodes; time makes it
    so across restarts of the publisher as long as its clock does not go back.
    """
    global _last_sequence
    _last_sequence = max(time.time_ns() // 1000, _last_sequence + 1)
    return _last_sequence


def _to_millisecond(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise PublishInputError(f"published_at {moment.isoformat()} has no time zone; give UTC")
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def publish_release(
    release: ReleasePublished,
    keys: Sequence[SigningKey],
    producer: EventProducer,
    topic: str,
) -> Delivered:
    """Sign the release with every key and produce it, keyed by package name.

    Returns where the broker stored it. Raises ``BrokerUnavailableError``.
    """
    value = seal(release.to_bytes(), keys)
    return producer.produce(topic, release.package.encode(), value)
