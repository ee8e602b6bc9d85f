"""Release histories of synthetic Drupal projects, from a seed: versions, branches, dates, zip sizes.

Histories run from ``8.x-1.0-alpha1`` through ``8.x-1.12`` to semver ``2.0.0-beta1`` … ``2.0.3``,
with dev branches (``8.x-1.x-dev``, ``2.0.x-dev``); about ten releases per project with a long
tail; zips from a few KB to 30 MB (median about 100 KB, about 1% above 5 MB).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal

__all__ = [
    "MAX_ZIP_SIZE",
    "MIN_ZIP_SIZE",
    "PlannedRelease",
    "ReleasePlan",
    "Stage",
    "release_plan",
    "seeded_rng",
]

MIN_ZIP_SIZE: Final = 6_000
MAX_ZIP_SIZE: Final = 30_000_000

# The catalogue's calendar is fixed, so that its bytes never depend on the clock.
_DRUPAL_8_RELEASED: Final = 1447891200  # 2015-11-19
_SEMVER_ALLOWED: Final = 1583020800  # 2020-03-01: contrib projects could use semver from here on
_LAST_LEGACY_START: Final = 1622505600  # 2021-06-01
_LAST_START: Final = 1733011200  # 2024-12-01
_CATALOGUE_DATE: Final = 1748736000  # 2025-06-01: "today" for every catalogue
_HOUR: Final = 3600
_DAY: Final = 86400

# Releases per project (dev releases excluded): log-normal, median 4, long tail; with the dev
# branches about 10 releases per project on average, many with 1-3, a few with 50 and more.
_RELEASES_MU: Final = 1.3
_RELEASES_SIGMA: Final = 1.25
_MAX_RELEASES: Final = 200
# Zip sizes: a project's typical size is log-normal with median 100 KB and 1% above 5 MB.
_SIZE_MEDIAN: Final = 100_000
_SIZE_SIGMA: Final = 1.55

Stage = Literal["alpha", "beta", "rc", "stable", "dev"]


@dataclass(frozen=True, slots=True)
class PlannedRelease:
    """One release of a project's history, as the catalogue writes it."""

    drupal_version: str
    stage: Stage
    branch: int  # ordinal of the release's branch within its project, oldest first
    timestamp: int
    node_id: int
    size: int


@dataclass(frozen=True, slots=True)
class ReleasePlan:
    """A project's releases, oldest first; its branches; which era's core constraints it picks."""

    releases: tuple[PlannedRelease, ...]
    branches: int
    core_variant: int


def seeded_rng(label: str) -> random.Random:
    """A generator of synthetic data seeded by ``label``: the same label, the same numbers.

    A string seed goes through SHA-512, so it is stable across runs and machines.
    """
    return random.Random(label)  # noqa: S311 - test data, never a secret


def _geometric(rng: random.Random, mean: float) -> int:
    """A count >= 0 with the given mean, most often 0 or 1 (a long, thin tail)."""
    stop = 1.0 / (1.0 + mean)
    count = 0
    while rng.random() >= stop:
        count += 1
    return count


def _pre_releases(rng: random.Random, *, new_major: bool) -> list[tuple[Stage, int]]:
    if new_major and rng.random() < 0.45:
        tags: list[tuple[Stage, int]] = []
        stages: tuple[tuple[Stage, int], ...] = (("alpha", 3), ("beta", 3), ("rc", 2))
        for stage, most in stages:
            tags += [(stage, number) for number in range(1, rng.randint(0, most) + 1)]
        return tags or [("beta", 1)]
    if not new_major and rng.random() < 0.15:
        return [(rng.choice(("beta", "rc")), 1)]
    return []


def _major_history(
    rng: random.Random, *, legacy: bool, major: int, budget: int, minor_branches: bool
) -> list[tuple[str, str, Stage]]:
    """``budget`` (branch, Drupal version, stage) of one major version, oldest first."""
    history: list[tuple[str, str, Stage]] = []
    if legacy:
        branch = f"8.x-{major}.x"
        for stage, number in _pre_releases(rng, new_major=True):
            history.append((branch, f"8.x-{major}.0-{stage}{number}", stage))
        minor = 0
        while len(history) < budget:
            history.append((branch, f"8.x-{major}.{minor}", "stable"))
            minor += 1
        return history[:budget]
    minor = 0
    while len(history) < budget:
        branch = f"{major}.{minor}.x" if minor_branches else f"{major}.x"
        for stage, number in _pre_releases(rng, new_major=minor == 0):
            history.append((branch, f"{major}.{minor}.0-{stage}{number}", stage))
        for patch in range(1 + _geometric(rng, 2.0)):
            history.append((branch, f"{major}.{minor}.{patch}", "stable"))
        minor += 1
    return history[:budget]


