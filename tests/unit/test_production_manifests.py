"""infra/production against the code: every command, setting, image, topic and path in
the manifests is one the code knows.

Docker and Kubernetes cannot run here, so these tests read the manifests the way
compose, kubectl and MirrorMaker would and check them against the click command
tree, the settings model (``services.node.config``, the checker behind ``fairstream
config check``) and ``connectors.kafka_topics.Topics``. Each check is also run on a
deliberately broken copy, to show it can fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import click
import kubernetes_validate
import pytest
import yaml

from connectors.kafka_connection import BrokerLocation
from connectors.kafka_topics import Topics
from schemas.errors import ConfigurationError
from services.cli.main import cli
from services.cli.options import FILE_SUFFIX, CredentialOption
from services.node.config import check_config, configurable_commands, settings_of

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / "infra" / "production"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
OUR_IMAGE = f"fairstream:{VERSION}"
# Official images only, each pinned to a release (never latest, never a moving tag).
OFFICIAL_TAGS = {
    "apache/kafka": r"[34]\.\d+\.\d+",
    "minio/minio": r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ",
    "python": r"3\.11\.\d+-slim-bookworm",
}
# Every shared topic; each region's view topic (Topics.view) is the region's own.
CODE_TOPICS = set(asdict(Topics()).values()) - {Topics().view_prefix}
FILE_SETTINGS = ("root", "node_key", "key")
# The Kubernetes release whose API schemas the manifests are validated against (offline:
# kubernetes-validate bundles them).
KUBERNETES_VERSION = "1.33"
# Commands whose HTTP server answers /ready (the others' readiness is /health).
SERVES_READY = {"node-run", "node-serve", "directory-serve"}


# ---------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------


def load_properties(path: Path) -> dict[str, str]:
    """A Java properties file of ``key = value`` lines (no continuation lines)."""
    found: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "!")):
            continue
        assert not stripped.endswith("\\"), f"{path}:{number}: continuation lines are not read"
        key, separator, value = stripped.partition("=")
        assert separator, f"{path}:{number}: not key=value"
        assert key.strip() not in found, f"{path}:{number}: {key.strip()} given twice"
        found[key.strip()] = value.strip()
    return found


def interpolated(value: str) -> str:
    """A compose value with each ``${VAR...}`` replaced as if .env gave it a safe value."""
    return re.sub(r"\$\{([A-Z0-9_]+)[^}]*\}", lambda m: f"x{m[1].lower()}", value)


def resolve_command(args: list[str]) -> tuple[str, click.Command, click.Context, list[str]]:
    """The fairstream command ``args`` name (``node-run``), its parent context and the rest.

    Raises ``LookupError`` for a command the click tree does not have.
    """
    ctx = click.Context(cli, info_name="fairstream")
    command: click.Command = cli
    path: list[str] = []
    rest = list(args)
    while isinstance(command, click.Group):
        if not rest:
            raise LookupError(f"`fairstream {' '.join(path)}` names a group, not a command")
        name = rest.pop(0)
        sub = command.get_command(ctx, name)
        if sub is None:
            raise LookupError(f"`fairstream {' '.join([*path, name])}` is not a command")
        path.append(name)
        if isinstance(sub, click.Group):
            ctx = click.Context(sub, info_name=name, parent=ctx)
        command = sub
    return "-".join(path), command, ctx, rest


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """os.environ as in the container: its FAIRSTREAM_* variables and no others of ours."""
    ours = {name: "" for name in os.environ if name.startswith("FAIRSTREAM_")}
    with mock.patch.dict(os.environ, ours | dict(values)):
        yield


def service_problems(
    where: str,
    args: list[str],
    env: Mapping[str, str],
    config_file: Callable[[str], Path | None],
    mounted: Callable[[str], bool],
) -> list[str]:
    """Everything wrong with one of our containers: its command line parsed by the click
    tree, its FAIRSTREAM_* variables and config file checked by the settings model (as
    `fairstream config check` does), and the files they name mounted in the container.

    ``config_file`` maps the container's path of the config file to a file here.
    """
    try:
        path, command, parent, rest = resolve_command(args)
    except LookupError as exc:
        return [f"{where}: {exc}"]
    shown = f"`fairstream {path.replace('-', ' ')}`"
    params = [p for p in command.params if isinstance(p, click.Option)]
    envvars = {p.envvar for p in params if isinstance(p.envvar, str)}
    if path in configurable_commands(cli):
        envvars |= {setting.envvar for setting in settings_of(command).values()}
    # Credentials may come from the file a <VARIABLE>_FILE names: it must be mounted.
    file_vars = {
        p.envvar + FILE_SUFFIX: p.envvar
        for p in params
        if isinstance(p, CredentialOption) and isinstance(p.envvar, str)
    }
    problems = [
        f"{where}: {name} is no setting of {shown}"
        for name in env
        if name.startswith("FAIRSTREAM_")
        and name not in envvars | set(file_vars) | {"FAIRSTREAM_CONFIG"}
    ]
    problems += [
        f"{where}: {name} names {env[name]}, which is not mounted in the container"
        for name in env
        if name in file_vars and not mounted(env[name])
    ]
    # The files' contents are the operator's: parsed as unset, as a Secret's value is.
    env = {name: value for name, value in env.items() if name not in file_vars}
    if path not in configurable_commands(cli):
        return problems + command_line_problems(
            where, shown, path, command, parent, rest, env, mounted
        )
    at = rest.index("--config") + 1 if "--config" in rest else len(rest)
    if at >= len(rest):
        return [*problems, f"{where}: {shown} without --config FILE"]
    local = config_file(rest[at])
    if local is None:
        return [*problems, f"{where}: --config {rest[at]} is not a file mounted from here"]
    # The command line as click parses it in the container, with the file here.
    with environment(env):
        try:
            command.make_context(
                path.rsplit("-", 1)[-1], [*rest[:at], str(local), *rest[at + 1 :]], parent=parent
            )
        except (click.ClickException, ConfigurationError) as exc:
            message = exc.format_message() if isinstance(exc, click.ClickException) else exc
            problems.append(f"{where}: {shown} refuses its command line: {message}")
    check = check_config(command, tomllib.loads(local.read_text()), env, check_files=False)
    problems += [f"{where}: {problem.message}" for problem in check.problems]
    for resolved in check.settings:
        paths: list[str] = []
        value = resolved.value
        if resolved.setting.key in FILE_SETTINGS and value not in (None, ()):
            paths = [str(v) for v in value] if isinstance(value, tuple) else [str(value)]
        if resolved.setting.key == "broker" and isinstance(value, str) and check.ok:
            ca_file = BrokerLocation.from_url(value).ca_file
            paths = [ca_file] if ca_file else []
        problems += [
            f"{where}: {resolved.setting.key} names {p}, which is not mounted in the container"
            for p in paths
            if not mounted(p)
        ]
    return problems


def command_line_problems(
    where: str,
    shown: str,
    path: str,
    command: click.Command,
    parent: click.Context,
    rest: list[str],
    env: Mapping[str, str],
    mounted: Callable[[str], bool],
) -> list[str]:
    """A command without --config: its command line parsed by click, the files it names
    mounted."""
    with environment(env):
        try:
            ctx = command.make_context(path.rsplit("-", 1)[-1], list(rest), parent=parent)
        except (click.ClickException, ConfigurationError) as exc:
            message = exc.format_message() if isinstance(exc, click.ClickException) else exc
            return [f"{where}: {shown} refuses its command line: {message}"]
    named = [ctx.params.get(name) for name in ("root_path", "node_key_path", "key_paths")]
    paths = [str(v) for value in named for v in (value if isinstance(value, tuple) else [value])]
    return [
        f"{where}: {shown} names {p}, which is not mounted in the container"
        for p in paths
        if p != "None" and not mounted(p)
    ]


def image_problem(where: str, image: str) -> str | None:
    """Why an image is not an official one pinned to a release, or None."""
    name, _, tag = image.partition(":")
    if "@sha256:" in image:
        name, tag = image.split("@", 1)[0].split(":", 1)[0], "digest"
    if name not in OFFICIAL_TAGS:
        return f"{where}: {image} is not an official image ({', '.join(OFFICIAL_TAGS)})"
    if tag != "digest" and not re.fullmatch(OFFICIAL_TAGS[name], tag):
        return f"{where}: {image} is not pinned to a release"
    return None


# ---------------------------------------------------------------------------
# compose.yaml
# ---------------------------------------------------------------------------


def compose_problems(directory: Path) -> list[str]:
    compose = yaml.safe_load((directory / "compose.yaml").read_text())
    problems: list[str] = []
    used_configs: set[Path] = set()
    for name, service in compose["services"].items():
        where = f"compose {name}"
        image = service.get("image", "")
        if "build" not in service:
            if image.startswith("fairstream"):
                problems.append(f"{where}: {image} without build: from our Dockerfile")
            elif (problem := image_problem(where, image)) is not None:
                problems.append(problem)
            continue
        build = service["build"]
        dockerfile = (directory / build["context"] / build["dockerfile"]).resolve()
        if dockerfile != (directory / "Dockerfile").resolve() or image != OUR_IMAGE:
            problems.append(f"{where}: not {OUR_IMAGE} built from infra/production/Dockerfile")
        mounts = {}
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            mounts[target] = directory / source if source.startswith(".") else None
        secrets = {f"/run/secrets/{secret}" for secret in service.get("secrets", [])}

        def config_file(path: str, mounts: dict[str, Path | None] = mounts) -> Path | None:
            local = mounts.get(path)
            if local is None or not local.is_file():
                return None
            used_configs.add(local.resolve())
            return local

        def mounted(
            path: str, mounts: dict[str, Path | None] = mounts, secrets: set[str] = secrets
        ) -> bool:
            return path in secrets or any(
                PurePosixPath(path).is_relative_to(target) for target in mounts
            )

        env = {key: interpolated(str(value)) for key, value in service["environment"].items()}
        problems += service_problems(where, service["command"], env, config_file, mounted)
    for unused in sorted(set((directory / "config").glob("*.toml")) - used_configs):
        problems.append(f"compose: {unused.name} is used by no service")
    return problems


# ---------------------------------------------------------------------------
# k8s/
# ---------------------------------------------------------------------------


def k8s_documents(k8s: Path) -> list[dict[str, Any]]:
    """Every resource kustomize would apply (the kustomization itself aside)."""
    return [
        document
        for path in sorted(k8s.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def k8s_problems(directory: Path, scratch: Path) -> list[str]:
    k8s = directory / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    problems: list[str] = []
    listed = set(kustomization["resources"])
    present = {p.name for p in k8s.glob("*.yaml")} - {"kustomization.yaml"}
    if listed != present:
        problems.append(
            f"k8s: kustomization lists {sorted(listed)}, the directory {sorted(present)}"
        )
    documents = k8s_documents(k8s)
    by_kind: dict[str, dict[str, Any]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    workloads = {
        name: workload
        for kind in ("Deployment", "StatefulSet", "Job")
        for name, workload in by_kind.get(kind, {}).items()
    }
    budgets = [
        pdb["spec"]["selector"]["matchLabels"]
        for pdb in by_kind.get("PodDisruptionBudget", {}).values()
    ]
    commands: dict[str, str] = {}
    for name, workload in workloads.items():
        where = f"k8s {name}"
        template = workload["spec"]["template"]
        spec = template["spec"]
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        replicas = workload["spec"].get("replicas", 1)
        if replicas > 1 and not any(selects(b, template["metadata"]["labels"]) for b in budgets):
            problems.append(f"{where}: {replicas} replicas and no PodDisruptionBudget")
        for container in spec["containers"]:
            resources = container.get("resources", {})
            if not {"requests", "limits"} <= set(resources):
                problems.append(f"{where}: no resource requests and limits")
            if not container["image"].startswith("fairstream"):
                if (problem := image_problem(where, container["image"])) is not None:
                    problems.append(problem)
                continue
            if container["image"] != OUR_IMAGE:
                problems.append(f"{where}: {container['image']} is not {OUR_IMAGE}")
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}

            def config_file(
                path: str, mounts: dict[str, Any] = mounts, volumes: dict[str, Any] = volumes
            ) -> Path | None:
                mount = mounts.get(path)
                config_map = volumes.get(mount["name"], {}).get("configMap") if mount else None
                if mount is None or config_map is None or "subPath" not in mount:
                    return None
                data = by_kind["ConfigMap"][config_map["name"]]["data"][mount["subPath"]]
                local = scratch / f"{config_map['name']}-{mount['subPath']}"
                local.write_text(data)
                return local

            def mounted(path: str, mounts: dict[str, Any] = mounts) -> bool:
                return any(PurePosixPath(path).is_relative_to(target) for target in mounts)

            def from_secret(
                path: str, mounts: dict[str, Any] = mounts, volumes: dict[str, Any] = volumes
            ) -> bool:
                return any(
                    PurePosixPath(path).is_relative_to(target)
                    and "secret" in volumes.get(mount["name"], {})
                    for target, mount in mounts.items()
                )

            # The pod's own name, as Kubernetes expands $(POD_NAME) in env and args.
            pod = f"{name}-0"
            # Variables from Secrets are only named here (an empty value is unset, as for
            # click); their values are the operator's.
            env = {
                e["name"]: e.get("value", "").replace("$(POD_NAME)", pod)
                for e in container.get("env", [])
            }
            args = [arg.replace("$(POD_NAME)", pod) for arg in container["args"]]
            problems += service_problems(where, args, env, config_file, mounted)
            try:
                path = resolve_command(args)[0]
            except LookupError:
                path = ""
            commands[name] = path
            ports = {port["name"]: port["containerPort"] for port in container["ports"]}
            config = config_file(args[args.index("--config") + 1]) if "--config" in args else None
            settings = tomllib.loads(config.read_text()) if config else {}
            flags = dict(arg.removeprefix("--").split("=", 1) for arg in args if "=" in arg)
            listen = settings.get("listen") or flags.get("listen", "")
            for probe, probe_path in (
                ("readinessProbe", "/ready" if path in SERVES_READY else "/health"),
                ("livenessProbe", "/health"),
            ):
                http = container.get(probe, {}).get("httpGet", {})
                port = ports.get(http.get("port"), http.get("port"))
                if http.get("path") != probe_path or not listen.endswith(f":{port}"):
                    problems.append(
                        f"{where}: {probe} is not GET {probe_path} on the port it listens on"
                    )
            # A node's identity is its key: from a Secret, so a new pod is the same node.
            if path in ("node-run", "node-serve"):
                node_key = env.get("FAIRSTREAM_NODE_KEY") or flags.get("node-key", "")
                if not from_secret(node_key):
                    problems.append(f"{where}: its node key is not from a Secret")
    for kind, names in (
        ("node-run", "region workers"),
        ("node-serve", "region frontends"),
        ("directory-serve", "directory"),
        ("publishing-serve", "publishing service"),
    ):
        if kind not in commands.values():
            problems.append(f"k8s: no {names} ({kind})")
    for name, workload in workloads.items():
        if commands.get(name) == "node-run" and workload["kind"] != "StatefulSet":
            problems.append(f"k8s {name}: the workers are a {workload['kind']}, not a StatefulSet")
    if not by_kind.get("Service"):
        problems.append("k8s: no Service")
    return problems


def schema_problems(directory: Path) -> list[str]:
    """Every resource against the Kubernetes API's schemas (unknown fields refused)."""
    problems = []
    for document in k8s_documents(directory / "k8s"):
        where = f"k8s {document.get('kind')} {document.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            located = "/".join(str(part) for part in exc.path)
            problems.append(f"{where}: {located}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{where}: no schema for it in Kubernetes {KUBERNETES_VERSION}: {exc}")
    return problems


