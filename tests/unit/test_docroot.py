"""The docroot's files: written in order by a writer process of the node's own, dated by their
mtime, a file already carrying its date left alone, a failed write tried again, and a writer
that dies replaced without losing a file (a real child process; no sockets)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.docroot import (
    FileOp,
    FileWriterProcess,
    InlineFiles,
    _frames,
    _ops_of,
    apply_op,
)

TOKEN = "p2/drupal/token.json"
TOKEN_DEV = "p2/drupal/token~dev.json"


def on_disk(docroot: Path, key: str) -> tuple[bytes, int]:
    path = docroot / key
    return path.read_bytes(), int(path.stat().st_mtime)


@given(
    ops=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=40),
            st.none() | st.binary(max_size=300),
            st.integers(0, 2**40),
        ),
        max_size=1200,
    )
)
def test_ops_cross_the_pipe_as_they_were_given(ops: list[FileOp]) -> None:
    frames = list(_frames(ops))
    decoded = [op for frame in frames for op in _ops_of(frame[5:])]
    assert decoded == ops
    assert len(frames) == -(-len(ops) // 500)


def test_a_file_that_already_carries_its_date_is_left_alone(tmp_path: Path) -> None:
    apply_op(tmp_path, (TOKEN, b"first", 1_000))
    apply_op(tmp_path, (TOKEN, b"same date, so the same bytes", 1_000))
    assert on_disk(tmp_path, TOKEN) == (b"first", 1_000)
    apply_op(tmp_path, (TOKEN, b"second", 1_001))
    assert on_disk(tmp_path, TOKEN) == (b"second", 1_001)
    assert oct((tmp_path / TOKEN).stat().st_mode & 0o777) == "0o644"
    apply_op(tmp_path, (TOKEN, None, 0))
    apply_op(tmp_path, (TOKEN, None, 0))  # removing what is gone is no error
    assert not (tmp_path / TOKEN).exists()


def test_the_writer_process_applies_ops_in_order(tmp_path: Path) -> None:
    (tmp_path / "p2/drupal").mkdir(parents=True)
    (tmp_path / "p2/drupal/gone.json").write_bytes(b"old")
    writer = FileWriterProcess(tmp_path, everything=list)
    try:
        writer.write([(TOKEN, b"v1", 1_000), (TOKEN_DEV, b"dev", 900)])
        writer.write([(TOKEN, b"v2", 1_001), ("p2/drupal/gone.json", None, 0)])
        writer.write([(f"p2/drupal/p{n}.json", b"%d" % n, 2_000 + n) for n in range(1_200)])
        assert writer.flush(10.0)
        assert on_disk(tmp_path, TOKEN) == (b"v2", 1_001)
        assert on_disk(tmp_path, TOKEN_DEV) == (b"dev", 900)
        assert not (tmp_path / "p2/drupal/gone.json").exists()
        assert on_disk(tmp_path, "p2/drupal/p1199.json") == (b"1199", 3_199)
        assert not [p for p in tmp_path.rglob(".*") if p.is_file()], "temporary files left"
    finally:
        writer.close()
    assert writer._process.poll() == 0, "the writer did not stop with its pipe"


def test_a_writer_that_dies_is_replaced_and_given_every_file(tmp_path: Path) -> None:
    held: dict[str, FileOp] = {}

    def write(writer: FileWriterProcess, *ops: FileOp) -> None:
        held.update((op[0], op) for op in ops)
        writer.write(list(ops))

    writer = FileWriterProcess(tmp_path, everything=lambda: list(held.values()))
    try:
        write(writer, (TOKEN, b"v1", 1_000))
        assert writer.flush(10.0)
        (tmp_path / TOKEN).unlink()  # lost meanwhile: the next writer writes it again
        first = writer._process
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10.0)
        write(writer, (TOKEN_DEV, b"dev", 900))
        assert writer.flush(10.0)
        assert writer.started == 2
        assert on_disk(tmp_path, TOKEN) == (b"v1", 1_000)
        assert on_disk(tmp_path, TOKEN_DEV) == (b"dev", 900)
    finally:
        writer.close()


def test_a_write_that_fails_is_tried_again_with_the_next_batch(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    blocked = "p2/vendor/module.json"
    (tmp_path / "p2").mkdir()
    (tmp_path / "p2/vendor").write_bytes(b"a file where a folder must be")
    writer = FileWriterProcess(tmp_path, everything=list)
    try:
        writer.write([(blocked, b"module", 1_000), (TOKEN, b"v1", 1_000)])
        assert writer.flush(10.0)
        assert on_disk(tmp_path, TOKEN) == (b"v1", 1_000)  # the rest of the batch is written
        assert not (tmp_path / blocked).exists()
        deadline = time.monotonic() + 5.0
        while "p2/vendor/module.json not written" not in capfd.readouterr().err:
            assert time.monotonic() < deadline, "the failure was not said"
            time.sleep(0.05)
        (tmp_path / "p2/vendor").unlink()
        writer.write([(TOKEN_DEV, b"dev", 900)])
        assert writer.flush(10.0)
        assert on_disk(tmp_path, blocked) == (b"module", 1_000)
    finally:
        writer.close()


def test_inline_files_are_written_at_once(tmp_path: Path) -> None:
    files = InlineFiles(tmp_path)
    files.write([(TOKEN, b"v1", 1_000)])
    assert on_disk(tmp_path, TOKEN) == (b"v1", 1_000)
    assert files.flush(0.0)


def test_the_writer_leaves_a_ctrl_c_to_its_parent_and_stops_with_its_pipe(tmp_path: Path) -> None:
    """A terminal's Ctrl-C (and a service manager's SIGTERM) reaches the whole process group:
    the writer neither dies with a traceback nor loses what it was given."""
    writer = FileWriterProcess(tmp_path, everything=list)
    try:
        assert writer.flush(10.0)  # started and answering: its signal handlers are set
        os.kill(writer._process.pid, signal.SIGINT)
        os.kill(writer._process.pid, signal.SIGTERM)
        writer.write([(TOKEN, b"v1", 1_000)])
        assert writer.flush(10.0)
        assert writer.started == 1, "the writer died of the signal"
        assert on_disk(tmp_path, TOKEN) == (b"v1", 1_000)
    finally:
        writer.close()
    assert writer._process.poll() == 0
