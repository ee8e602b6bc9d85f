"""The settings model of the long-running commands: a TOML file, ``FAIRSTREAM_*`` variables, the command line.

The model is derived from each click command's own options, so it cannot drift
from the CLI: a file key is an option's long name in snake_case
(``--public-url`` → ``public_url``), its environment variable is the one the
option declares (``FAIRSTREAM_BROKER_URL``, ``FAIRSTREAM_STORE_URL``,
``FAIRSTREAM_DATA_DIR``) or else ``FAIRSTREAM_<KEY>`` (the broker and store URLs,
which hold credentials, also from the file ``<VARIABLE>_FILE`` names), and its type, range and
choices are the option's. ``configurable`` gives a command ``--config FILE``;
the file becomes click's default map, so the precedence is click's own:
command line > environment > file > default. ``check_config`` is what
``fairstream config check`` runs: every problem of a file and an environment,
each one sentence with what to do.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from connectors.kafka_connection import BrokerLocation
from connectors.store import StoreLocation, public_endpoint, redact_url
from schemas.errors import ConfigurationError
from services.cli.options import (
    ByteSize,
    CredentialOption,
    credential_from_environment,
    parse_listen,
    pinned_root,
    read_file,
)
from services.directory.registry import RegionMap
from streams.peer_config import check_peer_form, parse_peer
from streams.policy import jurisdiction_policy

#: The variable that names the configuration file when ``--config`` is not given.
CONFIG_ENVVAR = "FAIRSTREAM_CONFIG"
#: The name of the ``--config`` parameter; it is not a setting itself.
CONFIG_PARAM = "config_file"

Source = Literal["file", "environment", "default"]
ProblemKind = Literal["unknown-key", "wrong-type", "invalid-value", "missing", "file"]
CommandT = TypeVar("CommandT", bound=click.Command)


@dataclass(frozen=True)
class Setting:
    """One option of a command as a configuration key."""

    key: str
    option: click.Option
    envvar: str

    @property
    def flag(self) -> str:
        """The command-line option, ``--public-url``."""
        return "--" + self.key.replace("_", "-")

    @property
    def multiple(self) -> bool:
        return bool(self.option.multiple)


@dataclass(frozen=True)
class Problem:
    """What is wrong with one setting, and what to do."""

    key: str
    kind: ProblemKind
    message: str


@dataclass(frozen=True)
class ResolvedSetting:
    """A setting's value (converted as the command would) and where it came from."""

    setting: Setting
    value: object
    source: Source


@dataclass(frozen=True)
class ConfigCheck:
    """The outcome of ``check_config``: every setting as resolved, every problem found."""

    settings: tuple[ResolvedSetting, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def settings_of(command: click.Command) -> dict[str, Setting]:
    """The configuration keys of ``command``: every visible option but ``--config``."""
    found: dict[str, Setting] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden or param.name == CONFIG_PARAM:
            continue
        long_names = [opt for opt in param.opts if opt.startswith("--")]
        if not long_names:
            continue
        key = long_names[0].removeprefix("--").replace("-", "_")
        declared = param.envvar if isinstance(param.envvar, str) else None
        found[key] = Setting(key, param, declared or f"FAIRSTREAM_{key.upper()}")
    return found


def configurable(command: CommandT) -> CommandT:
    """Give ``command`` a ``--config FILE`` option (or ``FAIRSTREAM_CONFIG``) and an
    environment variable for each of its options; returns the command."""
    for setting in settings_of(command).values():
        setting.option.envvar = setting.envvar
    command.params.insert(
        0,
        click.Option(
            ["--config", CONFIG_PARAM],
            type=click.Path(dir_okay=False, path_type=Path),
            envvar=CONFIG_ENVVAR,
            is_eager=True,
            expose_value=False,
            callback=_load_config,
            help="A TOML file of settings: keys are the options' names in snake_case "
            "(public_url = ...); FAIRSTREAM_<KEY> variables override it and options override "
            "both. Check one with `fairstream config check`.",
        ),
    )
    return command


def configurable_commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    """Every command under ``group`` that takes ``--config``, by path: ``node-run``."""
    found: dict[str, click.Command] = {}
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found.update(configurable_commands(command, f"{path}-"))
        elif any(param.name == CONFIG_PARAM for param in command.params):
            found[path] = command
    return found


def read_config(path: Path) -> dict[str, Any]:
    """The table of a TOML configuration file.

    Raises ``ConfigurationError`` for a file that cannot be read or is not TOML.
    """
    data = read_file(path, "configuration file")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f'{path} is not a TOML file ({exc}); write one KEY = VALUE per line, like region = "eu"'
        ) from exc