# ---------------------------------------------------------------------------
# mirrormaker2.properties, kafka/init.sh, the Dockerfile
# ---------------------------------------------------------------------------


def mirror_maker_problems(directory: Path) -> list[str]:
    properties = load_properties(directory / "mirrormaker2.properties")
    problems = []
    source, target = (c.strip() for c in properties["clusters"].split(","))
    topics = {t.strip() for t in properties[f"{source}->{target}.topics"].split(",")}
    if topics != CODE_TOPICS:
        problems.append(
            f"mm2: mirrors {sorted(topics)}, the code's topics are {sorted(CODE_TOPICS)}"
        )
    if properties.get(f"{source}->{target}.enabled") != "true":
        problems.append(f"mm2: {source}->{target} is not enabled")
    if properties.get(f"{target}->{source}.enabled") != "false":
        problems.append(f"mm2: {target}->{source} must be off: identity names would loop")
    policy = "org.apache.kafka.connect.mirror.IdentityReplicationPolicy"
    if properties.get("replication.policy.class") != policy:
        problems.append("mm2: topic names change without IdentityReplicationPolicy")
    for cluster in (source, target):
        if properties.get(f"{cluster}.security.protocol") != "SASL_SSL":
            problems.append(f"mm2: {cluster} is not reached over SASL_SSL")
        if properties.get(f"{cluster}.sasl.mechanism") not in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            problems.append(f"mm2: {cluster} does not log in with SCRAM")
        if 'password="${file:' not in properties.get(f"{cluster}.sasl.jaas.config", ""):
            problems.append(f"mm2: {cluster}'s password is not read from a file")
    return problems


