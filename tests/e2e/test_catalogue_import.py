"""Drupal.org's side feeding the federation: a catalogue, imported, served by every region."""

from __future__ import annotations

import hashlib
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from infra import localnet
from infra.devtools.catalogue import generate_catalogue
from schemas.composer import expand
from services.importer.checksums import load_checksums
from services.importer.importer import import_repository
from services.importer.settings import ImportSettings
from tests.e2e.harness import Federation, wait_until_served

pytestmark = pytest.mark.e2e


async def test_an_imported_catalogue_is_served_by_every_region_with_the_signed_bytes(
    federation: Federation, tmp_path: Path
) -> None:
    port = localnet.free_port()
    source = f"http://127.0.0.1:{port}"
    catalogue = tmp_path / "catalogue"
    summary = generate_catalogue(catalogue, projects=8, seed=1, base_url=source, zips=True)
    origin = localnet.start_origin(catalogue, log=tmp_path / "origin.log", port=port)
    federation.processes.append(origin)

    report = await import_repository(
        ImportSettings(
            repository_url=source,
            broker_url=federation.stack.broker_url,
            keys=(federation.key,),
            topics=federation.topics,
            checksums=load_checksums((catalogue / "checksums.json").read_bytes()),
        )
    )

    assert report.published == summary.releases
    index = orjson.loads((catalogue / "packages.json").read_bytes())
    checked = 0
    for package in index["available-packages"]:
        stable = orjson.loads((catalogue / "p2" / f"{package}.json").read_bytes())
        newest = stable["packages"][package][0] if stable["packages"][package] else None
        if newest is None:
            continue
        wait_until_served(federation, package, newest["version"])
        for region, node in federation.nodes.items():
            served = localnet.fetch_p2_versions(node.url, package)[newest["version"]]
            assert served["dist"]["shasum"] == newest["dist"]["shasum"]
            assert served["dist"]["url"].startswith(node.url + "/dist/")
            # The node answers with a redirect to its own store; the bytes are the signed ones.
            with urllib.request.urlopen(served["dist"]["url"], timeout=30) as response:
                data = response.read()
            assert hashlib.sha1(data).hexdigest() == newest["dist"]["shasum"], region
        checked += 1
    assert checked >= 2, "the catalogue must hold stable releases to check"

    # The region's metadata is the source's, entry for entry, but for where the zips are.
    for package in index["available-packages"]:
        source_versions = source_entries(catalogue, package)
        for region, node in federation.nodes.items():
            served = localnet.fetch_p2_versions(node.url, package)
            assert set(served) == set(source_versions), f"{region}: {package} versions differ"
            for version, entry in served.items():
                assert entry["dist"]["url"].startswith(f"{node.url}/dist/{package}/{version}/")
                assert without_dist_url(entry) == without_dist_url(source_versions[version])

    # And a site builder installs a package with its dependencies from a region.
    package, dependencies = package_with_dependencies(catalogue, index["available-packages"])
    node = federation.nodes["eu"]
    result = localnet.composer_require(
        tmp_path / "site", node.url, [package], extra_repositories=[DRUPAL_CORE_STAND_IN]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lock = orjson.loads((tmp_path / "site" / "composer.lock").read_bytes())
    installed = {p["name"]: p for p in lock["packages"]}
    assert package in installed and set(dependencies) <= set(installed)
    for name in [package, *dependencies]:
        locked = installed[name]
        source = source_entries(catalogue, name)[locked["version"]]
        assert locked["dist"]["shasum"] == source["dist"]["shasum"]
        project = name.split("/")[1]
        zip_path = catalogue / "files" / "projects" / Path(source["dist"]["url"]).name
        with zipfile.ZipFile(zip_path) as archive:
            info = archive.read(f"{project}/{project}.info.yml")
        assert (tmp_path / "site" / "vendor" / name / f"{project}.info.yml").read_bytes() == info


#: drupal/core is not in the catalogue: metapackages stand in for every core major.
DRUPAL_CORE_STAND_IN = {
    "type": "package",
    "package": [
        {"name": "drupal/core", "version": version, "type": "metapackage"}
        for version in ("8.9.20", "9.5.11", "10.3.0", "11.0.0")
    ],
}


def source_entries(catalogue: Path, package: str) -> dict[str, dict[str, Any]]:
    """Every version of a package as the source repository's p2 documents say, expanded."""
    entries: dict[str, dict[str, Any]] = {}
    for suffix in ("", "~dev"):
        document = orjson.loads((catalogue / "p2" / f"{package}{suffix}.json").read_bytes())
        entries.update({e["version"]: e for e in expand(document["packages"][package])})
    return entries


def without_dist_url(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "dist": {k: v for k, v in entry["dist"].items() if k != "url"}}


def package_with_dependencies(catalogue: Path, packages: list[str]) -> tuple[str, list[str]]:
    """A package whose newest stable release requires other packages of the catalogue."""
    for package in packages:
        stable = orjson.loads((catalogue / "p2" / f"{package}.json").read_bytes())
        entries = expand(stable["packages"][package])
        if entries:
            requires = [r for r in entries[0].get("require", {}) if r != "drupal/core"]
            if requires:
                return package, requires
    pytest.fail("the catalogue has no package with dependencies: choose another seed")