def _branch_events(
    rng: random.Random, *, legacy: bool, minor_branches: bool, published: int
) -> tuple[list[tuple[str, str, Stage]], list[str]]:
    """A project's ``published`` releases in majors and branches, and dev releases (a branch's
    comes with it): (branch, Drupal version, stage) in order, and the branches as they opened."""
    events: list[tuple[str, str, Stage]] = []
    branches: list[str] = []
    major, left = 1, published
    while left > 0:
        if left <= 4 and rng.random() < 0.7:
            budget = left
        else:
            budget = max(1, round(left * rng.uniform(0.25, 0.75)))
        for branch, version, stage in _major_history(
            rng, legacy=legacy, major=major, budget=budget, minor_branches=minor_branches
        ):
            if branch not in branches:
                branches.append(branch)
                if rng.random() < 0.8:
                    events.append((branch, f"{branch}-dev", "dev"))
            events.append((branch, version, stage))
        left -= budget
        if left > 0:
            major += 1
            # Legacy majors go on (8.x-2.x, 8.x-3.x) or give way to semver for good.
            legacy = legacy and rng.random() < 0.45
    if not events or rng.random() < 0.2:
        # A branch opened with nothing released from it yet (or a project's only dev snapshot).
        if not events and legacy:
            branch = f"8.x-{major}.x"
        else:
            major += bool(events)
            branch = f"{major}.0.x" if minor_branches else f"{major}.x"
        branches.append(branch)
        events.append((branch, f"{branch}-dev", "dev"))
    return events, branches


@lru_cache(maxsize=8192)
def release_plan(seed: int, index: int) -> ReleasePlan:
    """The releases of project ``index``: versions, dates, sizes. Depends on nothing else."""
    rng = seeded_rng(f"fairstream-catalogue/{seed}/releases/{index}")
    legacy = rng.random() < 0.7
    minor_branches = rng.random() < 0.7
    if rng.random() < 0.04:
        published = 0  # only a dev snapshot, as many young projects have
    else:
        drawn = round(rng.lognormvariate(_RELEASES_MU, _RELEASES_SIGMA))
        published = min(_MAX_RELEASES, max(1, drawn))
    events, branches = _branch_events(
        rng, legacy=legacy, minor_branches=minor_branches, published=published
    )

    if legacy:
        start = rng.randint(_DRUPAL_8_RELEASED, _LAST_LEGACY_START)
    else:
        start = rng.randint(_SEMVER_ALLOWED, _LAST_START)
    times = sorted(rng.randint(start, _CATALOGUE_DATE - _DAY) for _ in events)
    for position in range(1, len(times)):
        times[position] = max(times[position], times[position - 1] + _HOUR)

    typical_size = rng.lognormvariate(0.0, _SIZE_SIGMA) * _SIZE_MEDIAN
    planned: list[PlannedRelease] = []
    last_of_branch = {branch: when for (branch, _, _), when in zip(events, times, strict=True)}
    for position, ((branch, version, stage), when) in enumerate(zip(events, times, strict=True)):
        size = typical_size * (1.0 + 0.02 * position) * rng.uniform(0.9, 1.1)
        planned.append(
            PlannedRelease(
                drupal_version=version,
                stage=stage,
                branch=branches.index(branch),
                # A dev release is rebuilt on every commit: its date is its branch's latest.
                timestamp=last_of_branch[branch] + _HOUR if stage == "dev" else when,
                node_id=2_600_000 + (when - _DRUPAL_8_RELEASED) // 600,
                size=min(MAX_ZIP_SIZE, max(MIN_ZIP_SIZE, round(size))),
            )
        )
    return ReleasePlan(tuple(planned), len(branches), rng.randrange(3))
