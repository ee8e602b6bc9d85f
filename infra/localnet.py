"""Processes of a federation on one machine: origin and regional nodes, for the demo and the tests.

Each runs as its own ``fairstream`` process, as an operator would run it; this
module starts them, waits until they answer and stops exactly what it started.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from infra import devstack
from schemas.composer import expand
from schemas.errors import FairstreamError


class LocalProcessError(FairstreamError):
    """A local federation process did not start or answer."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class LocalProcess:
    """A started ``fairstream`` subprocess with its log file and its HTTP address."""

    name: str
    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_until_answering(self, path: str = "/health", timeout: float = 60.0) -> None:
        """Poll ``url + path`` until it answers 200; raises ``LocalProcessError`` with the log tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise LocalProcessError(
                    f"{self.name} exited with code {self.process.returncode} during start-up; "
                    f"last lines of {self.log}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise LocalProcessError(
            f"{self.name} did not answer {self.url}{path} within {timeout:.0f} s; "
            f"see {self.log}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a clean Faust shutdown commits offsets), then SIGKILL if it hangs."""
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as a crash."""
        if self.alive():
            self.process.kill()
            self.process.wait(5)


_PR_SET_PDEATHSIG = 1


def _terminated_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that has the kernel SIGTERM the child when its starter dies.

    Even SIGKILL of the starter then stops the child: nothing is left to serve on ports
    no one records. The kernel fires it when the starting *thread* ends, so only a
    process's main thread, which lives as long as the process, should start such children.
    """
    # Resolved before fork: the child only makes the system call.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            # The starter died before the call: no death signal will come.
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal


def start_fairstream(
    name: str,
    args: Sequence[str],
    *,
    url: str,
    log: Path,
    env: dict[str, str] | None = None,
    die_with_parent: bool = False,
) -> LocalProcess:
    """Start ``fairstream ARGS`` as a subprocess with the running interpreter.

    ``die_with_parent``: the child gets SIGTERM when the calling process dies, however it
    dies (call it from the main thread only: ``_terminated_with_parent``).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            preexec_fn=_terminated_with_parent() if die_with_parent else None,
        )
    return LocalProcess(name=name, url=url, log=log, process=process)


def run_fairstream(
    args: Sequence[str], *, timeout: float = 600.0
) -> subprocess.CompletedProcess[str]:
    """Run ``fairstream ARGS`` to its end with the running interpreter; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def start_origin(
    root: Path,
    *,
    log: Path,
    port: int | None = None,
    wait: bool = True,
    die_with_parent: bool = False,
) -> LocalProcess:
    """A static origin serving ``root``; returns once it answers (unless not to ``wait``)."""
    port = port or free_port()
    origin = start_fairstream(
        "origin",
        ["origin", "serve", str(root), "--listen", f"127.0.0.1:{port}"],
        url=f"http://127.0.0.1:{port}",
        log=log,
        die_with_parent=die_with_parent,
    )
    if wait:
        origin.wait_until_answering("/health")
    return origin


# Long because keyword-only: each `node run` option a test or the demo sets.
def start_node(
    region: str,
    *,
    broker_url: str,
    store_url: str,
    root: Path,
    data_dir: Path,
    topic_prefix: str = "",
    partitions: int = 4,
    session_timeout: float = 6.0,
    port: int | None = None,
    bucket: str | None = None,
    wait: bool = True,
    options: Sequence[str] = (),
    env: dict[str, str] | None = None,
    die_with_parent: bool = False,
) -> LocalProcess:
    """A regional node (stream worker and HTTP) in its own process; returns once it answers.

    ``options`` are more ``fairstream node run`` options (``--mode``, ``--include``, ...);
    ``env`` more environment variables (the fault harness skews a node's clock this way);
    ``die_with_parent`` as for ``start_fairstream``.
    """
    port = port or free_port()
    args = [
        "node",
        "run",
        "--region",
        region,
        "--broker",
        broker_url,
        "--store",
        store_url,
        "--listen",
        f"127.0.0.1:{port}",
        "--data-dir",
        str(data_dir),
        "--topic-prefix",
        topic_prefix,
        "--partitions",
        str(partitions),
        "--session-timeout",
        str(session_timeout),
    ]
    args += ["--root", str(root), *options]
    if bucket is not None:
        args += ["--bucket", bucket]
    node = start_fairstream(
        f"node {region}",
        args,
        url=f"http://127.0.0.1:{port}",
        log=data_dir / "logs" / f"node-{region}-{port}.log",
        env=env,
        die_with_parent=die_with_parent,
    )
    if wait:
        node.wait_until_answering("/health")
    return node


NGINX = "/usr/sbin/nginx"


