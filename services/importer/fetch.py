"""Fetching from the source: a package's p2 documents, planned, and its zips' digests into events.

A zip's sha256 and size come from the checksums file when it lists the zip, else from
downloading it (its sha1 checked against ``dist.shasum``, its layout against the package).
"""

from __future__ import annotations

import asyncio
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path

from connectors.composer_repo import ArtifactDigest, ComposerRepository, RepositoryIndex
from connectors.kafka_reading import PublishedBuild
from schemas.errors import ArtifactTooLargeError, MalformedEventError, OriginUnavailableError
from schemas.events import ReleasePublished
from services.importer.checksums import checksum_key
from services.importer.plan import Candidate, Skipped, SkipReason, check_package, plan_package
from services.importer.release import check_digest, release_event
from services.importer.settings import ImportSettings
from services.publishing.publisher import next_sequence

__all__ = ["PackageFetcher"]


class PackageFetcher:
    """A package's releases from the source, as events ready to sign, and what is skipped."""

    def __init__(
        self,
        settings: ImportSettings,
        repository: ComposerRepository,
        index: RepositoryIndex,
        published: Mapping[str, Mapping[str, PublishedBuild]],
        work_dir: Path,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.index = index
        self.published = published
        self.work_dir = work_dir

    async def releases(self, package: str) -> tuple[list[ReleasePublished], list[Skipped]]:
        """The events of ``package``'s releases not on the topic yet, oldest first, and what is
        skipped (the whole package when its name is refused or its p2 documents cannot be read).

        Raises what ``settings.check_signers`` raises (``ConfigurationError``).
        """
        refused = check_package(package)
        if refused is not None:
            return [], [refused]
        if self.settings.check_signers is not None:
            self.settings.check_signers(package)
        try:
            documents = await self.repository.package_versions(self.index, package)
        except OriginUnavailableError as exc:
            return [], [Skipped(package, None, SkipReason.METADATA_UNREACHABLE, str(exc))]
        except MalformedEventError as exc:
            return [], [Skipped(package, None, SkipReason.MALFORMED_METADATA, str(exc))]
        if documents is None:
            return [], [
                Skipped(package, None, SkipReason.PACKAGE_NOT_FOUND, "its p2 document is a 404")
            ]
        builds = self.published.get(package, {})
        plan = plan_package(package, documents, published=builds.keys(), builds=builds)
        skipped = list(plan.skipped)
        # Looked up in place: a task per release only for the zips that must be downloaded.
        listed = [self._listed_digest(candidate) for candidate in plan.candidates]
        downloads = iter(
            await asyncio.gather(
                *(
                    self._downloaded_digest(candidate)
                    for candidate, digest in zip(plan.candidates, listed, strict=True)
                    if digest is None
                )
            )
        )
        digests = [digest if digest is not None else next(downloads) for digest in listed]
        events: list[ReleasePublished] = []
        # Oldest first, each with a sequence above the one before: the order nodes apply them.
        for candidate, digest in zip(plan.candidates, digests, strict=True):
            if isinstance(digest, Skipped):
                skipped.append(digest)
                continue
            event = release_event(candidate, digest, sequence=next_sequence())
            if isinstance(event, Skipped):
                skipped.append(event)
            else:
                events.append(event)
        return events, skipped

    def _listed_digest(self, candidate: Candidate) -> ArtifactDigest | Skipped | None:
        """sha256, sha1 and size of the candidate's zip from the checksums file; None if unlisted."""
        checksums = self.settings.checksums
        if checksums is None:
            return None
        listed = checksums.get(checksum_key(candidate.origin_url))
        if listed is None:
            return None
        return check_digest(candidate, listed, SkipReason.CHECKSUMS_MISMATCH) or listed

    async def _downloaded_digest(self, candidate: Candidate) -> ArtifactDigest | Skipped:
        """sha256, sha1 and size of the candidate's zip, downloaded and checked."""
        path = self.work_dir / f"{uuid.uuid4().hex}.zip"
        try:
            digest = await self.repository.download(candidate.origin_url, path)
            mismatch = check_digest(candidate, digest, SkipReason.SHA1_MISMATCH)
            if mismatch is not None:
                return mismatch
            problem = await asyncio.to_thread(_zip_problem, path, candidate.package)
            if problem is not None:
                return candidate.skipped(SkipReason.WRONG_ZIP, f"{candidate.origin_url}: {problem}")
            return digest
        except OriginUnavailableError as exc:
            return candidate.skipped(SkipReason.ORIGIN_UNREACHABLE, str(exc))
        except ArtifactTooLargeError as exc:
            return candidate.skipped(SkipReason.TOO_LARGE, str(exc))
        finally:
            path.unlink(missing_ok=True)


def _zip_problem(path: Path, package: str) -> str | None:
    """Why a node would refuse this zip for ``package``: not one ``<project>/`` top directory."""
    project = package.split("/", 1)[1]
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"not a zip file ({exc})"
    tops = {name.split("/", 1)[0] for name in names if name.strip("/")}
    if tops != {project} or not any(name.startswith(f"{project}/") for name in names):
        return f"holds {sorted(tops)[:3]}, not one {project}/ directory"
    return None
