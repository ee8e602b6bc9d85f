"""`fairstream demo` (what `make demo` runs) run again and again in one data directory, and
stopped by signals: every run installs with the real composer, and no signal leaves a
process behind.

One data directory for the whole test, as a newcomer's checkout: runs share the stack's
store (the buckets persist in it) and the keys. Each run is a real `fairstream demo`
process; what it started is read from /proc while it runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

INSTALLED = "against eu installed: ctools, pathauto, token"
RUNNING = "running; press Ctrl-C"


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, None once it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields follow the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """Every live process below ``pid``, as {pid: start time} (to tell a reused pid)."""
    parents: dict[int, int] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)], starts[int(entry.name)] = stat
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in found:
                found[child] = starts[child]
                frontier.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def survivors(processes: dict[int, int], timeout: float = 20.0) -> dict[int, str]:
    """Those of ``processes`` still running after ``timeout``, with their command lines."""
    deadline = time.monotonic() + timeout
    while True:
        left = {
            pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            for pid, start in processes.items()
            if (stat := _stat(pid)) is not None and stat[1] == start
        }
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


class Demo:
    """One `fairstream demo` process, its output in a file."""

    def __init__(self, data_dir: Path, log: Path, *options: str) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.cli",
                    "demo",
                    "--data-dir",
                    str(data_dir),
                    *options,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "COLUMNS": "200"},
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 180.0) -> dict[int, int]:
        """Wait until the output shows ``text``; the processes the demo runs then."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.process.poll() is None, f"the demo ended early:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.output}"
            time.sleep(0.2)
        return descendants(self.process.pid)

    def finish(self, timeout: float = 180.0) -> int:
        return self.process.wait(timeout)


def run_to_the_end(data_dir: Path, log: Path) -> str:
    demo = Demo(data_dir, log)
    started = demo.wait_for("node us:")
    code = demo.finish()
    assert code == 0, demo.output
    assert survivors(started) == {}
    return demo.output


def test_demo_reruns_and_signals_leave_nothing_behind(tmp_path: Path) -> None:
    data_dir = tmp_path / ".fairstream"

    # 1: to the end.
    first = run_to_the_end(data_dir, tmp_path / "1.log")
    assert INSTALLED in first

    # 2: again with --keep-running (composer used to fetch the first run's dead port),
    # stopped by SIGTERM as a supervisor (or `kill`) would.
    demo = Demo(data_dir, tmp_path / "2.log", "--keep-running")
    running = demo.wait_for(RUNNING)
    assert INSTALLED in demo.output
    # The two servers of the stack, the origin and two nodes.
    assert len(running) >= 5, running
    demo.process.send_signal(signal.SIGTERM)
    assert demo.finish(60) == 128 + signal.SIGTERM, demo.output
    assert survivors(running) == {}
    assert not (data_dir / "stack.json").exists()

    # 3: interrupted in the middle (Ctrl-C while the nodes start).
    demo = Demo(data_dir, tmp_path / "3.log")
    running = demo.wait_for("node eu:")
    demo.process.send_signal(signal.SIGINT)
    assert demo.finish(60) == 130, demo.output
    assert survivors(running) == {}

    # 4: killed outright: the nodes and the origin die with it; the stack it started is
    # left, recorded, and the next run stops it.
    demo = Demo(data_dir, tmp_path / "4.log", "--keep-running")
    running = demo.wait_for(RUNNING)
    assert INSTALLED in demo.output
    stack_pids = {p for p in running if "tansu" in _cmdline(p) or "rclone" in _cmdline(p)}
    assert len(stack_pids) == 2, running
    demo.process.kill()
    demo.finish(10)
    assert set(survivors({p: s for p, s in running.items() if p not in stack_pids})) == set()

    # 5: after the interrupted and the killed runs, a third install; it stops all.
    fifth = run_to_the_end(data_dir, tmp_path / "5.log")
    assert INSTALLED in fifth
    assert survivors({p: running[p] for p in stack_pids}) == {}
    assert not (data_dir / "stack.json").exists()
