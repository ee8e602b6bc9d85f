"""A user's mistakes on the real `fairstream` entry point: one sentence naming the bad input, never a traceback.

Each case runs the installed console script in a subprocess, as a person would, and
checks the exit status (1 for our errors, 2 for click's usage errors, 130 for Ctrl-C),
that stderr holds no traceback and that the message names what was wrong. Mistakes in
the arguments must be reported before any server is asked: the broker and store URLs
given point at closed ports, so a command that went on to the network would say so
instead (and a closed port itself must fail in bounded time). Servers listen on a port
the system picks (``127.0.0.1:0``), and the commands' default ports are held while the
mistakes run: what else listens on this machine cannot change an outcome.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest

from infra import devstack
from infra.localnet import free_port
from schemas.signing import SigningKey
from services.publishing.trust_admin import write_key_pair

pytestmark = pytest.mark.integration

FAIRSTREAM = str(Path(sys.executable).with_name("fairstream"))
#: Nothing listens on port 1: any command that reached the network would fail on these.
CLOSED = ["--broker", "kafka://127.0.0.1:1", "--store", "s3://key:secret@127.0.0.1:1"]
#: A server's address on a port the system picks: always free.
FREE = ["--listen", "127.0.0.1:0"]
#: The default --listen ports of origin serve, node run and serve, directory serve and
#: refer, publishing serve, and a node's usual 8081: another process may hold any of them.
DEFAULT_PORTS = (8000, 8080, 8081, 8090, 8091)
Outcome = subprocess.CompletedProcess[str]


def fairstream(*args: str | Path, cwd: Path, timeout: float = 60) -> Outcome:
    """Run the `fairstream` console script with no FAIRSTREAM_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRSTREAM_")}
    return subprocess.run(
        [FAIRSTREAM, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_refused(result: Outcome, status: int, *named: str | Path) -> None:
    """Refused with ``status``, no traceback, and a message on stderr naming each of ``named``."""
    shown = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == status, shown
    assert "Traceback" not in result.stderr, shown
    for text in named:
        assert str(text) in result.stderr, shown
    if status == 1:
        # One line, last (librdkafka may have logged its first failure to connect before it).
        assert result.stderr.strip().splitlines()[-1].startswith("error: "), shown
        assert "error:" not in result.stdout, shown


def make_work(tmp_path: Path) -> Path:
    """A working directory with keys, a trust root, a junk file, a directory and a plain file."""
    for name in ("root", "drupal"):
        write_key_pair(SigningKey.generate(), tmp_path / "keys" / f"{name}.key")
    result = fairstream(
        "trust",
        "init",
        "root.avro",
        "--root-key",
        "keys/root.key",
        "--delegate",
        "drupal/*=drupal.org:keys/drupal.pub",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (tmp_path / "junk.bin").write_bytes(b"junk")
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("a file, not a directory")
    return tmp_path


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return make_work(tmp_path)


@pytest.fixture(scope="module")
def default_ports_held() -> Iterator[None]:
    """Every default port held (by this test, or already by someone else) meanwhile."""
    with ExitStack() as held:
        for port in DEFAULT_PORTS:
            holder = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                holder.bind(("127.0.0.1", port))
                holder.listen()
            except OSError:
                pass  # held by another process already: as good
        yield


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@dataclass(frozen=True)
class Mistake:
    """A command line with a mistake (``{closed}`` stands for --broker and --store on closed
    ports, ``{free}`` for --listen on a free port), the exit status it must end with, and
    what its message must name."""

    command: str
    status: int
    named: tuple[str, ...]

    def args(self) -> list[str]:
        return [word for part in shlex.split(self.command) for word in _expand(part)]


def _expand(word: str) -> list[str]:
    return {"{closed}": CLOSED, "{free}": FREE}.get(word, [word])


NODE_RUN_ANYWHERE = "node run --region eu {closed} --data-dir state"
NODE_RUN = f"{NODE_RUN_ANYWHERE} {{free}}"
MISTAKES = {
    # files: missing, a directory, not what they should be
    "node run root missing": Mistake(
        f"{NODE_RUN} --root missing.avro", 1, ("missing.avro", "No such file")
    ),
    "node run root is a directory": Mistake(
        f"{NODE_RUN} --root adir", 1, ("adir", "Is a directory")
    ),
    # checked before anything is written to the bucket or produced (issue 16)
    "node run public url not a url": Mistake(
        f"{NODE_RUN} --root root.avro --public-url not-a-url", 2, ("--public-url", "'not-a-url'")
    ),
    "status directory not a url": Mistake(
        "status --broker kafka://127.0.0.1:1 --directory not-a-url",
        2,
        ("--directory", "'not-a-url'"),
    ),
    "publish with a key the root does not delegate": Mistake(
        "publish drupal/token 8.x-1.9 --zip junk.bin --origin-url http://127.0.0.1:1/t.zip "
        "--key keys/root.key --root root.avro --broker kafka://127.0.0.1:1",
        1,
        ("--key keys/root.key", "delegates drupal/* to drupal.org", "nothing was produced"),
    ),
    "node run root not a root": Mistake(
        f"{NODE_RUN} --root junk.bin", 1, ("junk.bin", "not a valid signed root")
    ),
    "node run node key not a key": Mistake(
        f"{NODE_RUN} --root root.avro --node-key junk.bin", 1, ("junk.bin", "keys generate")
    ),
    "node run node key public": Mistake(
        f"{NODE_RUN} --root root.avro --node-key keys/root.pub",
        1,
        ("keys/root.pub", "is a public key"),
    ),
    "node serve root not a root": Mistake(
        "node serve --region eu --root junk.bin {closed} {free}",
        1,
        ("junk.bin", "not a valid signed root"),
    ),
    "node rebuild root missing": Mistake(
        "node rebuild --region eu --root missing.avro --public-url http://127.0.0.1:8081 {closed}",
        1,
        ("missing.avro",),
    ),
    "directory serve root not a root": Mistake(
        "directory serve --root junk.bin {closed} {free} --data-dir state",
        1,
        ("junk.bin", "not a valid signed root"),
    ),
    "trust init key missing": Mistake(
        "trust init r.avro --root-key keys/missing.key", 1, ("keys/missing.key", "No such file")
    ),
    "trust init key is a directory": Mistake(
        "trust init r.avro --root-key adir", 1, ("adir", "Is a directory")
    ),
    "trust rotate previous not a root": Mistake(
        "trust rotate junk.bin r2.avro --root-key keys/root.pub --sign keys/root.key",
        1,
        ("junk.bin", "not a valid signed root"),
    ),
    "publish zip missing": Mistake(
        "publish drupal/token 8.x-1.9 --zip missing.zip --origin-url http://127.0.0.1:1/t.zip "
        "--key keys/drupal.key --broker kafka://127.0.0.1:1",
        1,
        ("missing.zip",),
    ),
    "publish with a public key": Mistake(
        "publish drupal/token 8.x-1.9 --zip junk.bin --origin-url http://127.0.0.1:1/t.zip "
        "--key keys/drupal.pub --broker kafka://127.0.0.1:1",
        1,
        ("keys/drupal.pub", "private"),
    ),
    "import package list is a directory": Mistake(
        "import http://127.0.0.1:1/ --key keys/drupal.key --packages adir "
        "--broker kafka://127.0.0.1:1",
        1,
        ("package list adir", "Is a directory"),
    ),
    # places that cannot be written (under a plain file, so that root cannot either)
    "keys generate unwritable": Mistake(
        "keys generate afile/drupal", 1, ("afile/drupal.key", "choose a path")
    ),
    "trust init unwritable": Mistake(
        "trust init afile/root.avro --root-key keys/root.key",
        1,
        ("cannot write trust root file afile/root.avro",),
    ),
    "catalogue generate unwritable": Mistake(
        "catalogue generate afile/catalogue --projects 2 --base-url http://127.0.0.1:8000",
        1,
        ("cannot write the catalogue to afile/catalogue",),
    ),
    "node run data dir unwritable": Mistake(
        "node run --region eu --root root.avro {closed} {free} --data-dir afile/state",
        1,
        ("afile/state/nodes/eu", "--data-dir"),
    ),
    # values, named before any server is asked
    "quota": Mistake(f"{NODE_RUN} --root root.avro --quota 20X", 2, ("--quota", "'20X'", "20G")),
    "max artifact size": Mistake(
        f"{NODE_RUN} --root root.avro --max-artifact-size 1X",
        2,
        ("--max-artifact-size", "'1X'", "20 GiB"),
    ),
    "publishing max artifact size": Mistake(
        "publishing serve --root root.avro --key keys/drupal.key --max-artifact-size 0 {free} "
        "--broker kafka://127.0.0.1:1",
        2,
        ("--max-artifact-size", "'0'", "positive"),
    ),
    # Sizes are written one way everywhere: these pass, and the root named is what is wrong.
    "sizes written as units are taken": Mistake(
        f"{NODE_RUN} --root missing.avro --max-artifact-size 1G --quota '20 GiB'",
        1,
        ("missing.avro",),
    ),
    "rebuild sizes written as units are taken": Mistake(
        "node rebuild --region eu --root missing.avro --public-url http://127.0.0.1:8081 "
        "--max-artifact-size 500MB --quota 1073741824 {closed}",
        1,
        ("missing.avro",),
    ),
    "publishing size written as units is taken": Mistake(
        "publishing serve --root missing.avro --key keys/drupal.key --max-artifact-size '2 GiB' "
        "{free} --broker kafka://127.0.0.1:1",
        1,
        ("missing.avro",),
    ),
    "listen not host port": Mistake(
        f"{NODE_RUN_ANYWHERE} --root root.avro --listen nonsense", 1, ("--listen 'nonsense'",)
    ),
    "listen port too large": Mistake(
        f"{NODE_RUN_ANYWHERE} --root root.avro --listen 127.0.0.1:99999",
        1,
        ("127.0.0.1:99999",),
    ),
    "region name": Mistake(f"{NODE_RUN} --root root.avro --region EU", 1, ("region 'EU'",)),
    "broker url": Mistake(
        "node run --region eu --root root.avro --broker notaurl "
        "--store s3://key:secret@127.0.0.1:1 --data-dir state {free}",
        1,
        ("'notaurl'", "kafka://"),
    ),
    "broker port": Mistake(
        "node run --region eu --root root.avro --broker kafka://host:port "
        "--store s3://key:secret@127.0.0.1:1 --data-dir state {free}",
        1,
        ("kafka://host:port",),
    ),
    "store url": Mistake(
        "node run --region eu --root root.avro --broker kafka://127.0.0.1:1 --store nonsense "
        "--data-dir state {free}",
        1,
        ("'nonsense'", "s3://"),
    ),
    "region map": Mistake(
        "directory serve --root root.avro --region-map nonsense {closed} {free}",
        1,
        ("--region-map 'nonsense'", "CIDR=REGION"),
    ),
    "region map network": Mistake(
        "directory serve --root root.avro --region-map 10.0.0.0/33=eu {closed} {free}",
        1,
        ("10.0.0.0/33",),
    ),
    "region map region": Mistake(
        "directory serve --root root.avro --region-map 10.0.0.0/8=EU {closed} {free}",
        1,
        ("region 'EU'", "lower-case"),
    ),
    "refer": Mistake("directory refer --refer nonsense", 1, ("--refer 'nonsense'",)),
    "delegate": Mistake(
        "trust init r.avro --root-key keys/root.key --delegate 'drupal/*'",
        1,
        ("'drupal/*'", "NAMESPACE=PUBLISHER:KEYFILE"),
    ),
    "import url": Mistake(
        "import notaurl --key keys/drupal.key --broker kafka://127.0.0.1:1", 1, ("'notaurl'",)
    ),
    "no broker and no stack": Mistake(
        "status --data-dir empty", 1, ("no --broker/--store given", "empty", "fairstream dev up")
    ),
    # usage errors: click's short message, exit 2
    "misspelt option": Mistake(
        "status --brokr kafka://127.0.0.1:1", 2, ("No such option: --brokr",)
    ),
    "every without watch": Mistake("status --every 2", 2, ("--every", "--watch")),
    "missing option": Mistake("node run --region eu", 2, ("Missing option '--root'",)),
    "origin dir missing": Mistake("origin serve missing-dir", 2, ("missing-dir",)),
    "trust publish file missing": Mistake("trust publish missing.avro", 2, ("missing.avro",)),
    "catalogue into a file": Mistake(
        "catalogue generate root.avro --projects 2 --base-url http://x", 2, ("root.avro",)
    ),
    "data dir is a file": Mistake("dev up --data-dir root.avro", 2, ("root.avro",)),
}


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory, default_ports_held: None
) -> dict[str, Outcome]:
    """Every mistake run once, a few at a time (each start of the CLI takes a second)."""
    work = make_work(tmp_path_factory.mktemp("mistakes"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            name: pool.submit(fairstream, *mistake.args(), cwd=work)
            for name, mistake in MISTAKES.items()
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", MISTAKES)
def test_a_mistake_is_one_sentence_naming_the_bad_input(
    name: str, outcomes: dict[str, Outcome]
) -> None:
    mistake = MISTAKES[name]
    assert_refused(outcomes[name], mistake.status, *mistake.named)


def test_a_listen_port_in_use_is_named(work: Path, busy_port: int) -> None:
    result = fairstream(
        *Mistake(
            f"{NODE_RUN_ANYWHERE} --root root.avro --listen 127.0.0.1:{busy_port}", 1, ()
        ).args(),
        cwd=work,
    )
    assert_refused(result, 1, f"127.0.0.1:{busy_port}", "--listen")


# --- servers ---------------------------------------------------------------------------


def test_a_closed_broker_port_fails_in_bounded_time_with_what_to_check(work: Path) -> None:
    started = time.monotonic()
    result = fairstream("status", "--broker", "kafka://127.0.0.1:1", cwd=work, timeout=90)

    assert time.monotonic() - started < 60
    # status is a Nagios check: one that cannot tell says UNKNOWN (3), not WARNING (1).
    assert_refused(result, 3, "kafka://127.0.0.1:1", "--broker", "fairstream dev status")
    assert result.stderr.strip().splitlines()[-1].startswith("error: "), result.stderr
    # librdkafka's own writer printed a line per reconnect (~290 in 16 s) before ours; its
    # lines now go through our logging, each kind at most once a minute.
    assert "%3|" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr


def test_a_recorded_stack_that_no_longer_runs_says_so(work: Path, default_ports_held: None) -> None:
    data_dir = work / "stopped-stack"
    data_dir.mkdir()
    # Recorded pids whose command line is not the recorded one: what a reboot leaves.
    (data_dir / devstack.STATE_FILE).write_text(
        json.dumps(
            {
                "version": devstack.STATE_VERSION,
                "broker_url": "kafka://127.0.0.1:1",
                "store_url": "s3://key:secret@127.0.0.1:1",
                "processes": [
                    {
                        "name": name,
                        "pid": os.getpid(),
                        "address": "127.0.0.1:1",
                        "command": [f"/gone/{name}"],
                        "log": str(data_dir / f"{name}.log"),
                    }
                    for name in ("broker", "store")
                ],
            }
        )
    )

    status = fairstream("status", "--data-dir", data_dir, cwd=work)
    node = fairstream(
        "node",
        "run",
        "--region",
        "eu",
        "--root",
        "root.avro",
        "--data-dir",
        data_dir,
        *FREE,
        cwd=work,
    )

    assert_refused(status, 1, "is not running (broker stopped)", "fairstream dev up --data-dir")
    assert_refused(node, 1, "is not running (broker and store stopped)")


# --- Ctrl-C ----------------------------------------------------------------------------


def start(*args: str | Path, cwd: Path) -> subprocess.Popen[str]:
    """Start the `fairstream` console script as a terminal's foreground job would run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRSTREAM_")}
    return subprocess.Popen(
        [FAIRSTREAM, *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # As a terminal's Ctrl-C: a shell's background job would ignore SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_until_answering(url: str, process: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}: {process.communicate()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"{url} did not answer: {process.communicate()}")


def stopped_by(process: subprocess.Popen[str], signum: int) -> tuple[str, str]:
    """Send ``signum`` to the process's group (a terminal's Ctrl-C); its output once it ended."""
    os.killpg(process.pid, signum)
    try:
        return process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


def test_ctrl_c_ends_a_command_quietly_with_130(work: Path) -> None:
    process = start(
        "catalogue",
        "generate",
        "big",
        "--projects",
        "100000",
        "--workers",
        "1",
        "--base-url",
        "http://127.0.0.1:8000",
        cwd=work,
    )
    deadline = time.monotonic() + 30
    while not (work / "big" / "p2").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr and "Aborted" not in stderr, stderr


def test_ctrl_c_stops_node_run_with_130(work: Path, stack: devstack.Stack) -> None:
    port = free_port()
    process = start(
        "--log-level",
        "warning",
        "node",
        "run",
        "--region",
        "ctrlc",
        "--root",
        "root.avro",
        "--broker",
        stack.broker_url,
        "--store",
        stack.store_url,
        "--topic-prefix",
        f"ctrlc-{uuid4().hex[:8]}-",
        "--session-timeout",
        "6",
        "--listen",
        f"127.0.0.1:{port}",
        "--data-dir",
        "state",
        cwd=work,
    )
    wait_until_answering(f"http://127.0.0.1:{port}/health", process)
    stdout, stderr = stopped_by(process, signal.SIGINT)

    assert process.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr and "-INT-" not in stderr, stderr
    # --log-level warning: none of the worker's info lines (Starting..., Stopping...).
    assert " INFO " not in stderr, stderr


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_origin_serve_ends_with_130_on_ctrl_c_and_0_on_sigterm(
    work: Path, signum: int, status: int
) -> None:
    port = free_port()
    process = start("origin", "serve", "adir", "--listen", f"127.0.0.1:{port}", cwd=work)
    wait_until_answering(f"http://127.0.0.1:{port}/health", process)
    stdout, stderr = stopped_by(process, signum)

    assert process.returncode == status, (stdout, stderr)
    assert "Traceback" not in stderr, stderr


def test_ctrl_c_stops_status_watch_with_130(work: Path, stack: devstack.Stack) -> None:
    # On a terminal, as a person watches it: the caption shows once the loop redraws.
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRSTREAM_")}
    process = subprocess.Popen(
        [FAIRSTREAM, "status", "--watch", "--every", "0.5", "--broker", stack.broker_url],
        cwd=work,
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + 60
    while b"Ctrl-C stops" not in shown and time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1)
        if ready:
            shown += os.read(controller, 65536)
    assert b"Ctrl-C stops" in shown, shown.decode(errors="replace")
    os.killpg(process.pid, signal.SIGINT)
    while True:  # drain until the child closes the terminal (EIO)
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    process.wait(30)

    text = shown.decode(errors="replace")
    assert process.returncode == 130, text
    assert "Traceback" not in text and "Aborted" not in text, text


def test_ctrl_c_stops_the_demo_with_130_and_its_stack(work: Path) -> None:
    process = start("demo", "--data-dir", "demo", cwd=work)
    deadline = time.monotonic() + 120
    while not list((work / "demo").glob("runs/*/origin")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    stdout, stderr = stopped_by(process, signal.SIGINT)

    assert process.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr, stderr
    assert devstack.status(work / "demo") == ()