# Long because each setting is resolved (environment, file, default) and checked in one pass.
def check_config(
    command: click.Command,
    table: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    check_files: bool = True,
) -> ConfigCheck:
    """Resolve ``command``'s settings from a file's ``table`` and ``environ`` (which wins)
    and find every problem: unknown keys, wrong types, values the command would refuse,
    missing required settings, malformed broker and store URLs and, with
    ``check_files``, files named that do not exist or are not what they should be.
    """
    settings = settings_of(command)
    ctx = click.Context(command, info_name=command.name)
    problems = [_unknown_key(key, settings) for key in table if key not in settings]
    resolved: list[ResolvedSetting] = []
    for setting in settings.values():
        raw: object
        source: Source
        text, variable = environ.get(setting.envvar), setting.envvar
        if isinstance(setting.option, CredentialOption):
            try:
                found = credential_from_environment(setting.envvar, environ)
            except ConfigurationError as exc:
                problems.append(Problem(setting.key, "invalid-value", f"{exc}."))
                resolved.append(ResolvedSetting(setting, None, "environment"))
                continue
            text, variable = found if found is not None else (None, setting.envvar)
        if text:
            source = "environment"
            raw = setting.option.type.split_envvar_value(text) if setting.multiple else text
            where = f"{variable} (environment)"
        elif setting.key in table:
            source, raw, where = "file", table[setting.key], f"{setting.key} (file)"
            shape = _shape_problem(setting, raw)
            if shape is not None:
                problems.append(Problem(setting.key, "wrong-type", f"{where} {shape}"))
                resolved.append(ResolvedSetting(setting, raw, source))
                continue
        else:
            source, raw, where = "default", _default(setting, ctx), ""
        value = raw
        if source != "default":
            try:
                value = setting.option.type_cast_value(ctx, raw)
            except click.BadParameter as exc:
                problems.append(
                    Problem(
                        setting.key,
                        "invalid-value",
                        f"{where}: {exc.message.rstrip('.')}; see {setting.flag} in the "
                        "command's --help.",
                    )
                )
                resolved.append(ResolvedSetting(setting, raw, source))
                continue
        if setting.option.required and value in (None, (), []):
            problems.append(
                Problem(
                    setting.key,
                    "missing",
                    f"{setting.key} is required and neither the file nor {setting.envvar} "
                    f"gives it; add {setting.key} = ... to the file or set {setting.envvar}.",
                )
            )
        elif source != "default" and value not in (None, (), []):
            problems += _value_problems(setting, value, where, check_files=check_files)
        resolved.append(ResolvedSetting(setting, value, source))
    return ConfigCheck(tuple(resolved), tuple(problems))


def shown_value(value: object) -> str:
    """A setting's value for a table: credentials in URLs masked, lists joined."""
    if value is None or value == () or value == []:
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(shown_value(item) for item in value)
    return redact_url(str(value))


def _load_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """``--config``: the file's settings become the command's default map."""
    if value is None:
        return
    table = read_config(value)
    check = check_config(ctx.command, table, environ={}, check_files=False)
    # The file's own problems; a setting it lacks may come from the environment or the
    # command line, and click says so if none gives it.
    problems = [p.message for p in check.problems if p.kind != "missing"]
    if problems:
        raise ConfigurationError(
            f"configuration file {value}: {' '.join(problems)} (check it whole with "
            f"`fairstream config check {value} --command {_command_name(ctx)}`)"
        )
    settings = settings_of(ctx.command)
    names = {key: settings[key].option.name for key in table}
    ctx.default_map = {
        **(ctx.default_map or {}),
        **{name: table[key] for key, name in names.items() if name},
    }


def _command_name(ctx: click.Context) -> str:
    """``node-run``: a command's path below the root, as ``config check --command`` names it."""
    names: list[str] = []
    current: click.Context | None = ctx
    while current is not None and current.parent is not None:
        names.append(current.info_name or "")
        current = current.parent
    return "-".join(reversed(names)) or (ctx.info_name or "")


def _unknown_key(key: str, settings: Mapping[str, Setting]) -> Problem:
    close = difflib.get_close_matches(key, settings, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"the keys are {', '.join(settings)}."
    return Problem(key, "unknown-key", f"{key} (file) is not a setting of this command; {hint}")


@dataclass(frozen=True)
class _TomlKind:
    """What TOML values an option takes, as said to a person."""

    one: str
    many: str
    example: str
    fits: Callable[[object], bool]


_KINDS = {
    "integer": _TomlKind(
        "a whole number",
        "whole numbers",
        "4",
        lambda v: isinstance(v, int) and not isinstance(v, bool),
    ),
    "number": _TomlKind(
        "a number",
        "numbers",
        "10.0",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    ),
    "boolean": _TomlKind("true or false", "booleans", "true", lambda v: isinstance(v, bool)),
    "string": _TomlKind("a string", "strings", '"..."', lambda v: isinstance(v, str)),
    "size": _TomlKind(
        'a size (a string like "20G", or a whole number of bytes)',
        "sizes",
        '"20G"',
        lambda v: isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)),
    ),
}


