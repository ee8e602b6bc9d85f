"""Serving (issue 8, figure 6): a node's p2 answers and 304s vs nginx serving the same bytes.

Run with ``make bench`` (or ``uv run python -m tests.benchmarks.bench_serving [--quick]``).
One run sets up, in a temporary directory:

- the embedded stack (``infra.devstack``: ``rclone serve s3``; the broker is started but idle);
- a generated catalogue (``generate_catalogue``, ``Plan.projects`` projects, no zips) and a
  small one with zips (its first ``Plan.zip_projects`` projects, the same names, versions and
  requirements): one ``PackageState`` per package, built from the p2 entries and
  ``checksums.json`` as an import would, saved with ``PackageStates.save`` into the node's
  bucket (so the p2 documents are ``render_documents`` output, as a node writes them);
- the node's HTTP app alone (``NodeHttp`` on uvloop, no access log, one process, no Faust
  worker beside it: ``python -m tests.benchmarks.bench_serving serve-node ...``) on that bucket;
- for the record, a reference that is not a node: the same p2 bytes from a dict in one
  aiohttp process on uvloop (``serve-memory``), what Python serves without a store read;
- Debian's nginx, one worker process (as the node is one process), ``sendfile on``,
  ``access_log off``, ``keepalive_requests`` lifted (aiohttp has no such limit), serving a
  directory holding exactly the bucket's p2 documents and ``packages.json`` with the
  bucket's Last-Modified as file times; and a second server of the same nginx holding a
  static Composer repository of the same states rendered with nginx's URL, with the zips
  at their dist paths, for composer.

Then, alternating node and nginx, ``Plan.runs`` times: ``wrk`` (Debian) driving every p2
document of the catalogue round robin (a Lua script), once for 200s and once with
``If-Modified-Since`` for 304s (nginx with ``worker_processes auto`` too, for the record);
and a real ``composer require`` of a site of ``Plan.site_packages`` packages (dependencies
included) with a fresh cache, through the node (its ``/dist`` 302s to presigned URLs of the
store) and through nginx: once each with ``--profile -vvv`` (untimed: where composer's time
goes), then ``Plan.composer_runs`` timed runs each. The zips the site installs are put in
the node's bucket after a first composer run through nginx tells which. Before measuring, every
server is asked a sample of documents (200 with the stored date, 304 to it), and each wrk
run fails the benchmark on any non-2xx/3xx answer or bytes per answer that do not fit.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import uvloop
from aiohttp import web
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from connectors.state_store import PackageStates
from connectors.store import ObjectStore, StoreLocation, is_json
from infra import devstack, localnet
from schemas import layout
from schemas.composer import expand, render_packages_json
from schemas.package_state import PackageState, VersionRecord, render_documents
from services.catalogue import CHECKSUMS_FILE, generate_catalogue
from services.node_http import NodeHttp, NodeHttpSettings
from tests.benchmarks.figures import figure, peak_rss_mb

REPO = Path(__file__).resolve().parents[2]
SEED = 2026
BUCKET = "fairstream-bench"
PATTERNS = ("drupal/*",)


@dataclass(frozen=True)
class Plan:
    """How big one run is."""

    projects: int  # catalogue projects: 2 p2 documents each, all driven by wrk
    zip_projects: int  # the first ones, generated with zips, where the site is picked from
    site_packages: int  # packages in the composer site, dependencies included
    runs: int  # wrk rounds (node and nginx, 200s and 304s each)
    composer_runs: int  # composer rounds (node and nginx each)
    wrk_seconds: int


FULL = Plan(projects=400, zip_projects=48, site_packages=30, runs=3, composer_runs=5, wrk_seconds=5)
QUICK = Plan(
    projects=100, zip_projects=30, site_packages=10, runs=1, composer_runs=1, wrk_seconds=2
)
#: One wrk thread: on two cores, the server under test (one process either way) gets the
#: other one. 32 connections keep either server busy.
WRK_THREADS = 1
WRK_CONNECTIONS = 32
WRK_WARMUP_SECONDS = 1
#: The site is resolved against this drupal/core (most catalogue releases allow it).
SITE_CORE = (10, 3, 0)
#: drupal/core is not in the catalogue: metapackages stand in for every core major.
DRUPAL_CORE_STAND_IN = {
    "type": "package",
    "package": [
        {"name": "drupal/core", "version": version, "type": "metapackage"}
        for version in ("8.9.20", "9.5.11", "10.3.0", "11.0.0")
    ],
}
#: A 304 is headers only; a 200 carries a p2 document. Checked per wrk run from bytes read.
MAX_304_BYTES = 400


class BenchmarkError(RuntimeError):
    """The benchmark measured something else than intended (errors, wrong statuses)."""


# ---------------------------------------------------------------------------------------------
# The node's HTTP app, alone in its own process
# ---------------------------------------------------------------------------------------------


def serve_node(argv: Sequence[str]) -> None:
    """``serve-node --store URL --bucket B --public-url U --port P``: NodeHttp on uvloop."""
    parser = argparse.ArgumentParser(prog="bench_serving serve-node")
    parser.add_argument("--store", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--public-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    store = ObjectStore(StoreLocation.from_url(args.store), args.bucket)
    public_url = args.public_url
    states = PackageStates(store, render=lambda state: render_documents(state, public_url))
    node = NodeHttp(
        NodeHttpSettings(region="bench", patterns=PATTERNS, public_url=public_url),
        store,
        states=states,
    )
    # As `fairstream node run`: uvloop, no access log.
    uvloop.install()
    web.run_app(node.app, host="127.0.0.1", port=args.port, access_log=None, print=None)


@dataclass
class Server:
    """A server process under test: the node, or an nginx master with its workers."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    #: nginx: SIGQUIT is its graceful stop; the node: SIGINT ends ``run_app`` cleanly.
    stop_signal: signal.Signals = signal.SIGINT

    def pids(self) -> list[int]:
        """The process and its direct children (nginx's workers)."""
        found = [self.process.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                    found.append(int(entry.name))
        return found

    def wait_until_answering(self, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchmarkError(
                    f"{self.name} exited with {self.process.returncode}; see {self.log}:\n"
                    + self.log.read_text(errors="replace")[-2000:]
                )
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise BenchmarkError(f"{self.name} did not answer {self.url}{path} in {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def serve_memory(argv: Sequence[str]) -> None:
    """``serve-memory --root DIR --port P``: the p2 files under DIR from a dict, on uvloop.

    Not a node: a reference for what one aiohttp process answers when no store is asked,
    with the same Last-Modified and 304 (for the exact date the files carry).
    """
    parser = argparse.ArgumentParser(prog="bench_serving serve-memory")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    documents: dict[str, tuple[bytes, str]] = {}
    for path in (args.root / "p2").rglob("*.json"):
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        documents["/" + path.relative_to(args.root).as_posix()] = (
            path.read_bytes(),
            format_datetime(modified, usegmt=True),
        )

    async def p2(request: web.Request) -> web.Response:
        found = documents.get(request.path)
        if found is None:
            raise web.HTTPNotFound()
        data, modified = found
        headers = {"Last-Modified": modified}
        if request.headers.get("If-Modified-Since") == modified:
            return web.Response(status=304, headers=headers)
        return web.Response(body=data, content_type="application/json", headers=headers)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.add_routes([web.get("/p2/{vendor}/{file}", p2), web.get("/health", health)])
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


def start_python_server(name: str, mode: str, args: Sequence[str], port: int, log: Path) -> Server:
    """``python -m tests.benchmarks.bench_serving MODE ARGS --port PORT``, once it answers."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.benchmarks.bench_serving",
                mode,
                *args,
                "--port",
                str(port),
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Server(name, f"http://127.0.0.1:{port}", process, log)
    server.wait_until_answering("/health")
    return server


def nginx_conf(prefix: Path, workers: str, servers: Iterable[tuple[int, Path]]) -> str:
    """An nginx.conf as Debian's, but self-contained under ``prefix`` and without logs."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    blocks = "\n".join(
        f"    server {{\n        listen 127.0.0.1:{port};\n        root {root};\n"
        "        location / { try_files $uri =404; }\n    }"
        for port, root in servers
    )
    # As root, the workers would run as nobody, who cannot enter a 0700 temporary directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes {workers};\ndaemon off;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "    access_log off;\n    sendfile on;\n    tcp_nopush on;\n"
        # nginx closes a keep-alive connection after 1000 requests by default; aiohttp never.
        "    keepalive_requests 1000000;\n"
        "    types { application/json json; application/zip zip; }\n"
        "    default_type application/octet-stream;\n"
        f"{temp}\n{blocks}\n}}\n"
    )


def start_nginx(
    name: str, prefix: Path, workers: str, servers: Sequence[tuple[int, Path]]
) -> Server:
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, workers, servers))
    log = prefix / "error.log"
    with (prefix / "stderr.log").open("ab") as out:
        process = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(prefix), "-e", str(log)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{servers[0][0]}"
    server = Server(name, url, process, prefix / "stderr.log", stop_signal=signal.SIGQUIT)
    server.wait_until_answering("/packages.json")
    return server


def cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system CPU time of these processes so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


# ---------------------------------------------------------------------------------------------
# The catalogue, the bucket and the static trees
# ---------------------------------------------------------------------------------------------


def catalogue_states(catalogue: Path) -> dict[str, PackageState]:
    """A node's state of every catalogue package, as importing and replicating it would leave."""
    checksums = orjson.loads((catalogue / CHECKSUMS_FILE).read_bytes())
    versions: dict[str, dict[str, VersionRecord]] = {}
    for path in sorted((catalogue / "p2" / "drupal").glob("*.json")):
        package = "drupal/" + path.name.removesuffix(".json").removesuffix("~dev")
        document = orjson.loads(path.read_bytes())
        for entry in expand(document["packages"][package]):
            dist = entry["dist"]
            sums = checksums[urlsplit(dist["url"]).path]
            composer = {**entry, "dist": {k: v for k, v in dist.items() if k != "url"}}
            versions.setdefault(package, {})[entry["version"]] = VersionRecord(
                drupal_version=entry["extra"]["drupal"]["version"],
                sha256=sums["sha256"],
                sha1=sums["sha1"],
                size=sums["size"],
                composer=composer,
                origin_url=dist["url"],
            )
    return {
        package: PackageState(package=package, versions=records, sequence=1)
        for package, records in versions.items()
    }


