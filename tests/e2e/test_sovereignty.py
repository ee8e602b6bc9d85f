"""A sovereign region on the real stack (issue 19): region ``eu`` allows EU only; the
origin is declared US and region ``us`` (US) holds a copy. eu parks the zip, fetches it
from neither, answers its clients 503 with the reason, is never routed to us by the
directory; once an EU region (``de``) holds the zip, eu takes it from there, its status
page says so, and a real composer installs from eu."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from infra import localnet
from schemas import layout
from tests.e2e.harness import Federation, wait_until_served
from tests.e2e.test_directory import start_directory
from tests.e2e.test_regional_node import artifacts_of, eventually, redirect_of

pytestmark = pytest.mark.e2e

SOVEREIGN = ["--jurisdiction", "EU", "--allow-jurisdiction", "EU", "--origin-jurisdiction", "US"]
NODE_OPTIONS = {
    # token only: pathauto is served by us alone, so only us could answer an eu client's
    # download of it through the directory.
    "eu": [
        *SOVEREIGN,
        "--include",
        "drupal/token",
        "--status-every",
        "1",
        "--retry-parked-every",
        "1",
    ],
    "us": ["--jurisdiction", "US", "--status-every", "1"],
}


def refusal_of(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str | None]:
    """Status, body and Location of a GET that is not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=5) as got:
            return got.status, got.read().decode(), got.headers.get("Location")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(), exc.headers.get("Location")


def test_a_sovereign_region_uses_only_its_jurisdictions_and_says_why(
    federation: Federation, tmp_path: Path
) -> None:
    token, _ = federation.release("token", "8.x-1.9")
    pathauto, _ = federation.release("pathauto", "8.x-1.12")
    federation.publish(token)
    federation.publish(pathauto)
    wait_until_served(federation, "drupal/token", "1.9.0")
    sha256 = token.artifact.sha256
    eu, us = federation.nodes["eu"], federation.nodes["us"]
    eu_store = federation.store("eu")

    # us (unrestricted) fetched it from the origin; eu parked it, naming what it withheld.
    eventually(lambda: sha256 in artifacts_of(federation.store("us")), "us holds the zip")

    def parked_reason() -> str | None:
        body = eu_store.get(layout.pending_key(sha256))
        reason = None if body is None else str(orjson.loads(body.data)["last_error"])
        return reason if reason and "us (US)" in reason else None

    reason = eventually(parked_reason, "eu parked the zip and names us's copy")
    assert "fetches from EU only" in reason and "origin (US)" in reason
    assert sha256 not in artifacts_of(eu_store)

    # eu's clients are told why, never sent to the US copy or the US origin.
    dist = f"/dist/drupal/token/1.9.0/{sha256}.zip"
    status, body, location = refusal_of(eu.url + dist)
    assert (status, location) == (503, None), body
    assert "sends its clients to EU only" in body and "(US)" in body
    mirrors = orjson.loads(refusal_of(eu.url + "/packages.json")[1]).get("mirrors", [])
    assert all(us.url not in mirror["dist-url"] for mirror in mirrors)

    # The directory never routes an eu client to us; a us client goes there.
    directory = start_directory(federation, "--region-map", "127.0.0.0/8=us")
    pathauto_dist = f"/dist/drupal/pathauto/1.12.0/{pathauto.artifact.sha256}.zip"

    def routed_for_us() -> bool:
        return redirect_of(directory.url + pathauto_dist) == (302, us.url + pathauto_dist)

    eventually(routed_for_us, "the directory admits us and sends its clients there")
    status, body, location = refusal_of(
        directory.url + pathauto_dist, {"X-Fairstream-Region": "eu"}
    )
    assert (status, location) == (503, None), body
    assert "region eu sends its clients to nodes in EU only" in body

    # An EU region gets the zip (from the origin: it restricts nothing) and announces its
    # copy; eu's parked fetch takes it from there.
    federation.start_node("de", options=["--jurisdiction", "EU", "--include", "drupal/token"])
    wait_until_served(federation, "drupal/token", "1.9.0", nodes=["de"])
    eventually(lambda: sha256 in artifacts_of(eu_store), "eu fetched the zip from de", timeout=120)
    assert eu_store.stat(layout.pending_key(sha256)) is None
    assert redirect_of(eu.url + dist)[0] == 302
    # The proof: eu's page of the package says whose bytes it holds, and where they were.
    status, page, _ = refusal_of(eu.url + "/status/packages/drupal/token")
    assert status == 200 and "this node (eu), from de (EU), fetched" in page
    # The same evidence for an auditor's script: the page's JSON, version by version.
    status, body, _ = refusal_of(eu.url + "/status/packages/drupal/token.json")
    assert status == 200, body
    evidence = orjson.loads(body)
    assert evidence["package"] == "drupal/token"
    [held] = [v for v in evidence["versions"] if v["version"] == "1.9.0"]
    assert (held["sha256"], held["sha1"]) == (sha256, token.artifact.sha1)
    [copy] = held["copies"]
    assert (copy["region"], copy["base_url"], copy["provenance_unknown"]) == ("eu", eu.url, None)
    came = copy["provenance"]
    assert (came["from"], came["jurisdiction"]) == ("de", "EU"), came
    assert came["url"] == federation.nodes["de"].url + dist, came
    fetched_at = datetime.fromisoformat(came["fetched_at"])
    assert fetched_at.tzinfo is not None and fetched_at <= datetime.now(UTC), came
    # Every copy eu holds came from an EU source: what the auditor's script checks.
    assert {c["provenance"]["jurisdiction"] for v in evidence["versions"] for c in v["copies"]} == {
        "EU"
    }, evidence

    result = localnet.composer_require(tmp_path / "site", eu.url, ["drupal/token:^1.9"])
    assert result.returncode == 0, result.stderr
