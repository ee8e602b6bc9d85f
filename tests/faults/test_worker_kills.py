"""kill -9 of a worker at each fault point, under load: nothing acknowledged is lost.

The worker is armed with a hidden ``--fault-point NAME@N`` and sends itself
SIGKILL there (streams/faults.py); then it is restarted without it. The region's
other worker takes its partitions meanwhile (a rebalance under load), and the
restarted one takes some back (another).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from email.utils import formatdate
from pathlib import Path

import pytest

from connectors.store import STREAM_PART_SIZE, S3Store, StoreLocation
from schemas import layout
from streams.faults import (
    AFTER_METADATA_WRITE,
    AFTER_STORE_WRITE,
    AFTER_VIEW_RECORD,
    BEFORE_LOCAL_WRITE,
    BEFORE_OFFSET_COMMIT,
    MID_ARTIFACT_UPLOAD,
)
from tests.faults.harness import PROJECTS, FaultFederation, Load, Poller


# after-metadata-write: a package's view derived, its record not produced yet;
# before-local-write: the record acknowledged, not yet held (served) by the worker;
# after-view-record: the batch's records acknowledged and held, the offsets not committed.
@pytest.mark.parametrize(
    "point",
    [
        AFTER_STORE_WRITE,
        AFTER_METADATA_WRITE,
        BEFORE_LOCAL_WRITE,
        AFTER_VIEW_RECORD,
        BEFORE_OFFSET_COMMIT,
    ],
)
def test_a_worker_killed_at_a_fault_point_loses_and_doubles_nothing(
    fault_federation: FaultFederation, point: str
) -> None:
    federation = fault_federation
    with Load(federation), Poller(federation):
        assert federation.kill_at("eu-1", point), f"eu-1 never reached {point}"
        time.sleep(3)
    federation.wait_until_quiet()
    verdict = federation.history()
    assert verdict.clean, str(verdict)
    assert len(federation.acknowledged) >= 10


#: The streamed zip's random content: more than two of the store's parts, so the stream
#: has at least three and the worker dies with one in the multipart upload, two to go.
LARGE_BLOB_BYTES = 20_000_000


def test_a_worker_killed_in_the_middle_of_streaming_a_zip_into_the_store_stores_nothing_unchecked(
    fault_federation: FaultFederation,
) -> None:
    """A zip is streamed from its download straight into the store's multipart upload, its
    last bytes held back until the checks pass: a worker killed with a part uploaded and
    the rest unchecked leaves nothing under the zip's key (the upload never completed),
    and once restarted stores the signed bytes there. Region ``us`` has one worker, which
    owns every partition, so the armed worker is the one that copies the zip."""
    federation = fault_federation
    store = S3Store(StoreLocation.from_url(federation.stack.store_url), federation.bucket("us"))
    with Load(federation), Poller(federation):
        armed = federation.start_worker("us", ["--fault-point", f"{MID_ARTIFACT_UPLOAD}@1"])
        event = federation.publish_large("beta", LARGE_BLOB_BYTES)
        artifact = event.artifact
        assert artifact.size > 2 * STREAM_PART_SIZE, artifact.size
        key = layout.artifact_key(artifact.sha256)
        deadline = time.monotonic() + 90
        while armed.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if armed.alive():
            tail = armed.log_tail(40)
            federation.start_worker("us")  # unarmed: the tests after this one need it
            pytest.fail(f"us never reached {MID_ARTIFACT_UPLOAD} in 90 s:\n{tail}")
        stored = store.stat(key)
        assert stored is None, f"{key} was stored ({stored}) by a worker killed mid-stream"
        assert armed.process.returncode == -signal.SIGKILL, armed.log_tail(40)
        assert f"fault point {MID_ARTIFACT_UPLOAD} reached" in armed.log.read_text(
            errors="replace"
        ), armed.log_tail(40)
        federation.start_worker("us")
        time.sleep(3)
    federation.wait_until_quiet(timeout=240)
    verdict = federation.history()
    assert verdict.clean, str(verdict)
    stored = store.stat(key)
    assert stored is not None, f"us never stored {key} once restarted"
    assert stored.size == artifact.size, (stored.size, artifact.size)
    assert sha256_of_object(store, key) == artifact.sha256


def sha256_of_object(store: S3Store, key: str) -> str:
    """The sha256 of an object's bytes, read from the store piece by piece."""
    reader = store.reader(key)
    assert reader is not None, f"{key} is not in {store.bucket}"
    digest = hashlib.sha256()
    try:
        while piece := reader.read(1 << 20):
            digest.update(piece)
    finally:
        reader.close()
    return digest.hexdigest()