def start_nginx_front(
    region: str,
    *,
    node_url: str,
    data_dir: Path,
    port: int | None = None,
    patterns: Sequence[str] = ("drupal/*",),
) -> LocalProcess:
    """Debian's nginx in front of a node (``node run --listen`` of ``node_url`` with this
    ``data_dir``), configured by ``fairstream node nginx-config --standalone`` as an operator
    would; returns once it answers. Raises ``LocalProcessError``."""
    port = port or free_port()
    prefix = data_dir / "nginx" / f"{region}-{port}"
    prefix.mkdir(parents=True, exist_ok=True)
    args = [
        "node", "nginx-config", "--region", region, "--standalone",
        "--listen", f"127.0.0.1:{port}", "--node-url", node_url,
        "--data-dir", str(data_dir), "--prefix", str(prefix),
        *(f"--include={pattern}" for pattern in patterns),
    ]  # fmt: skip
    rendered = run_fairstream(args, timeout=60)
    if rendered.returncode != 0:
        raise LocalProcessError(f"nginx-config failed: {rendered.stderr}")
    config = rendered.stdout
    if os.geteuid() == 0:
        # As root nginx's workers would run as nobody, who cannot enter the 0700 temporary
        # directories the tests and benchmarks keep their data in.
        config = "user root;\n" + config
    (prefix / "nginx.conf").write_text(config)
    log = prefix / "stderr.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [NGINX, "-c", str(prefix / "nginx.conf"), "-p", str(prefix)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    front = LocalProcess(f"nginx {region}", f"http://127.0.0.1:{port}", log, process)
    front.wait_until_answering("/health", timeout=30)
    return front


def fetch_p2_versions(node_url: str, package: str) -> dict[str, dict[str, Any]]:
    """The versions a node serves for ``package`` (stable and dev), as Composer would expand them.

    Returns ``{}`` for a package the node does not serve (yet).
    """
    versions: dict[str, dict[str, Any]] = {}
    for suffix in ("", "~dev"):
        url = f"{node_url.rstrip('/')}/p2/{package}{suffix}.json"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                document = orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                continue
            raise
        entries = document.get("packages", {}).get(package, [])
        if document.get("minified") == "composer/2.0":
            entries = expand(entries)
        versions.update({str(entry["version"]): entry for entry in entries})
    return versions


def composer_require(
    site_dir: Path,
    repository_url: str,
    packages: Sequence[str],
    *,
    extra_repositories: Sequence[dict[str, Any]] = (),
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``composer require`` in a fresh project that knows only ``repository_url``.

    ``extra_repositories`` come after it (for packages it does not serve, such
    as a stand-in for ``drupal/core``). Packagist is disabled and ``secure-http``
    is off (our dev nodes speak plain http on loopback). Composer's cache and
    home live under ``site_dir``.
    """
    site_dir.mkdir(parents=True, exist_ok=True)
    project = {
        "name": "fairstream/demo-site",
        "type": "project",
        "repositories": [
            {"type": "composer", "url": repository_url},
            *extra_repositories,
            {"packagist.org": False},
        ],
        "config": {"secure-http": False},
        "minimum-stability": "stable",
    }
    (site_dir / "composer.json").write_bytes(orjson.dumps(project, option=orjson.OPT_INDENT_2))
    return composer(site_dir, "require", "--no-progress", *packages, timeout=timeout)


def composer(
    site_dir: Path, *args: str, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """Run the real ``composer`` in ``site_dir`` (made by ``composer_require``), non-interactive,
    with its cache and home under ``site_dir``."""
    env = {
        **os.environ,
        "COMPOSER_HOME": str(site_dir / ".composer-home"),
        "COMPOSER_CACHE_DIR": str(site_dir / ".composer-cache"),
        "COMPOSER_ALLOW_SUPERUSER": "1",
        "COMPOSER_NO_INTERACTION": "1",
        "COMPOSER_DISABLE_NETWORK": "0",
    }
    return subprocess.run(
        ["composer", "--no-interaction", *args],
        cwd=site_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def kcat_environment(work_dir: Path) -> dict[str, str]:
    """Environment under which Debian's ``kcat`` talks to the embedded Tansu broker
    (``devstack.kcat_library_path``: the confluent-kafka wheel's newer librdkafka).

    Raises ``StackError`` if the wheel's library cannot be found.
    """
    return {**os.environ, "LD_LIBRARY_PATH": devstack.kcat_library_path(work_dir)}


def node_health(node_url: str) -> dict[str, Any]:
    """A node's ``/health`` document (region, status, trust root in force)."""
    with urllib.request.urlopen(node_url.rstrip("/") + "/health", timeout=5) as response:
        document: dict[str, Any] = orjson.loads(response.read())
        return document