def kafka_init_problems(directory: Path) -> list[str]:
    found = re.findall(
        r"^topic (\S+) (\d+)(.*)$", (directory / "kafka" / "init.sh").read_text(), re.M
    )
    created = {name: options for name, _, options in found}
    counts = {name: int(count) for name, count, _ in found}
    problems = []
    # The code's partition counts, but the releases topic's (the operator's choice): the
    # downloads topic's is what spreads regions' counts (schemas.partitioning).
    wanted = Topics().partitions(counts.get(Topics().releases, 1))
    for name, count in counts.items():
        if name in wanted and count != wanted[name]:
            problems.append(f"init.sh: {name} has {count} partitions, the code's {wanted[name]}")
    views = {topic for topic in created if topic.startswith(Topics().view_prefix)}
    if set(created) - views != CODE_TOPICS:
        problems.append(f"init.sh: creates {sorted(created)}, the code's are {sorted(CODE_TOPICS)}")
    if views != {Topics().view("eu"), Topics().view("directory")}:
        problems.append(
            f"init.sh: creates the view topics {sorted(views)}, not eu's and the directory's"
        )
    for topic, options in created.items():
        compacted = "cleanup.policy=compact" in options
        if compacted != (topic in Topics().compacted or topic in views):
            problems.append(f"init.sh: {topic} is {'' if compacted else 'not '}compacted")
    return problems


