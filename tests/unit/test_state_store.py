"""connectors.state_store.PackageStates on the memory store: versioned state objects, p2
documents written only when they change, and the fence against a stale writer.

Two workers saving at once against the real S3 server: ``tests/integration/test_state_store.py``."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from uuid import uuid4

import orjson
import pytest

from connectors.memory_store import MemoryStore
from connectors.object_store import ObjectStore
from connectors.state_store import KEPT_STATES, PRUNE_SLACK, PackageStates
from schemas import layout
from schemas.package_state import PackageState, VersionRecord, render_documents
from schemas.version_entries import version_entry

PACKAGE = "drupal/token"
P2 = layout.p2_key(PACKAGE)
PUBLIC_URL = "http://eu.fairstream.test:8080"
SPACE = "state-store-tests"

Hook = Callable[[str], None]


class HookedStore(MemoryStore):
    """A bucket remembering every key written and deleted, in order, and calling
    ``before_put``/``after_put`` (when set) around each write to stage another worker's."""

    def __init__(self, bucket: str) -> None:
        super().__init__(bucket, space=SPACE)
        self.puts: list[str] = []
        self.deletes: list[str] = []
        self.before_put: Hook | None = None
        self.after_put: Hook | None = None

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        if self.before_put is not None:
            self.before_put(key)
        self.puts.append(key)
        super().put_bytes(key, data, content_type=content_type)
        if self.after_put is not None:
            self.after_put(key)

    def delete(self, key: str) -> None:
        self.deletes.append(key)
        super().delete(key)


@pytest.fixture
def bucket() -> str:
    name = f"t-{uuid4().hex[:12]}"
    MemoryStore(name, space=SPACE).ensure_bucket()
    return name


@pytest.fixture
def store(bucket: str) -> HookedStore:
    return HookedStore(bucket)


@pytest.fixture
def other_store(bucket: str) -> ObjectStore:
    """The same bucket as another worker of the region sees it."""
    return MemoryStore(bucket, space=SPACE)


def render_sequence(state: PackageState) -> dict[str, bytes]:
    """A document that tells which state it was rendered from."""
    return {layout.p2_key(state.package): orjson.dumps({"sequence": state.sequence})}


def render_real(state: PackageState) -> dict[str, bytes]:
    return render_documents(state, PUBLIC_URL)


def state(sequence: int, package: str = PACKAGE, *, versions: int = 1) -> PackageState:
    records = {}
    for minor in range(versions):
        drupal_version = f"8.x-1.{minor}"
        sha1 = hashlib.sha1(drupal_version.encode()).hexdigest()
        records[f"1.{minor}.0"] = VersionRecord(
            drupal_version=drupal_version,
            sha256=hashlib.sha256(drupal_version.encode()).hexdigest(),
            sha1=sha1,
            size=1000 + minor,
            composer=version_entry(name=package, drupal_version=drupal_version, sha1=sha1),
            origin_url=f"https://ftp.drupal.org/files/projects/token-{drupal_version}.zip",
        )
    return PackageState(
        package=package,
        versions=records,
        sequence=sequence,
        applied={hashlib.sha256(str(sequence).encode()).hexdigest(): f"fair.releases:0:{sequence}"},
    )


def rendered_from(store: ObjectStore, package: str = PACKAGE) -> int:
    """The sequence of the state the stored document was rendered from (render_sequence)."""
    body = store.get(layout.p2_key(package))
    assert body is not None, f"no p2 document of {package}"
    sequence = orjson.loads(body.data)["sequence"]
    assert isinstance(sequence, int)
    return sequence


def write_state_object(store: ObjectStore, written: PackageState) -> None:
    """What another worker's save does first."""
    store.put_bytes(
        layout.state_key(written.package, written.sequence),
        written.to_json(),
        content_type="application/json",
    )


def write_documents(store: ObjectStore, documents: Mapping[str, bytes]) -> None:
    for key, document in documents.items():
        store.put_bytes(key, document, content_type="application/json")


# ---------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------


