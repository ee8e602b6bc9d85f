"""The synthetic catalogue: deterministic bytes, Drupal-shaped p2 documents, zips that match their sums."""

from __future__ import annotations

import hashlib
import re
import statistics
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.devtools.catalogue import CHECKSUMS_FILE, CatalogueSummary, generate_catalogue
from infra.devtools.catalogue_cli import catalogue, register
from infra.devtools.catalogue_history import MAX_ZIP_SIZE, MIN_ZIP_SIZE
from infra.devtools.catalogue_projects import project_names
from schemas.composer import expand
from schemas.errors import ConfigurationError
from schemas.names import check_package_name
from schemas.versions import drupal_to_composer, is_dev, normalize_version

BASE_URL = "http://127.0.0.1:8000"
# 8 projects of seed 1: 91 releases, 10 MB of zips, 4 projects with requirements.
ZIP_PROJECTS, ZIP_SEED = 8, 1
MACHINE_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
LEGACY_PRE_RELEASE = re.compile(r"8\.x-\d+\.0-(?:alpha|beta|rc)\d+")
LEGACY_RELEASE = re.compile(r"8\.x-\d+\.\d+")
SEMVER_PRE_RELEASE = re.compile(r"\d+\.\d+\.0-(?:alpha|beta|rc)\d+")
SEMVER_RELEASE = re.compile(r"\d+\.\d+\.\d+")
LEGACY_DEV = re.compile(r"8\.x-\d+\.x-dev")
SEMVER_DEV = re.compile(r"\d+(?:\.\d+)?\.x-dev")


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by relative path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@dataclass
class Catalogue:
    root: Path
    summary: CatalogueSummary
    packages: dict[str, Any]
    checksums: dict[str, dict[str, Any]]

    def documents(self) -> Iterator[tuple[str, bool, list[dict[str, Any]]]]:
        """(package, is the ~dev document, expanded entries) of every p2 document."""
        for name in self.packages["available-packages"]:
            for suffix in ("", "~dev"):
                document = orjson.loads((self.root / f"p2/{name}{suffix}.json").read_bytes())
                assert document["minified"] == "composer/2.0"
                assert list(document["packages"]) == [name]
                yield name, suffix == "~dev", expand(document["packages"][name])

    def entries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, _, entries in self.documents():
            for entry in entries:
                yield name, entry


def generate(root: Path, **arguments: Any) -> Catalogue:
    options: dict[str, Any] = {"seed": 1, "base_url": BASE_URL, "zips": False}
    options.update(arguments)
    summary = generate_catalogue(root, **options)
    return Catalogue(
        root=root,
        summary=summary,
        packages=orjson.loads((root / "packages.json").read_bytes()),
        checksums=orjson.loads((root / CHECKSUMS_FILE).read_bytes()),
    )


@pytest.fixture(scope="module")
def metadata_only(tmp_path_factory: pytest.TempPathFactory) -> Catalogue:
    """300 projects without zips, shared by the tests that only read."""
    return generate(tmp_path_factory.mktemp("catalogue") / "out", projects=300)


@pytest.fixture(scope="module")
def with_zips(tmp_path_factory: pytest.TempPathFactory) -> Catalogue:
    return generate(
        tmp_path_factory.mktemp("zips") / "out", projects=ZIP_PROJECTS, seed=ZIP_SEED, zips=True
    )


# ---------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------


def test_the_same_inputs_give_the_same_bytes(tmp_path: Path, with_zips: Catalogue) -> None:
    again = generate(tmp_path / "again", projects=ZIP_PROJECTS, seed=ZIP_SEED, zips=True)

    assert tree(again.root) == tree(with_zips.root)
    assert again.summary == with_zips.summary


def test_parallel_workers_write_the_same_bytes(tmp_path: Path) -> None:
    # 120 projects: three chunks of work, so two processes really share them.
    alone = generate(tmp_path / "alone", projects=120, seed=5)
    shared = generate(tmp_path / "shared", projects=120, seed=5, workers=2)

    assert tree(shared.root) == tree(alone.root)
    assert shared.summary == alone.summary


def test_another_seed_gives_another_catalogue(tmp_path: Path) -> None:
    first = generate(tmp_path / "first", projects=20, seed=1)
    second = generate(tmp_path / "second", projects=20, seed=2)

    assert first.packages["available-packages"] != second.packages["available-packages"]
    assert (first.root / CHECKSUMS_FILE).read_bytes() != (second.root / CHECKSUMS_FILE).read_bytes()