def dockerfile_problems(directory: Path) -> list[str]:
    text = (directory / "Dockerfile").read_text()
    problems = [
        problem
        for image in re.findall(r"^FROM (\S+)", text, re.M)
        if (problem := image_problem("Dockerfile", image)) is not None
    ]
    if "COPY pyproject.toml uv.lock" not in text or "uv sync --frozen --no-dev" not in text:
        problems.append("Dockerfile: does not install from uv.lock with uv sync --frozen")
    if not re.search(r"uv==\d+\.\d+\.\d+", text):
        problems.append("Dockerfile: uv is not pinned")
    return problems


# ---------------------------------------------------------------------------
# The manifests as they are
# ---------------------------------------------------------------------------


def test_every_manifest_parses() -> None:
    parsed = []
    for path in sorted(PRODUCTION.rglob("*")):
        if path.suffix in (".yaml", ".yml"):
            parsed += [path for document in yaml.safe_load_all(path.read_text()) if document]
        elif path.suffix == ".toml":
            parsed.append(path) if tomllib.loads(path.read_text()) else None
        elif path.suffix == ".properties":
            parsed.append(path) if load_properties(path) else None
    names = {path.relative_to(PRODUCTION).as_posix() for path in parsed}
    assert names >= {
        "compose.yaml",
        "config/node-eu.toml",
        "config/directory.toml",
        "config/publishing.toml",
        "k8s/node-eu.yaml",
        "k8s/frontend-eu.yaml",
        "k8s/directory.yaml",
        "k8s/publishing.yaml",
        "k8s/minio.yaml",
        "k8s/pdb.yaml",
        "k8s/service.yaml",
        "k8s/configmap.yaml",
        "k8s/kustomization.yaml",
        "kafka/server.properties",
        "mirrormaker2.properties",
    }