def test_save_then_load_round_trips(store: HookedStore) -> None:
    states = PackageStates(store, render_real)
    saved_state = replace(
        state(3, versions=2),
        advisories={"SA-1": {"advisoryId": "SA-1", "packageName": PACKAGE, "title": "XSS"}},
        expunged={"0.9.0": "ab" * 32},
    )

    saved = states.save(saved_state)

    assert states.load(PACKAGE) == saved_state
    assert saved.state_written is True
    assert saved.superseded_by is None
    expected = render_real(saved_state)
    assert set(saved.documents_written) == set(expected)
    assert states.documents(PACKAGE) == expected
    assert store.puts[0] == layout.state_key(PACKAGE, 3)
    assert store.get(layout.state_key(PACKAGE, 3)) is not None


def test_load_of_an_unknown_package_is_none(store: HookedStore) -> None:
    states = PackageStates(store, render_sequence)
    states.save(state(1, "drupal/token_extra"))

    assert states.load(PACKAGE) is None
    assert states.sequences(PACKAGE) == []
    assert states.documents(PACKAGE) == {}


def test_state_objects_are_versioned_not_overwritten(store: HookedStore) -> None:
    states = PackageStates(store, render_sequence)

    states.save(state(1))
    states.save(state(2))

    assert states.sequences(PACKAGE) == [1, 2]
    older = store.get(layout.state_key(PACKAGE, 1))
    assert older is not None and PackageState.from_json(older.data) == state(1)
    assert states.load(PACKAGE) == state(2)
    assert rendered_from(store) == 2


@pytest.mark.parametrize("known", ["stored documents given", "stored documents read"])
def test_a_save_with_equal_documents_writes_no_document(store: HookedStore, known: str) -> None:
    states = PackageStates(store, render_real)
    first = state(1)
    states.save(first)
    documents = states.documents(PACKAGE)
    before = {key: store.stat(key) for key in documents}
    # The store keeps whole seconds: a rewrite must land in a later second to be seen.
    time.sleep(1.1)
    store.puts.clear()
    # A new state (another applied event) whose documents are the same bytes.
    second = replace(first, sequence=2, applied={**first.applied, "cd" * 32: "fair.releases:0:9"})
    assert render_real(second) == documents

    saved = states.save(
        second, stored_documents=documents if known == "stored documents given" else None
    )

    assert store.puts == [layout.state_key(PACKAGE, 2)]
    assert saved.documents_written == ()
    assert {key: store.stat(key) for key in documents} == before
    assert states.load(PACKAGE) == second


def test_only_the_documents_that_changed_are_written(store: HookedStore) -> None:
    states = PackageStates(store, render_real)
    first = state(1)
    states.save(first)
    documents = states.documents(PACKAGE)
    store.puts.clear()
    # A stable version added: the stable document changes, the dev one does not.
    second = replace(state(2, versions=2), applied=first.applied)

    saved = states.save(second, stored_documents=documents)

    assert saved.documents_written == (P2,)
    assert store.puts == [layout.state_key(PACKAGE, 2), P2]
    assert states.documents(PACKAGE) == render_real(second)


def test_packages_lists_every_package_with_a_state(store: HookedStore) -> None:
    states = PackageStates(store, render_sequence)
    assert states.packages() == []
    for package in ("drupal/token", "drupal/core", "acme/widget", "drupal/token_extra"):
        states.save(state(1, package))
    states.save(state(2, "drupal/token"))
    # Objects under state/ that are not state objects do not name packages.
    store.put_bytes("state/drupal/notes.json", b"{}", content_type="application/json")
    store.put_bytes("state/drupal/ghost/readme.txt", b"x", content_type="text/plain")

    assert states.packages() == ["acme/widget", "drupal/core", "drupal/token", "drupal/token_extra"]


# ---------------------------------------------------------------------------
# Pruning
# ---------------------------------------------------------------------------