def test_a_smaller_catalogue_is_the_start_of_a_larger_one(
    tmp_path: Path, metadata_only: Catalogue
) -> None:
    smaller = generate(tmp_path / "smaller", projects=40)

    larger = tree(metadata_only.root)
    for path, data in tree(smaller.root).items():
        if path.startswith("p2/"):
            assert larger[path] == data, path
    assert smaller.checksums.items() <= metadata_only.checksums.items()


def test_the_base_url_only_changes_dist_urls(tmp_path: Path) -> None:
    local = generate(tmp_path / "local", projects=10)
    mirror = generate(tmp_path / "mirror", projects=10, base_url="https://mirror.example/drupal/")

    for (_, entry), (_, mirrored) in zip(local.entries(), mirror.entries(), strict=True):
        url = entry["dist"]["url"]
        assert mirrored["dist"]["url"] == url.replace(BASE_URL, "https://mirror.example/drupal")
        assert {**mirrored, "dist": entry["dist"]} == entry
    # checksums.json is keyed by the dist URL's path.
    assert {f"/drupal{path}": sums for path, sums in local.checksums.items()} == mirror.checksums


# ---------------------------------------------------------------------------
# Composer documents
# ---------------------------------------------------------------------------


def test_packages_json_lists_every_package(metadata_only: Catalogue) -> None:
    packages = metadata_only.packages
    names = packages["available-packages"]

    assert packages["metadata-url"] == "/p2/%package%.json"
    assert packages["available-package-patterns"] == ["drupal/*"]
    assert names == sorted(set(names))
    assert len(names) == metadata_only.summary.projects == 300
    p2_files = {path.name for path in (metadata_only.root / "p2" / "drupal").iterdir()}
    assert p2_files == {f"{name[7:]}{suffix}.json" for name in names for suffix in ("", "~dev")}


def test_project_names_look_like_drupal_machine_names(metadata_only: Catalogue) -> None:
    for name in metadata_only.packages["available-packages"]:
        vendor, project = name.split("/")
        assert vendor == "drupal"
        assert check_package_name(name) == name
        assert MACHINE_NAME.fullmatch(project), project
        assert project not in {"core", "drupal", "nul", "con", "prn", "aux"}


def test_every_version_is_what_packages_drupal_org_publishes(metadata_only: Catalogue) -> None:
    for name, dev_document, entries in metadata_only.documents():
        project = name.split("/")[1]
        for entry in entries:
            drupal_version = entry["extra"]["drupal"]["version"]
            assert entry["name"] == name
            assert entry["version"] == drupal_to_composer(drupal_version)
            assert entry["version_normalized"] == normalize_version(entry["version"])
            assert is_dev(entry["version"]) == dev_document, (name, drupal_version)
            assert entry["dist"] == {
                "type": "zip",
                "url": f"{BASE_URL}/files/projects/{project}-{drupal_version}.zip",
                "reference": drupal_version,
                "shasum": entry["dist"]["shasum"],
            }
            assert entry["source"]["url"] == f"https://git.drupalcode.org/project/{project}.git"
            assert entry["type"] in ("drupal-module", "drupal-theme")
            assert entry["license"] in ("GPL-2.0-or-later", "GPL-2.0+")
            assert entry["support"]["source"] == f"https://git.drupalcode.org/project/{project}"
            assert entry["extra"]["drupal"]["datestamp"].isdigit()
            assert entry["extra"]["drupal"]["security-coverage"]["status"] in (
                "covered",
                "not-covered",
            )
            assert entry["uid"].startswith(f"{project}-")
            assert entry["description"]
            assert entry["require"]["drupal/core"].startswith(("^", "~"))


def test_histories_have_every_drupal_release_shape(metadata_only: Catalogue) -> None:
    versions = [entry["extra"]["drupal"]["version"] for _, entry in metadata_only.entries()]
    counts = [
        sum(bool(pattern.fullmatch(version)) for version in versions)
        for pattern in (
            LEGACY_PRE_RELEASE,
            LEGACY_RELEASE,
            SEMVER_PRE_RELEASE,
            SEMVER_RELEASE,
            LEGACY_DEV,
            SEMVER_DEV,
        )
    ]
    assert all(counts), counts
    assert sum(counts) == len(versions)  # nothing else
    cores = {entry["require"]["drupal/core"] for _, entry in metadata_only.entries()}
    assert {"^9 || ^10", "^8.8 || ^9"} <= cores


def test_releases_per_project_have_a_long_tail(metadata_only: Catalogue) -> None:
    per_project: dict[str, int] = {}
    for name, _, entries in metadata_only.documents():
        per_project[name] = per_project.get(name, 0) + len(entries)
    counts = list(per_project.values())

    assert sum(counts) == metadata_only.summary.releases
    assert 7 <= statistics.mean(counts) <= 13
    assert sum(1 <= count <= 3 for count in counts) >= len(counts) * 0.25
    assert sum(count >= 50 for count in counts) >= 2
    assert min(counts) >= 1


