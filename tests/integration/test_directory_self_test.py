"""The directory's admission self-test and spot checks against a real node (``NodeHttp`` over
the embedded S3 server): each version is read from the p2 document it lives in, a dev
version (``1.x-dev``) from ``p2/<name>~dev.json``, as Composer 2 repositories serve it."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from connectors.object_store import ObjectStore
from connectors.state_store import PackageStates
from connectors.store import S3Store, StoreLocation
from infra import devstack
from infra.localnet import free_port
from schemas import layout
from schemas.composer import expand
from schemas.federation import NodeStatus, PartitionSync
from schemas.package_state import PackageState, VersionRecord, render_documents
from schemas.signing import SigningKey
from schemas.version_entries import version_entry
from schemas.versions import drupal_to_composer
from services.directory.http_app import Directory
from services.directory.registry import ADMITTED, REFUSED, RegionMap, Registry
from services.node.http_app import NodeHttp
from services.node.http_settings import NodeHttpSettings
from streams.policy import ReplicationPolicy
from streams.sync import registration_of

pytestmark = pytest.mark.integration

PACKAGE = "drupal/audit_awesome"
TOPIC = "fair.releases"
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def release_zip(drupal_version: str, padding: int) -> bytes:
    """A Drupal-shaped zip (one top directory); ``padding`` random bytes set its size."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("audit_awesome/audit_awesome.info.yml", f"version: '{drupal_version}'\n")
        archive.writestr("audit_awesome/padding.bin", os.urandom(padding))
    return buffer.getvalue()


def version_record(
    drupal_version: str, data: bytes, offset: int, yanked: str | None = None
) -> VersionRecord:
    sha1 = hashlib.sha1(data).hexdigest()
    return VersionRecord(
        drupal_version=drupal_version,
        sha256=hashlib.sha256(data).hexdigest(),
        sha1=sha1,
        size=len(data),
        composer=version_entry(name=PACKAGE, drupal_version=drupal_version, sha1=sha1),
        yanked=yanked,
        position=f"{TOPIC}:0:{offset}",
    )


#: (Drupal version, zip padding, yanked): the dev snapshot is both the smallest zip (the
#: admission subject) and the newest event (every spot check's subject); 8.x-1.1 is yanked.
RELEASES = (
    ("8.x-1.0", 40_000, None),
    ("8.x-1.1", 30_000, "broke the audit log"),
    ("8.x-1.x-dev", 5_000, None),
)


@dataclass
class Node:
    base_url: str
    store: ObjectStore
    states: PackageStates
    state: PackageState


