"""A peer network as the operator configures it: ``--peer`` parsed and checked (``PeerSettings``),
and the namespaces the region serves for canonical peers.

A peer is an independently operated stream (another organisation's cluster,
its own trust root), followed under a per-peer policy: canonical, source or refuse
(``streams.peer_verdict`` says what each record may do; ``streams.peering`` follows it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from connectors.kafka_connection import BrokerLocation
from connectors.store import redact_url
from schemas.errors import ConfigurationError, MalformedEventError, RejectedError
from schemas.names import VENDOR_PATTERN, check_jurisdiction
from schemas.trust import TrustRoot, load_pinned_root
from streams.policy import PEER_POSITION_PREFIX, ReplicationPolicy

#: Namespaces no peer can ever be canonical for, whatever our root says.
PROTECTED_NAMESPACES = ("drupal/*",)

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
# A literal vendor, then a glob of package names: ``typo3/*``, ``acme/intranet_*``.
_NAMESPACE_GLOB = re.compile(rf"(?P<vendor>{VENDOR_PATTERN})/[a-z0-9_.*?!\[\]-]+")
_EXAMPLE = (
    "typo3:policy=canonical,broker=kafka://kafka.typo3.example:9092,topic=fair.releases,"
    "root=peers/typo3-root.avro,namespace=typo3/*,jurisdiction=EU"
)
_KEYS = ("policy", "broker", "topic", "root", "namespace", "jurisdiction")
_KEY_WORD = re.compile(r"[A-Za-z_-]+")


class PeerPolicy(StrEnum):
    """What a node makes of one peer's stream."""

    #: Applied to our metadata, for the namespaces we accept from the peer (its root delegates).
    CANONICAL = "canonical"
    #: Never applied; a release's artifact URL becomes one more download source for its sha256.
    SOURCE = "source"
    #: Nothing used; every record is recorded on our rejected topic.
    REFUSE = "refuse"