def test_compose_runs_real_commands_with_known_settings_and_pinned_official_images() -> None:
    assert compose_problems(PRODUCTION) == []


def test_compose_runs_every_service_the_brief_asks_for() -> None:
    compose = yaml.safe_load((PRODUCTION / "compose.yaml").read_text())
    commands = {
        name: resolve_command(service["command"])[0]
        for name, service in compose["services"].items()
        if "build" in service
    }
    assert commands == {
        "publishing": "publishing-serve",
        "directory": "directory-serve",
        "node-eu-1": "node-run",
        "node-eu-2": "node-run",
    }
    kafka = [s for s in compose["services"].values() if s["image"].startswith("apache/kafka")]
    assert len(kafka) == 4  # three nodes and the one-shot init


MINIO = PRODUCTION / "minio"


def minio_users() -> list[str]:
    """The MinIO users (and buckets) the users script creates."""
    script = (MINIO / "create-users.sh").read_text()
    found = re.search(r'^USERS="([^"]+)"$', script, re.MULTILINE)
    assert found is not None, "create-users.sh no longer names its USERS"
    return found[1].split()


def test_compose_gives_each_service_a_minio_user_of_its_own_never_the_root() -> None:
    services = yaml.safe_load((PRODUCTION / "compose.yaml").read_text())["services"]
    users = minio_users()
    with_store = []
    for name, service in services.items():
        environment = {key: str(value) for key, value in service.get("environment", {}).items()}
        if name not in ("minio", "minio-users"):
            assert not [v for v in environment.values() if "MINIO_ROOT" in v], name
        url = environment.get("FAIRSTREAM_STORE_URL")
        if url is None:
            continue
        with_store.append(name)
        user = urlsplit(interpolated(url)).username
        assert user in users, f"compose {name}: store user {user} is made by no script"
        depends = service["depends_on"]["minio-users"]["condition"]
        assert depends == "service_completed_successfully", name
    assert with_store, "no service reads the store"
    one_shot = services["minio-users"]
    assert sorted(one_shot["secrets"]) == sorted(users)
    for user in users:
        policy = json.loads((MINIO / f"{user}.json").read_text())
        resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
        assert resources == {f"arn:aws:s3:::{user}", f"arn:aws:s3:::{user}/*"}, user