def test_pruning_keeps_the_newest_three_in_rounds(store: HookedStore) -> None:
    states = PackageStates(store, render_sequence)
    assert KEPT_STATES + 1 == 3
    most = KEPT_STATES + 1 + PRUNE_SLACK

    for sequence in range(1, most + 1):
        states.save(state(sequence))
    # Nothing is deleted until more than `most` have piled up ...
    assert states.sequences(PACKAGE) == list(range(1, most + 1))

    states.save(state(most + 1))

    # ... then all but the newest three are.
    assert states.sequences(PACKAGE) == [most - 1, most, most + 1]
    assert store.list_keys(layout.state_prefix(PACKAGE)) == [
        layout.state_key(PACKAGE, sequence) for sequence in (most - 1, most, most + 1)
    ]
    assert states.load(PACKAGE) == state(most + 1)


def test_pruning_spares_other_packages_with_a_common_prefix(store: HookedStore) -> None:
    states = PackageStates(store, render_sequence)
    for sequence in range(1, 4):
        states.save(state(sequence, "drupal/token_extra"))

    last = KEPT_STATES + 2 + PRUNE_SLACK
    for sequence in range(1, last + 1):
        states.save(state(sequence))

    assert states.sequences("drupal/token_extra") == [1, 2, 3]
    assert states.sequences(PACKAGE) == [last - 2, last - 1, last]


def test_a_newer_state_of_another_package_does_not_supersede(store: HookedStore) -> None:
    states = PackageStates(store, render_sequence)
    states.save(state(100, "drupal/token_extra"))

    saved = states.save(state(1))

    assert saved.superseded_by is None
    assert rendered_from(store) == 1


# ---------------------------------------------------------------------------
# A stale writer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("known", ["stale documents given", "stored documents read"])
def test_a_stale_writer_cannot_leave_older_documents(
    store: HookedStore, other_store: ObjectStore, known: str
) -> None:
    worker_b = PackageStates(other_store, render_sequence)
    worker_a = PackageStates(store, render_sequence)
    worker_b.save(state(7))
    assert rendered_from(store) == 7

    # A lost the package's partition long ago and still believes state 4 is stored.
    saved = worker_a.save(
        state(5),
        stored_documents=render_sequence(state(4)) if known == "stale documents given" else None,
    )

    assert saved.superseded_by == 7
    assert rendered_from(store) == 7
    assert worker_a.load(PACKAGE) == state(7)
    assert worker_b.load(PACKAGE) == state(7)
    assert 7 in worker_a.sequences(PACKAGE)


def test_a_stale_writer_that_finds_its_documents_current_writes_none(
    store: HookedStore, other_store: ObjectStore
) -> None:
    # Documents that do not depend on the sequence: the stale state's equal the newer one's,
    # so the fence finds nothing to write, and nothing older can be left behind.
    def render_versions(rendered: PackageState) -> dict[str, bytes]:
        return {layout.p2_key(rendered.package): orjson.dumps(sorted(rendered.versions))}

    worker_b = PackageStates(other_store, render_versions)
    worker_a = PackageStates(store, render_versions)
    worker_b.save(state(7))
    before = store.stat(P2)
    store.puts.clear()

    saved = worker_a.save(state(5))

    assert saved.superseded_by == 7
    assert saved.documents_written == ()
    assert store.puts == [layout.state_key(PACKAGE, 5)]
    assert store.stat(P2) == before


def test_a_redelivery_with_state_unchanged_is_fenced_too(
    store: HookedStore, other_store: ObjectStore
) -> None:
    worker_a = PackageStates(store, render_sequence)
    worker_a.save(state(5))
    PackageStates(other_store, render_sequence).save(state(6))
    store.puts.clear()

    saved = worker_a.save(state(5), state_changed=False, stored_documents=render_sequence(state(4)))

    assert saved.state_written is False
    assert layout.state_key(PACKAGE, 5) not in store.puts
    assert saved.superseded_by == 6
    assert rendered_from(store) == 6


def test_a_newer_state_written_right_after_our_document_wins(
    store: HookedStore, other_store: ObjectStore
) -> None:
    """The race of the module docstring: B's state 9 and its document land just after A's
    document PUT; A's check must see 9 and leave 9's document in place."""
    worker_a = PackageStates(store, render_sequence)
    worker_b = PackageStates(other_store, render_sequence)

    def b_writes(key: str) -> None:
        if key == P2 and store.puts.count(P2) == 1:
            worker_b.save(state(9))

    store.after_put = b_writes

    saved = worker_a.save(state(5))

    assert store.puts.count(P2) == 1, "B's save must have run inside A's first document PUT"
    assert saved.superseded_by == 9
    assert rendered_from(store) == 9
    assert worker_a.load(PACKAGE) == state(9)