@dataclass(frozen=True)
class PeerSettings:
    """One peer network as the operator configured it (``--peer``).

    Construction raises ``ConfigurationError`` listing every problem: a name
    that is not a lower-case slug, a broker URL that is not ``kafka://``, a bad
    topic name, a missing or invalid pinned root (any policy but ``refuse``
    needs one), namespaces on a non-canonical peer or none on a canonical one,
    a namespace that is not ``vendor/glob``, is protected (``drupal/*``) or
    that the peer's root does not delegate, a jurisdiction that is not a code
    (``schemas.names.JURISDICTION``).
    """

    name: str
    broker_url: str = field(repr=False)  # may carry SASL credentials
    topic: str
    #: The peer's own signed trust root, pinned like ours (empty for a refused peer).
    pinned_root: bytes
    policy: PeerPolicy
    #: Globs of the packages accepted from the peer as canonical (``typo3/*``).
    namespaces: tuple[str, ...] = ()
    #: Where the peer's origin (and so every zip of its releases) is, as the operator knows
    #: it; None: not declared, and no sovereign policy ever fetches from it or sends there.
    jurisdiction: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "namespaces", tuple(self.namespaces))
        problems: list[str] = []
        if not _NAME.fullmatch(self.name):
            problems.append("the name must be lower-case letters, digits and dashes (like 'typo3')")
        try:
            BrokerLocation.from_url(self.broker_url)
        except ConfigurationError as exc:
            problems.append(
                str(exc).split(";")[0] + "; write broker=kafka://HOST:PORT (or kafka+ssl://, "
                "kafka+sasl-ssl://USER:PASSWORD@HOST:PORT?mechanism=SCRAM-SHA-512)"
            )
        if not _TOPIC.fullmatch(self.topic):
            problems.append(f"topic {self.topic!r} is not a Kafka topic name")
        if self.jurisdiction is not None:
            problems += _jurisdiction_problems(self.jurisdiction)
        root = self._check_root(problems)
        problems += self._namespace_problems(root)
        if problems:
            raise ConfigurationError(f"peer {self.name!r}: " + "; ".join(problems))

    def _check_root(self, problems: list[str]) -> TrustRoot | None:
        if not self.pinned_root:
            if self.policy is not PeerPolicy.REFUSE:
                problems.append(
                    f"policy={self.policy} needs the peer's signed trust root: add root=FILE"
                )
            return None
        try:
            return load_pinned_root(self.pinned_root)
        except RejectedError as exc:
            problems.append(
                f"its pinned root is not a valid signed trust root ({exc}); pin the root file "
                "the peer's root key holders published"
            )
            return None

    def _namespace_problems(self, root: TrustRoot | None) -> list[str]:
        if self.policy is not PeerPolicy.CANONICAL:
            if self.namespaces:
                return [
                    f"namespace= is only used with policy=canonical (this peer is "
                    f"policy={self.policy}); drop it or make the peer canonical"
                ]
            return []
        if not self.namespaces:
            return [
                "policy=canonical needs the namespaces accepted from the peer: "
                "add namespace=VENDOR/* (e.g. namespace=typo3/*)"
            ]
        problems = []
        for pattern in self.namespaces:
            match = _NAMESPACE_GLOB.fullmatch(pattern)
            if match is None:
                problems.append(
                    f"namespace {pattern!r} is not a lower-case vendor followed by / and a "
                    "glob; write it like typo3/*"
                )
                continue
            namespace = f"{match['vendor']}/*"
            if namespace in PROTECTED_NAMESPACES:
                problems.append(
                    f"namespace {pattern!r}: no peer can be canonical for {namespace}; "
                    "only its own publishers are"
                )
            elif root is not None and all(d.namespace != namespace for d in root.delegations):
                delegated = ", ".join(d.namespace for d in root.delegations) or "none"
                problems.append(
                    f"namespace {pattern!r}: the peer's trust root v{root.version} delegates "
                    f"no {namespace} (it delegates: {delegated}), so nothing of it could verify"
                )
        return problems

    def root(self) -> TrustRoot:
        """The peer's pinned trust root; raises ``ConfigurationError`` for a refused peer
        configured without one."""
        if not self.pinned_root:
            raise ConfigurationError(f"peer {self.name!r} has no pinned trust root")
        return load_pinned_root(self.pinned_root)

    @property
    def source_label(self) -> str:
        """The name its download sources go under in the replica registry."""
        return f"peer:{self.name}"

    @property
    def rejected_topic(self) -> str:
        """The topic named in our rejection records of its records."""
        return f"peer:{self.name}/{self.topic}"

    def position(self, partition: int, offset: int) -> str:
        """A log position that never collides with one of our own topics."""
        return f"{PEER_POSITION_PREFIX}{self.name}/{self.topic}:{partition}:{offset}"


def _jurisdiction_problems(code: str) -> list[str]:
    try:
        check_jurisdiction(code)
    except MalformedEventError as exc:
        return [f"{exc}; write where the peer's origin is, e.g. jurisdiction=EU"]
    return []


def parse_peer(text: str, read_root: Callable[[Path], bytes]) -> PeerSettings:
    """A peer from its command-line form,
    ``NAME:policy=P,broker=URL,topic=T,root=FILE,namespace=GLOB,jurisdiction=CODE``.

    ``topic`` defaults to ``fair.releases``; ``namespace`` may repeat; without
    ``jurisdiction`` the peer's origin declares none. A part
    without ``=`` continues the value before it, so ``broker=kafka://a:9092,b:9092``
    and ``namespace=typo3/*,neos/*`` work. ``read_root`` reads the root file
    (the CLI's file reader). Raises ``ConfigurationError`` saying what was wrong
    and showing the expected form.
    """
    name, values, policy = _peer_form(text)
    root = read_root(Path(values["root"][0])) if "root" in values else b""
    namespaces = tuple(
        pattern.strip()
        for value in values.get("namespace", [])
        for pattern in value.split(",")
        if pattern.strip()
    )
    return PeerSettings(
        name=name,
        broker_url=values["broker"][0],
        topic=values.get("topic", ["fair.releases"])[0],
        pinned_root=root,
        policy=policy,
        namespaces=namespaces,
        jurisdiction=values["jurisdiction"][0] if "jurisdiction" in values else None,
    )


