"""What a request document must hold, and what nodes would accept of it: fields, names,
versions, advisories and the built release's artifact, checked before anything is produced.

A malformed document is a ``BadRequestError`` (400); a well-formed one nodes would refuse an
``UnacceptableReleaseError`` (422).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import orjson

from schemas.errors import RejectedError
from schemas.events import (
    HEX_SHA1,
    HEX_SHA256,
    AdvisorySource,
    ReleasePublished,
    check_version_text,
)
from schemas.names import check_package_name
from schemas.versions import drupal_to_composer
from services.publishing.errors import BadRequestError, UnacceptableReleaseError

_DRUPAL_VERSION_SHAPE = re.compile(r"\d+\.x-")
_CVE = re.compile(r"CVE-\d{4}-\d{4,}")
_SEVERITIES = ("low", "medium", "high", "critical")


def parse_document(body: bytes) -> dict[str, Any]:
    """A JSON request body as an object; raises ``BadRequestError``."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError("malformed-request", f"the body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadRequestError("malformed-request", "the body is JSON but not an object")
    return document


def check_fields(document: Mapping[str, Any], required: set[str], optional: set[str]) -> None:
    """The document has every ``required`` field and no field outside ``required`` and
    ``optional``; raises ``BadRequestError`` naming what is missing and what is unknown."""
    missing = sorted(required - document.keys())
    unknown = sorted(document.keys() - required - optional)
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown {', '.join(unknown)}")
    if problems:
        raise BadRequestError(
            "malformed-request",
            f"fields: {'; '.join(problems)}; this request takes {', '.join(sorted(required))}"
            + (f" and optionally {', '.join(sorted(optional))}" if optional else ""),
        )


def required_text(document: Mapping[str, Any], name: str) -> str:
    """The field ``name``, a non-empty string; raises ``BadRequestError``."""
    value = document[name]
    if not isinstance(value, str) or not value.strip():
        raise BadRequestError("malformed-request", f"field {name} must be a non-empty string")
    return value


def optional_text(document: Mapping[str, Any], name: str) -> str | None:
    """The field ``name`` if given (not null), a non-empty string; raises ``BadRequestError``."""
    if document.get(name) is None:
        return None
    return required_text(document, name)


@dataclass(frozen=True)
class ReleaseRequest:
    """What a release request asks for; ``sha256``, ``sha1`` and ``size`` are what the caller
    expects the artifact to be, if it says."""

    package: str
    drupal_version: str
    origin_url: str
    metadata: dict[str, Any] | None = None
    sha256: str | None = None
    sha1: str | None = None
    size: int | None = None

    REQUIRED: ClassVar[set[str]] = {"package", "drupal_version", "origin_url"}
    OPTIONAL: ClassVar[set[str]] = {"metadata", "sha256", "sha1", "size"}

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> ReleaseRequest:
        """From a JSON body; raises ``BadRequestError``."""
        check_fields(document, cls.REQUIRED, cls.OPTIONAL)
        metadata = document.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise BadRequestError("malformed-request", "field metadata must be a JSON object")
        size = document.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
            raise BadRequestError("malformed-request", "field size must be an integer")
        return cls(
            package=required_text(document, "package"),
            drupal_version=required_text(document, "drupal_version"),
            origin_url=required_text(document, "origin_url"),
            metadata=metadata,
            sha256=optional_text(document, "sha256"),
            sha1=optional_text(document, "sha1"),
            size=size,
        )

    @classmethod
    def from_form(cls, fields: Mapping[str, str]) -> ReleaseRequest:
        """From an upload form's text fields (``metadata`` as JSON text); raises ``BadRequestError``."""
        document: dict[str, Any] = dict(fields)
        if "metadata" in document:
            document["metadata"] = parse_document(document["metadata"].encode())
        if "size" in document:
            if not document["size"].isdigit():
                raise BadRequestError("malformed-request", "field size must be an integer")
            document["size"] = int(document["size"])
        return cls.from_document(document)

    def check(self) -> None:
        """Refuse, before any download, what would make the release invalid (422)."""
        check_package(self.package)
        try:
            check_version_text(self.drupal_version, "drupal_version")
            drupal_to_composer(self.drupal_version)
        except RejectedError as exc:
            raise UnacceptableReleaseError(exc.reason, str(exc)) from exc
        problems = []
        if not self.origin_url.startswith(("http://", "https://")):
            problems.append(f"origin_url {self.origin_url!r} is not http:// or https://")
        if self.sha256 is not None and not HEX_SHA256.fullmatch(self.sha256):
            problems.append("sha256 is not 64 lower-case hex digits")
        if self.sha1 is not None and not HEX_SHA1.fullmatch(self.sha1):
            problems.append("sha1 is not 40 lower-case hex digits")
        if self.size is not None and self.size < 0:
            problems.append(f"size {self.size} is negative")
        if problems:
            raise UnacceptableReleaseError("malformed", "; ".join(problems))


