"""A meta-directory on the real stack: two linked directories serve the same catalogue for
us, one of them for eu; clients are redirected to a healthy one of their region, move to
the other linked one when theirs stops, and a real composer installs through it."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from infra import localnet
from tests.e2e.harness import Federation
from tests.e2e.test_directory import eventually, serves, start_directory
from tests.e2e.test_regional_node import get_json

pytestmark = pytest.mark.e2e


def redirect(url: str, method: str = "GET", **headers: str) -> tuple[int, str | None]:
    """Status and Location of a request whose redirect is not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    request = urllib.request.Request(
        url, method=method, headers=headers, data=b"{}" if method == "POST" else None
    )
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=5) as response:
            return response.status, response.headers.get("Location")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location")


def start_meta_directory(federation: Federation, port: int, *options: str) -> localnet.LocalProcess:
    meta = localnet.start_fairstream(
        "meta-directory",
        ["directory", "refer", "--listen", f"127.0.0.1:{port}", *options],
        url=f"http://127.0.0.1:{port}",
        log=federation.work_dir / "logs" / "meta-directory.log",
    )
    federation.processes.append(meta)
    meta.wait_until_answering("/health")
    return meta


def test_clients_go_to_a_healthy_linked_directory_of_their_region(
    federation: Federation, tmp_path: Path
) -> None:
    event, _ = federation.release("token", "8.x-1.9")
    federation.publish(event)
    # Linked directories serve the same catalogue: one public URL, the meta-directory's, so
    # every URL in their documents (p2, dists, advisories) comes back to it and is
    # redirected to a healthy one, and a document cached from one is valid on the other.
    port = localnet.free_port()
    public_url = f"http://127.0.0.1:{port}"
    first = start_directory(federation, "--public-url", public_url)
    second = start_directory(federation, "--public-url", public_url)
    meta = start_meta_directory(
        federation,
        port,
        "--refer",
        f"us={first.url}",
        "--refer",
        f"us={second.url}",
        "--refer",
        f"eu={first.url}",
        "--region-map",
        "127.0.0.0/8=us",
        "--probe-every",
        "0.5",
        "--probe-timeout",
        "1",
    )
    for directory in (first, second):
        serves(directory.url, "drupal/token", "1.9.0")

    def all_healthy() -> list[dict[str, Any]] | None:
        listed: list[dict[str, Any]] = get_json(f"{meta.url}/directories.json")["directories"]
        return listed if all(d["healthy"] for d in listed) else None

    listed = eventually(all_healthy, "every referenced directory healthy", timeout=20)
    assert {(d["region"], d["url"]) for d in listed} == {
        ("us", first.url),
        ("us", second.url),
        ("eu", first.url),
    }
    assert all(d["trust_root_version"] == 1 and d["last_probe"] for d in listed)

    # 127.0.0.1 is us: one of the linked us directories, the same one every time.
    status, location = redirect(f"{meta.url}/p2/drupal/token.json?x=1")
    assert status == 302 and location is not None
    chosen = first if location.startswith(first.url) else second
    assert location == f"{chosen.url}/p2/drupal/token.json?x=1"
    assert redirect(f"{meta.url}/p2/drupal/token.json?x=1")[1] == location
    # A POST is re-sent with its body (307); an explicit region wins over the address.
    assert redirect(f"{meta.url}/downloads/", "POST") == (307, f"{chosen.url}/downloads/")
    assert redirect(f"{meta.url}/packages.json", **{"X-Fairstream-Region": "eu"}) == (
        302,
        f"{first.url}/packages.json",
    )

    # A real composer through the meta-directory installs.
    site = tmp_path / "site"
    result = localnet.composer_require(site, meta.url, ["drupal/token:^1.9"])
    assert result.returncode == 0, result.stderr
    assert "drupal/token" in (site / "composer.lock").read_text()

    # The chosen directory stops: its clients go to the other linked one.
    chosen.stop()
    other = second if chosen is first else first
    eventually(
        lambda: redirect(f"{meta.url}/packages.json") == (302, f"{other.url}/packages.json"),
        "us clients sent to the other linked directory",
        timeout=15,
    )

    # The same site again, its metadata revalidated (If-Modified-Since) against the other
    # directory and the zip downloaded anew: nothing it cached points at the stopped one.
    shutil.rmtree(site / "vendor")
    shutil.rmtree(site / ".composer-cache" / "files", ignore_errors=True)
    result = localnet.composer(site, "update", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert (site / "vendor" / "drupal" / "token").is_dir(), result.stderr