def check_peer_form(text: str) -> None:
    """Check what of a ``--peer`` spec needs no file (its form, keys, policy and
    jurisdiction), for a configuration written for another machine; raises
    ``ConfigurationError`` as ``parse_peer`` does."""
    name, values, _ = _peer_form(text)
    if "jurisdiction" in values and (problems := _jurisdiction_problems(values["jurisdiction"][0])):
        raise ConfigurationError(f"peer {name!r}: " + "; ".join(problems))


def _peer_form(text: str) -> tuple[str, dict[str, list[str]], PeerPolicy]:
    """A ``--peer`` spec's name, the values of each of its keys, and its policy; raises
    ``ConfigurationError`` (see ``parse_peer``)."""
    name, colon, rest = text.strip().partition(":")
    if not colon or "=" in name or not name:
        raise ConfigurationError(
            f"--peer {redact_url(text)!r} does not start with the peer's name and a colon; "
            f"write it like {_EXAMPLE}"
        )
    values = _peer_values(name, rest)
    try:
        policy = PeerPolicy(values["policy"][0])
    except ValueError:
        choices = ", ".join(p.value for p in PeerPolicy)
        raise ConfigurationError(
            f"--peer {name}: policy={values['policy'][0]!r} is not one of {choices}"
        ) from None
    return name, values, policy


def _peer_values(name: str, rest: str) -> dict[str, list[str]]:
    """The values of each key in ``rest``, a ``--peer`` option after its name and colon;
    raises ``ConfigurationError`` (see ``parse_peer``)."""
    values: dict[str, list[str]] = {}
    key: str | None = None
    for part in rest.split(","):
        field, equals, value = part.partition("=")
        # A part that is no KEY=VALUE continues the value before it: the next host of a
        # broker list (``b:9093?ca=/ca.pem`` holds a ``=`` but no key), or a namespace.
        if not equals or not _KEY_WORD.fullmatch(field.strip()):
            if key is None or not part:
                raise ConfigurationError(
                    f"--peer {name}: {part!r} is not KEY=VALUE; write it like {_EXAMPLE}"
                )
            values[key][-1] += "," + part
            continue
        key = field.strip()
        if key not in _KEYS:
            raise ConfigurationError(
                f"--peer {name}: unknown key {key!r}; the keys are {', '.join(_KEYS)} "
                f"(e.g. {_EXAMPLE})"
            )
        if key in values and key != "namespace":
            raise ConfigurationError(f"--peer {name}: {key}= is given twice; give it once")
        values.setdefault(key, []).append(value.strip())
    for required in ("policy", "broker"):
        if required not in values:
            raise ConfigurationError(
                f"--peer {name}: {required}= is missing; write it like {_EXAMPLE}"
            )
    return values


def with_peer_namespaces(
    policy: ReplicationPolicy, peers: Iterable[PeerSettings]
) -> ReplicationPolicy:
    """``policy`` also serving the namespaces accepted from canonical peers (their
    packages get metadata, and are not answered with a fast 404)."""
    extra = [
        pattern
        for peer in peers
        if peer.policy is PeerPolicy.CANONICAL
        for pattern in peer.namespaces
        if pattern not in policy.include
    ]
    if not extra:
        return policy
    return replace(policy, include=(*policy.include, *dict.fromkeys(extra)))


def with_peer_origins(
    policy: ReplicationPolicy, peers: Iterable[PeerSettings]
) -> ReplicationPolicy:
    """``policy`` knowing the jurisdiction each peer declared for its origin, the jurisdiction
    of the origin of the releases that came from it (``JurisdictionPolicy.origin_of``)."""
    declared = tuple((p.name, p.jurisdiction) for p in peers if p.jurisdiction is not None)
    if not declared:
        return policy
    return replace(policy, jurisdictions=replace(policy.jurisdictions, peer_origins=declared))
