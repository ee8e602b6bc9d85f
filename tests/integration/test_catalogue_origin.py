"""A generated catalogue served by the real origin: what an importer or composer downloads matches."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from infra.devtools.catalogue import CHECKSUMS_FILE, CatalogueSummary, generate_catalogue
from infra.devtools.origin_http import origin_app
from infra.localnet import free_port
from schemas.composer import expand

pytestmark = pytest.mark.integration

# 8 projects of seed 3: 30 releases, 12 MB of zips, 5 projects that require another one.
PROJECTS, SEED = 8, 3


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, CatalogueSummary]]:
    """A catalogue with zips whose dist URLs name the origin that serves it."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    summary = generate_catalogue(
        tmp_path / "catalogue", projects=PROJECTS, seed=SEED, base_url=base_url, zips=True
    )
    server = TestServer(origin_app(tmp_path / "catalogue"), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield base_url, summary
    finally:
        await server.close()


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, url
        return orjson.loads(await response.read())


async def test_dist_urls_download_zips_that_match_their_sums(
    served: tuple[str, CatalogueSummary],
) -> None:
    base_url, summary = served
    async with aiohttp.ClientSession() as session:
        root = await get_json(session, f"{base_url}/packages.json")
        checksums = await get_json(session, f"{base_url}/{CHECKSUMS_FILE}")
        names = root["available-packages"]
        assert len(names) == PROJECTS

        downloaded = 0
        for name in names:
            metadata_url = base_url + root["metadata-url"].replace("%package%", name)
            for url in (metadata_url, metadata_url.replace(".json", "~dev.json")):
                document = await get_json(session, url)
                for entry in expand(document["packages"][name]):
                    async with session.get(entry["dist"]["url"]) as response:
                        assert response.status == 200, entry["dist"]["url"]
                        data = await response.read()
                    sums = checksums[entry["dist"]["url"].removeprefix(base_url)]
                    assert hashlib.sha1(data).hexdigest() == entry["dist"]["shasum"]
                    assert hashlib.sha1(data).hexdigest() == sums["sha1"]
                    assert hashlib.sha256(data).hexdigest() == sums["sha256"]
                    assert len(data) == sums["size"]
                    downloaded += 1

    assert downloaded == summary.releases == len(checksums)


async def test_requirements_resolve_to_packages_the_origin_serves(
    served: tuple[str, CatalogueSummary],
) -> None:
    base_url, _ = served
    async with aiohttp.ClientSession() as session:
        root = await get_json(session, f"{base_url}/packages.json")
        required: set[str] = set()
        for name in root["available-packages"]:
            document = await get_json(session, f"{base_url}/p2/{name}.json")
            for entry in expand(document["packages"][name]):
                required |= set(entry["require"]) - {"drupal/core"}
        assert required, "seed 3 has projects that require others"
        for name in sorted(required):
            document = await get_json(session, f"{base_url}/p2/{name}.json")
            assert expand(document["packages"][name]), f"{name} has stable releases"
