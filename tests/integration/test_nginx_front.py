"""The rendered nginx front, run by Debian's nginx in front of a stand-in for the node.

The node's docroot writer has not landed yet, so the docroot is prepared here as it will
write it (files renamed into place, mtimes set with os.utime), and the node is a small
aiohttp app that records what reaches it: what nginx serves itself and what it passes on
is what these tests are about, not what the node answers.
"""

from __future__ import annotations

import http.client
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

import pytest
from aiohttp import web

from infra.localnet import LocalProcess, free_port
from services.node.nginx_front import render_nginx_config
from tests.servers import ServerThread

pytestmark = pytest.mark.integration

NGINX = "/usr/sbin/nginx"
MTIME = 1_700_000_000
TOKEN = b'{"packages":{"drupal/token":[{"name":"drupal/token","version":"1.9.0"}]},"minified":"composer/2.0"}'
TOKEN_DEV = b'{"packages":{"drupal/token":[]},"minified":"composer/2.0"}'
SECRET = b"outside the docroot"
SHA256 = "ab" * 32


@dataclass(frozen=True)
class Seen:
    """A request as it reached the node."""

    method: str
    path: str
    host: str | None
    forwarded_for: str | None
    forwarded_proto: str | None
    body: bytes


@dataclass
class Front:
    """nginx on ``port`` in front of the stand-in node, and the docroot it serves."""

    port: int
    docroot: Path
    config: Path
    prefix: Path
    seen: list[Seen] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request with the path sent as written (no normalization by the client)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def get(
        self, path: str, *, modified_since: int | None = None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """GET ``path``, with an If-Modified-Since of the ``modified_since`` timestamp."""
        headers = {} if modified_since is None else {"If-Modified-Since": http_date(modified_since)}
        return self.request("GET", path, headers=headers)


def write_document(path: Path, data: bytes, mtime: int) -> None:
    """As the node's writer will: a temporary file dated, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.tmp"
    temporary.write_bytes(data)
    os.utime(temporary, (mtime, mtime))
    temporary.replace(path)


def http_date(mtime: int) -> str:
    return formatdate(mtime, usegmt=True)


def stand_in_node(seen: list[Seen]) -> web.Application:
    """Answers what the node would pass on (packages.json, dist, downloads), 404 else."""

    async def record(request: web.Request) -> web.Response:
        seen.append(
            Seen(
                method=request.method,
                path=request.raw_path,
                host=request.headers.get("Host"),
                forwarded_for=request.headers.get("X-Forwarded-For"),
                forwarded_proto=request.headers.get("X-Forwarded-Proto"),
                body=await request.read(),
            )
        )
        if request.path == "/packages.json" or request.path.startswith("/dist/"):
            return web.json_response({"from": "node"})
        if request.method == "POST" and request.path == "/downloads/":
            return web.json_response({"status": "success"})
        return web.Response(status=404, text="not on the stand-in node\n")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    return app


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Front]:
    docroot = tmp_path / "docroot"
    write_document(docroot / "p2/drupal/token.json", TOKEN, MTIME)
    write_document(docroot / "p2/drupal/token~dev.json", TOKEN_DEV, MTIME - 60)
    # A file the region does not serve: a pattern, not a missing file, must refuse it.
    write_document(docroot / "p2/symfony/console.json", b"{}", MTIME)
    (tmp_path / "x.json").write_bytes(SECRET)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_bytes(SECRET)
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    seen: list[Seen] = []
    with ServerThread(stand_in_node(seen)) as node:
        port = free_port()
        config = prefix / "nginx.conf"
        config.write_text(
            render_nginx_config(
                listen=f"127.0.0.1:{port}",
                docroot=docroot,
                node_url=node.url,
                patterns=["drupal/*"],
                standalone=True,
                prefix=prefix,
                # As root nginx's workers would run as nobody, who cannot enter pytest's
                # 0700 temporary directory.
                user="root" if os.geteuid() == 0 else None,
            )
        )
        log = prefix / "stderr.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [NGINX, "-c", str(config), "-p", str(prefix)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        nginx = LocalProcess("nginx", f"http://127.0.0.1:{port}", log, process)
        try:
            nginx.wait_until_answering("/p2/drupal/token.json", timeout=30)
            yield Front(port=port, docroot=docroot, config=config, prefix=prefix, seen=seen)
        finally:
            nginx.stop()


def test_the_rendered_configuration_passes_nginx_t(front: Front) -> None:
    checked = subprocess.run(
        [NGINX, "-t", "-c", str(front.config), "-p", str(front.prefix)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_a_server_block_passes_nginx_t_in_an_operator_s_http_block(tmp_path: Path) -> None:
    block = tmp_path / "fairstream-eu.conf"
    block.write_text(
        render_nginx_config(
            listen=f"127.0.0.1:{free_port()}",
            docroot=tmp_path / "docroot",
            node_url="http://127.0.0.1:8081",
            patterns=["drupal/*", "acme/legacy_*"],
            standalone=False,
        )
    )
    temporary = "\n".join(
        f"{kind}_temp_path {tmp_path / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\n"
        f"events {{}}\nhttp {{\n{temporary}\ninclude {block};\n}}\n"
    )
    checked = subprocess.run(
        [NGINX, "-t", "-c", str(main), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_p2_is_the_file_with_its_mtime_as_last_modified(front: Front) -> None:
    status, headers, body = front.get("/p2/drupal/token.json")
    assert (status, body) == (200, TOKEN)
    assert headers["Content-Type"] == "application/json"
    assert headers["Last-Modified"] == http_date(MTIME)
    assert "ETag" not in headers

    status, headers, body = front.get("/p2/drupal/token~dev.json")
    assert (status, body) == (200, TOKEN_DEV)
    assert headers["Last-Modified"] == http_date(MTIME - 60)
    assert front.seen == []


def test_if_modified_since_is_exact(front: Front) -> None:
    status, headers, body = front.get("/p2/drupal/token.json", modified_since=MTIME)
    assert (status, body) == (304, b"")
    assert headers["Last-Modified"] == http_date(MTIME)

    for other in (MTIME - 1, MTIME + 1):
        status, _, body = front.get("/p2/drupal/token.json", modified_since=other)
        assert (status, body) == (200, TOKEN), other
    assert front.seen == []


def test_a_rewritten_document_is_new_for_a_client_holding_the_old_date(front: Front) -> None:
    rewritten = TOKEN.replace(b"1.9.0", b"1.10.0")
    write_document(front.docroot / "p2/drupal/token.json", rewritten, MTIME + 1)

    status, headers, body = front.get("/p2/drupal/token.json", modified_since=MTIME)
    assert (status, body) == (200, rewritten)
    assert headers["Last-Modified"] == http_date(MTIME + 1)
    status, _, body = front.get("/p2/drupal/token.json", modified_since=MTIME + 1)
    assert (status, body) == (304, b"")


@pytest.mark.parametrize(
    "path",
    [
        "/p2/symfony/console.json",  # outside the region's patterns, though the file exists
        "/p2/drupal/nope.json",  # a name the docroot has no file for
        "/p2/drupal/nope~dev.json",
        "/p2/drupal/Token.json",
        "/p2/drupal/.token.json.tmp",
        "/p2/drupal/",
        "/p2/",
        "/p2/drupal/token.json/",
    ],
)
def test_other_p2_uris_are_404_without_asking_the_node(front: Front, path: str) -> None:
    status, _, _ = front.get(path)
    assert status == 404
    assert front.seen == []


@pytest.mark.parametrize(
    "path",
    [
        "/p2/../etc/passwd",
        "/p2/../x.json",
        "/p2/drupal/..%2f..%2fx.json",
        "/p2/drupal/%2e%2e/x.json",
        "/p2/drupal/%2e%2e/%2e%2e/x.json",
        "/p2/drupal/%2e%2e/%2e%2e/%2e%2e/x.json",
        "/p2/drupal/..%2F..%2F..%2Fetc%2Fpasswd",
        "/p2/drupal/%252e%252e/x.json",
        "/p2/%2e%2e/symfony/console.json",
    ],
)
def test_traversal_never_reads_outside_the_docroot(front: Front, path: str) -> None:
    status, _, body = front.get(path)
    assert status != 200 or SECRET not in body
    assert SECRET not in body
    # What nginx does not serve, the node gets as nginx routed it: never as a p2 path.
    assert all(not seen.path.startswith("/p2/") for seen in front.seen), front.seen


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/packages.json", None),
        ("GET", f"/dist/drupal/token/8.x-1.9/{SHA256}.zip", None),
        ("POST", "/downloads/", b'{"downloads":[{"name":"drupal/token","version":"1.9.0"}]}'),
        ("GET", "/api/security-advisories/?packages[]=drupal/token", None),
        ("GET", "/mirror/drupal/token/1.9.0.zip", None),
        ("GET", "/status", None),
        ("GET", "/metrics", None),
        ("GET", "/health", None),
        ("GET", "/p2", None),
    ],
)
def test_everything_else_reaches_the_node_with_the_client_s_host(
    front: Front, method: str, path: str, body: bytes | None
) -> None:
    host = "eu.packages.example.org:8443"
    headers = {"Host": host} | ({"Content-Type": "application/json"} if body else {})
    status, _, answer = front.request(method, path, headers=headers, body=body)
    [seen] = front.seen
    assert (seen.method, seen.path, seen.host) == (method, path, host)
    assert seen.forwarded_for == "127.0.0.1"
    assert seen.forwarded_proto == "http"
    assert seen.body == (body or b"")
    if path in ("/packages.json", f"/dist/drupal/token/8.x-1.9/{SHA256}.zip", "/downloads/"):
        assert status == 200, answer
