"""What people see, in a real browser: the status pages of the directory and of a node,
driven with Playwright in Debian's headless Chromium against a running federation, and
the metrics every process serves, checked against the Grafana dashboard's queries.

Each page test keeps a screenshot in ``test-artifacts/`` (CI keeps the directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from infra import localnet
from schemas.request_signing import sign_request
from schemas.signing import SigningKey, seal
from schemas.trust import load_pinned_root
from services.publishing.http_app import PublishingService, PublishingSettings
from tests.e2e.harness import Federation, rejections_of, wait_until_served
from tests.e2e.test_directory import eventually, nodes_by_region, start_directory
from tests.e2e.test_regional_node import unfollowed
from tests.servers import ServerThread

pytestmark = pytest.mark.e2e

# eu has a quota (far above what it holds): the dashboard's store panel reads it.
NODE_OPTIONS = {"eu": ["--status-every", "1", "--quota", "10G"], "us": ["--status-every", "1"]}
#: Debian's chromium: Playwright drives it, nothing is downloaded.
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DASHBOARD = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "fairstream-dashboard.json"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # As root, Chromium runs only without its sandbox.
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    try:
        yield opened
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        opened.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        context.close()


class Network:
    """The federation of this module, with a directory, two versions and one rejection."""

    def __init__(self, federation: Federation, directory: localnet.LocalProcess) -> None:
        self.federation = federation
        self.directory = directory
        self.eu = federation.nodes["eu"]
        self.us = federation.nodes["us"]


@pytest.fixture(scope="module")
def network(federation: Federation) -> Network:
    for version in ("8.x-1.9", "8.x-1.10"):
        event, _ = federation.release("token", version)
        federation.publish(event)
    wait_until_served(federation, "drupal/token", "1.10.0")
    # An event signed by a key the root does not delegate: every region refuses it.
    forged, _ = federation.release("token", "8.x-1.11")
    outsider = SigningKey.generate()
    federation.producer.produce(
        federation.topics.releases, b"drupal/token", seal(forged.to_bytes(), [outsider])
    )
    rejections_of(federation, "drupal/token", 2)
    directory = start_directory(federation)

    def admitted() -> bool:
        nodes = nodes_by_region(directory)
        return {"eu", "us"} <= nodes.keys() and all(
            nodes[r]["admission"] == "admitted" for r in ("eu", "us")
        )

    eventually(admitted, "both regions admitted")
    return Network(federation, directory)


def cells(page: Page, row_selector: str) -> list[list[str]]:
    """The text of each cell of the rows matched."""
    rows = page.locator(row_selector)
    return [
        [cell.strip() for cell in rows.nth(i).locator("td").all_inner_texts()]
        for i in range(rows.count())
    ]


def test_the_network_page_shows_every_node_its_sync_state_and_the_lag_chart(
    network: Network, page: Page
) -> None:
    response = page.goto(f"{network.directory.url}/status")
    assert response is not None and response.status == 200
    expect(page.locator("h1")).to_have_text("Network")
    rows = {row[0]: row for row in cells(page, "#nodes tbody tr")}
    assert rows.keys() == {"eu", "us"}
    for region, node in (("eu", network.eu), ("us", network.us)):
        row = rows[region]
        assert row[2] == node.url
        assert row[3] == "in sync"
        assert row[4].endswith("ago")
        assert row[7].startswith("admitted: served drupal/token")
    # One line per node in the chart, each labelled with its region and current lag.
    chart = page.locator("#lag-chart svg")
    expect(chart).to_be_visible()
    assert chart.locator("polyline").count() == 2
    legend = page.locator("#lag-chart .legend li").all_inner_texts()
    assert sorted(legend) == [f"eu {network.eu.url}: 0 behind", f"us {network.us.url}: 0 behind"]
    # The rejection counted by reason, with a link to the details.
    reasons = dict(tuple(row) for row in cells(page, "#rejected-by-reason tbody tr"))
    # Each region refused it, and so did the directory (it verifies every event too).
    assert int(reasons.get("undelegated-key", "0")) >= 2


def test_a_stopped_node_is_shown_silent_and_behind_then_back_in_sync(
    network: Network, page: Page
) -> None:
    federation = network.federation
    os.kill(network.us.process.pid, signal.SIGSTOP)
    try:
        event, _ = federation.release("pathauto", "8.x-1.0")
        federation.publish(event)
        wait_until_served(federation, "drupal/pathauto", "1.0.0", nodes=["eu"])

        def us_silent_eu_in_sync() -> list[str] | None:
            page.goto(f"{network.directory.url}/status")
            row = page.locator("#nodes tbody tr", has_text=network.us.url)
            text = row.inner_text()
            eu = page.locator("#nodes tbody tr", has_text=network.eu.url).inner_text()
            if "silent" in text and "in sync" in eu:
                return [text, row.get_attribute("class") or "", eu]
            return None

        text, row_class, eu_row = eventually(
            us_silent_eu_in_sync, "the stopped node silent, the other in sync", 30
        )
        assert "sent no clients" in text
        assert row_class == "down"
        assert "silent" not in eu_row and "admitted" in eu_row
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "network-with-a-stopped-node.png"), full_page=True)
    finally:
        os.kill(network.us.process.pid, signal.SIGCONT)

    def us_back() -> bool:
        page.goto(f"{network.directory.url}/status")
        row = page.locator("#nodes tbody tr", has_text=network.us.url).inner_text()
        return "in sync" in row and "silent" not in row and "admitted" in row

    eventually(us_back, "the resumed node shown in sync and admitted again", 60)


def test_the_package_page_shows_origin_signers_and_verified_copies(
    network: Network, page: Page
) -> None:
    federation = network.federation
    keyid = federation.key.public_key.keyid
    page.goto(f"{network.directory.url}/status/packages")
    page.get_by_label("Package").fill("drupal/token")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("h1")).to_have_text("drupal/token")
    origin = page.locator("#origin").inner_text()
    assert "drupal/*" in origin and "drupal.org" in origin
    versions = page.locator("#versions tbody tr")
    assert versions.count() == 2  # the forged 1.11.0 is not a version
    for version in ("1.10.0", "1.9.0"):
        row = page.locator(f'#versions tbody tr[data-version="{version}"]')
        text = row.inner_text()
        assert keyid[:16] in text and "signature verified" in text
        assert "no longer delegated" not in text
        holders = row.locator("td.holders").inner_text()
        assert network.eu.url in holders and network.us.url in holders
        zip_url = row.locator("a").first.get_attribute("href")
        assert zip_url is not None and zip_url.startswith(federation.origin.url)
        with urllib.request.urlopen(zip_url) as response:
            data = response.read()
        assert hashlib.sha256(data).hexdigest() in text


def test_a_node_shows_its_own_page_its_copies_and_only_its_regions_rejections(
    network: Network, page: Page
) -> None:
    page.goto(f"{network.eu.url}/status")
    rows = cells(page, "#nodes tbody tr")
    assert len(rows) == 1 and rows[0][0] == "eu" and rows[0][2] == network.eu.url
    expect(page.locator("#lag-chart svg polyline")).to_have_count(1)

    page.goto(f"{network.eu.url}/status/packages/drupal/token")
    holders = page.locator('#versions tr[data-version="1.9.0"] td.holders').inner_text()
    # The copy and where its bytes came from: eu fetched it from the origin, which declares
    # no jurisdiction.
    assert holders.startswith("this node (eu), from origin (jurisdiction not declared), fetched ")

    page.goto(f"{network.eu.url}/status/rejections")
    rows = cells(page, "#rejections tbody tr")
    assert rows and all(row[1] == "eu" for row in rows)
    assert any(row[4] == "undelegated-key" and row[3] == "drupal/token" for row in rows)
    assert any("does not delegate" in row[5] for row in rows)


def test_the_directorys_rejections_page_lists_every_regions_refusal_with_its_reason(
    network: Network, page: Page
) -> None:
    page.goto(f"{network.directory.url}/status/rejections")
    rows = cells(page, "#rejections tbody tr")
    refused = [row for row in rows if row[3] == "drupal/token"]
    assert {row[1] for row in refused} >= {"eu", "us"}
    assert all(row[4] == "undelegated-key" for row in refused)


def test_a_mistyped_or_unknown_package_gets_a_page_that_says_so(
    network: Network, page: Page
) -> None:
    response = page.goto(f"{network.directory.url}/status/packages/drupal/no_such_module")
    assert response is not None and response.status == 404
    expect(page.get_by_role("alert")).to_contain_text("drupal/no_such_module is not known here")
    response = page.goto(f"{network.directory.url}/status/packages?name=Not a name")
    assert response is not None and response.status == 400
    expect(page.get_by_role("alert")).to_contain_text("is not a Composer package name")
    # Metadata from the network is text, never markup.
    response = page.goto(
        f"{network.directory.url}/status/packages?name=%3Cscript%3Ealert(1)%3C/script%3E"
    )
    assert response is not None and response.status == 400
    assert page.locator("main script").count() == 0


# --- metrics -------------------------------------------------------------------------------


def scrape(url: str) -> set[str]:
    """The sample names (``_total``, ``_bucket`` ... included) a ``/metrics`` answers."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    names = set()
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queries += [
        v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"
    ]
    for query in queries:
        names.update(re.findall(r"\bfairstream_[a-z_]+", query))
    return names