def fill_bucket(store: ObjectStore, states: Iterable[PackageState], public_url: str) -> None:
    """Save every state (and so its p2 documents) and the static packages.json, as a node does."""
    saver = PackageStates(store, render=lambda state: render_documents(state, public_url))
    with ThreadPoolExecutor(8) as pool:
        # Nothing is stored yet: no need to read documents back before writing them.
        list(pool.map(lambda state: saver.save(state, stored_documents={}), states))
    store.put_bytes(
        layout.PACKAGES_JSON,
        render_packages_json(patterns=PATTERNS),
        content_type="application/json",
    )


@dataclass(frozen=True)
class Document:
    """A p2 document as the node serves it."""

    path: str  # URL path, /p2/drupal/<name>.json
    size: int
    last_modified: str  # as HTTP dates it


def mirror_documents(store: ObjectStore, packages: Iterable[str], root: Path) -> list[Document]:
    """Write the bucket's p2 documents and packages.json under ``root``, bytes and dates as stored."""
    keys = [layout.PACKAGES_JSON]
    for package in packages:
        keys += [layout.p2_key(package), layout.p2_key(package, dev=True)]

    def copy(key: str) -> Document:
        stored = store.get(key)
        if stored is None:
            raise BenchmarkError(f"{key} is not in bucket {BUCKET} after filling it")
        target = root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(stored.data)
        modified = stored.last_modified.replace(microsecond=0)
        os.utime(target, (modified.timestamp(), modified.timestamp()))
        return Document("/" + key, len(stored.data), format_datetime(modified, usegmt=True))

    with ThreadPoolExecutor(8) as pool:
        documents = list(pool.map(copy, keys))
    return [d for d in documents if d.path.startswith("/p2/")]


def static_site(states: Iterable[PackageState], root: Path, public_url: str, zips: Path) -> None:
    """A static Composer repository of ``states`` with dist URLs on ``public_url``, zips linked."""
    (root / layout.PACKAGES_JSON).parent.mkdir(parents=True, exist_ok=True)
    (root / layout.PACKAGES_JSON).write_bytes(render_packages_json(patterns=PATTERNS))
    for state in states:
        for key, document in render_documents(state, public_url).items():
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(document)
        for version, record in state.versions.items():
            source = zips / Path(urlsplit(record.origin_url).path).name
            if source.exists():
                target = root / layout.dist_path(state.package, version, record.sha256)[1:]
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)


# ---------------------------------------------------------------------------------------------
# The site: packages whose closure is SITE_PACKAGES packages, all installable with one core
# ---------------------------------------------------------------------------------------------


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def satisfies(version: tuple[int, ...], constraint: str) -> bool:
    """Whether ``version`` meets a constraint of the catalogue's kinds (``^1.2 || ~8.0``, ``*``)."""
    for alternative in (part.strip() for part in constraint.split("||")):
        if alternative == "*":
            return True
        if alternative[:1] in "^~":
            floor = _numbers(alternative[1:])
            padded = version + (0,) * (len(floor) - len(version))
            if padded[: len(floor)] >= floor and version[0] == floor[0]:
                return True
    return False


def _stable(state: PackageState) -> list[tuple[tuple[int, ...], VersionRecord]]:
    """Stable releases of a package, newest first."""
    found = [
        (_numbers(version), record)
        for version, record in state.versions.items()
        if all(part.isdigit() for part in version.split("."))
    ]
    return sorted(found, key=lambda item: item[0], reverse=True)


def pick_site(
    states: dict[str, PackageState], candidates: Sequence[str], size: int
) -> tuple[list[str], dict[str, str]]:
    """Top-level requirements (``drupal/x:^1.2``) and the versions they resolve to.

    A small resolver of the catalogue's graph: each candidate at its newest stable release
    that allows drupal/core ``SITE_CORE``, dependencies at the newest release that meets
    their constraint and allows that core; candidates are added in order while the closure
    stays within ``size`` and agrees with what is chosen. The real composer run checks the
    result. Raises ``BenchmarkError`` when the candidates do not make ``size`` packages.
    """
    chosen: dict[str, str] = {}
    requires: list[str] = []

    def resolve(package: str, constraint: str, picked: dict[str, str]) -> bool:
        if package in picked:
            return satisfies(_numbers(picked[package]), constraint)
        state = states.get(package)
        for numbers, record in [] if state is None else _stable(state):
            need = record.composer.get("require", {})
            if not satisfies(numbers, constraint) or not satisfies(
                SITE_CORE, need.get("drupal/core", "*")
            ):
                continue
            picked[package] = record.composer["version"]
            trial = dict(picked)
            if all(resolve(dep, rule, trial) for dep, rule in need.items() if dep != "drupal/core"):
                picked.update(trial)
                return True
            del picked[package]
        return False

    for package in candidates:
        if package in chosen or len(chosen) >= size:
            continue
        trial = dict(chosen)
        # Each top-level package at its newest release for this core, as a site builder
        # on that core would require it.
        if resolve(package, "*", trial) and len(trial) <= size:
            major, minor = _numbers(trial[package])[:2]
            requires.append(f"{package}:^{major}.{minor}")
            chosen = trial
    if len(chosen) != size:
        raise BenchmarkError(
            f"found a site of {len(chosen)} packages among {len(candidates)}, wanted {size}: "
            "raise zip_projects"
        )
    return requires, chosen


