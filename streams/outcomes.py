"""What applying a verified event comes to: the replicator's input and outcomes, and its pure
verdicts on a release's zip (which zip to fetch first; whether a failed fetch parks or refuses).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.errors import ArtifactUnreachableError, RejectedError
from schemas.events import Artifact, PackageEvent, ReleasePublished
from schemas.package_state import Transition


@dataclass(frozen=True)
class Verified:
    """A record that verified: the event, the sha256 of its signed payload, its log position."""

    event: PackageEvent
    digest: str
    position: str
    #: Key ids of the delegated keys whose signatures verified.
    signed_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Applied:
    """What one event did to the region."""

    package: str
    kind: str
    sequence: int
    fetched: bool
    changed: bool
    parked: bool = False


@dataclass(frozen=True)
class Refused:
    """An event that can never be applied, with why (goes to the rejected topic)."""

    package: str
    error: RejectedError

    @property
    def reason(self) -> str:
        return self.error.reason

    @property
    def detail(self) -> str:
        return str(self.error)


@dataclass(frozen=True)
class Skipped:
    """An event for a package outside the region's policy: verified, not applied."""

    package: str


@dataclass(frozen=True)
class Abandoned:
    """An event of a partition this worker no longer owns (a rebalance happened meanwhile):
    nothing written, not to be acknowledged; the partition's new owner applies it."""

    package: str


Outcome = Applied | Refused | Skipped | Abandoned


@dataclass(frozen=True)
class ZipToFetch:
    """The zip a full mirror must hold before it applies a release."""

    version: str
    artifact: Artifact


def zip_to_fetch(
    event: PackageEvent, transition: Transition, *, mirrors_artifacts: bool
) -> ZipToFetch | None:
    """The zip to fetch before ``transition`` is taken: a published release's, on a full
    mirror; None when there is none to fetch (metadata only, or no new zip)."""
    if transition.fetch is None or not isinstance(event, ReleasePublished) or not mirrors_artifacts:
        return None
    return ZipToFetch(event.version, transition.fetch)


@dataclass(frozen=True)
class Park:
    """No source delivered the zip: the version is published all the same (its dist redirects
    to the origin or a replica) and the fetch is parked in ``pending/``, retried with backoff."""

    #: What the fetch said, kept in the parked document.
    error: str


@dataclass(frozen=True)
class Refuse:
    """The zip can never be taken (other bytes everywhere, another project's files): the event
    is refused."""

    error: RejectedError


def on_fetch_failure(error: Exception) -> Park | Refuse | None:
    """What a failed fetch of a release's zip does to the event being applied.

    ``ArtifactUnreachableError`` parks it, any ``RejectedError`` refuses it; None for any
    other error, which rises (a transient one: the package is retried with backoff). A parked
    fetch that fails again stays parked whatever the error (its event was applied already).
    """
    if isinstance(error, ArtifactUnreachableError):
        return Park(str(error))
    if isinstance(error, RejectedError):
        return Refuse(error)
    return None