def test_requirements_name_other_generated_projects_that_satisfy_them(
    metadata_only: Catalogue,
) -> None:
    names = set(metadata_only.packages["available-packages"])
    stable: dict[str, set[tuple[int, int]]] = {}
    requirements: list[tuple[str, str, str]] = []
    for name, entry in metadata_only.entries():
        if not is_dev(entry["version"]) and "-" not in entry["version"]:
            major, minor, _ = entry["version"].split(".")
            stable.setdefault(name, set()).add((int(major), int(minor)))
        requirements += [
            (name, required, constraint)
            for required, constraint in entry["require"].items()
            if required != "drupal/core"
        ]

    assert len({name for name, _, _ in requirements}) >= 30
    for name, required, constraint in requirements:
        assert required in names and required != name
        if constraint == "*":
            continue
        match = re.fullmatch(r"\^(\d+)\.(\d+)", constraint)
        assert match, constraint
        major, minor = int(match[1]), int(match[2])
        # At least one stable release of the required project satisfies the constraint.
        assert any(m == major and n >= minor for m, n in stable[required]), (required, constraint)


# ---------------------------------------------------------------------------
# checksums.json and zips
# ---------------------------------------------------------------------------


def test_checksums_json_is_sorted_and_covers_every_release(metadata_only: Catalogue) -> None:
    data = (metadata_only.root / CHECKSUMS_FILE).read_bytes()
    assert orjson.dumps(metadata_only.checksums, option=orjson.OPT_SORT_KEYS) == data

    dist = {
        entry["dist"]["url"].removeprefix(BASE_URL): entry["dist"]["shasum"]
        for _, entry in metadata_only.entries()
    }
    assert len(dist) == metadata_only.summary.releases
    assert dist == {path: sums["sha1"] for path, sums in metadata_only.checksums.items()}
    assert sum(sums["size"] for sums in metadata_only.checksums.values()) == (
        metadata_only.summary.catalogued_bytes
    )


def test_metadata_only_writes_no_zip_and_says_so_in_its_sums(metadata_only: Catalogue) -> None:
    assert not (metadata_only.root / "files").exists()
    assert metadata_only.summary.zip_bytes == 0
    assert metadata_only.summary.files_written == 2 * 300 + 2
    path, sums = next(iter(metadata_only.checksums.items()))
    project, _, version = path.removeprefix("/files/projects/").removesuffix(".zip").partition("-")
    marker = f"fairstream-catalogue-not-downloadable:1:{project}:{version}".encode()
    assert sums["sha1"] == hashlib.sha1(marker).hexdigest()
    assert sums["sha256"] == hashlib.sha256(marker).hexdigest()


def test_zip_sizes_are_realistic(metadata_only: Catalogue) -> None:
    sizes = [sums["size"] for sums in metadata_only.checksums.values()]

    assert 50_000 <= statistics.median(sizes) <= 200_000
    assert MIN_ZIP_SIZE == min(sizes) < 10_000
    assert 5_000_000 < max(sizes) <= MAX_ZIP_SIZE
    assert 0.002 <= sum(size > 5_000_000 for size in sizes) / len(sizes) <= 0.05


def test_every_zip_has_one_top_directory_and_matches_its_sums(with_zips: Catalogue) -> None:
    zips = sorted((with_zips.root / "files" / "projects").iterdir())
    assert len(zips) == with_zips.summary.releases
    assert sum(path.stat().st_size for path in zips) == with_zips.summary.zip_bytes

    for name, entry in with_zips.entries():
        project = name.split("/")[1]
        drupal_version = entry["extra"]["drupal"]["version"]
        path = with_zips.root / "files" / "projects" / f"{project}-{drupal_version}.zip"
        data = path.read_bytes()
        sums = with_zips.checksums[f"/files/projects/{path.name}"]
        assert hashlib.sha1(data).hexdigest() == sums["sha1"] == entry["dist"]["shasum"]
        assert hashlib.sha256(data).hexdigest() == sums["sha256"]
        assert len(data) == sums["size"]
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None
            members = archive.namelist()
            assert {member.split("/")[0] for member in members} == {project}
            info = archive.read(f"{project}/{project}.info.yml").decode()
            composer = orjson.loads(archive.read(f"{project}/composer.json"))
        assert f"version: '{drupal_version}'" in info
        assert f"project: '{project}'" in info
        assert composer["name"] == name
        assert composer["require"] == entry["require"]