def _kind(param_type: click.ParamType) -> str:
    if isinstance(param_type, ByteSize):
        return "size"
    if isinstance(param_type, click.types.BoolParamType):
        return "boolean"
    if isinstance(param_type, click.types.IntParamType):
        return "integer"
    if isinstance(param_type, click.types.FloatParamType):
        return "number"
    return "string"


def _shape_problem(setting: Setting, value: object) -> str | None:
    """Why a TOML value cannot be the option's, or None."""
    kind = _KINDS[_kind(setting.option.type)]
    if setting.multiple:
        if not isinstance(value, list) or not all(kind.fits(item) for item in value):
            return (
                f"must be a list of {kind.many}, one per {setting.flag}, like "
                f"{setting.key} = [{kind.example}]; it is {_toml_type(value)} {value!r}."
            )
        return None
    if not kind.fits(value):
        return (
            f"must be {kind.one}, like {setting.key} = {kind.example}; it is "
            f"{_toml_type(value)} {value!r}."
        )
    return None


def _toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names |= {list: "a list", dict: "a table"}
    return names.get(type(value), f"a {type(value).__name__}")


def _default(setting: Setting, ctx: click.Context) -> object:
    default = setting.option.get_default(ctx)
    # click marks "no default" with a sentinel of its own: shown as no value.
    if isinstance(default, str | int | float | bool | Path | tuple | list):
        return default
    return () if setting.multiple else None


def _value_problems(
    setting: Setting, value: object, where: str, *, check_files: bool
) -> list[Problem]:
    """What the command would refuse as it starts: URLs, sizes, addresses, files."""
    checks = _FILE_CHECKS if check_files else {}
    check = _VALUE_CHECKS.get(setting.key) or checks.get(setting.key)
    if check is None:
        return []
    values = value if isinstance(value, tuple | list) else (value,)
    problems = []
    for item in values:
        try:
            check(item, check_files)
        except (ConfigurationError, ValueError) as exc:
            kind: ProblemKind = "file" if setting.key in _FILE_CHECKS else "invalid-value"
            message = str(exc).rstrip(".")
            if message.startswith("cannot read"):
                message += (
                    "; give the path as the command will see it (relative paths start from "
                    "its working directory), or check a file written for another machine "
                    "with --skip-file-checks"
                )
            problems.append(Problem(setting.key, kind, f"{where}: {message}."))
    return problems


def _check_broker(url: object, check_files: bool) -> None:
    location = BrokerLocation.from_url(str(url))
    if check_files and location.ca_file is not None and not Path(location.ca_file).is_file():
        raise ConfigurationError(
            f"the CA file {location.ca_file} of the broker URL does not exist; give the PEM "
            "file of the CA that signed the brokers' certificates"
        )


def _check_peer(spec: object, check_files: bool) -> None:
    # A peer's pinned root is a file: its spec is checked whole only where the files are.
    if check_files:
        parse_peer(str(spec), lambda path: read_file(path, "peer trust root file"))
    else:
        check_peer_form(str(spec))


def _check_node_key(path: object, check_files: bool) -> None:
    if not Path(str(path)).is_file():
        raise ConfigurationError(
            f"the node key {path} does not exist, and `node run` would create a new one (a "
            "new node, which directories admit only after a new self-test); create it once "
            "with `fairstream keys generate` and keep it"
        )


def _check_region_map(entry: object, check_files: bool) -> None:
    RegionMap.parse([str(entry)])


_VALUE_CHECKS: dict[str, Callable[[object, bool], object]] = {
    "broker": _check_broker,
    "store": lambda url, _: StoreLocation.from_url(str(url)),
    "store_public_url": lambda url, _: public_endpoint(str(url)),
    "listen": lambda listen, _: parse_listen(str(listen), "listen"),
    "region_map": _check_region_map,
    "peer": _check_peer,
    "jurisdiction": lambda code, _: jurisdiction_policy([], own=str(code)),
    "origin_jurisdiction": lambda code, _: jurisdiction_policy([], origin=str(code)),
    "allow_jurisdiction": lambda spec, _: jurisdiction_policy([str(spec)]),
}
# Checked only where the files are (not for a configuration written for another machine).
_FILE_CHECKS: dict[str, Callable[[object, bool], object]] = {
    "root": lambda path, _: pinned_root(Path(str(path))),
    "node_key": _check_node_key,
    "key": lambda path, _: read_file(Path(str(path)), "signing key file"),
}
