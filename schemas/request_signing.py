"""The publishing service's request-signing format: a contract between its clients and
``services.publishing.request_auth``, which verifies it (docs/publishing.md, "Signing a request").

A request to the publishing service carries no password: it is signed with an Ed25519 key
that the trust root delegates for the package's namespace.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import nacl.signing

from schemas.signing import SigningKey

#: Prefix of every request-signing message. It differs from the events' prefix
#: (``fairstream/signed-event/v1\x00``): a request signature is never valid as an
#: event signature, nor the reverse, even though the same keys may make both.
REQUEST_DOMAIN = b"fairstream/publish-request/v1\x00"
KEY_ID_HEADER = "Fairstream-Key-Id"
DATE_HEADER = "Fairstream-Date"
SIGNATURE_HEADER = "Fairstream-Signature"
#: Optional: the body's sha256 as signed, so the service checks the signature
#: before it reads (and spools) a large body.
CONTENT_SHA256_HEADER = "Fairstream-Content-Sha256"

_METHOD = re.compile(r"[A-Z]+")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


def request_message(method: str, path: str, date: str, body_sha256: str) -> bytes:
    """The exact bytes a request's signature covers.

    ``REQUEST_DOMAIN + METHOD + "\\n" + PATH + "\\n" + DATE + "\\n" + hex sha256 of the body``,
    all ASCII. ``path`` is the request target as sent (path, and ``?query`` if
    any), ``date`` the ``Fairstream-Date`` header exactly as sent. Raises
    ``ValueError`` for a part that could make two requests sign the same bytes
    (a line break, a space, non-ASCII) or a digest that is not 64 lower-case hex.
    """
    if not _METHOD.fullmatch(method):
        raise ValueError(f"method {method!r} is not upper-case ASCII letters")
    if not _PRINTABLE.fullmatch(path) or not path.startswith("/"):
        raise ValueError(f"path {path!r} is not a request target starting with / (ASCII, no space)")
    if not _PRINTABLE.fullmatch(date):
        raise ValueError(f"date {date!r} is not printable ASCII without spaces")
    if not re.fullmatch(r"[0-9a-f]{64}", body_sha256):
        raise ValueError("body_sha256 is not 64 lower-case hex digits")
    return REQUEST_DOMAIN + "\n".join((method, path, date, body_sha256)).encode("ascii")


def format_request_date(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, as clients send it: ``2024-05-01T12:00:00.123Z``.

    Milliseconds keep two identical requests made within one second distinct:
    the service refuses a signature it has seen (replay). Raises ``ValueError``
    for a naive datetime.
    """
    if moment.tzinfo is None:
        raise ValueError("the request date must be timezone-aware (UTC)")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def sign_request(
    key: SigningKey, method: str, path: str, body_sha256: str, *, now: datetime
) -> dict[str, str]:
    """The authentication headers of one request, signed by ``key`` at ``now``.

    Besides the three required headers it announces the body's digest
    (``Fairstream-Content-Sha256``): the service then refuses a forged request
    before reading its body.
    """
    date = format_request_date(now)
    message = request_message(method, path, date, body_sha256)
    signature = nacl.signing.SigningKey(key.seed).sign(message).signature
    return {
        KEY_ID_HEADER: key.public_key.keyid,
        DATE_HEADER: date,
        SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii"),
        CONTENT_SHA256_HEADER: body_sha256,
    }
