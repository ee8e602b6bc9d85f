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

import dataclasses
import multiprocessing
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from infra.devtools.catalogue_projects import project_names, project_releases
from infra.devtools.catalogue_zips import unavailable_digests, write_zip, zip_members
from schemas.composer import render_p2, render_packages_json
from schemas.errors import ConfigurationError
from schemas.version_entries import version_entry

__all__ = [
    "CHECKSUMS_FILE",
    "MAX_PROJECTS",
    "CatalogueSummary",
    "generate_catalogue",
]

CHECKSUMS_FILE: Final = "checksums.json"
MAX_PROJECTS: Final = 100_000

# Projects per unit of work (a worker's share, a progress step): a chunk with zips is slower.
_CHUNK_PROJECTS: Final = 50
_CHUNK_PROJECTS_WITH_ZIPS: Final = 4


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
    chunks = _chunks(names, zips=zips)
    if progress is not None:
        progress(0)  # the arguments are good: a progress bar may start
    written = _write_chunks(job, chunks, workers=workers, progress=progress)

    root: dict[str, Any] = orjson.loads(render_packages_json())
    root["available-packages"] = [f"drupal/{name}" for name in sorted(names)]
    (out_dir / "packages.json").write_bytes(orjson.dumps(root))
    return dataclasses.replace(written, files_written=written.files_written + 1)


def _chunks(names: Sequence[str], *, zips: bool) -> list[tuple[int, ...]]:
    """The projects' positions (in ``names``) in units of work, in name order.

    Sorted names give sorted dist paths ("<name>-" sorts before "<name>" and any further name
    character), so checksums.json streams out in key order, chunk after chunk.
    """
    by_name = sorted(range(len(names)), key=names.__getitem__)
    step = _CHUNK_PROJECTS_WITH_ZIPS if zips else _CHUNK_PROJECTS
    return [tuple(by_name[start : start + step]) for start in range(0, len(names), step)]


def _write_chunks(
    job: _Job,
    chunks: list[tuple[int, ...]],
    *,
    workers: int,
    progress: Callable[[int], None] | None,
) -> CatalogueSummary:
    """Write the projects of ``chunks``, and checksums.json as their results come in.

    The summary counts checksums.json among the files written; ``progress`` is called with
    the projects done after each chunk.
    """
    releases = dev_releases = zip_bytes = catalogued_bytes = files_written = done = 0
    last_path = ""
    with ExitStack() as stack:
        results = _chunk_results(job, chunks, workers=workers, stack=stack)
        checksums = stack.enter_context((job.out_dir / CHECKSUMS_FILE).open("wb"))
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

    return CatalogueSummary(
        projects=done,
        releases=releases,
        dev_releases=dev_releases,
        zip_bytes=zip_bytes,
        catalogued_bytes=catalogued_bytes,
        files_written=files_written,
    )


def _chunk_results(
    job: _Job, chunks: list[tuple[int, ...]], *, workers: int, stack: ExitStack
) -> Iterator[_ChunkResult]:
    """Each chunk written, in order: here, or by a pool of ``workers`` processes that ``stack``
    shuts down."""
    if workers == 1 or len(chunks) == 1:
        return (_write_chunk(job, chunk) for chunk in chunks)
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
    return pool.map(_write_chunk_in_worker, chunks)


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
        for release, metadata in project_releases(job.seed, index, job.names):
            file_name = f"{name}-{release.drupal_version}.zip"
            if job.zips:
                sha1, sha256 = write_zip(
                    projects_dir / file_name,
                    zip_members(name, release, metadata),
                    filler=(f"{name}/assets/{name}.bin", release.size),
                    filler_seed=f"fairstream-catalogue/{job.seed}/{name}/{release.drupal_version}",
                )
                zip_bytes += release.size
                files_written += 1
            else:
                sha1, sha256 = unavailable_digests(job.seed, name, release.drupal_version)
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
