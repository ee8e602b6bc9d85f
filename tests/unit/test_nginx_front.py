"""services.node.nginx_front: the p2 regex agrees with the node's rule, the config text, the mistakes.

nginx itself runs in tests/integration/test_nginx_front.py; here nothing opens a socket.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import ConfigurationError
from schemas.names import NAME_PATTERN, PACKAGE_NAME, VENDOR_PATTERN
from services.node.nginx_front import nginx_config, p2_location_regex, render_nginx_config

DOCROOT = Path("/srv/fairstream/eu/docroot")
PREFIX = Path("/srv/fairstream/eu/nginx")
PATTERN_SETS = [
    ("drupal/*",),
    ("drupal/token",),
    ("drupal/legacy_*", "*/token"),
    ("d*/*x", "a.b/c-*-d"),
    ("*/*",),
    ("drupal/*", "drupal/token", "drupal/*"),
]


def served_by_the_node(path: str, patterns: Sequence[str]) -> bool:
    """Whether the node answers ``path`` from a p2 document: its own rule (a Composer name
    matched by ``fnmatch``, an optional ~dev), written independently of the regex."""
    if not path.startswith("/p2/") or not path.endswith(".json"):
        return False
    package = path.removeprefix("/p2/").removesuffix(".json").removesuffix("~dev")
    return PACKAGE_NAME.fullmatch(package) is not None and any(
        fnmatch.fnmatchcase(package, pattern) for pattern in patterns
    )


def render(**changes: object) -> str:
    arguments: dict[str, object] = {
        "listen": "127.0.0.1:8080",
        "docroot": DOCROOT,
        "node_url": "http://127.0.0.1:8081",
        "patterns": ("drupal/*",),
        "standalone": True,
        "prefix": PREFIX,
    }
    arguments.update(changes)
    return render_nginx_config(**arguments)  # type: ignore[arg-type]


# --- the p2 regex --------------------------------------------------------------------------

names = st.from_regex(rf"\A{VENDOR_PATTERN}/{NAME_PATTERN}\Z", fullmatch=True)
near_names = st.text(alphabet="drupaltokenx019._-~/\n%", max_size=30)
suffixes = st.sampled_from([".json", "~dev.json", ".json\n", "~dev~dev.json", "", ".jso"])


@settings(max_examples=400)
@given(
    patterns=st.sampled_from(PATTERN_SETS),
    name=st.one_of(names, near_names, st.sampled_from(["drupal/token", "drupal/legacy_x"])),
    suffix=suffixes,
)
def test_the_regex_serves_exactly_what_the_node_serves(
    patterns: tuple[str, ...], name: str, suffix: str
) -> None:
    path = f"/p2/{name}{suffix}"
    regex = re.compile(p2_location_regex(patterns))
    assert (regex.search(path) is not None) == served_by_the_node(path, patterns), path


@pytest.mark.parametrize(
    ("path", "served"),
    [
        ("/p2/drupal/token.json", True),
        ("/p2/drupal/token~dev.json", True),
        ("/p2/drupal/token.json.json", True),  # the package drupal/token.json
        ("/p2/drupal/ctools--x.json", True),
        ("/p2/symfony/console.json", False),
        ("/p2/drupal/Token.json", False),
        ("/p2/drupal/../etc/passwd.json", False),
        ("/p2/drupal/..json", False),
        ("/p2/drupal/.token.json", False),  # a writer's temporary file
        ("/p2/drupal/token.json.tmp", False),
        ("/p2/drupal/token.json\n", False),
        ("/p2/drupal/token", False),
        ("/p2/drupal/", False),
        ("/p2/drupal/a/b.json", False),
        ("/x/p2/drupal/token.json", False),
    ],
)
def test_the_regex_on_examples(path: str, served: bool) -> None:
    assert (re.search(p2_location_regex(["drupal/*"]), path) is not None) is served


def test_the_name_rule_in_the_regex_is_the_node_s() -> None:
    regex = re.compile(p2_location_regex(["*/*"]))
    hostile = "a" * 50_000 + "!"
    assert regex.search(f"/p2/drupal/{hostile}.json") is None
    assert regex.search(f"/p2/{hostile}/token.json") is None


def test_nginx_conf_holds_the_regex_as_it_is() -> None:
    """nginx.conf turns \\\\ \\" \\' \\n \\r \\t into other characters; the regex has none."""
    regex = p2_location_regex(["drupal/*", "*/token", "a.b/c-*"])
    assert not re.search(r"\\[\\\"'nrt]|[\"'\s;]", regex)
    assert f'location ~ "{regex}" {{' in render(patterns=["drupal/*", "*/token", "a.b/c-*"])


