"""A disconnected network fed by a signed bundle (issue 19): the connected federation exports
its log (releases, a yank, an advisory) and zips; a second, separate embedded stack with no
link to the first (the origin is stopped) imports the bundle, its node verifies every record
against its pinned root as online, and a real composer installs the same bytes from it."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from infra import devstack, localnet
from schemas.events import AdvisorySource, ReleaseYanked, SecurityAdvisory, utc_now
from schemas.signing import SigningKey
from services.publishing.publisher import next_sequence
from services.publishing.trust_admin import write_key_pair
from tests.e2e.harness import Federation, wait_until_served
from tests.e2e.test_regional_node import artifacts_of, eventually, get_json

pytestmark = pytest.mark.e2e


@pytest.fixture
def island(tmp_path: Path) -> Iterator[devstack.Stack]:
    """A second embedded stack: the disconnected network's own broker and store."""
    data_dir = tmp_path / "island-stack"
    started = devstack.up(data_dir)
    try:
        yield started
    finally:
        devstack.down(data_dir)


def fairstream(*args: str) -> dict[str, object]:
    result = localnet.run_fairstream([*args, "--json"])
    assert result.returncode == 0, result.stderr
    summary: dict[str, object] = orjson.loads(result.stdout)
    return summary


def test_a_disconnected_network_installs_the_same_bytes_from_a_bundle(
    federation: Federation, island: devstack.Stack, tmp_path: Path
) -> None:
    token, zip_path = federation.release("token", "8.x-1.9")
    withdrawn, _ = federation.release("token", "8.x-1.10")
    federation.publish(token)
    federation.publish(withdrawn)
    federation.publish_event(
        ReleaseYanked("drupal/token", "1.10.0", next_sequence(), "broken", utc_now())
    )
    federation.publish_event(
        SecurityAdvisory(
            package="drupal/token",
            sequence=next_sequence(),
            advisory_id="SA-CONTRIB-2026-101",
            affected_versions="<1.0.0",
            title="Token - Moderately critical - Information disclosure",
            link="https://www.drupal.org/sa-contrib-2026-101",
            reported_at="2026-12-01 10:00:00",
            sources=(AdvisorySource(name="drupal.org", remote_id="SA-CONTRIB-2026-101"),),
            published_at=utc_now(),
        )
    )
    wait_until_served(federation, "drupal/token", "1.9.0", nodes=["eu"])
    eventually(
        lambda: token.artifact.sha256 in artifacts_of(federation.store("eu")),
        "eu holds the zip",
    )
    key_file = tmp_path / "upstream.key"
    write_key_pair(SigningKey.generate(), key_file)
    bundle = tmp_path / "bundle-0001.tar"
    exported = fairstream(
        "bundle", "export", "--region", "eu", "--bucket", federation.bucket("eu"),
        "--root", str(federation.root_file), "--key", str(key_file), "--out", str(bundle),
        "--broker", federation.stack.broker_url, "--store", federation.stack.store_url,
        "--topic-prefix", federation.topics.releases.removesuffix("fair.releases"),
    )  # fmt: skip
    assert token.artifact.sha256 not in exported["zips_not_held"]  # type: ignore[operator]

    # Nothing of the connected network is reachable from here on: not even its origin.
    federation.origin.stop()
    imported = fairstream(
        "bundle", "import", str(bundle), "--region", "island",
        "--exporter", str(key_file.with_suffix(".pub")),
        "--broker", island.broker_url, "--store", island.store_url,
    )  # fmt: skip
    assert imported["imported"] is True and imported["zips"] >= 1  # type: ignore[operator]
    node = localnet.start_node(
        "island",
        broker_url=island.broker_url,
        store_url=island.store_url,
        root=federation.root_file,
        data_dir=tmp_path / "island-node",
    )
    try:
        eventually(
            lambda: localnet.fetch_p2_versions(node.url, "drupal/token").keys() == {"1.9.0"},
            "the island serves token 1.9.0, and not the yanked 1.10.0",
            timeout=90,
        )
        advisories = get_json(f"{node.url}/api/security-advisories/?packages[]=drupal/token")
        [advisory] = advisories["advisories"]["drupal/token"]
        assert advisory["advisoryId"] == "SA-CONTRIB-2026-101"

        site = tmp_path / "site"
        result = localnet.composer_require(site, node.url, ["drupal/token:^1.9"])
        assert result.returncode == 0, result.stderr
    finally:
        node.stop()

    installed = next(p for p in site.rglob("token.info.yml")).parent
    with zipfile.ZipFile(zip_path) as original:
        for name in original.namelist():
            if name.endswith("/"):
                continue
            relative = name.split("/", 1)[1]
            assert (installed / relative).read_bytes() == original.read(name), name
