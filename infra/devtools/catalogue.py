"""A synthetic, Drupal-shaped Composer v2 repository, deterministic from a seed: for tests, demos, benchmarks.

``generate_catalogue`` writes what packages.drupal.org serves (``packages.json``,
``p2/drupal/<name>.json`` and ``~dev.json``), optionally the release zips under
``files/projects/`` as ftp.drupal.org serves them, and ``checksums.json``: the sha256, sha1 and
size of every zip, which Drupal.org's release database knows and packages.drupal.org does not
publish. The same ``(projects, seed, base_url, zips)`` always gives the same bytes, and the
first N projects of a larger catalogue have the p2 documents and zips of the catalogue of N
projects (names, versions, requirements and zips depend only on the seed and the position).

Shapes follow real Drupal contrib: machine names such as ``views_bulk_operations``; histories
from ``8.x-1.0-alpha1`` through ``8.x-1.12`` to semver ``2.0.0-beta1`` … ``2.0.3``; dev branches
(``8.x-1.x-dev``, ``2.0.x-dev``); ``drupal/core`` constraints of the release's era; a few
requirements on other, earlier generated projects that at least one of their stable releases
satisfies (so the requirement graph has no cycles); about ten releases per project with a long
tail; zips from a few KB to 30 MB (median about 100 KB, about 1% above 5 MB).
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import random
import shutil
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import orjson

from schemas.composer import render_p2, render_packages_json, version_entry
from schemas.errors import ConfigurationError
from schemas.versions import drupal_to_composer

__all__ = [
    "CHECKSUMS_FILE",
    "MAX_PROJECTS",
    "MAX_ZIP_SIZE",
    "MIN_ZIP_SIZE",
    "CatalogueSummary",
    "generate_catalogue",
    "project_names",
]

CHECKSUMS_FILE: Final = "checksums.json"
MAX_PROJECTS: Final = 100_000
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
_LICENSE_RENAMED: Final = 1535760000  # 2018-09-01: GPL-2.0+ became GPL-2.0-or-later

# Releases per project (dev releases excluded): log-normal, median 4, long tail; with the dev
# branches about 10 releases per project on average, many with 1-3, a few with 50 and more.
_RELEASES_MU: Final = 1.3
_RELEASES_SIGMA: Final = 1.25
_MAX_RELEASES: Final = 200
# Zip sizes: a project's typical size is log-normal with median 100 KB and 1% above 5 MB.
_SIZE_MEDIAN: Final = 100_000
_SIZE_SIGMA: Final = 1.55

_FILL_CHUNK: Final = 1 << 20
# Projects per unit of work (a worker's share, a progress step): a chunk with zips is slower.
_CHUNK_PROJECTS: Final = 50
_CHUNK_PROJECTS_WITH_ZIPS: Final = 4
_ZIP_DATE: Final = (2024, 1, 1, 0, 0, 0)
# Each stored member adds a local header (30 bytes and its name), its data and a central
# directory record (46 bytes and its name) to an archive without zip64 or extra fields.
_MEMBER_OVERHEAD: Final = 30 + 46

Stage = Literal["alpha", "beta", "rc", "stable", "dev"]

# Lower-case words of contrib machine names. None is a Composer-reserved name (nul, con, ...)
# or one of Drupal's own packages (core, drupal, recommended_project...).
_WORD_LIST: Final = """
    token pathauto ctools views bulk operations admin toolbar field group entity reference
    media image crop paragraphs webform metatag redirect search api solr layout builder block
    menu link simple sitemap xml google analytics tag manager captcha recaptcha honeypot mail
    smtp config split ignore update backup migrate plus tools upgrade devel kint rules workflow
    content moderation scheduler inline form errors address geolocation leaflet geofield
    commerce payment stripe shipping cart product feeds tamper json rest graphql jsonapi extras
    schema oauth openid connect saml ldap user role permissions access private file browser
    embed video audio gallery slideshow slick carousel colorbox lightbox responsive tables
    filter facets autocomplete widget formatter display suite panels page manager mini tabs
    accordion bootstrap barrio gin claro olivero adminimal radix tailwind theme style switcher
    color palette font awesome icon social share sharing comment notify notification message
    queue cron ultimate job scheduler batch cache purge varnish memcache redis performance lazy
    loading asset injector css js aggregation minify twig tweak debug stage file proxy environment
    indicator shield login security kit password policy session limit flood control captcha
    antibot spam protection audit trail log history revision diff clone replicate node title
    length auto label pathologic linkit editor ckeditor5 plugin pack templates charts calendar
    date range recurring smart datetime office hours event registration ticket donation
    subscription newsletter mailchimp sendgrid symfony mailer forms multistep conditional
    fields field_group validation clientside inline entity browser entity usage embed
    translation locale language negotiation multilingual lingotek tmgmt transliteration
    country state postal geocoder maps openlayers location search_api views_data export csv
    import excel pdf print printable book outline taxonomy term access unlimited menu_block
    breadcrumb easy custom easy_breadcrumb block_class block_visibility conditions context
    group_content domain domain_access workbench access_unpublished content_lock
    publishcontent revisions moderation_dashboard sidebar ajax infinite scroll pager
    mini_pager views_infinite_scroll quicktabs superfish megamenu responsive_menu mobile
    detect pwa manifest amp seo checklist robots txt hreflang canonical schema_metatag
    structured data rdf oembed remote media_entity s3fs flysystem storage swiftmailer
    oauth2 server simple_oauth consumers jwt key encrypt real aes tfa webauthn cas
    shibboleth masquerade impersonate role_delegation administerusersbyrole r4032login
    honeypot_spam anonymous redirect_403 require login registration profile avatar gravatar
