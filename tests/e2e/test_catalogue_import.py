"""Drupal.org's side feeding the federation: a catalogue, imported, served by every region."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import orjson
import pytest

from infra import localnet
from services.catalogue import generate_catalogue
from services.importer import ImportSettings, import_repository, load_checksums
from tests.e2e.harness import Federation, wait_until_served

pytestmark = pytest.mark.e2e


async def test_an_imported_catalogue_is_served_by_every_region_with_the_signed_bytes(
    federation: Federation, tmp_path: Path
) -> None:
    port = localnet.free_port()
    source = f"http://127.0.0.1:{port}"
    catalogue = tmp_path / "catalogue"
    summary = generate_catalogue(catalogue, projects=4, seed=7, base_url=source, zips=True)
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