def publish_a_yank(federation: Federation) -> set[str]:
    """Yank drupal/token 1.9.0 through the publishing service (in this process); returns the
    sample names of its ``/metrics`` afterwards."""
    settings = PublishingSettings(broker_url=federation.stack.broker_url, topics=federation.topics)
    root = load_pinned_root(federation.root_file.read_bytes())
    service = PublishingService(settings, root, [federation.key])
    with ServerThread(service.app) as server:
        body = orjson.dumps(
            {"package": "drupal/token", "version": "1.9.0", "reason": "broken upgrade path"}
        )
        headers = sign_request(
            federation.key,
            "POST",
            "/v1/yanks",
            hashlib.sha256(body).hexdigest(),
            now=datetime.now(UTC),
        )
        status, answer = server.request(
            "POST", "/v1/yanks", body, {**headers, "Content-Type": "application/json"}
        )
        assert status == 201, answer
        scraped = scrape(server.url)
    assert "fairstream_published_total" in scraped
    return scraped


def test_every_metric_the_dashboard_reads_is_in_a_real_scrape(network: Network, page: Page) -> None:
    federation = network.federation
    publishing = publish_a_yank(federation)
    # A download through the directory: a routing decision to count.
    event, _ = federation.release("token", "8.x-1.10")
    status, headers = unfollowed(
        f"{network.directory.url}/dist/drupal/token/1.10.0/{event.artifact.sha256}.zip"
    )
    assert status == 302
    assert headers["X-Fairstream-Served-By"].startswith("e2e-")  # the directory
    # Each hop says who answered: the node the directory chose names its region.
    hop_status, hop_headers = unfollowed(headers["Location"])
    chosen = {network.eu.url: "eu", network.us.url: "us"}
    node_url = headers["Location"].split("/dist/")[0]
    assert hop_status == 302 and hop_headers["X-Fairstream-Served-By"] == chosen[node_url]

    def scraped_everything() -> set[str] | None:
        names = scrape(network.eu.url) | scrape(network.directory.url) | publishing
        return names if dashboard_metrics() <= names else None

    names = eventually(scraped_everything, "every dashboard metric scraped", 30)
    assert len(dashboard_metrics()) >= 15
    assert "fairstream_http_requests_total" in names

    # The yank reaches the package page.
    def yank_shown() -> bool:
        page.goto(f"{network.directory.url}/status/packages/drupal/token")
        row = page.locator('#versions tr[data-version="1.9.0"]').inner_text()
        return "yanked: broken upgrade path" in row

    eventually(yank_shown, "the yank shown on the package page", 30)