"""
_WORDS: Final = tuple(dict.fromkeys(_WORD_LIST.split()))
_RESERVED_PROJECTS: Final = frozenset(
    ["core", "drupal", "recommended_project", "legacy_project", "core_recommended"]
)

_CORE_ERAS: Final = (
    # (releases before this date, the drupal/core constraints projects then declared)
    (1506816000, ("~8.0", "^8", "~8.2")),  # 2017-10-01
    (1575158400, ("^8", "^8.5", "^8.7")),  # 2019-12-01
    (1591142400, ("^8.8 || ^9", "^8.7.7 || ^9", "^8 || ^9")),  # 2020-06-03: Drupal 9
    (1671062400, ("^9 || ^10", "^8.8 || ^9 || ^10", "^9.2 || ^10")),  # 2022-12-15: Drupal 10
    (1718582400, ("^9.5 || ^10", "^10", "^9.3 || ^10 || ^11")),  # 2024-06-17: Drupal 11
    (1 << 62, ("^10.3 || ^11", "^10 || ^11", "^11")),
)
_COVERED: Final = {"status": "covered", "message": "Covered by Drupal's security advisory policy"}
_NOT_OPTED_IN: Final = {
    "status": "not-covered",
    "message": "Project has not opted into security advisory coverage!",
}
_STAGE_NOT_COVERED: Final = {
    stage: {
        "status": "not-covered",
        "message": f"{label} releases are not covered by Drupal security advisories.",
    }
    for stage, label in (("alpha", "Alpha"), ("beta", "Beta"), ("rc", "RC"), ("dev", "Dev"))
}
_FIRST_NAMES: Final = (
    "Alex Ana Ben Carla Dave Elena Femi Greg Hana Ivan Jo Kasia Lars Maria Nico Olga Pierre "
    "Quinn Rosa Sam Tomas Uma Vera Wim Xena Yuki Zoe"
)
_LAST_NAMES: Final = (
    "Reid Berg Costa Dubois Ekstrom Fischer Garcia Haas Ito Jansen Kowalski Lund Moreau Novak "
    "Okafor Petrov Quist Rossi Silva Tanaka Ueda Varga Weber Young Zimmer"
)


@dataclass(frozen=True)
class CatalogueSummary:
    """What ``generate_catalogue`` wrote.

    ``releases`` counts every release, dev releases (``dev_releases``, the ``~dev`` documents)
    included; ``zip_bytes`` the bytes of the zips written (0 without zips); ``catalogued_bytes``
    the total of the sizes ``checksums.json`` records, which is what a full mirror would store.
    """

    projects: int
    releases: int
    dev_releases: int
    zip_bytes: int
    catalogued_bytes: int
    files_written: int


@dataclass(frozen=True, slots=True)
class _PlannedRelease:
    drupal_version: str
    stage: Stage
    branch: int  # ordinal of the release's branch within its project, oldest first
    timestamp: int
    node_id: int
    size: int


@dataclass(frozen=True, slots=True)
class _ReleasePlan:
    releases: tuple[_PlannedRelease, ...]
    branches: int
    core_variant: int


@dataclass(frozen=True, slots=True)
class _Profile:
    """What stays the same across a project's releases."""

    kind: Literal["module", "theme"]
    description: str
    authors: tuple[tuple[str, int], ...]
    covered: bool
    old_license: bool
    keywords: str | None
    drush: bool
    issues_link: bool


