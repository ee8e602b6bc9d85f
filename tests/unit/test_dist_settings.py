"""How a node's dist answers are configured: ``--dist`` and ``--store-public-url`` (and their
node.toml keys), the store's public endpoint, and URLs presigned for it without a network."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from connectors.store import S3Store, StoreLocation, public_endpoint
from schemas.errors import ConfigurationError
from services.cli.main import cli
from services.node.config import check_config, configurable_commands

STORE = "s3://fairstream:m1n10s3cr3t@minio:9000?region=eu-west-1"
NODE_RUN = configurable_commands(cli)["node-run"]


@pytest.mark.parametrize(
    ("url", "endpoint", "secure"),
    [
        ("https://s3.example.org", "s3.example.org", True),
        ("https://s3.example.org/", "s3.example.org", True),
        ("http://localhost:9000", "localhost:9000", False),
        ("https://s3.example.org:8443", "s3.example.org:8443", True),
        ("http://[::1]:9000", "[::1]:9000", False),
    ],
)
def test_a_public_endpoint_is_a_bare_http_url(url: str, endpoint: str, secure: bool) -> None:
    assert public_endpoint(url) == (endpoint, secure)


@pytest.mark.parametrize(
    "url",
    [
        "s3://fairstream:secret@s3.example.org:9000",
        "ftp://s3.example.org",
        "https://user:secret@s3.example.org",
        "https://s3.example.org/fairstream-eu",
        "https://s3.example.org?region=eu",
        "https://s3.example.org:99999",
        "s3.example.org",
    ],
)
def test_anything_else_is_refused_saying_what_to_give(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"give .*https://s3\.example\.org") as caught:
        public_endpoint(url)
    assert "secret" not in str(caught.value)


def test_the_store_reached_at_its_public_endpoint_keeps_credentials_and_region() -> None:
    public = StoreLocation.from_url(STORE).reached_at("https://s3.example.org")

    assert (public.endpoint, public.secure) == ("s3.example.org", True)
    assert (public.access_key, public.secret_key, public.region) == (
        "fairstream",
        "m1n10s3cr3t",
        "eu-west-1",
    )


def test_a_url_is_presigned_for_the_public_endpoint_without_asking_it() -> None:
    # .invalid never resolves: a presign that needed the network would fail.
    public = StoreLocation.from_url(STORE).reached_at("https://s3.fairstream.invalid")

    url = S3Store(public, "fairstream-eu").presigned_url("artifacts/sha256/ab/ab.zip")

    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "s3.fairstream.invalid",
        "/fairstream-eu/artifacts/sha256/ab/ab.zip",
    )
    query = parse_qs(parts.query)
    assert query["X-Amz-Credential"][0].startswith("fairstream/")
    assert "/eu-west-1/s3/aws4_request" in query["X-Amz-Credential"][0]
    assert query["X-Amz-SignedHeaders"] == ["host"]


def test_node_toml_takes_dist_and_store_public_url() -> None:
    table = {"region": "eu", "root": "root.avro", "dist": "proxy"}
    check = check_config(NODE_RUN, table, environ={}, check_files=False)
    assert check.ok, check.problems
    assert {s.setting.key: s.value for s in check.settings}["dist"] == "proxy"

    table = {"region": "eu", "root": "root.avro", "store_public_url": "https://s3.example.org"}
    assert check_config(NODE_RUN, table, environ={}, check_files=False).ok


@pytest.mark.parametrize(
    ("table", "key", "says"),
    [
        ({"dist": "copy"}, "dist", "'copy' is not one of 'redirect', 'proxy'"),
        (
            {"store_public_url": "https://s3.example.org/bucket"},
            "store_public_url",
            "is not http(s)://HOST[:PORT]",
        ),
    ],
)
def test_config_check_refuses_a_wrong_dist_setting(
    table: dict[str, str], key: str, says: str
) -> None:
    check = check_config(
        NODE_RUN, {"region": "eu", "root": "root.avro", **table}, environ={}, check_files=False
    )

    assert [p.key for p in check.problems] == [key]
    assert says in check.problems[0].message


# -- the production manifests choose a path clients can reach --------------------------------

PRODUCTION = Path(__file__).resolve().parents[2] / "infra" / "production"


def unreachable_zips(node_toml: Mapping[str, Any], store_published: bool) -> str | None:
    """Why clients of a node configured by ``node_toml`` could not download its zips, or None.

    A redirect sends them to the store: to ``store_public_url``, else to the store URL's
    own endpoint, which they reach only if the store is published to them.
    """
    if node_toml.get("dist", "redirect") == "proxy":
        return None
    public = node_toml.get("store_public_url")
    if public:
        return None if str(public).startswith("https://") else f"{public} is not https"
    if store_published:
        return None
    return "redirects go to the store's internal endpoint: set dist or store_public_url"


def test_compose_sends_the_zips_through_its_workers() -> None:
    compose = yaml.safe_load((PRODUCTION / "compose.yaml").read_text())
    services = compose["services"]
    # MinIO's S3 port is on the compose network only (its console on the host's loopback).
    published = [str(port) for port in services["minio"].get("ports", [])]
    assert not any(port.rsplit(":", 1)[-1] == "9000" for port in published), published
    nodes = {name: s for name, s in services.items() if s.get("command", [None])[0] == "node"}
    assert nodes, "no node in compose.yaml"
    for name, service in nodes.items():
        mounts = dict(
            volume.split(":")[:2] for volume in service["volumes"] if volume.startswith("./")
        )
        [config] = [host for host, inside in mounts.items() if inside.endswith("node.toml")]
        node_toml = tomllib.loads((PRODUCTION / config).read_text())
        assert unreachable_zips(node_toml, store_published=False) is None, name
        assert node_toml["dist"] == "proxy", name


def test_kubernetes_presigns_for_a_public_store_endpoint() -> None:
    configmap = yaml.safe_load((PRODUCTION / "k8s" / "configmap.yaml").read_text())
    node_toml = tomllib.loads(configmap["data"]["node.toml"])

    assert unreachable_zips(node_toml, store_published=False) is None
    assert node_toml.get("dist", "redirect") == "redirect"
    assert str(node_toml["store_public_url"]).startswith("https://")


def test_a_node_configured_as_before_leaves_clients_without_zips() -> None:
    # The manifests before these settings: a 302 to http://minio:9000/...
    assert unreachable_zips({"region": "eu"}, store_published=False) is not None
    assert unreachable_zips({"store_public_url": "http://s3.example.org"}, False) is not None