# ---------------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------------

WRK_SCRIPT = """
local targets = {
%(targets)s
}
local conditional = %(conditional)s
local requests = {}
local position = 0
local threads = 0

setup = function(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end

init = function(args)
  for i, target in ipairs(targets) do
    local headers = {}
    if conditional then headers["If-Modified-Since"] = target[2] end
    requests[i] = wrk.format("GET", target[1], headers)
  end
  position = offset %% #requests
end

request = function()
  position = position %% #requests + 1
  return requests[position]
end

done = function(summary, latency, requests)
  io.write(string.format(
    "FAIRSTREAM-WRK %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d\\n",
    summary.requests, summary.duration, summary.bytes, summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_script(path: Path, documents: Sequence[Document], *, conditional: bool) -> Path:
    targets = ",\n".join(
        f"  {{{orjson.dumps(d.path).decode()}, {orjson.dumps(d.last_modified).decode()}}}"
        for d in documents
    )
    path.write_text(
        WRK_SCRIPT % {"targets": targets, "conditional": "true" if conditional else "false"}
    )
    return path


@dataclass(frozen=True)
class WrkRun:
    """What one wrk run measured, with the CPU the servers spent meanwhile."""

    requests: int
    seconds: float
    bytes_read: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    server_cpu_seconds: float  # the server's processes (nginx: master and workers)
    store_cpu_seconds: float  # the object store's process (the node's rclone), else 0

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def record(self) -> dict[str, Any]:
        return {
            "requests_per_s": round(self.per_second, 1),
            "server_cores_busy": round(self.server_cpu_seconds / self.seconds, 2),
            "requests": self.requests,
            "bytes_per_response": round(self.bytes_read / max(self.requests, 1), 1),
            "socket_errors": self.socket_errors,
            "latency_p50_ms": round(self.p50_ms, 2),
            "latency_p99_ms": round(self.p99_ms, 2),
            "server_cpu_us_per_request": round(self.cpu_per_request(self.server_cpu_seconds), 1),
            "store_cpu_us_per_request": round(self.cpu_per_request(self.store_cpu_seconds), 1),
        }

    def cpu_per_request(self, seconds: float) -> float:
        """Microseconds of CPU per answer."""
        return seconds / max(self.requests, 1) * 1e6


def run_wrk(
    server: Server,
    script: Path,
    seconds: int,
    *,
    expect_304: bool,
    mean_document: float,
    store_pids: Sequence[int] = (),
) -> WrkRun:
    """One wrk run against ``server``; raises ``BenchmarkError`` unless every answer is right."""
    pids = server.pids()
    cpu_before, store_before = cpu_seconds(pids), cpu_seconds(store_pids)
    result = subprocess.run(
        [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{WRK_CONNECTIONS}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            server.url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    cpu, store_cpu = cpu_seconds(pids) - cpu_before, cpu_seconds(store_pids) - store_before
    line = next((x for x in result.stdout.splitlines() if x.startswith("FAIRSTREAM-WRK ")), None)
    if result.returncode != 0 or line is None:
        raise BenchmarkError(f"wrk against {server.name} failed:\n{result.stdout}{result.stderr}")
    requests, micros, bytes_read, status, connect, read, write, timeout, p50, p99 = map(
        int, line.split()[1:]
    )
    if requests == 0 or status:
        raise BenchmarkError(
            f"{server.name}: {status} of {requests} answers were not 2xx/3xx; "
            f"a benchmark of errors is meaningless. wrk said:\n{result.stdout}"
        )
    broken = connect + read + write + timeout
    if broken > requests // 100:
        raise BenchmarkError(
            f"{server.name}: {broken} socket errors (connect {connect}, read {read}, write "
            f"{write}, timeout {timeout}) in {requests} requests; wrk said:\n{result.stdout}"
        )
    per_response = bytes_read / requests
    if expect_304 and per_response > MAX_304_BYTES:
        raise BenchmarkError(
            f"{server.name}: {per_response:.0f} bytes per answer to If-Modified-Since; "
            "these are not 304s"
        )
    if not expect_304 and per_response < mean_document:
        raise BenchmarkError(
            f"{server.name}: {per_response:.0f} bytes per answer, the documents average "
            f"{mean_document:.0f}; these are not the documents"
        )
    return WrkRun(
        requests=requests,
        seconds=micros / 1e6,
        bytes_read=bytes_read,
        socket_errors=broken,
        p50_ms=p50 / 1000,
        p99_ms=p99 / 1000,
        server_cpu_seconds=cpu,
        store_cpu_seconds=store_cpu,
    )


def check_answers(server: Server, documents: Sequence[Document], *, conditional: bool) -> None:
    """Ask a sample of documents once: 200 with the stored date, or 304 to that date."""
    for document in documents[:: max(1, len(documents) // 40)]:
        headers = {"If-Modified-Since": document.last_modified} if conditional else {}
        request = urllib.request.Request(server.url + document.path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, body = response.status, response.read()
                modified = response.headers.get("Last-Modified")
        except urllib.error.HTTPError as exc:
            status, body, modified = exc.code, b"", exc.headers.get("Last-Modified")
        expected = 304 if conditional else 200
        if status != expected or modified != document.last_modified:
            raise BenchmarkError(
                f"{server.name} answered {document.path} with {status} and Last-Modified "
                f"{modified!r}; expected {expected} and {document.last_modified!r}"
            )
        if not conditional and len(body) != document.size:
            raise BenchmarkError(f"{server.name} sent {len(body)} bytes of {document.path}")


def store_read_costs(
    store: ObjectStore, documents: Sequence[Document], store_pid: int
) -> dict[str, float]:
    """Where a node's p2 answer goes: one ``ObjectStore.get`` per document, serially, here.

    Microseconds per read: wall time, CPU of this process (the minio SDK, urllib3, the ETag
    md5 and the JSON completeness check, as in the node) and CPU of the store's process.
    """
    keys = [d.path.lstrip("/") for d in documents]
    wall, cpu, store_cpu = time.perf_counter(), time.process_time(), cpu_seconds([store_pid])
    for key in keys:
        store.get(key, complete=is_json)
    reads = len(keys)
    return {
        "wall_us": round((time.perf_counter() - wall) / reads * 1e6, 1),
        "node_side_cpu_us": round((time.process_time() - cpu) / reads * 1e6, 1),
        "store_cpu_us": round((cpu_seconds([store_pid]) - store_cpu) / reads * 1e6, 1),
    }


# ---------------------------------------------------------------------------------------------
# composer
# ---------------------------------------------------------------------------------------------


def composer_site(
    site_dir: Path, url: str, requires: Sequence[str]
) -> tuple[float, dict[str, str]]:
    """Seconds for a real ``composer require`` in a fresh site (and cache); the locked versions."""
    began = time.perf_counter()
    result = localnet.composer_require(
        site_dir, url, requires, extra_repositories=[DRUPAL_CORE_STAND_IN]
    )
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        raise BenchmarkError(
            f"composer require through {url} failed in {site_dir}:\n{result.stderr[-3000:]}"
        )
    lock = orjson.loads((site_dir / "composer.lock").read_bytes())
    locked = {p["name"]: p["version"] for p in lock["packages"] if p["name"] != "drupal/core"}
    for package in locked:
        project = package.split("/", 1)[1]
        if not (site_dir / "vendor" / package / f"{project}.info.yml").is_file():
            raise BenchmarkError(f"composer through {url} did not unpack {package} in {site_dir}")
    shutil.rmtree(site_dir, ignore_errors=True)
    return elapsed, locked


_PROFILE_LINE = re.compile(r"^\[[\d.]+MiB/(?P<at>[\d.]+)s\] (?P<text>.*)$")


def composer_phases(site_dir: Path, url: str, requires: Sequence[str]) -> dict[str, float]:
    """Where a ``composer require`` spends its time, from its own ``--profile -vvv`` output.

    Seconds of: reading p2 documents and solving, downloading the zips, unpacking them, the
    install notification (only repositories with ``notify-batch``: the node), the autoload
    files and the audit; the whole run as composer timed it.
    """
    site_dir.mkdir(parents=True, exist_ok=True)
    project = {  # as localnet.composer_require writes it
        "name": "fairstream/demo-site",
        "type": "project",
        "repositories": [
            {"type": "composer", "url": url},
            DRUPAL_CORE_STAND_IN,
            {"packagist.org": False},
        ],
        "config": {"secure-http": False},
        "minimum-stability": "stable",
    }
    (site_dir / "composer.json").write_bytes(orjson.dumps(project))
    result = localnet.composer(site_dir, "require", "--no-progress", "--profile", "-vvv", *requires)
    if result.returncode != 0:
        raise BenchmarkError(
            f"composer require --profile through {url} failed:\n{result.stderr[-3000:]}"
        )
    shutil.rmtree(site_dir, ignore_errors=True)
    marks: dict[str, float] = {}
    starts = {
        "Running composer update": "solve",
        "Lock file operations": "locked",
        "Package operations": "download",
        f"Downloading {url}/downloads/": "notify",
        "Generating autoload files": "autoload",
        "Memory usage": "end",
    }
    for line in (result.stdout + result.stderr).splitlines():
        found = _PROFILE_LINE.match(line)
        if found is None:
            continue
        at, text = float(found["at"]), found["text"].strip()
        for start, mark in starts.items():
            if text.startswith(start):
                marks.setdefault(mark, at)
        if "Extracting archive" in text:
            marks.setdefault("extract", at)
    if set(marks) < {"solve", "locked", "download", "extract", "autoload", "end"}:
        raise BenchmarkError(f"composer --profile output had no mark for some phases: {marks}")
    notified = marks.get("notify", marks["autoload"])
    return {
        "p2_and_solving_s": round(marks["locked"] - marks["solve"], 3),
        "downloads_s": round(marks["extract"] - marks["download"], 3),
        "unpacking_s": round(notified - marks["extract"], 3),
        "install_notification_s": round(marks["autoload"] - notified, 3),
        "autoload_and_audit_s": round(marks["end"] - marks["autoload"], 3),
        "total_s": marks["end"],
    }


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


def results(quick: bool = False) -> list[dict[str, Any]]:
    plan = QUICK if quick else FULL
    console = Console()
    with tempfile.TemporaryDirectory(prefix="fairstream-bench-serving-") as tmp:
        work = Path(tmp)
        stack = devstack.up(work / "stack")
        servers: list[Server] = []
        try:
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=console) as progress:
                return _measure(plan, work, stack, servers, progress, console)
        finally:
            for server in reversed(servers):
                server.stop()
            devstack.down(work / "stack")


def _measure(
    plan: Plan,
    work: Path,
    stack: devstack.Stack,
    servers: list[Server],
    progress: Progress,
    console: Console,
) -> list[dict[str, Any]]:
    """Set up everything in ``work`` (servers started are appended to ``servers``), measure."""
    setup = progress.add_task("generating catalogues", total=6)

    def step(what: str) -> None:
        progress.update(setup, description=what, advance=1)

    began = time.perf_counter()
    node_port, static_port, site_port, auto_port, memory_port = (
        localnet.free_port() for _ in range(5)
    )
    node_url, site_url = f"http://127.0.0.1:{node_port}", f"http://127.0.0.1:{site_port}"
    catalogue, zipped = work / "catalogue", work / "zipped"
    for out, projects, zips in (
        (catalogue, plan.projects, False),
        (zipped, plan.zip_projects, True),
    ):
        generate_catalogue(
            out,
            projects=projects,
            seed=SEED,
            base_url="http://origin.invalid",
            zips=zips,
            workers=os.cpu_count() or 1,
        )
    # The first projects again, with real zips: same names, versions and requirements.
    states = catalogue_states(catalogue)
    with_zips = catalogue_states(zipped)
    states.update(with_zips)
    generated = time.perf_counter() - began
    step("filling the node's bucket")

    began = time.perf_counter()
    store = ObjectStore(StoreLocation.from_url(stack.store_url), BUCKET)
    store.ensure_bucket()
    fill_bucket(store, states.values(), node_url)
    filled_at = time.perf_counter()
    filled = filled_at - began
    step("writing nginx's trees")

    documents = mirror_documents(store, sorted(states), work / "static")
    static_site(states.values(), work / "site", site_url, zipped / "files" / "projects")
    mean_document = statistics.fmean(d.size for d in documents)
    step("starting the node and nginx")

    node = start_python_server(
        "node",
        "serve-node",
        ["--store", stack.store_url, "--bucket", BUCKET, "--public-url", node_url],
        node_port,
        work / "node.log",
    )
    servers.append(node)
    memory = start_python_server(
        "aiohttp-memory",
        "serve-memory",
        ["--root", str(work / "static")],
        memory_port,
        work / "memory.log",
    )
    servers.append(memory)
    trees = [(static_port, work / "static"), (site_port, work / "site")]
    nginx = start_nginx("nginx", work / "nginx-1", "1", trees)
    servers.append(nginx)
    nginx_auto = start_nginx(
        "nginx-auto", work / "nginx-auto", "auto", [(auto_port, work / "static")]
    )
    servers.append(nginx_auto)
    # The node leaves Last-Modified out for a document written in the current second.
    time.sleep(max(0.0, filled_at + 1.5 - time.perf_counter()))
    for server in (node, nginx, nginx_auto, memory):
        check_answers(server, documents, conditional=False)
        check_answers(server, documents, conditional=True)
    step("composer, once through nginx")

    requires, expected = pick_site(states, sorted(with_zips), plan.site_packages)
    warmup_seconds, locked = composer_site(work / "sites" / "warmup", site_url, requires)
    if locked != expected:
        console.print(f"[yellow]composer locked {locked}; the site was planned as {expected}")
    # The node holds the zips of the versions composer installs, at their content address.
    zip_bytes = 0
    for package, version in locked.items():
        record = states[package].versions[version]
        source = zipped / "files" / "projects" / Path(urlsplit(record.origin_url).path).name
        store.put_file(layout.artifact_key(record.sha256), source, content_type="application/zip")
        zip_bytes += record.size
    step("warming up the servers")

    rclone_pid = next(p.pid for p in stack.processes if p.name == "store")
    reads = store_read_costs(store, documents, rclone_pid)
    plain = wrk_script(work / "p2.lua", documents, conditional=False)
    revalidate = wrk_script(work / "p2-304.lua", documents, conditional=True)
    for server in (node, nginx, nginx_auto, memory):
        run_wrk(server, plain, WRK_WARMUP_SECONDS, expect_304=False, mean_document=mean_document)
    step("measuring")
    progress.update(setup, visible=False)

    wrk_task = progress.add_task("wrk", total=plan.runs * 8)
    measured: dict[str, list[WrkRun]] = {}
    for run in range(plan.runs):
        # Alternate who goes first, so that drift on this shared machine favours neither.
        pair = [node, nginx] if run % 2 == 0 else [nginx, node]
        for script, kind in ((plain, "200"), (revalidate, "304")):
            for server in [*pair, nginx_auto, memory]:
                result = run_wrk(
                    server,
                    script,
                    plan.wrk_seconds,
                    expect_304=kind == "304",
                    mean_document=mean_document,
                    store_pids=[rclone_pid] if server is node else [],
                )
                measured.setdefault(f"{server.name} {kind}", []).append(result)
                progress.update(
                    wrk_task,
                    advance=1,
                    description=f"wrk {server.name} {kind}: {result.per_second:,.0f}/s",
                )
    node_rss = peak_rss_mb(node.process.pid)

    composer_task = progress.add_task("composer --profile, once through each", total=None)
    # Untimed, before the timed runs: also the first composer run through the node.
    phases = {
        name: composer_phases(work / "sites" / f"{name}-profile", url, requires)
        for name, url in (("node", node_url), ("nginx", site_url))
    }
    progress.update(composer_task, description="composer require", total=plan.composer_runs * 2)
    timings: dict[str, list[float]] = {"node": [], "nginx": []}
    for run in range(plan.composer_runs):
        sites = [("node", node_url), ("nginx", site_url)]
        for name, url in sites if run % 2 == 0 else sites[::-1]:
            seconds, got = composer_site(work / "sites" / f"{name}-{run}", url, requires)
            if got != locked:
                raise BenchmarkError(f"composer through {name} locked {got}, not {locked}")
            timings[name].append(seconds)
            progress.update(
                composer_task, advance=1, description=f"composer via {name}: {seconds:.1f} s"
            )

    common = {
        "catalogue": f"generate_catalogue seed {SEED}: {plan.projects} projects, the first "
        f"{plan.zip_projects} with zips; one PackageState per package saved with PackageStates.save",
        "p2_documents": len(documents),
        "p2_mean_bytes": round(mean_document),
        "p2_max_bytes": max(d.size for d in documents),
        "catalogue_seconds": round(generated, 1),
        "bucket_fill_seconds": round(filled, 1),
    }
    wrk_setup = {
        **common,
        "wrk": f"wrk {WRK_THREADS} thread, {WRK_CONNECTIONS} connections, {plan.wrk_seconds} s "
        "per run, every p2 document round robin (Lua); node, nginx alternating",
        "node": "NodeHttp alone (no Faust worker) on uvloop, 1 process, no access log",
        "nginx": "1.22 (Debian nginx-light), sendfile on, tcp_nopush on, access_log off, "
        "keepalive_requests 1000000; file times = the bucket's Last-Modified",
        "node_peak_rss_mb": round(node_rss, 1),
        "node_store_get_serial": reads,
    }
    site = {
        **common,
        "site_requires": requires,
        "site_packages_locked": len(locked),
        "site_zip_bytes": zip_bytes,
        "composer": "Debian composer, fresh project, cache and home per run; the node's "
        "/dist answers 302 to presigned URLs of rclone; drupal/core from a package "
        "repository of metapackages",
        "composer_first_run_seconds": round(warmup_seconds, 2),
        "composer_phases_node": phases["node"],
        "composer_phases_nginx": phases["nginx"],
    }
    return [
        *(_wrk_figure(kind, measured, wrk_setup) for kind in ("200", "304")),
        _composer_figure(timings, site),
    ]


def _wrk_figure(
    kind: str, measured: dict[str, list[WrkRun]], setup: dict[str, Any]
) -> dict[str, Any]:
    ours, bare, auto, memory = (
        measured[f"{name} {kind}"] for name in ("node", "nginx", "nginx-auto", "aiohttp-memory")
    )
    ratio = statistics.median(o.per_second / b.per_second for o, b in zip(ours, bare, strict=True))
    memory_ratio = statistics.median(
        m.per_second / b.per_second for m, b in zip(memory, bare, strict=True)
    )
    node_cpu = statistics.median(r.cpu_per_request(r.server_cpu_seconds) for r in ours)
    store_cpu = statistics.median(r.cpu_per_request(r.store_cpu_seconds) for r in ours)
    nginx_cpu = statistics.median(r.cpu_per_request(r.server_cpu_seconds) for r in bare)
    node_cores = statistics.median(r.server_cpu_seconds / r.seconds for r in ours)
    nginx_cores = statistics.median(r.server_cpu_seconds / r.seconds for r in bare)
    reads = setup["node_store_get_serial"]
    what = "p2 documents (200)" if kind == "200" else "p2 revalidations (304, If-Modified-Since)"
    gap = (
        "Every p2 answer, 304s included, is a whole S3 GET of the document from the bucket "
        "(ObjectStore.get in a worker thread, then an md5 of the body against its ETag and a "
        "JSON parse as the torn-read check; only then is the date compared). Per answer the "
        f"node's process spends {node_cpu:.0f} µs of CPU and rclone {store_cpu:.0f} µs, where "
        f"nginx spends {nginx_cpu:.0f} µs; one ObjectStore.get alone (serial, measured in this "
        f"run) costs {reads['node_side_cpu_us']:.0f} µs of client CPU (minio SDK: SigV4 "
        f"signing, urllib3, http.client header parsing) plus {reads['store_cpu_us']:.0f} µs in "
        "rclone. The node's Python code runs one thread at a time (the GIL), so about one core "
        f"is its ceiling: {node_cpu:.0f} µs per answer caps it near {1e6 / node_cpu:,.0f} "
        f"answers/s (it kept {node_cores:.2f} cores busy; wrk and rclone share the rest). "
        "Without any store read, the same bytes from a dict in one aiohttp process on uvloop "
        f"reach {memory_ratio:.2f}x of nginx here: no single-process Python node reaches 0.5x. "
        "The static path that does: the bucket alone is a complete static Composer repository "
        "(packages.json, p2/, zips by content address); its files served by nginx are the "
        "baseline here, 1x by construction."
    )
    return figure(
        f"serving: {what}, node vs nginx",
        unit="requests/s",
        ours=[r.per_second for r in ours],
        baseline=[r.per_second for r in bare],
        baseline_name="nginx (Debian), 1 worker, the bucket's documents as static files",
        goal=">= 0.5x",
        met=ratio >= 0.5,
        gap="" if ratio >= 0.5 else gap,
        details={
            **setup,
            "node_runs": [r.record() for r in ours],
            "nginx_1_worker_runs": [r.record() for r in bare],
            "nginx_auto_workers_runs": [r.record() for r in auto],
            "aiohttp_memory_runs": [r.record() for r in memory],
            "nginx_auto_workers_median_per_s": round(
                statistics.median(r.per_second for r in auto), 1
            ),
            "aiohttp_memory_median_per_s": round(
                statistics.median(r.per_second for r in memory), 1
            ),
            "aiohttp_memory_median_ratio": round(memory_ratio, 3),
            "aiohttp_memory": "not a node: the same p2 bytes from a dict, one aiohttp process on "
            "uvloop, Last-Modified and 304 as the node's (serve-memory)",
            "nginx_1_worker_cores_busy": round(nginx_cores, 2),
            "nginx_bound": (
                "nginx with 1 worker kept less than one core busy: the load generator (one wrk "
                "thread; two cores shared by wrk and the servers) set its rate, so nginx's rates "
                "are lower bounds and the ratios upper bounds"
                if nginx_cores < 0.9
                else "nginx with 1 worker kept its core busy"
            ),
            "node_cpu_us_per_answer": round(node_cpu, 1),
            "rclone_cpu_us_per_answer": round(store_cpu, 1),
            "nginx_cpu_us_per_answer": round(nginx_cpu, 1),
        },
    )


def _composer_figure(timings: dict[str, list[float]], site: dict[str, Any]) -> dict[str, Any]:
    ours, bare = timings["node"], timings["nginx"]
    ratio = statistics.median(b / o for o, b in zip(ours, bare, strict=True))
    return figure(
        f"serving: composer require of a {site['site_packages_locked']}-package site, "
        "node vs nginx",
        unit="s",
        ours=ours,
        baseline=bare,
        baseline_name="nginx (Debian), 1 worker, a static repository of the same states and zips",
        goal=">= 0.5x",
        met=ratio >= 0.5,
        higher_is_better=False,
        gap=""
        if ratio >= 0.5
        else _composer_gap(site["composer_phases_node"], site["composer_phases_nginx"]),
        details=site,
    )


def _composer_gap(node: dict[str, float], nginx: dict[str, float]) -> str:
    return (
        "One profiled run each (composer --profile -vvv), node vs nginx: reading p2 and "
        f"solving {node['p2_and_solving_s']:.2f} vs {nginx['p2_and_solving_s']:.2f} s; "
        f"downloads (the node's 302 to a presigned rclone URL) {node['downloads_s']:.2f} vs "
        f"{nginx['downloads_s']:.2f} s; unpacking {node['unpacking_s']:.2f} vs "
        f"{nginx['unpacking_s']:.2f} s; the install notification POST, which composer waits "
        f"for and only the node asks for (it loads the state of every installed package) "
        f"{node['install_notification_s']:.2f} s; autoload and audit "
        f"{node['autoload_and_audit_s']:.2f} vs {nginx['autoload_and_audit_s']:.2f} s."
    )


def main() -> None:
    modes = {"serve-node": serve_node, "serve-memory": serve_memory}
    if len(sys.argv) > 1 and sys.argv[1] in modes:
        modes[sys.argv[1]](sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a short trial: fewer, shorter runs")
    args = parser.parse_args()
    began = time.perf_counter()
    rows = results(quick=args.quick)
    console = Console()
    for row in rows:
        console.print_json(orjson.dumps(row).decode())
    for row in rows:
        console.print(
            f"{row['figure']}: node {statistics.median(row['ours']):,.2f} {row['unit']}, "
            f"nginx {statistics.median(row['baseline']):,.2f} {row['unit']}, "
            f"median ratio {row['median_ratio']:.3f}x (goal {row['goal']}, "
            f"{'met' if row['met'] else 'not met'})"
        )
    console.print(f"took {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
