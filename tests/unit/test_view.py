"""The region's view: the record's codec, which copy wins, how documents are dated, and a
worker's local view on disk (sqlite and docroot; no sockets)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.view_store import LocalView, marker_key
from schemas import layout
from schemas.errors import MalformedEventError
from schemas.package_state import PackageState
from schemas.view import PackageView, next_view, removal, supersedes
from streams.region_view import RegionView

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
PACKAGE = "drupal/token"
STABLE = layout.p2_key(PACKAGE)
DEV = layout.p2_key(PACKAGE, dev=True)


def view(
    sequence: int,
    stable: bytes = b'{"s":1}',
    dev: bytes = b'{"d":1}',
    *,
    held: PackageView | None = None,
    now: datetime = NOW,
    replace: bool = False,
    by: str = "eu@a",
) -> PackageView:
    state = PackageState(PACKAGE, sequence=sequence, applied={f"d{sequence}": f"t:0:{sequence}"})
    return next_view(
        package=PACKAGE,
        sequence=sequence,
        position=f"t:0:{sequence}",
        state=state.to_json(),
        documents={STABLE: stable, DEV: dev},
        held=held,
        now=now,
        written_by=by,
        replace=replace,
    )


@given(
    sequence=st.integers(0, 2**62),
    stable=st.binary(max_size=2000),
    dev=st.binary(max_size=2000),
    stamp=st.integers(0, 2**40),
    replace=st.booleans(),
)
def test_a_view_record_decodes_to_what_was_encoded(
    sequence: int, stable: bytes, dev: bytes, stamp: int, replace: bool
) -> None:
    written = PackageView(
        package=PACKAGE,
        sequence=sequence,
        position="fair.releases:3:17",
        state=b'{"package":"drupal/token"}',
        stable=stable,
        dev=dev,
        stable_modified=stamp,
        dev_modified=stamp + 1,
        written_by="eu@127.0.0.1:8081",
        written_at=NOW,
        replace=replace,
    )
    assert PackageView.from_bytes(written.to_bytes()) == written


def test_a_removal_record_carries_no_state_and_serves_nothing() -> None:
    gone = removal(view(5), now=NOW, written_by="rebuild")
    decoded = PackageView.from_bytes(gone.to_bytes())
    assert decoded.removed and decoded.documents() == {}
    assert decoded.replace and decoded.sequence == 5


def test_a_record_whose_blob_does_not_inflate_is_malformed() -> None:
    encoded = bytearray(view(1).to_bytes())
    # The stable blob sits after the state blob: break a byte of the zlib stream's header.
    at = encoded.find(b"x\x01", len(encoded) // 2)
    assert at > 0
    encoded[at] = 0
    with pytest.raises(MalformedEventError, match="does not inflate"):
        PackageView.from_bytes(bytes(encoded))


def test_only_a_newer_sequence_or_a_rebuild_of_at_least_the_same_one_replaces_a_copy() -> None:
    held = view(10)
    assert supersedes(view(10), None)
    assert supersedes(view(11), held)
    # A stale worker's late record is older, or the same event again: ignored.
    assert not supersedes(view(9), held)
    assert not supersedes(view(10, b"other"), held)
    # A rebuild re-renders (same sequence) but never takes a package back to an older event.
    assert supersedes(view(10, b"re-rendered", replace=True), held)
    assert not supersedes(view(9, replace=True), held)
    assert supersedes(removal(held, now=NOW, written_by="rebuild"), held)


def test_a_changed_document_is_dated_later_even_within_the_same_second() -> None:
    first = view(1)
    assert (first.stable_modified, first.dev_modified) == (int(NOW.timestamp()),) * 2
    # Same second, new stable bytes: its date moves on by a second; the dev one stays.
    second = view(2, b'{"s":2}', held=first, now=NOW + timedelta(milliseconds=300))
    assert second.stable_modified == first.stable_modified + 1
    assert second.dev_modified == first.dev_modified
    # Again in the same second: later again, never the same date for other bytes.
    third = view(3, b'{"s":3}', held=second, now=NOW + timedelta(milliseconds=600))
    assert third.stable_modified == first.stable_modified + 2
    # A minute on, the date is the clock's.
    fourth = view(4, b'{"s":4}', held=third, now=NOW + timedelta(minutes=1))
    assert fourth.stable_modified == int(NOW.timestamp()) + 60


def test_equal_documents_keep_their_date() -> None:
    first = view(1)
    again = view(2, held=first, now=NOW + timedelta(hours=1))
    assert (again.stable_modified, again.dev_modified) == (
        first.stable_modified,
        first.dev_modified,
    )


def test_a_package_back_after_a_removal_is_dated_after_it() -> None:
    first = view(1)
    gone = removal(first, now=NOW, written_by="rebuild")
    back = view(2, held=gone, now=NOW)
    assert back.stable_modified > first.stable_modified


#: The docroot written at once, and by a writer process of its own (a worker's and a
#: frontend's): the same files either way, once flushed.
FILES_IN_PROCESS = pytest.mark.parametrize("in_process", [False, True], ids=["inline", "process"])


@FILES_IN_PROCESS
def test_the_local_view_serves_what_it_holds_and_survives_a_restart(
    tmp_path: Path, in_process: bool
) -> None:
    docroot = tmp_path / "docroot"
    local = LocalView(tmp_path / "view.sqlite3", docroot=docroot, files_in_process=in_process)
    written = view(3)
    local.put_many([(written, written.to_bytes())], followed=("fair.view.eu", {0: 7, 2: 4}))
    assert local.flush_files(10.0)

    served = local.document(STABLE)
    assert served is not None and served.body == written.stable
    assert served.last_modified == "Sun, 06 Dec 2026 12:00:00 GMT"
    state = local.load(PACKAGE)
    assert state is not None and state.sequence == 3
    file = docroot / STABLE
    assert file.read_bytes() == written.stable
    assert int(file.stat().st_mtime) == written.stable_modified
    assert oct(file.stat().st_mode & 0o777) == "0o644"
    local.close()

    file.unlink()  # a docroot file lost while stopped is written again from sqlite
    reopened = LocalView(tmp_path / "view.sqlite3", docroot=docroot, files_in_process=in_process)
    assert reopened.flush_files(10.0)
    assert reopened.packages() == [PACKAGE]
    assert reopened.next_offsets("fair.view.eu") == {0: 7, 2: 4}
    assert reopened.document(DEV) is not None
    assert file.read_bytes() == written.stable
    assert not [p for p in docroot.rglob(".*") if p.is_file()], "temporary files left behind"
    reopened.close()


@FILES_IN_PROCESS
def test_a_removal_takes_the_package_out_of_memory_sqlite_and_the_docroot(
    tmp_path: Path, in_process: bool
) -> None:
    docroot = tmp_path / "docroot"
    local = LocalView(tmp_path / "view.sqlite3", docroot=docroot, files_in_process=in_process)
    written = view(3)
    local.put(written, written.to_bytes())
    assert local.flush_files(10.0)
    assert (docroot / STABLE).exists()
    gone = removal(written, now=NOW, written_by="rebuild")
    local.put(gone, gone.to_bytes())
    assert local.flush_files(10.0)
    assert local.document(STABLE) is None and local.load(PACKAGE) is None
    assert not (docroot / STABLE).exists() and not (docroot / DEV).exists()
    local.close()
    assert LocalView(tmp_path / "view.sqlite3").packages() == []


def test_an_echo_is_recognised_once_and_only_for_the_bytes_written() -> None:
    local = LocalView(None)
    written = view(3)
    encoded = written.to_bytes()
    local.expect_echo(PACKAGE, encoded)
    assert not local.is_echo(PACKAGE, view(3, b"other").to_bytes())
    assert local.is_echo(PACKAGE, encoded)
    assert not local.is_echo(PACKAGE, encoded)


def test_markers_are_not_package_names() -> None:
    # Package names start with a letter or digit; a marker's key can never be one.
    assert marker_key("eu@127.0.0.1:8081").startswith(b"\x00")


def test_a_write_that_fails_on_disk_holds_nothing(tmp_path: Path) -> None:
    local = LocalView(tmp_path / "view.sqlite3")
    local.close()
    written = view(3)
    with pytest.raises(Exception, match="closed"):
        local.put(written, written.to_bytes())
    assert local.document(STABLE) is None
    assert os.path.exists(tmp_path / "view.sqlite3")


async def test_a_write_builds_on_the_previous_one_still_in_flight() -> None:
    """A batch may start before the previous batch's view records are acknowledged: the next
    write of a package reads its newest state and dates its documents after the unacknowledged
    ones, and nothing is held (served) before its own acknowledgement."""
    local = LocalView(None)
    acks: list[asyncio.Future[object]] = []
    sent: list[bytes] = []

    async def send(key: bytes, value: bytes) -> asyncio.Future[object]:
        sent.append(value)
        acks.append(asyncio.get_running_loop().create_future())
        return acks[-1]

    moments = iter([NOW, NOW])  # both writes within the same second

    def render(state: PackageState) -> dict[str, bytes]:
        return {STABLE: f'{{"s":{state.sequence}}}'.encode(), DEV: b'{"d":1}'}

    region = RegionView(
        local, render=render, send=send, written_by="eu@a", clock=lambda: next(moments)
    )
    first_state = PackageState(PACKAGE, sequence=1, applied={"d1": "t:0:1"})
    first = await region.write(first_state, previous=None, redelivered=False)
    await asyncio.sleep(0)
    assert await region.load(PACKAGE) is first_state  # the newest, though not acknowledged
    assert local.held(PACKAGE) is None and local.document(STABLE) is None

    second_state = PackageState(PACKAGE, sequence=2, applied={"d1": "t:0:1", "d2": "t:0:2"})
    second = await region.write(second_state, previous=first_state, redelivered=False)
    await asyncio.sleep(0)
    first_view, second_view = (PackageView.from_bytes(value) for value in sent)
    # Changed bytes within the same second: dated a second after the unacknowledged record.
    assert second_view.stable_modified == first_view.stable_modified + 1
    assert second_view.dev_modified == first_view.dev_modified  # same bytes, same date

    acks[0].set_result(None)
    await first.acked
    held = local.held(PACKAGE)
    assert held is not None and held.sequence == 1
    assert await region.load(PACKAGE) is second_state  # still the newest
    acks[1].set_result(None)
    await second.acked
    held = local.held(PACKAGE)
    assert held is not None and held.sequence == 2
    served = local.document(STABLE)
    assert served is not None and served.body == b'{"s":2}'
    assert local.load(PACKAGE) == second_state