def test_a_newer_worker_that_finished_before_our_document_is_restored(
    store: HookedStore, other_store: ObjectStore
) -> None:
    """B wrote state 9 and its document between A's state and A's document: A's document
    overwrites B's, so A's check must write 9's document again."""
    worker_a = PackageStates(store, render_sequence)
    worker_b = PackageStates(other_store, render_sequence)

    def b_writes(key: str) -> None:
        if key == P2 and store.puts.count(P2) == 0:
            worker_b.save(state(9))

    store.before_put = b_writes

    saved = worker_a.save(state(5))

    assert store.puts == [layout.state_key(PACKAGE, 5), P2, P2]
    assert saved.superseded_by == 9
    assert saved.documents_written == (P2, P2)
    assert rendered_from(store) == 9


def test_a_newer_state_before_our_document_and_its_document_after(
    store: HookedStore, other_store: ObjectStore
) -> None:
    worker_a = PackageStates(store, render_sequence)

    def state_before(key: str) -> None:
        if key == P2 and store.puts.count(P2) == 0:
            write_state_object(other_store, state(9))

    def document_after(key: str) -> None:
        if key == P2 and store.puts.count(P2) == 1:
            write_documents(other_store, render_sequence(state(9)))

    store.before_put = state_before
    store.after_put = document_after

    saved = worker_a.save(state(5))

    assert saved.superseded_by == 9
    assert rendered_from(store) == 9


def test_the_fence_checks_again_after_rendering_a_newer_state(
    store: HookedStore, other_store: ObjectStore
) -> None:
    """While A renders 7 (found by its first check), 9 appears: A's second check sees it. The
    slow writer of 7 finishing afterwards does not bring 7 back either."""
    worker_a = PackageStates(store, render_sequence)

    def others_write(key: str) -> None:
        if key != P2:
            return
        if store.puts.count(P2) == 1:  # after A's document of 5: 7's state only, so far
            write_state_object(other_store, state(7))
        elif store.puts.count(P2) == 2:  # after A's document of 7: 9 complete
            write_state_object(other_store, state(9))
            write_documents(other_store, render_sequence(state(9)))

    store.after_put = others_write

    saved = worker_a.save(state(5))

    assert store.puts == [layout.state_key(PACKAGE, 5), P2, P2]
    assert saved.superseded_by == 9
    assert rendered_from(store) == 9
    # The writer of 7 resumes: its document, then its own check.
    late = PackageStates(other_store, render_sequence).save(state(7), state_changed=False)
    assert late.superseded_by == 9
    assert rendered_from(store) == 9


# ---------------------------------------------------------------------------
# Repair after a crash
# ---------------------------------------------------------------------------


def test_a_redelivery_writes_the_documents_a_crash_left_out(store: HookedStore) -> None:
    states = PackageStates(store, render_sequence)
    write_state_object(store, state(3))  # the worker died before its documents
    store.puts.clear()

    saved = states.save(state(3), state_changed=False)

    assert saved.state_written is False
    assert saved.documents_written == (P2,)
    assert store.puts == [P2]
    assert rendered_from(store) == 3


def test_a_redelivery_replaces_documents_of_the_previous_state(store: HookedStore) -> None:
    states = PackageStates(store, render_sequence)
    states.save(state(2))
    write_state_object(store, state(3))  # the worker died before its documents
    store.puts.clear()

    saved = states.save(state(3), state_changed=False)

    assert store.puts == [P2]
    assert saved.superseded_by is None
    assert rendered_from(store) == 3


def test_a_redelivery_after_a_complete_save_writes_nothing(store: HookedStore) -> None:
    states = PackageStates(store, render_sequence)
    states.save(state(3))
    store.puts.clear()

    saved = states.save(state(3), state_changed=False)

    assert store.puts == []
    assert saved == type(saved)(state_written=False, documents_written=())