def test_compose_and_k8s_create_the_minio_users_with_the_same_script_and_policies() -> None:
    [policies] = [
        document
        for document in yaml.safe_load_all((PRODUCTION / "k8s" / "minio.yaml").read_text())
        if document and document["kind"] == "ConfigMap"
    ]
    assert set(policies["data"]) == {path.name for path in MINIO.iterdir()}
    for name, text in policies["data"].items():
        assert text == (MINIO / name).read_text(), f"k8s/minio.yaml {name} differs from minio/"


def test_k8s_runs_a_real_command_with_known_settings_and_probes_on_health(tmp_path: Path) -> None:
    assert k8s_problems(PRODUCTION, tmp_path) == []


def test_every_k8s_resource_is_valid_against_the_kubernetes_schemas() -> None:
    assert len(k8s_documents(PRODUCTION / "k8s")) >= 15
    assert schema_problems(PRODUCTION) == []


def test_mirror_maker_mirrors_the_codes_topics_with_their_names() -> None:
    assert mirror_maker_problems(PRODUCTION) == []


def test_kafka_init_creates_the_codes_topics() -> None:
    assert kafka_init_problems(PRODUCTION) == []


def test_the_image_is_built_from_an_official_python_with_uv_lock() -> None:
    assert dockerfile_problems(PRODUCTION) == []


def test_secrets_are_never_committed() -> None:
    ignored = (PRODUCTION / ".gitignore").read_text().split()
    assert {"secrets/", "trust/", ".env"} <= set(ignored)
    for path in PRODUCTION.rglob("*"):
        assert path.suffix not in (".key", ".p12", ".pem", ".jks"), path


# ---------------------------------------------------------------------------
# Each check fails on a broken copy
# ---------------------------------------------------------------------------


