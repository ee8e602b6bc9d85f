"""What every ``fairstream`` command shares: its common options and how they are resolved.

A module of its own so that the command modules (``services.node.cli``,
``services.importer.cli``, ``services.publishing.cli``, ...) share one definition
without importing each other.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import click

from infra import devstack
from schemas.errors import ConfigurationError, RejectedError
from schemas.federation import HEARTBEAT_EVERY_SECONDS, is_http_url
from schemas.signing import SigningKey
from schemas.trust import TrustRoot, delegation_problem, load_pinned_root
from services.shared.logs import LogSettings
from streams.policy import parse_size


def _nearest_data_dir(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    """Without ``--data-dir`` or ``FAIRSTREAM_DATA_DIR``: the ``.fairstream`` folder of the
    current folder or of its nearest parent that has one, as git finds ``.git``."""
    if param.name is not None and ctx.get_parameter_source(param.name) in (
        click.core.ParameterSource.DEFAULT,
        None,
    ):
        return devstack.nearest_data_dir(Path.cwd())
    return value


DATA_DIR_OPTION = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(devstack.DATA_DIR_NAME),
    show_default=".fairstream in this folder or the nearest parent folder that has one",
    envvar="FAIRSTREAM_DATA_DIR",
    callback=_nearest_data_dir,
    help="Where the embedded stack keeps its state, logs and S3 data.",
)
#: The suffix of a variable naming a file that holds a credential-bearing setting's value.
FILE_SUFFIX = "_FILE"


def credential_from_environment(envvar: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """A credential-bearing setting from ``envvar`` or from the file ``envvar_FILE`` names
    (as Docker and Kubernetes mount secrets), with the variable it came from; None if
    neither is set. The file's trailing newline is not part of the value.

    Raises ``ConfigurationError`` when both are set or the file cannot be read.
    """
    value = environ.get(envvar) or None
    file_var = envvar + FILE_SUFFIX
    named = environ.get(file_var) or None
    if named is None:
        return (value, envvar) if value is not None else None
    if value is not None:
        raise ConfigurationError(
            f"both {envvar} and {file_var} are set; set only one (the file keeps the "
            "credentials out of the process's environment)"
        )
    text = read_file(Path(named), f"the file {file_var} names").decode("utf-8", "replace")
    if not text.strip():
        raise ConfigurationError(f"{named} (named by {file_var}) is empty; write the URL in it")
    return text.strip(), file_var


class CredentialOption(click.Option):
    """An option whose value holds credentials: besides its variable (``FAIRSTREAM_STORE_URL``)
    it is read from the file ``<VARIABLE>_FILE`` names (``FAIRSTREAM_STORE_URL_FILE``), so
    that neither ``ps`` nor the process's environment shows them."""

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        if not isinstance(self.envvar, str):
            return super().resolve_envvar_value(ctx)
        found = credential_from_environment(self.envvar, os.environ)
        return found[0] if found is not None else None


BROKER_OPTION = click.option(
    "--broker",
    cls=CredentialOption,
    envvar="FAIRSTREAM_BROKER_URL",
    help="Kafka URL: kafka://HOST:PORT[,HOST:PORT], kafka+ssl://HOST:PORT?ca=CA.pem (TLS) or "
    "kafka+sasl-ssl://USER:PASSWORD@HOST:PORT?mechanism=SCRAM-SHA-512&ca=CA.pem  "
    "[default: the embedded stack's]",
)
STORE_OPTION = click.option(
    "--store",
    cls=CredentialOption,
    envvar="FAIRSTREAM_STORE_URL",
    help="Object store URL, s3://ACCESS:SECRET@host:port  [default: the embedded stack's]",
)
TOPIC_PREFIX_OPTION = click.option(
    "--topic-prefix",
    default="",
    help="Prefix of the topic names (fair.releases, fair.rejected, fair.trust), to run "
    "several federations.",
)
SIGNING_KEY_OPTION = click.option(
    "--key",
    "key_paths",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="Private key file(s) to sign with; repeat for several signatures (a threshold).",
)
SIGNERS_ROOT_OPTION = click.option(
    "--root",
    "root_path",
    default=None,
    type=click.Path(path_type=Path),
    help="The trust root the nodes pin: the --key files are checked against its delegation "
    "before anything is signed or produced  [default: not checked, with a warning]",
)
PARTITIONS_OPTION = click.option(
    "--partitions",
    type=click.IntRange(1, 1024),
    default=4,
    show_default=True,
    help="Partitions of the releases topic when it is created (key = package name).",
)


