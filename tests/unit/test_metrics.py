"""Which metric families each kind of process exports (``connectors.metrics.registry_for``),
and the Grafana dashboard and the alert rules against them: every metric they name is one
the code exports, and the dashboard has its stat row, thresholds and variables.

Real processes are scraped in ``tests/integration/test_metrics.py``, which also runs
``promtool`` on the rules.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from connectors.metrics import FAMILIES, registry_for
from schemas.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "infra" / "grafana" / "fairstream-dashboard.json"
ALERTS = REPO / "infra" / "prometheus" / "alerts.yml"
SERVICES = ("node", "frontend", "directory", "publishing", "meta-directory", "origin")
#: A sample's name beyond its family's, by type (``_created`` is prometheus-client's).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "info": ("_info",),
    "gauge": ("",),
}
#: What only a region's processes hold: a directory or a publishing service has none.
NODE_FAMILIES = {
    "fairstream_events",
    "fairstream_events_rejected",
    "fairstream_rejections_dead_lettered",
    "fairstream_lag_events",
    "fairstream_lag_seconds",
    "fairstream_artifacts_pending",
    "fairstream_fetch_seconds",
    "fairstream_fetch_bytes",
    "fairstream_store_writes",
    "fairstream_store_bytes",
    "fairstream_store_quota_bytes",
    "fairstream_node_state",
    "fairstream_node_healthy",
    "fairstream_node_ready",
}
DIRECTORY_FAMILIES = {
    "fairstream_directory_nodes",
    "fairstream_node_lag_events",
    "fairstream_node_heartbeat_age_seconds",
    "fairstream_directory_routed",
}
EVERY_PROCESS = {"fairstream_build", "fairstream_http_requests", "fairstream_http_request_seconds"}
METRIC = re.compile(r"\bfairstream_[a-z_]+")


def families(registry: CollectorRegistry) -> dict[str, str]:
    """Our family names in ``registry`` and their types."""
    return {
        family.name: family.type
        for family in registry.collect()
        if family.name.startswith("fairstream_")
    }


def sample_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name ``registry``'s families can show, children or not."""
    return {name + suffix for name, kind in families(registry).items() for suffix in SUFFIXES[kind]}


def exported_anywhere() -> set[str]:
    return set().union(*(sample_names(registry_for(service)) for service in SERVICES))


def test_every_service_label_has_its_families() -> None:
    assert set(FAMILIES) == set(SERVICES)


def test_a_worker_exports_the_node_families_and_none_of_the_directory() -> None:
    node = set(families(registry_for("node")))
    assert node >= NODE_FAMILIES | EVERY_PROCESS | {
        "fairstream_trust_root_expiry_timestamp_seconds"
    }
    assert not node & DIRECTORY_FAMILIES
    assert "fairstream_published" not in node


def test_a_directory_exports_its_families_and_no_node_family() -> None:
    directory = set(families(registry_for("directory")))
    assert directory >= DIRECTORY_FAMILIES | EVERY_PROCESS
    assert "fairstream_trust_root_expiry_timestamp_seconds" in directory
    assert not directory & NODE_FAMILIES, directory & NODE_FAMILIES


def test_a_publishing_service_exports_what_it_publishes_and_its_root() -> None:
    assert set(families(registry_for("publishing"))) == EVERY_PROCESS | {
        "fairstream_published",
        "fairstream_trust_root_expiry_timestamp_seconds",
    }


@pytest.mark.parametrize("service", ["origin", "meta-directory"])
def test_an_origin_or_meta_directory_exports_only_build_and_http(service: str) -> None:
    assert set(families(registry_for(service))) == EVERY_PROCESS


def test_a_frontend_exports_the_regions_state_but_no_stream_counts() -> None:
    frontend = set(families(registry_for("frontend")))
    assert {"fairstream_node_state", "fairstream_lag_events", "fairstream_store_bytes"} <= frontend
    assert not frontend & {"fairstream_events", "fairstream_fetch_seconds", "fairstream_node_ready"}
    assert not frontend & DIRECTORY_FAMILIES


@pytest.mark.parametrize("service", SERVICES)
def test_every_process_says_its_version_and_service(service: str) -> None:
    text = generate_latest(registry_for(service)).decode()
    [build] = [f for f in text_string_to_metric_families(text) if f.name == "fairstream_build_info"]
    [sample] = build.samples
    assert sample.name == "fairstream_build_info"
    assert sample.labels == {"version": version("fairstream"), "service": service}
    assert sample.value == 1
    # The process and Python figures stay, as in prometheus-client's default registry.
    assert "process_cpu_seconds_total" in text and "python_info" in text


def test_an_unknown_service_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="'nodes'"):
        registry_for("nodes")


# --- the dashboard -----------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_queries() -> list[str]:
    loaded = dashboard()
    queries = [target["expr"] for panel in loaded["panels"] for target in panel["targets"]]
    for variable in loaded["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


def test_every_metric_the_dashboard_reads_is_exported() -> None:
    named = {name for query in dashboard_queries() for name in METRIC.findall(query)}
    assert len(named) >= 20
    assert not named - exported_anywhere(), named - exported_anywhere()


def test_the_dashboard_opens_with_a_stat_row_with_thresholds() -> None:
    panels = dashboard()["panels"]
    top = sorted((p for p in panels if p["gridPos"]["y"] == 0), key=lambda p: p["gridPos"]["x"])
    assert [p["title"] for p in top] == [
        "Regions",
        "In sync",
        "Lag",
        "Rejections / min",
        "Trust root expires in",
    ]
    assert sum(p["gridPos"]["w"] for p in top) == 24
    for panel in top:
        assert panel["type"] == "stat"
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert len(steps) >= 2 and steps[0]["value"] is None, panel["title"]
    expiry = top[-1]
    assert "fairstream_trust_root_expiry_timestamp_seconds" in expiry["targets"][0]["expr"]
    warn = [s["value"] for s in expiry["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert 14 * 86400 in warn  # orange under 14 days, as the alert
    lag = panels[[p["title"] for p in panels].index("Seconds behind, per region")]
    assert lag["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 600


def test_the_dashboard_filters_by_region_and_instance() -> None:
    loaded = dashboard()
    assert "__inputs" not in loaded  # the data source is the `datasource` variable
    variables = {v["name"]: v for v in loaded["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for name in ("region", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["includeAll"] and variables[name]["multi"]
    for panel in loaded["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], panel["title"]
            if "{{region}}" in target.get("legendFormat", ""):
                assert 'region=~"$region"' in target["expr"], panel["title"]
    assert "DS_PROMETHEUS" not in DASHBOARD.read_text()


def test_the_http_panel_groups_by_code() -> None:
    text = DASHBOARD.read_text()
    assert "by (service, route, code)" in text
    assert "status" not in " ".join(dashboard_queries())


# --- the alert rules ---------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_every_metric_the_alerts_read_is_exported() -> None:
    named = {name for rule in alert_rules() for name in METRIC.findall(rule["expr"])}
    assert "fairstream_trust_root_expiry_timestamp_seconds" in named
    assert not named - exported_anywhere(), named - exported_anywhere()


def test_the_alerts_operators_expect_are_there() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert {
        "FairstreamNodeSilent",
        "FairstreamLagOverBound",
        "FairstreamRejectionsSpike",
        "FairstreamTrustRootExpiringSoon",
        "FairstreamQuotaNearFull",
    } <= set(rules)
    assert "14 * 86400" in rules["FairstreamTrustRootExpiringSoon"]["expr"]
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