@dataclass(frozen=True, slots=True)
class _Requirement:
    package: str
    constraint: str
    since_branch: int


def generate_catalogue(
    out_dir: Path,
    *,
    projects: int,
    seed: int,
    base_url: str,
    zips: bool,
    progress: Callable[[int], None] | None = None,
    replace: bool = False,
    workers: int = 1,
) -> CatalogueSummary:
    """Write a Composer v2 repository of ``projects`` synthetic Drupal projects to ``out_dir``.

    Writes ``packages.json`` (``render_packages_json`` plus ``available-packages``: every package
    name, sorted), ``p2/drupal/<name>.json`` and ``~dev.json`` (``render_p2`` of entries built by
    ``version_entry``, dist URL ``{base_url}/files/projects/<project>-<drupal version>.zip``),
    and ``checksums.json``: ``{dist URL path: {"sha1", "sha256", "size"}}``, sorted keys. With
    ``zips`` the zips themselves go to ``files/projects/``: one top directory named after the
    project, sizes exactly as recorded. Without ``zips`` nothing is downloadable: sha1 and sha256
    are hashes of a seed string (``fairstream-catalogue-not-downloadable:<seed>:<project>:<drupal
    version>``), not of any file, and the sizes are those the zips would have.

    The bytes depend only on ``projects``, ``seed``, ``base_url`` and ``zips``, not on
    ``workers`` (processes writing projects in parallel). Projects are written a few at a time,
    so the documents are never all in memory. ``progress`` is called with the number of projects
    done: 0 once the arguments are checked, then as projects complete.

    ``replace`` first removes a catalogue already in ``out_dir`` (its ``packages.json``,
    ``checksums.json``, ``p2/drupal/`` and ``files/projects/``) and accepts other files there.

    Raises:
        ConfigurationError: ``projects`` is outside 1..MAX_PROJECTS, ``workers`` below 1,
            ``base_url`` is not an http(s) URL without query or fragment, ``out_dir`` is a
            file, or it is not empty and ``replace`` is false.
        OSError: writing failed.
    """
    if not 1 <= projects <= MAX_PROJECTS:
        raise ConfigurationError(
            f"Cannot generate {projects} projects: choose between 1 and {MAX_PROJECTS:,}"
        )
    if workers < 1:
        raise ConfigurationError(f"Cannot generate with {workers} workers: use 1 or more")
    base_url = _checked_base_url(base_url)
    _prepare_out_dir(out_dir, replace=replace)
    (out_dir / "p2" / "drupal").mkdir(parents=True, exist_ok=True)
    if zips:
        (out_dir / "files" / "projects").mkdir(parents=True, exist_ok=True)

    names = project_names(seed, projects)
    job = _Job(out_dir=out_dir, seed=seed, base_url=base_url, zips=zips, names=tuple(names))
    # Sorted names give sorted dist paths ("<name>-" sorts before "<name>" and any further name
    # character), so checksums.json streams out in key order, chunk after chunk.
    by_name = sorted(range(projects), key=names.__getitem__)
    step = _CHUNK_PROJECTS_WITH_ZIPS if zips else _CHUNK_PROJECTS
    chunks = [tuple(by_name[start : start + step]) for start in range(0, projects, step)]
    releases = dev_releases = zip_bytes = catalogued_bytes = files_written = done = 0
    last_path = ""
    if progress is not None:
        progress(0)  # the arguments are good: a progress bar may start
    with ExitStack() as stack:
        if workers == 1 or len(chunks) == 1:
            results: Iterator[_ChunkResult] = (_write_chunk(job, chunk) for chunk in chunks)
        else:
            # fork, not spawn: spawn re-runs the caller's __main__ in every worker, which breaks
            # (and can hang the pool) from a script without an ``if __name__`` guard. The
            # workers only compute and write files: they touch no lock a caller's thread (a
            # progress bar) may hold.
            pool = ProcessPoolExecutor(
                max_workers=min(workers, len(chunks)),
                mp_context=multiprocessing.get_context("fork"),
                initializer=_start_worker,
                initargs=(job,),
            )
            # On an error (or Ctrl-C) the chunks not started yet are dropped, not written.
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            results = pool.map(_write_chunk_in_worker, chunks)
        checksums = stack.enter_context((out_dir / CHECKSUMS_FILE).open("wb"))
        checksums.write(b"{")
        for result in results:
            if result.first_path <= last_path:  # pragma: no cover - guarded by the order above
                raise RuntimeError(f"checksums.json out of order at {result.first_path}")
            if last_path:
                checksums.write(b",")
            checksums.write(result.checksums)
            last_path = result.last_path
            releases += result.releases
            dev_releases += result.dev_releases
            zip_bytes += result.zip_bytes
            catalogued_bytes += result.catalogued_bytes
            files_written += result.files_written
            done += result.projects
            if progress is not None:
                progress(done)
        checksums.write(b"}")
    files_written += 1

    root: dict[str, Any] = orjson.loads(render_packages_json())
    root["available-packages"] = [f"drupal/{name}" for name in sorted(names)]
    (out_dir / "packages.json").write_bytes(orjson.dumps(root))
    files_written += 1

    return CatalogueSummary(
        projects=projects,
        releases=releases,
        dev_releases=dev_releases,
        zip_bytes=zip_bytes,
        catalogued_bytes=catalogued_bytes,
        files_written=files_written,
    )