class HttpUrl(click.ParamType):
    """An option naming an http(s) URL, checked before anything is written or produced (a
    region's public URL is recorded in its bucket and signed into its registration)."""

    name = "URL"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        text = str(value)
        if not is_http_url(text):
            option = param.opts[0] if param is not None and param.opts else "the URL"
            self.fail(
                f"{option} {text[:200]!r} is not an http(s) URL; give "
                "http(s)://HOST[:PORT][/PATH], e.g. https://eu.packages.example.org",
                param,
                ctx,
            )
        return text


HTTP_URL = HttpUrl()


class ByteSize(click.ParamType):
    """An option giving a size in bytes, one way everywhere: ``1G``, ``20 GiB``, ``500MB``,
    ``1.5T`` or plain bytes (``1073741824``; a TOML integer too). K, M, G and T are powers of
    1024 with or without ``i`` and ``B`` (``500MB`` is 500 MiB)."""

    name = "SIZE"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        try:
            return parse_size(str(value))
        except ConfigurationError as exc:
            self.fail(str(exc), param, ctx)


BYTE_SIZE = ByteSize()


def log_settings() -> LogSettings:
    """How this process logs, as the ``fairstream`` group's options set it up (the
    defaults when a command runs on its own, as in tests)."""
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(LogSettings) if ctx is not None else None
    return found or LogSettings()


def stack_urls(data_dir: Path, broker: str | None, store: str | None) -> tuple[str, str]:
    """Broker and store URLs: given explicitly, or those of the embedded stack in ``data_dir``."""
    if broker and store:
        return broker, store
    needed = ({"broker"} if not broker else set()) | ({"store"} if not store else set())
    stack = _running_stack(data_dir, needed)
    return broker or stack.broker_url, store or stack.store_url


def broker_url(data_dir: Path, broker: str | None) -> str:
    """The broker URL given, or the embedded stack's."""
    return broker or _running_stack(data_dir, {"broker"}).broker_url


def _running_stack(data_dir: Path, needed: set[str]) -> devstack.Stack:
    """The embedded stack recorded in ``data_dir``, or a ``ConfigurationError`` when none is
    recorded or the ``needed`` servers of the recorded one do not run."""
    stack = devstack.read_stack(data_dir)
    if stack is None:
        raise ConfigurationError(
            f"no --broker/--store given and no embedded stack recorded in {data_dir} "
            "(--data-dir, FAIRSTREAM_DATA_DIR, or else the nearest .fairstream folder of this "
            "folder or its parents); start one with `fairstream dev up` or pass the URLs"
        )
    stopped = sorted(
        process.name
        for process, running in devstack.status(data_dir)
        if process.name in needed and not running
    )
    if stopped:
        # Else the command would wait for a server that is gone (a reboot, a kill).
        raise ConfigurationError(
            f"the embedded stack recorded in {data_dir} is not running ({' and '.join(stopped)} "
            f"stopped); start it again with `fairstream dev up --data-dir {data_dir}` or pass "
            "--broker/--store"
        )
    return stack


def parse_listen(listen: str, option: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` split, or a ``ConfigurationError`` naming the option."""
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ConfigurationError(f"{option} {listen!r} is not HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port_text)


def listen_address(listen: str, option: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` of a server, checked free, or a ``ConfigurationError`` naming the option."""
    host, port = parse_listen(listen, option)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the server will: a port left in TIME_WAIT by a stopped node is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {host}:{port} ({exc.strerror}); choose another {option} "
                "or stop the process that holds it"
            ) from exc
    return host, port


def read_file(path: Path, what: str) -> bytes:
    """A file's bytes, or a ``ConfigurationError`` saying which file could not be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {path}: {exc.strerror}") from exc


def make_dir(path: Path, what: str) -> Path:
    """Create a directory a command keeps its state in (if missing), or a
    ``ConfigurationError`` saying which and what to do."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create {what} {path}: {exc.strerror}; choose a --data-dir you may write to"
        ) from exc
    return path


def write_file(path: Path, data: bytes, what: str) -> None:
    """Write a file the user named, or a ``ConfigurationError`` saying which and why not."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write {what} {path}: {exc.strerror}; choose a path in a directory "
            "that exists and that you may write to"
        ) from exc


