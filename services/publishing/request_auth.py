"""Who may publish: a request's Ed25519 signature checked against the trust root (pure, no
IO; the clock is a parameter), and the namespaces the service's own keys can sign for.

The request-signing format is ``schemas.request_signing`` (docs/publishing.md, "Signing a
request").
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import nacl.exceptions
import nacl.signing

from schemas.errors import ConfigurationError
from schemas.events import HEX_SHA256
from schemas.request_signing import (
    CONTENT_SHA256_HEADER,
    DATE_HEADER,
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    request_message,
)
from schemas.signing import PublicKey, SigningKey
from schemas.trust import Delegation, TrustRoot, namespace_of, short_ids
from services.publishing.errors import ForbiddenRequestError, UnauthenticatedRequestError

#: How far a request's date may be from the service's clock, either way; a
#: signature is also remembered this long after its date, so it is accepted once.
REPLAY_WINDOW = timedelta(minutes=5)
_RFC3339_UTC = re.compile(
    r"(?P<seconds>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,6}))?(?:Z|\+00:00)"
)
_Body = TypeVar("_Body")


@dataclass(frozen=True)
class RequestCredentials:
    """A request's authentication headers, parsed, with the trusted key they name."""

    keyid: str
    date: str
    signed_at: datetime
    signature: bytes
    key: PublicKey
    #: The body's sha256 as the client announced it (optional header), so that the
    #: signature can be checked before a large body is read.
    content_sha256: str | None = None