@dataclass(frozen=True)
class _Job:
    """What every worker needs, sent once to each."""

    out_dir: Path
    seed: int
    base_url: str
    zips: bool
    names: tuple[str, ...]


@dataclass(frozen=True)
class _ChunkResult:
    """A chunk of projects written: its part of checksums.json and its counts."""

    checksums: bytes  # '"<path>":{...},"<path>":{...}', in key order
    first_path: str
    last_path: str
    projects: int
    releases: int
    dev_releases: int
    zip_bytes: int
    catalogued_bytes: int
    files_written: int


# The job of a worker process, set once by its pool's initializer.
_worker_job: _Job | None = None


def _start_worker(job: _Job) -> None:
    global _worker_job
    _worker_job = job


def _write_chunk_in_worker(chunk: tuple[int, ...]) -> _ChunkResult:
    if _worker_job is None:  # pragma: no cover - the pool's initializer sets it
        raise RuntimeError("catalogue worker started without its job")
    return _write_chunk(_worker_job, chunk)


def _write_chunk(job: _Job, chunk: tuple[int, ...]) -> _ChunkResult:
    """Write the p2 documents (and zips) of the projects at ``chunk`` (positions, by name)."""
    projects_dir = job.out_dir / "files" / "projects"
    base_path = urlsplit(job.base_url).path
    parts: list[bytes] = []
    paths: list[str] = []
    releases = dev_releases = zip_bytes = catalogued_bytes = files_written = 0
    for index in chunk:
        name = job.names[index]
        entries: list[dict[str, Any]] = []
        sums: list[tuple[str, bytes]] = []
        for release, metadata in _project_releases(job.seed, index, job.names):
            file_name = f"{name}-{release.drupal_version}.zip"
            if job.zips:
                sha1, sha256 = _write_zip(
                    projects_dir / file_name,
                    _zip_members(name, release, metadata),
                    filler=(f"{name}/assets/{name}.bin", release.size),
                    filler_seed=f"fairstream-catalogue/{job.seed}/{name}/{release.drupal_version}",
                )
                zip_bytes += release.size
                files_written += 1
            else:
                sha1, sha256 = _unavailable_digests(job.seed, name, release.drupal_version)
            entries.append(
                version_entry(
                    name=f"drupal/{name}",
                    drupal_version=release.drupal_version,
                    sha1=sha1,
                    dist_url=f"{job.base_url}/files/projects/{file_name}",
                    metadata=metadata,
                )
            )
            path = f"{base_path}/files/projects/{file_name}"
            checksum = {"sha1": sha1, "sha256": sha256, "size": release.size}
            sums.append((path, orjson.dumps(path) + b":" + orjson.dumps(checksum)))
            releases += 1
            dev_releases += release.stage == "dev"
            catalogued_bytes += release.size
        for p2_path, document in render_p2(f"drupal/{name}", entries).items():
            (job.out_dir / p2_path).write_bytes(document)
            files_written += 1
        sums.sort()
        paths += (path for path, _ in sums)
        parts += (part for _, part in sums)
    return _ChunkResult(
        checksums=b",".join(parts),
        first_path=paths[0],
        last_path=paths[-1],
        projects=len(chunk),
        releases=releases,
        dev_releases=dev_releases,
        zip_bytes=zip_bytes,
        catalogued_bytes=catalogued_bytes,
        files_written=files_written,
    )


