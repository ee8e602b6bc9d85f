"""Metrics as operators expect them, from real processes: a worker (``node run``), a
directory, an origin and a publishing service each scraped, each showing its build and
only its own families; the shipped alert rules and the dashboard's queries checked and
tested with Debian's ``promtool`` (installed by ``make test``, package ``prometheus``).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from uuid import uuid4

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from connectors.kafka_topics import Topics
from infra import devstack, localnet
from schemas.signing import SigningKey
from schemas.trust import TrustRoot
from services.publishing.http_app import PublishingService, PublishingSettings
from tests.roots import write_drupal_root
from tests.servers import ServerThread

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "infra" / "prometheus"
DASHBOARD = REPO / "infra" / "grafana" / "fairstream-dashboard.json"
PROMTOOL = "/usr/bin/promtool"
QUOTA = 1 << 30
#: A region of this run alone: a region's consumer group is named after it, and the
#: stack is shared with other tests' regions (a shared group would rebalance with theirs).
REGION = f"m{uuid4().hex[:8]}"
#: Families only a region's processes export (connectors.metrics.FAMILIES).
NODE_ONLY = {
    "fairstream_events",
    "fairstream_lag_events",
    "fairstream_lag_seconds",
    "fairstream_fetch_seconds",
    "fairstream_store_writes",
    "fairstream_store_bytes",
    "fairstream_node_state",
    "fairstream_node_healthy",
    "fairstream_node_ready",
}
DIRECTORY_ONLY = {"fairstream_directory_nodes", "fairstream_node_heartbeat_age_seconds"}


class Scrape:
    """One ``/metrics`` answer, parsed."""

    def __init__(self, url: str) -> None:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
        parsed = list(text_string_to_metric_families(text))
        #: Our families, by the name the text format gives them (``fairstream_events``; a
        #: counter's ``_created`` samples parse as a family of their own, left out).
        self.families = {
            f.name
            for f in parsed
            if f.name.startswith("fairstream_") and not f.name.endswith("_created")
        }
        self.samples: list[Sample] = [s for f in parsed for s in f.samples]

    def values(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(s.labels, s.value) for s in self.samples if s.name == name]

    def value(self, name: str, **labels: str) -> float | None:
        found = [v for got, v in self.values(name) if labels.items() <= got.items()]
        assert len(found) <= 1, f"{name}{labels}: {found}"
        return found[0] if found else None


def eventually(url: str, ready: Callable[[Scrape], bool], what: str, timeout: float) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        scrape = Scrape(url)
        if ready(scrape) or time.monotonic() > deadline:
            assert ready(scrape), f"{what} within {timeout:.0f} s: {scrape.samples}"
            return scrape
        time.sleep(0.5)


def build_of(scrape: Scrape) -> dict[str, str]:
    [(labels, value)] = scrape.values("fairstream_build_info")
    assert value == 1
    return labels


def http_labels(scrape: Scrape) -> list[dict[str, str]]:
    return [labels for labels, _ in scrape.values("fairstream_http_requests_total")]


@pytest.fixture
def root(tmp_path: Path) -> tuple[Path, TrustRoot, SigningKey]:
    path = tmp_path / "root.avro"
    publisher = SigningKey.generate()
    return path, write_drupal_root(path, publisher, SigningKey.generate()), publisher


@pytest.fixture
def processes(
    stack: devstack.Stack, root: tuple[Path, TrustRoot, SigningKey], tmp_path: Path
) -> Iterator[dict[str, localnet.LocalProcess]]:
    """A worker of a region of its own (heartbeat every second, 1 GiB quota), a directory and an
    origin, on topics of this test's own; stopped after it."""
    prefix = f"metrics-{uuid4().hex[:8]}."
    started: dict[str, localnet.LocalProcess] = {}
    try:
        started["node"] = localnet.start_node(
            REGION,
            broker_url=stack.broker_url,
            store_url=stack.store_url,
            root=root[0],
            data_dir=tmp_path / "node",
            topic_prefix=prefix,
            partitions=2,
            bucket=f"metrics-{uuid4().hex[:8]}",
            options=["--status-every", "1", "--quota", "1G"],
        )
        port = localnet.free_port()
        name = f"metrics-dir-{uuid4().hex[:6]}"
        started["directory"] = localnet.start_fairstream(
            "directory",
            [
                "directory",
                "serve",
                *("--root", str(root[0]), "--name", name),
                *("--broker", stack.broker_url, "--store", stack.store_url),
                *("--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "directory")),
                *("--topic-prefix", prefix, "--partitions", "2", "--session-timeout", "6"),
                *("--check-every", "0.5"),
            ],
            url=f"http://127.0.0.1:{port}",
            log=tmp_path / "logs" / "directory.log",
        )
        started["directory"].wait_until_answering("/health", timeout=120)
        (tmp_path / "origin").mkdir()
        started["origin"] = localnet.start_origin(
            tmp_path / "origin", log=tmp_path / "logs" / "origin.log"
        )
        yield started
    finally:
        for process in started.values():
            process.stop()


def test_a_worker_exports_its_build_root_expiry_state_store_and_quota(
    processes: dict[str, localnet.LocalProcess], root: tuple[Path, TrustRoot, SigningKey]
) -> None:
    node = processes["node"]

    def in_sync_and_ready(scrape: Scrape) -> bool:
        return (
            scrape.value("fairstream_node_state", region=REGION, state="in-sync") == 1
            and scrape.value("fairstream_node_ready", region=REGION) == 1
        )

    scrape = eventually(node.url, in_sync_and_ready, "an in-sync heartbeat and /ready", 90)
    assert build_of(scrape) == {"version": version("fairstream"), "service": "node"}
    assert scrape.value("fairstream_trust_root_expiry_timestamp_seconds") == pytest.approx(
        root[1].expires.timestamp()
    )
    assert scrape.value("fairstream_node_state", region=REGION, state="catching-up") == 0
    assert scrape.value("fairstream_node_state", region=REGION, state="degraded") == 0
    assert scrape.value("fairstream_node_healthy", region=REGION) == 1
    assert scrape.value("fairstream_store_quota_bytes", region=REGION) == QUOTA
    assert scrape.value("fairstream_store_bytes", region=REGION) == 0  # no zip yet
    # The gauges say what the probes answer.
    with urllib.request.urlopen(f"{node.url}/ready", timeout=10) as response:
        assert response.status == 200

    # Requests are counted by status code, under the label Prometheus users expect.
    health = [labels for labels in http_labels(scrape) if labels["route"] == "/health"]
    assert health and all(labels["code"] == "200" for labels in health), health
    assert all("status" not in labels for labels in http_labels(scrape))

    assert scrape.families >= NODE_ONLY
    assert not scrape.families & (DIRECTORY_ONLY | {"fairstream_published"})


def test_a_directory_exports_no_node_family(
    processes: dict[str, localnet.LocalProcess], root: tuple[Path, TrustRoot, SigningKey]
) -> None:
    directory = processes["directory"]
    # The directory runs a release stream of its own (its catalogue): its counts are not
    # exported, and the node it knows shows up in its own families once heard.
    # Its registration gives the heartbeat age, its first heartbeat the lag: both come.
    scrape = eventually(
        directory.url,
        lambda s: (
            bool(s.values("fairstream_node_heartbeat_age_seconds"))
            and bool(s.values("fairstream_node_lag_events"))
        ),
        "the node's heartbeat in the directory's gauges",
        60,
    )
    assert build_of(scrape)["service"] == "directory"
    assert scrape.families >= DIRECTORY_ONLY
    assert not scrape.families & NODE_ONLY, scrape.families & NODE_ONLY
    assert scrape.value("fairstream_trust_root_expiry_timestamp_seconds") == pytest.approx(
        root[1].expires.timestamp()
    )
    assert {labels["region"] for labels, _ in scrape.values("fairstream_node_lag_events")} == {
        REGION
    }


def test_an_origin_exports_its_build_and_http_only(
    processes: dict[str, localnet.LocalProcess],
) -> None:
    scrape = Scrape(processes["origin"].url)
    assert build_of(scrape)["service"] == "origin"
    assert scrape.families == {
        "fairstream_build_info",
        "fairstream_http_requests",
        "fairstream_http_request_seconds",
    }
    assert {labels["code"] for labels in http_labels(scrape) if labels["route"] == "/health"} == {
        "200"
    }


def test_a_publishing_service_exports_what_it_publishes_and_its_root(
    stack: devstack.Stack, root: tuple[Path, TrustRoot, SigningKey]
) -> None:
    settings = PublishingSettings(
        broker_url=stack.broker_url, topics=Topics.with_prefix(f"metrics-{uuid4().hex[:8]}.")
    )
    service = PublishingService(settings, root[1], [root[2]])
    with ServerThread(service.app) as server:
        status, _ = server.request("GET", "/health")
        assert status == 200
        scrape = Scrape(server.url)
    assert build_of(scrape)["service"] == "publishing"
    assert scrape.families == {
        "fairstream_build_info",
        "fairstream_http_requests",
        "fairstream_http_request_seconds",
        "fairstream_published",
        "fairstream_trust_root_expiry_timestamp_seconds",
    }
    assert scrape.value("fairstream_trust_root_expiry_timestamp_seconds") == pytest.approx(
        root[1].expires.timestamp()
    )


# --- promtool ------------------------------------------------------------------------------


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def test_the_alert_rules_are_valid_prometheus_rules() -> None:
    checked = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


def test_the_alert_rules_fire_past_their_bounds_and_not_below() -> None:
    tested = promtool("test", "rules", str(PROMETHEUS / "alerts-test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert is tested.
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    cases = yaml.safe_load((PROMETHEUS / "alerts-test.yml").read_text())["tests"]
    assert {t["alertname"] for case in cases for t in case["alert_rule_test"]} == alerts


def test_the_alert_tests_catch_a_broken_bound(tmp_path: Path) -> None:
    # The tests above can fail: the silence bound loosened to 10 minutes breaks them.
    rules = (PROMETHEUS / "alerts.yml").read_text()
    loosened = rules.replace("(fairstream_node_heartbeat_age_seconds) > 60", "(...) > 600")
    loosened = loosened.replace("(...)", "(fairstream_node_heartbeat_age_seconds)")
    assert loosened != rules
    (tmp_path / "alerts.yml").write_text(loosened)
    (tmp_path / "alerts-test.yml").write_text((PROMETHEUS / "alerts-test.yml").read_text())
    tested = promtool("test", "rules", "alerts-test.yml", cwd=tmp_path)
    assert tested.returncode != 0 and "FairstreamNodeSilent" in tested.stdout + tested.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses rule expressions: the dashboard's queries, as recording rules, with
    # Grafana's variables as Grafana substitutes them when "All" is chosen.
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = [
        {"record": f"dashboard:query_{n}", "expr": re.sub(r"\$(region|instance)", ".*", query)}
        for n, query in enumerate(queries)
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(queries)} rules found" in checked.stdout