@pytest.mark.parametrize(
    "pattern",
    [
        "drupal",
        "drupal/",
        "/token",
        "drupal/*/x",
        "drupal/**",
        "drupal/a*b*",
        "*a*/token",
        "Drupal/*",
        "drupal/tok?n",
        "drupal/[ab]*",
        "drupal/[!a]*",
        "drupal/tok en",
        "drupal/x;",
        'drupal/x"',
        "drupal/$x",
        "",
    ],
)
def test_a_pattern_nginx_cannot_hold_is_refused(pattern: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(repr(pattern))):
        p2_location_regex([pattern])


def test_no_pattern_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="--include"):
        p2_location_regex([])


# --- the configuration text ----------------------------------------------------------------


def test_a_standalone_file_keeps_everything_under_its_prefix() -> None:
    text = render(worker_processes=2, user="root")
    lines = text.splitlines()
    assert "daemon off;" in lines
    assert "user root;" in lines
    assert "worker_processes 2;" in lines
    assert f"pid {PREFIX}/nginx.pid;" in lines
    assert f"error_log {PREFIX}/error.log warn;" in lines
    assert "    access_log off;" in lines
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"    {kind}_temp_path {PREFIX}/{kind};" in lines
    assert text.count("{") == text.count("}")
    assert "user " not in render()


def test_a_server_block_is_only_the_server() -> None:
    text = render(standalone=False, prefix=None)
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body[0] == "server {" and body[-1] == "}"
    for main_only in ("daemon", "pid ", "events", "http {", "worker_processes", "_temp_path"):
        assert main_only not in text
    assert text.count("{") == text.count("}")


def test_the_server_serves_p2_from_the_docroot_and_passes_the_rest() -> None:
    lines = [line.strip() for line in render(standalone=False, listen="0.0.0.0:80").splitlines()]
    for expected in (
        "listen 0.0.0.0:80;",
        "autoindex off;",
        "location ^~ /p2/ {",
        f"root {DOCROOT};",
        "types { }",
        "default_type application/json;",
        "sendfile on;",
        "if_modified_since exact;",
        "etag off;",
        "return 404;",
        "location / {",
        "proxy_pass http://127.0.0.1:8081/;",
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
    ):
        assert expected in lines