def test_a_worker_whose_local_view_is_deleted_while_stopped_serves_nothing_older_when_back(
    fault_federation: FaultFederation,
) -> None:
    """The local view (sqlite and docroot) is a cache of the region's view topic: a worker
    that lost it rebuilds it from the topic before it answers, so what it served before
    (the poller's observations of eu/eu-1) is never missing after (no rollback)."""
    federation = fault_federation
    with Load(federation), Poller(federation):
        time.sleep(4)
        federation.workers["eu-1"].kill()
        # data_dir/nodes/<region>/view-<worker name>: sqlite and docroot
        (view_dir,) = (federation.work_dir / "node-eu-1").glob("nodes/eu/view-*")
        assert (view_dir / "view.sqlite3").exists(), "eu-1 kept no local view"
        shutil.rmtree(view_dir)
        federation.start_worker("eu-1")
        time.sleep(4)
    federation.wait_until_quiet()
    verdict = federation.history()
    assert verdict.clean, str(verdict)
    assert any(o.source == "eu/eu-1" and o.listed for o in federation.observations)
    assert (view_dir / "docroot" / "p2" / "drupal" / "alpha.json").exists()


def test_a_workers_docroot_writer_killed_under_load_leaves_no_file_behind(
    fault_federation: FaultFederation,
) -> None:
    """A worker's docroot (what the nginx front serves) is written by a child process of its
    own (``connectors.docroot``): killed under load, it is replaced and given every file, so
    once the region is quiet each p2 file holds what the worker answers, dated by its
    Last-Modified."""
    federation = fault_federation
    worker = federation.workers["eu-1"]
    with Load(federation), Poller(federation):
        time.sleep(3)
        (writer,) = docroot_writers(worker.process.pid)
        os.kill(writer, signal.SIGKILL)
        time.sleep(4)
        replaced = docroot_writers(worker.process.pid)
        assert replaced and writer not in replaced, "the docroot writer was not replaced"
    federation.wait_until_quiet()
    verdict = federation.history()
    assert verdict.clean, str(verdict)
    (docroot,) = (federation.work_dir / "node-eu-1").glob("nodes/eu/view-*/docroot")
    deadline = time.monotonic() + 10
    while True:
        stale = stale_files(worker.url, docroot)
        if not stale or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not stale, f"docroot files that differ from eu-1's answers: {stale}"


def docroot_writers(pid: int) -> list[int]:
    """The worker's child processes that are its docroot writer (``python -m connectors.docroot``)."""
    # Each thread's children are listed under its own task (a replaced writer is started by
    # the sender thread).
    children = [
        child
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    return [
        int(child)
        for child in children
        if b"connectors.docroot" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def stale_files(node_url: str, docroot: Path) -> list[str]:
    """The p2 documents of the load's projects whose docroot file is missing or differs (bytes
    or date) from what the worker answers."""
    stale = []
    for project in PROJECTS:
        for name in (project, f"{project}~dev"):
            key = f"p2/drupal/{name}.json"
            try:
                with urllib.request.urlopen(f"{node_url}/{key}", timeout=10) as answer:
                    body, modified = answer.read(), answer.headers["Last-Modified"]
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    continue  # not published yet: nothing to compare
                raise
            path = docroot / key
            if not path.exists():
                stale.append(f"{key}: no file")
            elif path.read_bytes() != body:
                stale.append(f"{key}: other bytes")
            elif formatdate(int(path.stat().st_mtime), usegmt=True) != modified:
                stale.append(f"{key}: dated {path.stat().st_mtime}, served as {modified}")
    return stale