def _checked_base_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigurationError(
            f"Base URL {base_url!r} is not an http(s) URL without query or fragment, "
            "e.g. http://127.0.0.1:8000"
        )
    return base_url.rstrip("/")


def _prepare_out_dir(out_dir: Path, *, replace: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigurationError(f"Output directory {out_dir} is a file: choose a directory")
    if replace:
        for file_name in ("packages.json", CHECKSUMS_FILE):
            (out_dir / file_name).unlink(missing_ok=True)
        for directory in (out_dir / "p2" / "drupal", out_dir / "files" / "projects"):
            if directory.is_dir():
                shutil.rmtree(directory)
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigurationError(
            f"Output directory {out_dir} is not empty: choose a new or empty directory, "
            "or replace the catalogue in it with --force"
        )
    out_dir.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------


def _rng(label: str) -> random.Random:
    """A generator of synthetic data seeded by ``label``: the same label, the same numbers.

    A string seed goes through SHA-512, so it is stable across runs and machines.
    """
    return random.Random(label)  # noqa: S311 - test data, never a secret


def project_names(seed: int, count: int) -> list[str]:
    """Return ``count`` unique Drupal machine names (``token``, ``views_bulk_operations``).

    Lower-case words joined by ``_``, never a Composer-reserved name nor one of Drupal's own
    packages. Position 0 is the most depended-upon project. The first N names for a seed are
    the same whatever ``count``. Never raises for ``count`` up to ``MAX_PROJECTS``.
    """
    rng = _rng(f"fairstream-catalogue/{seed}/names")
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        words = rng.choices((1, 2, 3), weights=(3, 5, 2))[0]
        name = "_".join(rng.sample(_WORDS, words))
        if name in seen or name in _RESERVED_PROJECTS:
            continue
        seen.add(name)
        names.append(name)
    return names


# ---------------------------------------------------------------------------
# Version histories
# ---------------------------------------------------------------------------


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


@lru_cache(maxsize=8192)
def _release_plan(seed: int, index: int) -> _ReleasePlan:
    """The releases of project ``index``: versions, dates, sizes. Depends on nothing else."""
    rng = _rng(f"fairstream-catalogue/{seed}/releases/{index}")
    legacy = rng.random() < 0.7
    minor_branches = rng.random() < 0.7
    if rng.random() < 0.04:
        published = 0  # only a dev snapshot, as many young projects have
    else:
        drawn = round(rng.lognormvariate(_RELEASES_MU, _RELEASES_SIGMA))
        published = min(_MAX_RELEASES, max(1, drawn))

    # Events in order: (branch, Drupal version, stage); a branch's dev release comes with it.
    events: list[tuple[str, str, Stage]] = []
    branches: list[str] = []
    started_legacy = legacy
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

    if started_legacy:
        start = rng.randint(_DRUPAL_8_RELEASED, _LAST_LEGACY_START)
    else:
        start = rng.randint(_SEMVER_ALLOWED, _LAST_START)
    times = sorted(rng.randint(start, _CATALOGUE_DATE - _DAY) for _ in events)
    for position in range(1, len(times)):
        times[position] = max(times[position], times[position - 1] + _HOUR)

    typical_size = rng.lognormvariate(0.0, _SIZE_SIGMA) * _SIZE_MEDIAN
    planned: list[_PlannedRelease] = []
    last_of_branch = {branch: when for (branch, _, _), when in zip(events, times, strict=True)}
    for position, ((branch, version, stage), when) in enumerate(zip(events, times, strict=True)):
        size = typical_size * (1.0 + 0.02 * position) * rng.uniform(0.9, 1.1)
        planned.append(
            _PlannedRelease(
                drupal_version=version,
                stage=stage,
                branch=branches.index(branch),
                # A dev release is rebuilt on every commit: its date is its branch's latest.
                timestamp=last_of_branch[branch] + _HOUR if stage == "dev" else when,
                node_id=2_600_000 + (when - _DRUPAL_8_RELEASED) // 600,
                size=min(MAX_ZIP_SIZE, max(MIN_ZIP_SIZE, round(size))),
            )
        )
    return _ReleasePlan(tuple(planned), len(branches), rng.randrange(3))


def _core_constraint(plan: _ReleasePlan, release: _PlannedRelease) -> str:
    for era, (until, choices) in enumerate(_CORE_ERAS):
        if release.timestamp < until:
            # Semver releases of contrib need Drupal 8.8 at least.
            if not release.drupal_version.startswith("8.x-") and era < 2:
                continue
            return choices[(plan.core_variant + era) % len(choices)]
    raise AssertionError("the last era has no end")  # pragma: no cover


def _requirements(seed: int, index: int, names: Sequence[str], branches: int) -> list[_Requirement]:
    """A few requirements on earlier, popular projects that have a stable release."""
    rng = _rng(f"fairstream-catalogue/{seed}/requirements/{index}")
    if index == 0 or rng.random() > 0.35:
        return []
    wanted = rng.choice((1, 1, 1, 2, 2, 3))
    requirements: dict[str, _Requirement] = {}
    for attempt in range(wanted):
        # Cubing favours the first projects, as everyone requires token and ctools.
        target = int(index * rng.random() ** 3)
        stable = [
            drupal_to_composer(release.drupal_version)
            for release in _release_plan(seed, target).releases
            if release.stage == "stable"
        ]
        package = f"drupal/{names[target]}"
        if not stable or package in requirements:
            continue
        if rng.random() < 0.15:
            constraint = "*"
        else:
            major, minor, _ = rng.choice(stable).split(".", 2)
            constraint = f"^{major}.{minor}"
        since = 0 if attempt == 0 else rng.randrange(branches)
        requirements[package] = _Requirement(package, constraint, since)
    return sorted(requirements.values(), key=lambda requirement: requirement.package)


@lru_cache(maxsize=1)
def _maintainers(seed: int) -> tuple[tuple[str, int], ...]:
    rng = _rng(f"fairstream-catalogue/{seed}/maintainers")
    people = sorted(
        {f"{first} {last}" for first in _FIRST_NAMES.split() for last in _LAST_NAMES.split()}
    )
    rng.shuffle(people)
    return tuple((person, rng.randint(1_000, 3_900_000)) for person in people[:400])


def _profile(seed: int, index: int, name: str) -> _Profile:
    rng = _rng(f"fairstream-catalogue/{seed}/profile/{index}")
    words = name.split("_")
    title = " ".join(word.capitalize() for word in words)
    phrase = " ".join(words)
    kind: Literal["module", "theme"] = "theme" if rng.random() < 0.12 else "module"
    if kind == "theme":
        description = rng.choice(
            (f"A responsive theme with {phrase} styling.", f"{title}: a base theme for Drupal.")
        )
    else:
        description = rng.choice(
            (
                f"Provides {phrase} for Drupal sites.",
                f"Integrates Drupal with {title}.",
                f"Adds {phrase} to entities, views and forms.",
                f"Improves {phrase} for site builders and editors.",
            )
        )
    pool = _maintainers(seed)
    authors = tuple(sorted(rng.sample(pool, rng.choice((1, 1, 2, 2, 3, 4)))))
    keywords = rng.choice(
        (None, "Actively maintained", "Minimally maintained", "Seeking co-maintainer(s)")
    )
    return _Profile(
        kind=kind,
        description=description,
        authors=authors,
        covered=rng.random() < 0.7,
        old_license=rng.random() < 0.5,
        keywords=keywords,
        drush=kind == "module" and rng.random() < 0.2,
        issues_link=rng.random() < 0.5,
    )


def _project_releases(
    seed: int, index: int, names: Sequence[str]
) -> Iterator[tuple[_PlannedRelease, dict[str, Any]]]:
    """Each release of project ``index`` with its composer metadata (``version_entry``'s input)."""
    name = names[index]
    plan = _release_plan(seed, index)
    profile = _profile(seed, index, name)
    requirements = _requirements(seed, index, names, plan.branches)
    support: dict[str, str] = {"source": f"https://git.drupalcode.org/project/{name}"}
    if profile.issues_link:
        support["issues"] = f"https://www.drupal.org/project/issues/{name}"
    authors = [
        {"name": person, "homepage": f"https://www.drupal.org/user/{uid}"}
        for person, uid in profile.authors
    ]
    for release in plan.releases:
        if not profile.covered:
            coverage = _NOT_OPTED_IN
        elif release.stage == "stable":
            coverage = _COVERED
        else:
            coverage = _STAGE_NOT_COVERED[release.stage]
        extra: dict[str, Any] = {
            "drupal": {"datestamp": str(release.timestamp), "security-coverage": coverage}
        }
        if profile.drush:
            extra["drush"] = {"services": {"drush.services.yml": "^10 || ^11"}}
        require = {"drupal/core": _core_constraint(plan, release)}
        require.update(
            (requirement.package, requirement.constraint)
            for requirement in requirements
            if requirement.since_branch <= release.branch
        )
        metadata: dict[str, Any] = {}
        if profile.keywords is not None:
            metadata["keywords"] = profile.keywords
        old = profile.old_license and release.timestamp < _LICENSE_RENAMED
        metadata.update(
            homepage=f"https://www.drupal.org/project/{name}",
            license="GPL-2.0+" if old else "GPL-2.0-or-later",
            authors=authors,
            support=support,
            type=f"drupal-{profile.kind}",
            uid=f"{name}-{release.node_id}",
            extra=extra,
            description=profile.description,
            require=require,
        )
        yield release, metadata


# ---------------------------------------------------------------------------
# Zips and digests
# ---------------------------------------------------------------------------


def _unavailable_digests(seed: int, project: str, drupal_version: str) -> tuple[str, str]:
    """sha1 and sha256 of a seed string: recorded like a zip's, matching no file."""
    marker = f"fairstream-catalogue-not-downloadable:{seed}:{project}:{drupal_version}".encode()
    sha1 = hashlib.sha1(marker)  # noqa: S324 - Composer's dist.shasum is sha1
    return sha1.hexdigest(), hashlib.sha256(marker).hexdigest()


def _zip_members(
    project: str, release: _PlannedRelease, metadata: dict[str, Any]
) -> list[tuple[str, bytes]]:
    """The small files of a release zip, as Drupal.org's packaging script leaves them."""
    kind = metadata["type"].removeprefix("drupal-")
    title = " ".join(word.capitalize() for word in project.split("_"))
    description = str(metadata["description"]).replace("'", "''")
    core = metadata["require"]["drupal/core"]
    dependencies = [
        package.split("/", 1)[1] for package in metadata["require"] if package != "drupal/core"
    ]
    info = [
        f"name: '{title}'",
        f"type: {kind}",
        f"description: '{description}'",
        f"core_version_requirement: '{core}'",
    ]
    if kind == "theme":
        info.append("base theme: stable9")
    if dependencies:
        info.append("dependencies:")
        info += [f"  - {dependency}:{dependency}" for dependency in dependencies]
    day = _day(release.timestamp)
    info += [
        "",
        f"# Information added by Drupal.org packaging script on {day}",
        f"version: '{release.drupal_version}'",
        f"project: '{project}'",
        f"datestamp: {release.timestamp}",
        "",
    ]
    composer = {
        "name": f"drupal/{project}",
        "type": metadata["type"],
        "description": metadata["description"],
        "homepage": metadata["homepage"],
        "license": "GPL-2.0-or-later",
        "require": metadata["require"],
    }
    code = (
        f"<?php\n\n/**\n * @file\n * Hooks of {title} ({project} {release.drupal_version}).\n */\n\n"
        "// Generated by fairstream's synthetic catalogue.\n"
    )
    return [
        (f"{project}/{project}.info.yml", "\n".join(info).encode()),
        (f"{project}/composer.json", orjson.dumps(composer, option=orjson.OPT_INDENT_2)),
        (f"{project}/README.md", f"# {title}\n\n{metadata['description']}\n".encode()),
        (f"{project}/{project}.{kind}", code.encode()),
    ]


def _day(timestamp: int) -> str:
    # Civil date from days since the epoch (proleptic Gregorian), without a time zone lookup.
    days = timestamp // _DAY + 719468
    era, day_of_era = divmod(days, 146097)
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + 3 if month_index < 10 else month_index - 9
    year = year_of_era + era * 400 + (month <= 2)
    return f"{year:04d}-{month:02d}-{day:02d}"


def _member(name: str) -> zipfile.ZipInfo:
    # Fixed date, system and mode: the bytes depend only on the contents, not on the platform.
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.create_system = 3
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_STORED
    return info


def _write_zip(
    path: Path, members: list[tuple[str, bytes]], *, filler: tuple[str, int], filler_seed: str
) -> tuple[str, str]:
    """Write a zip of exactly ``filler[1]`` bytes and return its sha1 and sha256.

    Every member is stored, not deflated: the bytes then do not depend on zlib's version, and
    the incompressible filler (SHAKE-128 output) makes the zip exactly the planned size.
    """
    filler_name, size = filler
    small = io.BytesIO()
    with zipfile.ZipFile(small, "w") as archive:
        for name, data in members:
            archive.writestr(_member(name), data)
    filler_size = size - len(small.getvalue()) - _MEMBER_OVERHEAD - 2 * len(filler_name.encode())
    if filler_size < 0:  # pragma: no cover - MIN_ZIP_SIZE leaves room for the small files
        raise RuntimeError(f"{path.name}: its small files alone exceed {size} bytes")

    with path.open("wb") as out, zipfile.ZipFile(out, "w") as archive:
        for name, data in members:
            archive.writestr(_member(name), data)
        info = _member(filler_name)
        info.file_size = filler_size
        with archive.open(info, "w") as stream:
            for chunk, offset in enumerate(range(0, filler_size, _FILL_CHUNK)):
                length = min(_FILL_CHUNK, filler_size - offset)
                stream.write(hashlib.shake_128(f"{filler_seed}/{chunk}".encode()).digest(length))

    sha1, sha256 = hashlib.sha1(), hashlib.sha256()  # noqa: S324 - Composer's dist.shasum
    with path.open("rb") as written:
        while block := written.read(_FILL_CHUNK):
            sha1.update(block)
            sha256.update(block)
    if path.stat().st_size != size:  # pragma: no cover - the arithmetic above is exact
        raise RuntimeError(f"{path.name} has {path.stat().st_size} bytes, planned {size}")
    return sha1.hexdigest(), sha256.hexdigest()