@pytest.mark.parametrize(
    ("node_url", "upstream"),
    [
        ("http://127.0.0.1:8081", "http://127.0.0.1:8081/"),
        ("http://127.0.0.1:8081/", "http://127.0.0.1:8081/"),
        ("https://node.internal", "https://node.internal/"),
        ("http://[::1]:8081", "http://[::1]:8081/"),
    ],
)
def test_the_node_url(node_url: str, upstream: str) -> None:
    assert f"proxy_pass {upstream};" in render(node_url=node_url)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"listen": "8080"}, "'8080'"),
        ({"listen": "127.0.0.1:0"}, "'127.0.0.1:0'"),
        ({"listen": "127.0.0.1:99999"}, "'127.0.0.1:99999'"),
        ({"listen": "a b:80"}, "'a b:80'"),
        ({"listen": "x;y:80"}, "'x;y:80'"),
        ({"node_url": "127.0.0.1:8081"}, "'127.0.0.1:8081'"),
        ({"node_url": "ftp://127.0.0.1:8081"}, "'ftp://127.0.0.1:8081'"),
        ({"node_url": "http://127.0.0.1:8081/node"}, "'http://127.0.0.1:8081/node'"),
        ({"node_url": "http://u:p@127.0.0.1:8081"}, "'http://u:p@127.0.0.1:8081'"),
        ({"node_url": "http://127.0.0.1:0"}, "'http://127.0.0.1:0'"),
        ({"node_url": "http://127.0.0.1:x"}, "'http://127.0.0.1:x'"),
        ({"node_url": "http://127.0.0.1:8081?a=b"}, "'http://127.0.0.1:8081?a=b'"),
        ({"node_url": "http://a;b:8081"}, "'http://a;b:8081'"),
        ({"docroot": Path("docroot")}, "docroot 'docroot'"),
        ({"docroot": Path("/srv/my docroot")}, "docroot '/srv/my docroot'"),
        ({"docroot": Path("/srv/$host")}, "docroot '/srv/$host'"),
        ({"docroot": Path("/srv/a;b")}, "docroot '/srv/a;b'"),
        ({"prefix": None}, "--prefix"),
        ({"prefix": Path("nginx")}, "prefix 'nginx'"),
        ({"worker_processes": 0}, "worker processes 0"),
        ({"user": "root;"}, "user 'root;'"),
        ({"patterns": ["symfony/**"]}, "'symfony/**'"),
    ],
)
def test_a_mistake_is_a_configuration_error_naming_it(
    changes: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(named)):
        render(**changes)


# --- the command ---------------------------------------------------------------------------


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FAIRSTREAM_DATA_DIR", raising=False)
    return tmp_path


def test_the_command_prints_a_server_block_for_the_region(in_tmp: Path) -> None:
    result = CliRunner().invoke(nginx_config, ["--region", "eu"])
    assert result.exit_code == 0, result.output
    assert result.output == render_nginx_config(
        listen="127.0.0.1:8080",
        docroot=in_tmp / ".fairstream/nodes/eu/view-127.0.0.1-8081/docroot",
        node_url="http://127.0.0.1:8081",
        patterns=["drupal/*"],
        standalone=False,
    )


def test_the_command_prints_a_standalone_file(in_tmp: Path) -> None:
    result = CliRunner().invoke(
        nginx_config,
        [
            "--region",
            "us",
            "--standalone",
            "--listen",
            "0.0.0.0:80",
            "--include",
            "drupal/*",
            "--include",
            "acme/*",
            "--docroot",
            "/srv/us/docroot",
            "--data-dir",
            "state",
            "--worker-processes",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output == render_nginx_config(
        listen="0.0.0.0:80",
        docroot=Path("/srv/us/docroot"),
        node_url="http://127.0.0.1:8081",
        patterns=["drupal/*", "acme/*"],
        standalone=True,
        prefix=in_tmp / "state/nodes/us/nginx",
        worker_processes=2,
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--region", "EU"], "region 'EU'"),
        (["--region", "eu", "--include", "drupal/[ab]*"], "'drupal/[ab]*'"),
        (["--region", "eu", "--listen", "localhost"], "'localhost'"),
        (["--region", "eu", "--node-url", "http://node:8081/x"], "'http://node:8081/x'"),
        (["--region", "eu", "--prefix", "/srv/nginx"], "--standalone"),
        (["--region", "eu", "--worker-processes", "2"], "--standalone"),
    ],
)
def test_the_command_refuses_a_mistake(in_tmp: Path, args: list[str], named: str) -> None:
    result = CliRunner().invoke(nginx_config, args)
    assert isinstance(result.exception, ConfigurationError)
    assert named in str(result.exception)


def test_the_help_shows_examples(in_tmp: Path) -> None:
    result = CliRunner().invoke(nginx_config, ["--help"], terminal_width=80)
    assert result.exit_code == 0
    assert "Example: fairstream node nginx-config --region eu --listen 0.0.0.0:80 \\" in (
        result.output
    )
    assert "Example: fairstream node nginx-config --region eu --standalone \\" in result.output