def check_package(package: str) -> None:
    """``package`` is a name nodes accept; raises ``UnacceptableReleaseError``."""
    try:
        check_package_name(package)
    except RejectedError as exc:
        raise UnacceptableReleaseError(exc.reason, str(exc)) from exc


def check_artifact(release: ReleasePublished, wanted: ReleaseRequest, zip_path: Path) -> None:
    """The built release's artifact is what the caller expected, and its zip is safe and named
    after the project (``token/`` for ``drupal/token``). Raises ``UnacceptableReleaseError``."""
    artifact = release.artifact
    mismatches = [
        f"{name} is {actual}, the request says {expected}"
        for name, actual, expected in (
            ("sha256", artifact.sha256, wanted.sha256),
            ("sha1", artifact.sha1, wanted.sha1),
            ("size", artifact.size, wanted.size),
        )
        if expected is not None and actual != expected
    ]
    if mismatches:
        raise UnacceptableReleaseError(
            "artifact-mismatch",
            f"the artifact of {release.package} {release.drupal_version} differs from the one "
            f"the request describes: {'; '.join(mismatches)}; check the zip (or origin_url)",
        )


def check_composer_version(version: str) -> None:
    """``version`` is a Composer version nodes list (not a Drupal one like ``8.x-1.9``);
    raises ``UnacceptableReleaseError``."""
    try:
        check_version_text(version)
    except RejectedError as exc:
        raise UnacceptableReleaseError(exc.reason, str(exc)) from exc
    if _DRUPAL_VERSION_SHAPE.match(version):
        try:
            hint = f" ({drupal_to_composer(version)} for {version})"
        except RejectedError:
            hint = ""
        raise UnacceptableReleaseError(
            "invalid-version",
            f"version {version!r} is a Drupal version; give the Composer version nodes list{hint}",
        )


def advisory_sources(value: object) -> tuple[AdvisorySource, ...]:
    """An advisory's ``sources`` field: ``{name, remoteId}`` objects of non-empty strings;
    raises ``BadRequestError``."""
    problem = BadRequestError(
        "malformed-request",
        'field sources must be a list of {"name": ..., "remoteId": ...} objects of strings',
    )
    if not isinstance(value, list):
        raise problem
    sources = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"name", "remoteId"}:
            raise problem
        if not all(isinstance(item[k], str) and item[k] for k in ("name", "remoteId")):
            raise problem
        sources.append(AdvisorySource(name=item["name"], remote_id=item["remoteId"]))
    return tuple(sources)


def check_advisory(reported_at: str, cve: str | None, severity: str | None) -> None:
    """An advisory's date, CVE id and severity are in the forms nodes accept; raises
    ``UnacceptableReleaseError`` listing every problem."""
    problems = []
    try:
        datetime.strptime(reported_at, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        problems.append(f"reportedAt {reported_at!r} is not 'YYYY-MM-DD HH:MM:SS' (UTC)")
    if cve is not None and not _CVE.fullmatch(cve):
        problems.append(f"cve {cve!r} is not a CVE id like CVE-2024-12345")
    if severity is not None and severity not in _SEVERITIES:
        problems.append(f"severity {severity!r} is not one of {', '.join(_SEVERITIES)}")
    if problems:
        raise UnacceptableReleaseError("malformed", "; ".join(problems))