@pytest.fixture
async def node(stack: devstack.Stack) -> AsyncIterator[Node]:
    """A full node holding drupal/audit_awesome: two stable versions (one yanked) and a dev
    snapshot, with its p2 documents and zips in a bucket of the embedded S3 server."""
    store = S3Store(StoreLocation.from_url(stack.store_url), f"dir-{uuid4().hex[:12]}")
    store.ensure_bucket()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    versions = {}
    for offset, (drupal_version, padding, yanked) in enumerate(RELEASES):
        data = release_zip(drupal_version, padding)
        record = version_record(drupal_version, data, offset, yanked)
        store.put_bytes(layout.artifact_key(record.sha256), data, content_type="application/zip")
        versions[drupal_to_composer(drupal_version)] = record
    state = PackageState(package=PACKAGE, versions=versions, sequence=len(RELEASES) - 1)
    states = PackageStates(store, render=lambda s: render_documents(s, base_url))
    states.save(state)
    http = NodeHttp(NodeHttpSettings(region="eu", public_url=base_url), store, states=states)
    server = TestServer(http.app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield Node(base_url, store, states, state)
    finally:
        await server.close()


def heartbeat(key: SigningKey, base_url: str, applied: int) -> NodeStatus:
    return NodeStatus(
        node_id=key.public_key.keyid,
        region="eu",
        base_url=base_url,
        sequence=1,
        heartbeat_at=T0,
        partitions=(PartitionSync(TOPIC, 0, applied, applied, 0),),
        events_behind=0,
        behind_is_lower_bound=False,
        seconds_behind=0.0,
        artifacts_pending=0,
        rejected_total=0,
        store_bytes=None,
        trust_root_version=1,
        state="in-sync",
    )


def directory_over(stack: devstack.Stack, node: Node) -> tuple[Directory, str]:
    """A directory whose catalogue is the node's package states (as its own metadata-only
    view would hold them), with the node registered and in sync by its heartbeat."""
    directory = Directory(
        broker_url=stack.broker_url,
        status_topic=f"unused-{uuid4().hex[:8]}.fair.status",
        states=node.states,
        registry=Registry(spot_check_every=timedelta(0)),
        regions=RegionMap(),
        clock=lambda: T0,
    )
    key = SigningKey.generate()
    directory.registry.observe(registration_of(key, "eu", node.base_url, ReplicationPolicy()), T0)
    directory.registry.observe(heartbeat(key, node.base_url, len(RELEASES)), T0)
    return directory, key.public_key.keyid


async def admission_round(directory: Directory) -> None:
    async with aiohttp.ClientSession() as session:
        await directory.check(session)


async def test_a_dev_version_is_checked_in_its_dev_document_at_admission_and_spot_checks(
    stack: devstack.Stack, node: Node
) -> None:
    directory, node_id = directory_over(stack, node)

    await admission_round(directory)

    entry = directory.registry.nodes[node_id]
    assert (entry.admission, entry.reason) == (
        ADMITTED,
        f"served {PACKAGE} 1.x-dev with the signed sha1",
    )
    # Admitted: the next round is a spot check, on the newest version (the dev one again).
    await admission_round(directory)

    entry = directory.registry.nodes[node_id]
    assert (entry.admission, entry.reason) == (
        ADMITTED,
        f"served {PACKAGE} 1.x-dev with the signed sha1",
    )


def tampered_dev_document(node: Node, tamper: str) -> None:
    """The node's ``~dev`` document without the dev version, or with another sha1 for it."""
    key = layout.p2_key(PACKAGE, dev=True)
    document = orjson.loads(render_documents(node.state, node.base_url)[key])
    entries = expand(document["packages"][PACKAGE])
    if tamper == "unlisted":
        entries = []
    else:
        entries[0]["dist"]["shasum"] = "0" * 40
    document = {"packages": {PACKAGE: entries}}
    node.store.put_bytes(key, orjson.dumps(document), content_type="application/json")


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("unlisted", f"p2/{PACKAGE}~dev.json does not list 1.x-dev"),
        ("other-sha1", f"p2/{PACKAGE}~dev.json gives 1.x-dev sha1 {'0' * 40}, signed "),
    ],
    ids=["unlisted", "other-sha1"],
)
async def test_a_node_whose_dev_document_is_wrong_is_refused_naming_that_document(
    stack: devstack.Stack, node: Node, tamper: str, reason: str
) -> None:
    tampered_dev_document(node, tamper)
    directory, node_id = directory_over(stack, node)

    await admission_round(directory)

    entry = directory.registry.nodes[node_id]
    assert entry.admission == REFUSED
    assert entry.reason.startswith(reason), entry.reason


async def test_a_spot_check_refuses_a_node_that_stops_serving_its_dev_document(
    stack: devstack.Stack, node: Node
) -> None:
    directory, node_id = directory_over(stack, node)
    await admission_round(directory)
    assert directory.registry.nodes[node_id].admission == ADMITTED

    node.store.delete(layout.p2_key(PACKAGE, dev=True))
    await admission_round(directory)

    entry = directory.registry.nodes[node_id]
    assert (entry.admission, entry.reason) == (
        REFUSED,
        f"failed a spot check after its admission: p2/{PACKAGE}~dev.json answered 404",
    )


async def test_a_stable_version_is_still_checked_in_the_stable_document(
    stack: devstack.Stack, node: Node
) -> None:
    """Without its dev snapshot the package's only kept version is 1.0.0: read from
    ``p2/<name>.json``, and a node without that document is refused naming it."""
    stable_only = PackageState(
        package=PACKAGE,
        versions={v: r for v, r in node.state.versions.items() if v != "1.x-dev"},
        sequence=node.state.sequence + 1,
    )
    node.states.save(stable_only)
    directory, node_id = directory_over(stack, node)

    await admission_round(directory)

    entry = directory.registry.nodes[node_id]
    assert (entry.admission, entry.reason) == (
        ADMITTED,
        f"served {PACKAGE} 1.0.0 with the signed sha1",
    )

    node.store.delete(layout.p2_key(PACKAGE))
    await admission_round(directory)

    entry = directory.registry.nodes[node_id]
    assert (entry.admission, entry.reason) == (
        REFUSED,
        f"failed a spot check after its admission: p2/{PACKAGE}.json answered 404",
    )
