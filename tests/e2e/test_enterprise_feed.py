"""docs/enterprise-feed.md's recipe, run as written: real kcat, real broker, real signed events.

The guide's marked code blocks are extracted from the markdown and run
unchanged, so the guide cannot drift from the wire format.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest

from connectors.kafka_connection import bootstrap_servers
from connectors.kafka_producers import EventProducer
from connectors.kafka_topics import Topics, ensure_topics
from infra import devstack, localnet
from infra.devtools.sample_projects import sample_zip
from schemas.events import ReleasePublished, ReleaseYanked, utc_now
from schemas.signing import SigningKey, seal
from services.publishing.publisher import build_release
from services.publishing.trust_admin import DelegationSpec, build_root
from tests.roots import write_drupal_root

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "enterprise-feed.md"
BLOCK = re.compile(
    r"<!-- enterprise-feed: (?P<name>\S+) -->\n(?:<!--.*?-->\n)*```\w*\n(?P<code>.*?)\n```", re.S
)


def guide_blocks() -> dict[str, str]:
    """The guide's marked code blocks by file name."""
    return {m["name"]: m["code"] + "\n" for m in BLOCK.finditer(GUIDE.read_text())}


@dataclass
class Run:
    returncode: int
    lines: list[str]
    stderr: str


@dataclass
class Feed:
    """Positions (partition, offset) of what was produced, by what it is."""

    run: Run
    good: dict[str, tuple[int, int]]
    bad: dict[str, tuple[int, int]]
    trust: dict[str, tuple[int, int]]


def release(work: Path, project: str, version: str, sequence: int) -> ReleasePublished:
    zip_path = sample_zip(work, project, version)
    return build_release(
        package=f"drupal/{project}",
        drupal_version=version,
        zip_path=zip_path,
        origin_url=f"https://ftp.drupal.org/files/projects/{zip_path.name}",
        sequence=sequence,
    )