class RequestVerifier:
    """Authenticates signed requests against a trust root, and remembers signatures (replay).

    ``credentials`` checks the headers alone (before the body is read),
    ``verify`` the signature over method, path, date and body digest (and
    ``verify_body`` does it around reading the body), and ``authorize`` that
    the key is delegated for the package's namespace. The first three raise
    ``UnauthenticatedRequestError`` (401), the last ``ForbiddenRequestError`` (403).
    """

    def __init__(
        self,
        root: TrustRoot,
        *,
        clock: Callable[[], datetime],
        window: timedelta = REPLAY_WINDOW,
    ) -> None:
        self.root = root
        self._clock = clock
        self._window = window
        # (keyid, signature) -> until when it must be remembered (its date + window);
        # after that the date check refuses the request anyway.
        self._seen: dict[tuple[str, bytes], datetime] = {}

    def credentials(self, headers: Mapping[str, str]) -> RequestCredentials:
        """The parsed authentication headers, if present, well-formed, fresh and of a known key."""
        values = _single_headers(headers, (KEY_ID_HEADER, DATE_HEADER, SIGNATURE_HEADER))
        missing = [name for name, value in values.items() if value is None]
        if missing:
            raise UnauthenticatedRequestError(
                "unsigned",
                f"the request lacks the {', '.join(missing)} header(s): every request is signed "
                "with an Ed25519 key the trust root delegates for the package's namespace (see "
                "docs/publishing.md, 'Signing a request'), e.g. with `fairstream publishing`",
            )
        keyid, date, signature_text = (
            str(values[KEY_ID_HEADER]),
            str(values[DATE_HEADER]),
            str(values[SIGNATURE_HEADER]),
        )
        signed_at = self._check_date(date)
        try:
            signature = base64.b64decode(signature_text, validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        if len(signature) != 64:
            raise UnauthenticatedRequestError(
                "bad-signature",
                f"{SIGNATURE_HEADER} is not the standard base64 of a 64-byte Ed25519 signature; "
                "send base64(Ed25519-sign(key, message)) as docs/publishing.md describes",
            )
        key = self.root.keys.get(keyid)
        if key is None:
            raise UnauthenticatedRequestError(
                "unknown-key",
                f"key id {keyid[:16]!r} is not in trust root v{self.root.version}: sign with a "
                "key the root delegates for the namespace (the key id is the hex sha256 of the "
                "raw public key), or ask the root key holders to delegate yours",
            )
        announced = _single_headers(headers, (CONTENT_SHA256_HEADER,))[CONTENT_SHA256_HEADER]
        if announced is not None and not HEX_SHA256.fullmatch(announced):
            raise UnauthenticatedRequestError(
                "bad-signature",
                f"{CONTENT_SHA256_HEADER} is not the lower-case hex sha256 of the body; send "
                "the digest the signature covers, or leave the header out",
            )
        return RequestCredentials(keyid, date, signed_at, signature, key, announced)

    async def verify_body(
        self,
        credentials: RequestCredentials,
        method: str,
        path: str,
        read_body: Callable[[], Awaitable[tuple[_Body, str]]],
    ) -> _Body:
        """Read the body with ``read_body`` (which returns it and its sha256) and verify the
        request; returns the body.

        With an announced ``Fairstream-Content-Sha256`` the signature is checked
        first, so a forged request is refused before its body is read; the body
        must then hash to the announced digest.
        """
        announced = credentials.content_sha256
        if announced is None:
            body, digest = await read_body()
            self.verify(credentials, method, path, digest)
            return body
        self.verify(credentials, method, path, announced)
        body, digest = await read_body()
        if digest != announced:
            raise UnauthenticatedRequestError(
                "bad-signature",
                f"the body's sha256 is {digest[:16]}…, not the {announced[:16]}… the request "
                f"announced in {CONTENT_SHA256_HEADER} and signed: the body was altered or cut "
                "in transit; send the request again, signed anew",
            )
        return body

    def verify(
        self, credentials: RequestCredentials, method: str, path: str, body_sha256: str
    ) -> None:
        """Check the signature over the request, then that it was not used before."""
        try:
            message = request_message(method, path, credentials.date, body_sha256)
            nacl.signing.VerifyKey(credentials.key.raw).verify(message, credentials.signature)
        except (nacl.exceptions.BadSignatureError, ValueError) as exc:
            raise UnauthenticatedRequestError(
                "bad-signature",
                f"the signature by key {credentials.keyid[:16]} does not verify over {method} "
                f"{path}, date {credentials.date} and body sha256 {body_sha256[:16]}…: the "
                "request was altered after signing or signed over other bytes; sign the exact "
                "path, the date header as sent and the sha256 of the body as sent",
            ) from exc
        now = self._clock()
        self._seen = {seen: until for seen, until in self._seen.items() if until > now}
        used = (credentials.keyid, credentials.signature)
        if used in self._seen:
            raise UnauthenticatedRequestError(
                "replayed",
                f"this request (key {credentials.keyid[:16]}, date {credentials.date}) was "
                "received before: a signed request is accepted once; sign every request and "
                "every retry anew, with a fresh date",
            )
        self._seen[used] = credentials.signed_at + self._window

    def authorize(self, credentials: RequestCredentials, package: str) -> Delegation:
        """The delegation of ``package``'s namespace, if it lists the request's key."""
        namespace = namespace_of(package)
        delegation = self.root.delegation_for(package)
        if delegation is None:
            raise ForbiddenRequestError(
                "undelegated-namespace",
                f"{namespace} is delegated to no publisher by trust root v{self.root.version}; "
                "nobody may publish there until the root key holders delegate it",
            )
        if credentials.keyid not in delegation.keyids:
            elsewhere = sorted(
                d.namespace for d in self.root.delegations if credentials.keyid in d.keyids
            )
            where = f"it is delegated for {', '.join(elsewhere)}" if elsewhere else "not delegated"
            raise ForbiddenRequestError(
                "undelegated-key",
                f"key {credentials.keyid[:16]} may not publish for {namespace} in trust root "
                f"v{self.root.version} ({where}); sign with one of {delegation.publisher}'s keys "
                f"({short_ids(delegation.keyids)}) or ask the root key holders to delegate yours",
            )
        return delegation

    def _check_date(self, date: str) -> datetime:
        match = _RFC3339_UTC.fullmatch(date)
        if match is None:
            raise UnauthenticatedRequestError(
                "bad-date",
                f"{DATE_HEADER} {date!r} is not an RFC 3339 UTC time like "
                "2024-05-01T12:00:00.123Z (Z or +00:00, at most 6 fraction digits)",
            )
        try:
            signed_at = datetime.fromisoformat(match["seconds"]).replace(
                microsecond=int((match["fraction"] or "0").ljust(6, "0")), tzinfo=UTC
            )
        except ValueError as exc:
            raise UnauthenticatedRequestError(
                "bad-date", f"{DATE_HEADER} {date!r} is not a valid time: {exc}"
            ) from exc
        now = self._clock()
        skew = (signed_at - now).total_seconds()
        if abs(skew) > self._window.total_seconds():
            direction = "ahead of" if skew > 0 else "behind"
            raise UnauthenticatedRequestError(
                "stale-date",
                f"{DATE_HEADER} {date} is {abs(skew):.0f} s {direction} the service's clock "
                f"({now.isoformat()}), more than the {self._window.total_seconds():.0f} s "
                "allowed; sync the client's clock (NTP) and sign the request again",
            )
        return signed_at


def _single_headers(headers: Mapping[str, str], names: Iterable[str]) -> dict[str, str | None]:
    """The value of each named header (case-insensitive), None if absent; refuses repeats."""
    found: dict[str, list[str]] = {}
    for name, value in headers.items():
        found.setdefault(name.lower(), []).append(value)
    values: dict[str, str | None] = {}
    for name in names:
        given = found.get(name.lower(), [])
        if len(given) > 1:
            raise UnauthenticatedRequestError(
                "bad-signature", f"the {name} header is given {len(given)} times; send it once"
            )
        values[name] = given[0] if given else None
    return values


def signers_by_namespace(
    root: TrustRoot, keys: Sequence[SigningKey]
) -> dict[str, list[SigningKey]]:
    """The namespaces ``keys`` can sign for on their own (a threshold of delegated keys), and
    which of the keys sign there.

    Raises ``ConfigurationError`` if they meet no delegation's threshold.
    """
    served: dict[str, list[SigningKey]] = {}
    for delegation in root.delegations:
        delegated = {k.public_key.keyid: k for k in keys if k.public_key.keyid in delegation.keyids}
        if len(delegated) >= delegation.threshold:
            served[delegation.namespace] = list(delegated.values())
    if not served:
        raise ConfigurationError(
            f"the service's keys ({short_ids(k.public_key.keyid for k in keys)}) meet the "
            f"threshold of no namespace in trust root v{root.version} (delegated: "
            f"{', '.join(f'{d.namespace}@{d.threshold}' for d in root.delegations) or 'none'}); "
            "give the publisher's private keys with --key, or pin a root that delegates them"
        )
    return served
