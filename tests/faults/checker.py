"""The history checker of the fault harness: what was acknowledged against what was served.

Like Jepsen's Kafka checker, it does not trust the system's own account: it is
given the releases the broker acknowledged to the publisher (with their signed
hashes), the releases read back from the log at the end, every observation of a
region's metadata polled while faults were injected, and the final state of every
region (p2 entries and the bytes of every zip, fetched as a client would). It
counts:

- lost: acknowledged by the broker, missing from the log read back;
- unseen: in the log and in a region's policy, not served by that region after quiesce;
- wrongly served: served with a sha1 or bytes (sha256) other than the signed ones;
- never acknowledged: served by a region although no acknowledged release has it;
- duplicate: a version listed twice in one p2 document;
- rolled back: a version once observed in a serving copy's p2 later missing from it;
- lagging: a version observed in one copy of a region and still missing from another
  copy of the same region more than ``staleness_bound`` seconds later (broker outages
  not counted).

A *serving copy* (a source) is one process that answers p2: each worker of a region
keeps its own copy of the region's view (ADR 5), the directory its own. Every copy is
checked on its own, at the end and all along: what one copy served it never takes back,
and the copies of a region converge within a bound. Monotonic reads *across* the copies
of a region are not promised (no replicated store gives them without a coordination per
read); a client gets them by staying on one copy, as the directory and a sticky front do.

Every count must be zero; ``Verdict.problems`` says which release broke which rule.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

Release = tuple[str, str]  # (package, version)

#: How long a region's copies may differ (the followers' delay is tens of milliseconds).
STALENESS_BOUND = 5.0


@dataclass(frozen=True)
class Acknowledged:
    """A release the broker acknowledged, with what its signed event says."""

    package: str
    version: str
    sha256: str
    sha1: str
    #: False for a release whose zip exists nowhere (the soak's bulk load): p2 and sha1 only.
    zip_checked: bool = True


@dataclass(frozen=True)
class Served:
    """One version as a region served it at the end: p2's sha1 and the zip's sha256."""

    sha1: str
    sha256: str | None  # None: the zip could not be fetched


@dataclass(frozen=True)
class Observation:
    """A poll of one serving copy's p2 for one package during the run (``listed`` in p2
    order); ``source`` names the copy (``eu/eu-1``, ``directory``)."""

    source: str
    package: str
    at: float
    listed: tuple[str, ...]


@dataclass
class Verdict:
    lost: int = 0
    unseen: int = 0
    wrongly_served: int = 0
    never_acknowledged: int = 0
    duplicate: int = 0
    rolled_back: int = 0
    lagging: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {
            "lost": self.lost,
            "unseen": self.unseen,
            "wrongly_served": self.wrongly_served,
            "never_acknowledged": self.never_acknowledged,
            "duplicate": self.duplicate,
            "rolled_back": self.rolled_back,
            "lagging": self.lagging,
        }

    @property
    def clean(self) -> bool:
        return not any(self.counts.values())

    def __str__(self) -> str:
        counts = ", ".join(f"{name} {count}" for name, count in self.counts.items())
        shown = self.problems[:20]
        more = len(self.problems) - len(shown)
        return "\n".join([counts, *shown, *([f"... and {more} more"] if more > 0 else [])])


def included(package: str, include: Iterable[str], exclude: Iterable[str] = ()) -> bool:
    """Whether a region with these patterns serves ``package`` (as streams/policy.py decides)."""
    return any(fnmatch.fnmatchcase(package, p) for p in include) and not any(
        fnmatch.fnmatchcase(package, p) for p in exclude
    )


def check(
    acknowledged: Iterable[Acknowledged],
    in_log: set[Release],
    policies: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]],
    final: Mapping[str, Mapping[Release, list[Served]]],
    observations: Iterable[Observation],
    *,
    copies: Mapping[str, str] | None = None,
    outages: Sequence[tuple[float, float]] = (),
    staleness_bound: float = STALENESS_BOUND,
) -> Verdict:
    """Check a run's history. ``policies``: source -> (include, exclude); ``final``:
    source -> release -> every entry its p2 listed for that version (more than one is a
    duplicate); ``copies``: source -> the region it is a copy of (sources left out are
    regions of their own); ``outages``: (start, end) of broker pauses, on the
    observations' clock."""
    verdict = Verdict()
    expected = {(a.package, a.version): a for a in acknowledged}
    for release in sorted(expected):
        if release not in in_log:
            verdict.lost += 1
            verdict.problems.append(f"lost: {release} was acknowledged but is not in the log")
    for source, (include, exclude) in sorted(policies.items()):
        served = final.get(source, {})
        for release, ack in sorted(expected.items()):
            if release not in in_log or not included(release[0], include, exclude):
                continue
            entries = served.get(release, [])
            if not entries:
                verdict.unseen += 1
                verdict.problems.append(f"unseen: {source} does not serve {release}")
                continue
            if len(entries) > 1:
                verdict.duplicate += 1
                verdict.problems.append(f"duplicate: {source} lists {release} {len(entries)} times")
            for entry in entries:
                if entry.sha1 != ack.sha1 or (ack.zip_checked and entry.sha256 != ack.sha256):
                    verdict.wrongly_served += 1
                    verdict.problems.append(
                        f"wrongly served: {source} {release} sha1 {entry.sha1} sha256 "
                        f"{entry.sha256}, signed sha1 {ack.sha1} sha256 {ack.sha256}"
                    )
        for release in sorted(set(served) - set(expected)):
            verdict.never_acknowledged += 1
            verdict.problems.append(f"never acknowledged: {source} serves {release}")
    region_of = dict(copies or {})
    seen: dict[tuple[str, str], set[str]] = {}
    #: (region, package) -> version -> when a copy of the region first listed it.
    first_seen: dict[tuple[str, str], dict[str, float]] = {}
    lagging: set[tuple[str, str, str]] = set()
    for observation in sorted(observations, key=lambda o: o.at):
        key = (observation.source, observation.package)
        listed = set(observation.listed)
        if len(listed) != len(observation.listed):
            verdict.duplicate += 1
            verdict.problems.append(
                f"duplicate: {key} listed {list(observation.listed)} at {observation.at:.2f}"
            )
        before = seen.setdefault(key, set())
        gone = before - listed
        if gone:
            verdict.rolled_back += 1
            verdict.problems.append(
                f"rolled back: {key} no longer listed {sorted(gone)} at {observation.at:.2f}"
            )
        before |= listed
        region = region_of.get(observation.source, observation.source)
        firsts = first_seen.setdefault((region, observation.package), {})
        for version, at in firsts.items():
            late = observation.at - at - _paused(outages, at, observation.at)
            which = (observation.source, observation.package, version)
            if version not in listed and late > staleness_bound and which not in lagging:
                lagging.add(which)
                verdict.problems.append(
                    f"lagging: {observation.source} does not list {observation.package} "
                    f"{version} {late:.1f} s after another copy of {region} did"
                )
        for version in listed:
            firsts.setdefault(version, observation.at)
    verdict.lagging = len(lagging)
    return verdict


def _paused(outages: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """How much of ``start``..``end`` the outages cover (they do not overlap each other)."""
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in outages)