@pytest.fixture(scope="module")
def feed(stack: devstack.Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feed]:
    """Publish genuine and hostile events, then run the guide's blocks on the topics."""
    work = tmp_path_factory.mktemp("enterprise-feed")
    prefix = f"feed-{uuid4().hex[:8]}."
    topics = Topics.with_prefix(prefix)
    ensure_topics(stack.broker_url, topics.partitions(1))
    publisher, root_key = SigningKey.generate(), SigningKey.generate()
    new_publisher, stranger = SigningKey.generate(), SigningKey.generate()
    root_file = work / "root.avro"
    root_v1 = write_drupal_root(root_file, publisher, root_key)
    root_v2 = build_root(
        version=2,
        root_keys=[root_key.public_key],
        root_threshold=1,
        delegations=[
            DelegationSpec(
                "drupal/*", "drupal.org", (publisher.public_key, new_publisher.public_key), 1
            )
        ],
    )
    forged_v3 = build_root(
        version=3,
        root_keys=[stranger.public_key],
        root_threshold=1,
        delegations=[DelegationSpec("drupal/*", "drupal.org", (stranger.public_key,), 1)],
    )
    producer = EventProducer(stack.broker_url)
    good: dict[str, tuple[int, int]] = {}
    bad: dict[str, tuple[int, int]] = {}
    trust: dict[str, tuple[int, int]] = {}

    def put(topic: str, key: str, value: bytes) -> tuple[int, int]:
        delivered = producer.produce(topic, key.encode(), value)
        return delivered.partition, delivered.offset

    for name, signed in (
        ("v1", root_file.read_bytes()),
        ("v2", root_v2.sign([root_key])),
        ("forged v3", forged_v3.sign([stranger])),
    ):
        trust[name] = put(topics.trust, "trust-root", signed)
    assert root_v1.version == 1

    token = release(work, "token", "8.x-1.0", 1)
    good["token release"] = put(topics.releases, token.package, seal(token.to_bytes(), [publisher]))
    yank = ReleaseYanked("drupal/token", token.version, 2, "broken", utc_now())
    good["token yank"] = put(topics.releases, yank.package, seal(yank.to_bytes(), [publisher]))
    # The tampered one: signed, then one byte of its version changed (same length, valid Avro).
    pathauto = release(work, "pathauto", "8.x-1.1", 1)
    sealed = seal(pathauto.to_bytes(), [publisher])
    tampered = sealed.replace(b"8.x-1.1", b"8.x-1.9", 1)
    assert tampered != sealed
    bad["tampered"] = put(topics.releases, pathauto.package, tampered)
    views = release(work, "views", "8.x-3.0", 1)
    bad["undelegated"] = put(topics.releases, views.package, seal(views.to_bytes(), [stranger]))
    bad["forged by the forged root's key"] = put(
        topics.releases,
        "drupal/ctools",
        seal(release(work, "ctools", "4.0.0", 1).to_bytes(), [stranger]),
    )
    squat = build_release(
        package="acme/views",
        drupal_version="8.x-3.0",
        zip_path=work / "views-8.x-3.0.zip",
        origin_url="https://example.com/views.zip",
    )
    bad["another namespace"] = put(
        topics.releases, squat.package, seal(squat.to_bytes(), [stranger])
    )
    # Only root v2 delegates the new key: accepted only if the recipe followed the rotation.
    admin = release(work, "admin_toolbar", "3.4.0", 1)
    good["new key after rotation"] = put(
        topics.releases, admin.package, seal(admin.to_bytes(), [new_publisher])
    )
    bad["replayed"] = put(topics.releases, token.package, seal(token.to_bytes(), [publisher]))
    producer.close()

    blocks = guide_blocks()
    for name, code in blocks.items():
        (work / name).write_text(code)
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **localnet.kcat_environment(stack.data_dir),
        "PATH": f"{venv_bin}:{os.environ['PATH']}",
        "BROKER": bootstrap_servers(stack.broker_url),
        "TOPIC_PREFIX": prefix,
        "ROOT": str(root_file),
        "SCHEMAS": str(REPO / "schemas" / "avro"),
    }
    result = subprocess.run(
        ["sh", "fetch-and-verify.sh"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    yield Feed(Run(result.returncode, result.stdout.splitlines(), result.stderr), good, bad, trust)


def verdicts(run: Run, topic: str) -> dict[tuple[int, int], str]:
    """``(partition, offset) -> line`` for one topic's records in the recipe's output."""
    found = {}
    for line in run.lines:
        match = re.fullmatch(r"(ok  |FAIL) (\S+)\[(\d+)\]@(\d+) .*", line)
        if match and match[2].endswith(topic):
            found[(int(match[3]), int(match[4]))] = line
    return found


def test_the_guide_has_both_blocks_and_the_script_uses_no_fairstream_code() -> None:
    blocks = guide_blocks()
    assert set(blocks) == {"fetch-and-verify.sh", "verify_feed.py"}
    assert "kcat" in blocks["fetch-and-verify.sh"]
    imported = set()
    for node in ast.walk(ast.parse(blocks["verify_feed.py"])):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"fastavro", "cryptography"}


def test_the_recipe_accepts_every_genuine_event(feed: Feed) -> None:
    run = feed.run
    assert run.lines, run.stderr
    releases = verdicts(run, "fair.releases")
    for what, position in feed.good.items():
        assert releases.get(position, "").startswith("ok"), (what, run.lines, run.stderr)
    assert "drupal/token 1.0.0" in releases[feed.good["token release"]]
    assert "release_yanked" in releases[feed.good["token yank"]]
    assert verdicts(run, "fair.trust")[feed.trust["v2"]].startswith("ok")
    assert run.lines[-1] == f"{len(feed.bad) + 1} failed, verified against trust root v2"


def test_the_recipe_reports_the_tampered_and_forged_events_and_fails(feed: Feed) -> None:
    run = feed.run
    assert run.returncode == 1, (run.lines, run.stderr)
    releases = verdicts(run, "fair.releases")
    reasons = {what: releases.get(position, "missing") for what, position in feed.bad.items()}
    assert reasons["tampered"].startswith("FAIL") and "signature: 0 of 1" in reasons["tampered"]
    assert reasons["undelegated"].startswith("FAIL"), reasons
    assert "undelegated: no key may sign acme/*" in reasons["another namespace"], reasons
    assert reasons["forged by the forged root's key"].startswith("FAIL"), reasons
    assert reasons["replayed"].startswith("FAIL") and "replay" in reasons["replayed"], reasons
    forged_root = verdicts(run, "fair.trust")[feed.trust["forged v3"]]
    assert forged_root.startswith("FAIL") and "root keys of root v2" in forged_root