BROKEN = [
    # (file, text there, replacement, the check, what it must say)
    (
        "compose.yaml",
        "\n    volumes:\n      - ./config/directory.toml",
        "\n      FAIRSTREAM_REGOIN: eu\n    volumes:\n      - ./config/directory.toml",
        "compose",
        "FAIRSTREAM_REGOIN is no setting of `fairstream directory serve`",
    ),
    (
        "compose.yaml",
        "image: minio/minio:RELEASE.2025-04-22T22-12-26Z\n    restart",
        "image: minio/minio:latest\n    restart",
        "compose",
        "minio/minio:latest is not pinned to a release",
    ),
    (
        "compose.yaml",
        "  image: apache/kafka:4.0.1\n  restart: unless-stopped",
        "  image: bitnami/kafka:4.0.1\n  restart: unless-stopped",
        "compose",
        "bitnami/kafka:4.0.1 is not an official image",
    ),
    (
        "compose.yaml",
        '["publishing", "serve", "--config"',
        '["publishing", "serv", "--config"',
        "compose",
        "`fairstream publishing serv` is not a command",
    ),
    (
        "compose.yaml",
        '["directory", "serve", "--config", "/etc/fairstream/directory.toml"]',
        '["directory", "serve", "--config", "/etc/fairstream/directory.toml", "--regoin", "eu"]',
        "compose",
        "No such option: --regoin",
    ),
    (
        "compose.yaml",
        "      - ./trust/root.avro:/etc/fairstream/root.avro:ro\n      - publishing-data",
        "      - ./trust/root.avro:/etc/fairstream/trust.avro:ro\n      - publishing-data",
        "compose",
        "root names /etc/fairstream/root.avro, which is not mounted in the container",
    ),
    (
        "compose.yaml",
        '@kafka-1:9093,kafka-2:9093,kafka-3:9093?mechanism=SCRAM-SHA-512&ca=/run/secrets/kafka-ca.pem"\n    volumes:\n      - ./config/publishing',
        '@kafka-1:9093,kafka-2:9093,kafka-3:9093?ca=/run/secrets/kafka-ca.pem"\n    volumes:\n      - ./config/publishing',
        "compose",
        "names no mechanism",
    ),
    (
        "config/node-eu.toml",
        'region = "eu"',
        'regoin = "eu"',
        "compose",
        "regoin (file) is not a setting of this command; did you mean 'region'?",
    ),
    (
        "config/directory.toml",
        "stale_after = 30.0",
        'stale_after = "30 s"',
        "compose",
        "stale_after (file) must be a number",
    ),
    (
        "config/publishing.toml",
        'key = ["/run/secrets/publisher.key"]',
        'key = ["/run/secrets/drupal.key"]',
        "compose",
        "key names /run/secrets/drupal.key, which is not mounted in the container",
    ),
    (
        "k8s/configmap.yaml",
        '    quota = "20G"',
        '    quota = "lots"',
        "k8s",
        "quota (file): size 'lots' is not a number of bytes",
    ),
    (
        "k8s/node-eu.yaml",
        "- name: FAIRSTREAM_STORE_URL_FILE",
        "- name: FAIRSTREAM_STORE",
        "k8s",
        "FAIRSTREAM_STORE is no setting of `fairstream node run`",
    ),
    (
        "k8s/node-eu.yaml",
        "image: fairstream:0.1.0",
        "image: fairstream:latest",
        "k8s",
        "fairstream:latest is not fairstream:",
    ),
    (
        "k8s/node-eu.yaml",
        "            httpGet:\n              path: /ready\n              port: http\n            periodSeconds: 10",
        "            httpGet:\n              path: /health\n              port: http\n            periodSeconds: 10",
        "k8s",
        "readinessProbe is not GET /ready",
    ),
    (
        "k8s/node-eu.yaml",
        '["node", "run", "--config"',
        '["node", "runs", "--config"',
        "k8s",
        "`fairstream node runs` is not a command",
    ),
    (
        "k8s/node-eu.yaml",
        "kind: StatefulSet\nmetadata:\n  name: fairstream-node-eu",
        "kind: Deployment\nmetadata:\n  name: fairstream-node-eu",
        "k8s",
        "the workers are a Deployment, not a StatefulSet",
    ),
    (
        "k8s/node-eu.yaml",
        "              value: /etc/fairstream/node-keys/$(POD_NAME).key",
        "              value: /var/lib/fairstream/node.key",
        "k8s",
        "its node key is not from a Secret",
    ),
    (
        "k8s/node-eu.yaml",
        "              value: /etc/fairstream/credentials/store-url",
        "              value: /etc/fairstream/store-url",
        "k8s",
        "FAIRSTREAM_STORE_URL_FILE names /etc/fairstream/store-url, which is not mounted",
    ),
    (
        "k8s/frontend-eu.yaml",
        "            - --root=/etc/fairstream/trust/root.avro",
        "            - --root=/etc/fairstream/root.avro",
        "k8s",
        "`fairstream node serve` names /etc/fairstream/root.avro, which is not mounted",
    ),
    (
        "k8s/frontend-eu.yaml",
        "            - --region=eu",
        "            - --regoin=eu",
        "k8s",
        "No such option: --regoin",
    ),
    (
        "k8s/pdb.yaml",
        "      app.kubernetes.io/name: fairstream-directory\n",
        "      app.kubernetes.io/name: fairstream-directroy\n",
        "k8s",
        "k8s fairstream-directory: 2 replicas and no PodDisruptionBudget",
    ),
    (
        "k8s/minio.yaml",
        "image: minio/minio:RELEASE.2025-04-22T22-12-26Z\n          args",
        "image: minio/minio:latest\n          args",
        "k8s",
        "minio/minio:latest is not pinned to a release",
    ),
    (
        "k8s/publishing.yaml",
        "  replicas: 1\n",
        "  replicas: 1\n  replica: 1\n",
        "schema",
        "Additional properties are not allowed ('replica' was unexpected)",
    ),
    (
        "k8s/node-eu.yaml",
        "              containerPort: 8081",
        "              containerPort: http",
        "schema",
        "'http' is not of type 'integer'",
    ),
    (
        "k8s/pdb.yaml",
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: fairstream-node-eu",
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata:\n  name: fairstream-node-eu",
        "schema",
        "no schema for it in Kubernetes",
    ),
    (
        "mirrormaker2.properties",
        ", fair.status\n",
        "\n",
        "mm2",
        "the code's topics are",
    ),
    (
        "mirrormaker2.properties",
        "= org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        "= org.apache.kafka.connect.mirror.DefaultReplicationPolicy",
        "mm2",
        "topic names change",
    ),
    (
        "kafka/init.sh",
        "topic fair.status 1 --config cleanup.policy=compact",
        "topic fair.status 1",
        "init",
        "fair.status is not compacted",
    ),
    (
        "kafka/init.sh",
        "topic fair.downloads 64 ",
        "topic fair.downloads 1 ",
        "init",
        "fair.downloads has 1 partitions, the code's 64",
    ),
    (
        "Dockerfile",
        "FROM python:3.11.12-slim-bookworm AS build",
        "FROM python:3.11-slim AS build",
        "dockerfile",
        "python:3.11-slim is not pinned to a release",
    ),
]


@pytest.mark.parametrize(
    ("file", "text", "replacement", "check", "expected"),
    BROKEN,
    ids=[f"{b[0]}:{b[4][:40]}" for b in BROKEN],
)
def test_each_check_catches_a_broken_copy(
    tmp_path: Path, file: str, text: str, replacement: str, check: str, expected: str
) -> None:
    copy = tmp_path / "production"
    shutil.copytree(PRODUCTION, copy)
    original = (copy / file).read_text()
    assert original.count(text) == 1, f"{file} no longer holds {text!r}: update this test"
    (copy / file).write_text(original.replace(text, replacement))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    checks: dict[str, Callable[[], list[str]]] = {
        "compose": lambda: compose_problems(copy),
        "k8s": lambda: k8s_problems(copy, scratch),
        "schema": lambda: schema_problems(copy),
        "mm2": lambda: mirror_maker_problems(copy),
        "init": lambda: kafka_init_problems(copy),
        "dockerfile": lambda: dockerfile_problems(copy),
    }

    found = checks[check]()

    assert any(expected in problem for problem in found), found