def test_zips_have_the_sizes_metadata_only_records(tmp_path: Path, with_zips: Catalogue) -> None:
    plain = generate(tmp_path / "plain", projects=ZIP_PROJECTS, seed=ZIP_SEED)

    assert {path: sums["size"] for path, sums in plain.checksums.items()} == {
        path: sums["size"] for path, sums in with_zips.checksums.items()
    }
    assert plain.summary.catalogued_bytes == with_zips.summary.zip_bytes


# ---------------------------------------------------------------------------
# Properties over many seeds
# ---------------------------------------------------------------------------


@given(seed=st.integers(min_value=-(2**40), max_value=2**40), count=st.integers(1, 400))
def test_names_are_unique_machine_names_and_stable_as_the_count_grows(
    seed: int, count: int
) -> None:
    names = project_names(seed, count)

    assert len(set(names)) == count
    assert all(MACHINE_NAME.fullmatch(name) for name in names)
    assert project_names(seed, count // 2) == names[: count // 2]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), projects=st.integers(1, 6))
def test_any_seed_gives_documents_composer_accepts(seed: int, projects: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        generated = generate(Path(directory) / "out", projects=projects, seed=seed)
        releases = 0
        for _, dev_document, entries in generated.documents():
            releases += len(entries)
            for entry in entries:
                assert entry["version"] == drupal_to_composer(entry["extra"]["drupal"]["version"])
                assert is_dev(entry["version"]) == dev_document
        assert releases == generated.summary.releases == len(generated.checksums)


# ---------------------------------------------------------------------------
# Arguments and errors
# ---------------------------------------------------------------------------


def test_progress_counts_projects_up_to_all(tmp_path: Path) -> None:
    seen: list[int] = []
    generate(tmp_path / "out", projects=120, progress=seen.append)

    assert seen[0] == 0
    assert seen == sorted(seen)
    assert seen[-1] == 120


def test_a_non_empty_directory_is_refused_without_replace(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")

    with pytest.raises(ConfigurationError, match=r"is not empty.*--force"):
        generate(tmp_path, projects=3)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_replace_swaps_a_catalogue_and_keeps_other_files(tmp_path: Path) -> None:
    generate(tmp_path, projects=30, seed=7)
    (tmp_path / "notes.txt").write_text("mine")

    replaced = generate(tmp_path, projects=3, seed=8, replace=True)

    fresh = generate(tmp_path.parent / "fresh", projects=3, seed=8)
    assert tree(tmp_path) == {**tree(fresh.root), "notes.txt": b"mine"}
    assert replaced.summary == fresh.summary


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"projects": 0}, "between 1 and"),
        ({"projects": 100_001}, "between 1 and"),
        ({"projects": 3, "workers": 0}, "workers"),
        ({"projects": 3, "base_url": "ftp://example.org"}, "not an http"),
        ({"projects": 3, "base_url": "http://example.org/?a=1"}, "not an http"),
        ({"projects": 3, "base_url": "example.org"}, "not an http"),
    ],
)
def test_bad_arguments_are_configuration_errors(
    tmp_path: Path, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        generate(tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


def test_a_file_is_no_output_directory(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("")
    with pytest.raises(ConfigurationError, match="is a file"):
        generate(tmp_path / "out", projects=3)


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def test_register_adds_the_catalogue_group() -> None:
    import click

    @click.group()
    def root() -> None:
        """A stand-in for the fairstream group."""

    register(root)
    assert root.commands["catalogue"] is catalogue


@pytest.mark.parametrize("arguments", [["--help"], ["generate", "--help"]])
def test_help_has_an_example(arguments: list[str]) -> None:
    result = CliRunner().invoke(catalogue, arguments)
    assert result.exit_code == 0
    assert "Example: fairstream catalogue generate" in result.output


def test_generate_writes_the_catalogue_and_prints_its_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    arguments = ["generate", str(out), "--projects", "5", "--seed", "1", "--base-url", BASE_URL]
    result = CliRunner().invoke(catalogue, [*arguments, "--zips", "--workers", "1"])

    assert result.exit_code == 0, result.output
    expected = generate(tmp_path / "direct", projects=5, seed=1, zips=True)
    assert tree(out) == tree(expected.root)
    assert f"{expected.summary.releases:,}" in result.output
    assert f"origin serve {out} --listen 127.0.0.1:8000" in result.output

    again = CliRunner().invoke(catalogue, arguments)
    assert isinstance(again.exception, ConfigurationError)
    assert "--force" in str(again.exception)

    forced = CliRunner().invoke(catalogue, [*arguments, "--force"])
    assert forced.exit_code == 0, forced.output
    assert "Metadata only" in forced.output
    assert not (out / "files" / "projects").exists()