def pinned_root(path: Path) -> TrustRoot:
    """The trust root in a pinned root file, or a ``ConfigurationError`` naming the file."""
    return load_pinned_root(pinned_root_file(path))


def signers_root(root_path: Path | None) -> TrustRoot | None:
    """The trust root to check signing keys against (``--root``), or None after a warning
    that they are not checked."""
    if root_path is None:
        click.echo(
            "warning: no --root given, so the --key files are not checked against the trust "
            "root; nodes refuse every event signed by keys it does not delegate",
            err=True,
        )
        return None
    return pinned_root(root_path)


def check_signers(
    keys: Sequence[SigningKey], key_paths: Sequence[Path], root: TrustRoot, package: str
) -> None:
    """Raise ``ConfigurationError`` when every node would refuse ``package``'s events signed
    with ``keys`` under ``root`` (checked before anything is signed or produced)."""
    problem = delegation_problem(root, package, (key.public_key.keyid for key in keys))
    if problem is not None:
        named = ", ".join(str(path) for path in key_paths)
        raise ConfigurationError(
            f"--key {named}: {problem}; nothing was produced: sign with the keys the root "
            "delegates the namespace to"
        )


def pinned_root_file(path: Path) -> bytes:
    """The bytes of a pinned root file, checked to be a signed root (not yet that it is
    in force), or a ``ConfigurationError`` naming the file."""
    data = read_file(path, "trust root file")
    try:
        load_pinned_root(data)
    except RejectedError as exc:
        raise ConfigurationError(
            f"the pinned trust root {path} is not a valid signed root ({exc}); pin the file "
            "written by `fairstream trust init` or `trust rotate`"
        ) from exc
    return data


REGION_MAP_OPTION = click.option(
    "--region-map",
    "region_map",
    multiple=True,
    metavar="CIDR=REGION",
    help="Clients from this network are in this region; repeatable, the most specific wins.",
)
GEO_HEADER_OPTION = click.option(
    "--geo-header",
    default=None,
    help="A header a trusted front proxy sets to the client's region (e.g. X-Geo-Region).",
)
NODE_KEY_OPTION = click.option(
    "--node-key",
    "node_key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The node's own Ed25519 key, which signs its registration and heartbeats; created "
    "if missing  [default: DATA_DIR/nodes/REGION/node-HOST-PORT.key]",
)
STATUS_EVERY_OPTION = click.option(
    "--status-every",
    type=click.FloatRange(0.2, 3600),
    default=HEARTBEAT_EVERY_SECONDS,
    show_default=True,
    help="Seconds between heartbeats (sync state) on the status topic. Readers call a node "
    "silent after three missed ones at the default period (30 s): with a longer period, give "
    "`fairstream status --silent-after` and the directory's --stale-after three periods.",
)


def node_key(path: Path | None, data_dir: Path, region: str, listen: str) -> SigningKey:
    """The node's key from ``path`` (or its default place), created there (mode 600) if missing.

    Raises ``ConfigurationError`` naming a file that is not a private key.
    """
    if path is None:
        path = data_dir / "nodes" / region / f"node-{listen.replace(':', '-')}.key"
    if not path.exists():
        key = SigningKey.generate()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_bytes(key.to_json())
            path.with_suffix(".pub").write_bytes(key.public_key.to_json())
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the node key {path}: {exc.strerror} ({exc.filename}); give "
                "--node-key (or --data-dir) a path you may write to"
            ) from exc
        return key
    data = read_file(path, "node key file")
    # Any other file is not a key at all: from_json says so.
    if b'"seed"' not in data and b'"public"' in data:
        raise ConfigurationError(
            f"{path} is a public key; --node-key needs the node's private .key file"
        )
    return SigningKey.from_json(data, source=str(path))
