"""The nginx front of a regional node: p2 files straight from the node's docroot, the rest proxied."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import click

from schemas.errors import ConfigurationError
from schemas.federation import REGION_NAME
from services.cli.options import DATA_DIR_OPTION

__all__ = ["nginx_config", "p2_location_regex", "render_nginx_config"]

# Composer's name rule as schemas.events writes it (no string matches two ways), with
# possessive runs: PCRE then never backtracks into a run of letters, so matching a URI
# costs time linear in its length. The vendor's repetition is possessive too (only "/"
# follows it); the name's is not, because its last ".json" looks like one more
# ".segment" and has to be given back.
_VENDOR = r"[a-z0-9]++(?:[_.-][a-z0-9]++)*+"
_NAME = r"[a-z0-9]++(?:(?:[_.]|-{1,2})[a-z0-9]++)*"
# "$" alone also matches before a last newline, which nginx's decoded URI may end with
# (%0A), in PCRE as in Python. \x0a, not \n: nginx.conf would turn \n into a newline.
_P2_SUFFIX = r"(?:~dev)?\.json$(?!\x0a)"
#: What a ``*`` of a pattern stands for: any run of the characters of one name segment
#: (a package name has exactly one "/", so no ``*`` of a "vendor/name" pattern crosses it).
_STAR = "[a-z0-9._-]*"
# One side of a pattern: name characters with at most one "*". Two stars in one side would
# make the regex backtrack quadratically on a long hostile name; nobody writes them.
_PATTERN_SIDE = re.compile(r"[a-z0-9._-]*\*?[a-z0-9._-]*")
_HOST = re.compile(r"\*|[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\]")
_NETLOC = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")
#: Characters a path may have to be written unquoted in nginx.conf: no blank, ";", braces,
#: quotes, "#", "\" (escapes) or "$" (``root`` expands variables).
_CONF_PATH = re.compile(r"/[A-Za-z0-9._/+@,=~%:-]*")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
#: The node's own request body limit (``MAX_REQUEST_BODY`` of services/node/composer_requests.py, 1 MiB):
#: nginx refuses bigger bodies with the same 413 before it buffers them.
_MAX_REQUEST_BODY = "1m"


def p2_location_regex(patterns: Sequence[str]) -> str:
    """The PCRE regex of the p2 URIs served from the docroot: ``/p2/VENDOR/NAME.json`` and
    ``/p2/VENDOR/NAME~dev.json`` for each Composer name matched by one of ``patterns``.

    Patterns are Composer globs as ``fnmatch.fnmatchcase`` reads them, restricted to what
    translates into a regex that runs in linear time: ``vendor/name`` with lower-case name
    characters and at most one ``*`` on each side of the ``/`` (``drupal/*``,
    ``drupal/token``, ``drupal/legacy_*``, ``*/token``). The regex is valid for nginx
    (PCRE2) and Python's ``re`` alike, and holds no character nginx.conf would unescape.

    Raises ``ConfigurationError`` for an empty list and for any other pattern, naming it.
    """
    if not patterns:
        raise ConfigurationError(
            "no package patterns given, so the front would serve no p2 file; "
            "give at least one --include pattern such as 'drupal/*'"
        )
    alternatives: list[str] = []
    for pattern in patterns:
        translated = "/".join(_side_regex(side) for side in _pattern_sides(pattern))
        if translated not in alternatives:
            alternatives.append(translated)
    # The lookahead holds a URI to Composer's name rule; the alternatives to the patterns.
    return rf"^/p2/(?={_VENDOR}/{_NAME}{_P2_SUFFIX})(?:{'|'.join(alternatives)}){_P2_SUFFIX}"


def _pattern_sides(pattern: str) -> tuple[str, str]:
    """``vendor`` and ``name`` of a pattern; raises ``ConfigurationError`` for one the front
    cannot translate."""
    vendor, slash, name = pattern.partition("/")
    if (
        not slash
        or not vendor
        or not name
        or not _PATTERN_SIDE.fullmatch(vendor)
        or not _PATTERN_SIDE.fullmatch(name)
    ):
        raise ConfigurationError(
            f"package pattern {pattern!r} cannot be served by nginx: write it as 'vendor/name' "
            "in lower-case letters, digits and . _ - with at most one * on each side of the /, "
            "like 'drupal/*', 'drupal/token' or 'drupal/legacy_*'"
        )
    return vendor, name


def _side_regex(side: str) -> str:
    before, star, after = side.partition("*")
    literal = before.replace(".", r"\.")
    if star:
        literal += _STAR + after.replace(".", r"\.")
    return literal


# Long because it is one nginx configuration, written out whole with its comments.
def render_nginx_config(
    *,
    listen: str,
    docroot: Path,
    node_url: str,
    patterns: Sequence[str],
    standalone: bool,
    prefix: Path | None = None,
    worker_processes: int = 1,
    user: str | None = None,
) -> str:
    """The nginx configuration of a regional node's front, as text.

    nginx serves ``/p2/VENDOR/NAME.json`` and ``/p2/VENDOR/NAME~dev.json`` of packages
    matching ``patterns`` from the files under ``docroot`` (sendfile, Last-Modified from the
    file's mtime, 304 only for an If-Modified-Since equal to it), answers 404 itself for
    every other URI under ``/p2/`` and for missing files, and passes everything else to the
    node at ``node_url`` (the URI as nginx normalized it) with the client's Host,
    X-Forwarded-For and X-Forwarded-Proto.

    ``standalone`` renders a whole nginx.conf for ``nginx -c FILE -p PREFIX`` in the
    foreground (``daemon off``), runnable by a user without privileges: pid, lock, error
    log and temporary files under ``prefix`` (an existing directory), no access log;
    ``user`` names the user of the workers when the master runs as root (nginx's default
    is nobody). Otherwise only the ``server { ... }`` block, to include in the http block
    of an operator's own nginx.conf; ``prefix``, ``worker_processes`` and ``user`` are then
    unused.

    Raises ``ConfigurationError`` naming the bad value: ``listen`` not HOST:PORT,
    ``node_url`` not ``http(s)://HOST[:PORT]``, a relative path or one nginx.conf cannot
    hold unquoted, a pattern ``p2_location_regex`` refuses, ``prefix`` missing for a
    standalone file, fewer than one worker, a malformed ``user``.
    """
    address = _listen_address(listen)
    upstream = _upstream(node_url)
    root = _conf_path(docroot, "docroot")
    location = p2_location_regex(patterns)
    server = f"""\
server {{
    listen {address};
    server_tokens off;
    autoindex off;
    client_max_body_size {_MAX_REQUEST_BODY};

    # Composer v2 metadata: the files the node writes into its docroot. Every other URI
    # under /p2/ (a name outside the region's patterns, as Composer 2 asks for every
    # installed package, or no package name at all) is a 404 from here, as is a missing
    # file: the node is never asked for p2.
    location ^~ /p2/ {{
        location ~ "{location}" {{
            root {root};
            types {{ }}
            default_type application/json;
            sendfile on;
            tcp_nopush on;
            # 304 only for the exact date served: a rewritten file (a later mtime) is a 200
            # for every client, whatever date it holds. Last-Modified is the only validator,
            # as the node's.
            if_modified_since exact;
            etag off;
            log_not_found off;
        }}
        return 404;
    }}

    location / {{
        # The "/" after the address makes nginx pass the URI it routed by (decoded, dot
        # segments resolved, escaped again), not the client's: /p2/%2e%2e/dist/... reaches
        # the node as /dist/..., never as a p2 path nginx did not serve.
        proxy_pass {upstream}/;
        proxy_http_version 1.1;
        # The node builds its URLs (packages.json, dist) from the Host the client used.
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_redirect off;
    }}
}}
"""
    if not standalone:
        return (
            "# The nginx front of a fairstream regional node: include it in your http block.\n"
            + server
        )
    return _standalone(server, prefix=prefix, worker_processes=worker_processes, user=user)


def _standalone(
    server: str, *, prefix: Path | None, worker_processes: int, user: str | None
) -> str:
    if prefix is None:
        raise ConfigurationError(
            "a standalone nginx.conf needs a prefix directory for its pid, logs and "
            "temporary files; give one with --prefix"
        )
    home = _conf_path(prefix, "prefix")
    if isinstance(worker_processes, bool) or worker_processes < 1:
        raise ConfigurationError(
            f"worker processes {worker_processes!r} is not a positive number; give 1 or more"
        )
    if user is not None and not _USER.fullmatch(user):
        raise ConfigurationError(f"user {user!r} is not a user name like www-data or root")
    # Every path nginx would otherwise take from its build (/var/lib/nginx, /run) is under
    # the prefix, so that nginx runs without root; the five temporary paths are created at
    # start-up whether used or not.
    temporary = "\n".join(
        f"    {kind}_temp_path {_join(home, kind)};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    indented = "".join(f"    {line}\n" if line else "\n" for line in server.splitlines())
    workers_user = f"user {user};\n" if user else ""
    return f"""\
# The nginx front of a fairstream regional node: nginx -c THIS_FILE -p {home}
{workers_user}worker_processes {worker_processes};
daemon off;
pid {_join(home, "nginx.pid")};
lock_file {_join(home, "nginx.lock")};
error_log {_join(home, "error.log")} warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    default_type application/octet-stream;
    # nginx closes a keep-alive connection after 1000 requests by default; Composer
    # fetches every p2 document of a project over a few connections.
    keepalive_requests 100000;
{temporary}

{indented}}}
"""


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


def _listen_address(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if not _HOST.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(
            f"listen address {listen!r} is not HOST:PORT; write it like 127.0.0.1:8080, "
            "0.0.0.0:80 or [::1]:8080"
        )
    return f"{host}:{int(port)}"


def _upstream(node_url: str) -> str:
    split = urlsplit(node_url)
    netloc = _NETLOC.fullmatch(split.netloc)
    if (
        split.scheme not in ("http", "https")
        or netloc is None
        or not (netloc["port"] is None or 0 < int(netloc["port"]) < 65536)
        or split.path not in ("", "/")
        or split.query
        or split.fragment
    ):
        raise ConfigurationError(
            f"node URL {node_url!r} is not http://HOST:PORT; give the address the node's HTTP "
            "server listens on, like http://127.0.0.1:8081, without a path"
        )
    return f"{split.scheme}://{split.netloc}"


def _conf_path(path: Path, what: str) -> str:
    text = str(path)
    if not path.is_absolute() or not _CONF_PATH.fullmatch(text):
        raise ConfigurationError(
            f"{what} {text!r} must be an absolute path of letters, digits and . _ / + @ , = ~ "
            "% : - (nginx.conf holds it unquoted); choose another directory"
        )
    return text


@click.command("nginx-config")
@click.option("--region", required=True, help="The region whose node the front is for.")
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    help="HOST:PORT nginx listens on: the region's public address.",
)
@click.option(
    "--node-url",
    default="http://127.0.0.1:8081",
    show_default=True,
    help="The node's own HTTP server (its `node run --listen`), which answers all but p2.",
)
@click.option(
    "--docroot",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The directory the node writes p2/VENDOR/NAME.json into  "
    "[default: the one `node run --listen HOST:PORT` of --node-url writes, "
    "DATA_DIR/nodes/REGION/view-HOST-PORT/docroot]",
)
@click.option(
    "--include",
    "patterns",
    multiple=True,
    default=("drupal/*",),
    show_default=True,
    help="Package pattern the region serves (repeatable), as the node's --include; p2 of any "
    "other name is a 404 from nginx.",
)
@click.option(
    "--standalone/--server-block",
    default=False,
    show_default=True,
    help="A whole nginx.conf for `nginx -c FILE -p PREFIX` in the foreground, or only a "
    "server block for your own nginx's http block.",
)
@click.option(
    "--prefix",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="--standalone: directory of nginx's pid, error log and temporary files (create it "
    "first)  [default: DATA_DIR/nodes/REGION/nginx]",
)
@click.option(
    "--worker-processes",
    type=click.IntRange(1, 1024),
    default=None,
    help="--standalone: nginx worker processes  [default: 1]",
)
@DATA_DIR_OPTION
# Long because click passes each of the command's options as a parameter.
def nginx_config(
    region: str,
    listen: str,
    node_url: str,
    docroot: Path | None,
    patterns: tuple[str, ...],
    standalone: bool,
    prefix: Path | None,
    worker_processes: int | None,
    data_dir: Path,
) -> None:
    """Print the nginx configuration of a region's front: nginx serves p2 from the node's
    docroot and passes everything else to the node.

    p2 of a name outside the --include patterns, or of a package the docroot has no file
    for, is a 404 from nginx without asking the node.

    \b
    Example: fairstream node nginx-config --region eu --listen 0.0.0.0:80 \\
      --node-url http://127.0.0.1:8081 --include 'drupal/*' --server-block
    Example: fairstream node nginx-config --region eu --standalone \\
      --prefix /srv/fairstream/nginx-eu
    """
    if not REGION_NAME.fullmatch(region):
        raise ConfigurationError(
            f"region {region!r} must be lower-case letters, digits and dashes, as the node's"
        )
    if not standalone and (prefix is not None or worker_processes is not None):
        raise ConfigurationError(
            "--prefix and --worker-processes are settings of a whole nginx.conf; add "
            "--standalone, or leave them out for a server block in your own nginx"
        )
    node_dir = data_dir / "nodes" / region
    if docroot is None:
        # Each worker writes its own view (services/node/build.py build_node): the node behind us.
        node = urlsplit(node_url)
        if node.hostname is None or node.port is None:
            raise ConfigurationError(
                f"--node-url {node_url!r} names no host and port; give http://HOST:PORT of the "
                "node's --listen, or --docroot"
            )
        docroot = node_dir / f"view-{node.hostname}-{node.port}" / "docroot"
    click.echo(
        render_nginx_config(
            listen=listen,
            docroot=docroot.absolute(),
            node_url=node_url,
            patterns=patterns,
            standalone=standalone,
            prefix=(prefix or node_dir / "nginx").absolute() if standalone else None,
            worker_processes=worker_processes or 1,
        ),
        nl=False,
    )
