"""Signed requests to the publishing service: the message format, and what the verifier refuses.

No sockets: the verifier is pure, its clock injected. The format is checked
against an independent computation with PyNaCl, as a third-party client would do.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from schemas.errors import ConfigurationError
from schemas.request_signing import (
    CONTENT_SHA256_HEADER,
    DATE_HEADER,
    KEY_ID_HEADER,
    REQUEST_DOMAIN,
    SIGNATURE_HEADER,
    format_request_date,
    request_message,
    sign_request,
)
from schemas.signing import SigningKey, signing_message
from schemas.trust import TrustRoot
from services.publishing.errors import (
    BadRequestError,
    ForbiddenRequestError,
    UnauthenticatedRequestError,
)
from services.publishing.multipart import form_boundary, read_form
from services.publishing.request_auth import RequestVerifier, signers_by_namespace
from services.publishing.trust_admin import DelegationSpec, build_root

ROOT_KEY = SigningKey(seed=b"\x01" * 32)
SERVICE = SigningKey(seed=b"\x02" * 32)
PIPELINE = SigningKey(seed=b"\x03" * 32)
ACME = SigningKey(seed=b"\x04" * 32)
STRANGER = SigningKey(seed=b"\x05" * 32)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
BODY = b'{"package": "drupal/token", "version": "1.9.0", "reason": "broken"}'
PATH = "/v1/yanks"


def make_root() -> TrustRoot:
    return build_root(
        version=1,
        root_keys=[ROOT_KEY.public_key],
        root_threshold=1,
        delegations=[
            DelegationSpec("drupal/*", "drupal.org", (SERVICE.public_key, PIPELINE.public_key), 1),
            DelegationSpec("acme/*", "acme.example", (ACME.public_key,), 1),
        ],
        expires=datetime(2030, 1, 1, tzinfo=UTC),
    )


ROOT = make_root()


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def headers_for(
    key: SigningKey, *, body: bytes = BODY, path: str = PATH, at: datetime = NOW
) -> dict[str, str]:
    return sign_request(key, "POST", path, digest(body), now=at)


def authenticate(
    verifier: RequestVerifier,
    headers: dict[str, str],
    *,
    body: bytes = BODY,
    method: str = "POST",
    path: str = PATH,
) -> str:
    """Run the verifier as the service does; returns the authenticated key id."""
    credentials = verifier.credentials(headers)
    verifier.verify(credentials, method, path, digest(body))
    return credentials.keyid


# --- the format ------------------------------------------------------------------------


def test_the_message_is_domain_method_path_date_and_body_digest_on_lines() -> None:
    body_sha256 = digest(b"{}")

    message = request_message("POST", "/v1/releases", "2024-05-01T12:00:00.000Z", body_sha256)

    assert REQUEST_DOMAIN == b"fairstream/publish-request/v1\x00"
    assert message == (
        b"fairstream/publish-request/v1\x00POST\n/v1/releases\n2024-05-01T12:00:00.000Z\n"
        + body_sha256.encode()
    )


def test_the_request_domain_differs_from_the_event_domain() -> None:
    # A request signature can never pass as an event signature, nor the reverse.
    message = request_message("POST", PATH, "2024-05-01T12:00:00Z", digest(BODY))
    assert not message.startswith(signing_message(b""))
    assert not signing_message(message).startswith(REQUEST_DOMAIN)


@pytest.mark.parametrize(
    ("method", "path", "date", "body_sha256"),
    [
        ("post", PATH, "2024-05-01T12:00:00Z", digest(BODY)),
        ("POST", "/v1/yanks\nPOST", "2024-05-01T12:00:00Z", digest(BODY)),
        ("POST", "v1/yanks", "2024-05-01T12:00:00Z", digest(BODY)),
        ("POST", "/v1/yanks x", "2024-05-01T12:00:00Z", digest(BODY)),
        ("POST", PATH, "2024-05-01T12:00:00Z\n", digest(BODY)),
        ("POST", PATH, "2024-05-01T12:00:00Z", digest(BODY).upper()),
    ],
)
def test_parts_that_could_make_two_requests_sign_the_same_bytes_are_refused(
    method: str, path: str, date: str, body_sha256: str
) -> None:
    with pytest.raises(ValueError):
        request_message(method, path, date, body_sha256)


def test_dates_are_rfc3339_utc_with_milliseconds() -> None:
    assert format_request_date(NOW) == "2024-05-01T12:00:00.000Z"
    plus_two = datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=UTC).astimezone()
    assert format_request_date(plus_two) == "2024-05-01T14:00:00.123Z"
    with pytest.raises(ValueError):
        format_request_date(datetime(2024, 5, 1))  # naive on purpose


def test_headers_verify_with_plain_pynacl_as_a_third_party_would() -> None:
    headers = headers_for(PIPELINE)

    assert headers[KEY_ID_HEADER] == hashlib.sha256(PIPELINE.public_key.raw).hexdigest()
    assert headers[DATE_HEADER] == "2024-05-01T12:00:00.000Z"
    message = (
        b"fairstream/publish-request/v1\x00POST\n/v1/yanks\n2024-05-01T12:00:00.000Z\n"
        + hashlib.sha256(BODY).hexdigest().encode()
    )
    signature = base64.b64decode(headers[SIGNATURE_HEADER])
    nacl.signing.VerifyKey(PIPELINE.public_key.raw).verify(message, signature)  # raises if not


# --- the verifier ----------------------------------------------------------------------


def test_a_good_request_by_a_delegated_key_is_accepted() -> None:
    verifier = RequestVerifier(ROOT, clock=Clock())
    headers = headers_for(PIPELINE)

    credentials = verifier.credentials(headers)
    verifier.verify(credentials, "POST", PATH, digest(BODY))
    delegation = verifier.authorize(credentials, "drupal/token")

    assert credentials.keyid == PIPELINE.public_key.keyid
    assert delegation.namespace == "drupal/*"


def test_header_names_are_case_insensitive() -> None:
    headers = {name.lower(): value for name, value in headers_for(PIPELINE).items()}

    assert authenticate(RequestVerifier(ROOT, clock=Clock()), headers)


@pytest.mark.parametrize("missing", [KEY_ID_HEADER, DATE_HEADER, SIGNATURE_HEADER])
def test_a_missing_header_is_401_naming_it(missing: str) -> None:
    headers = headers_for(PIPELINE)
    del headers[missing]

    with pytest.raises(UnauthenticatedRequestError) as refused:
        RequestVerifier(ROOT, clock=Clock()).credentials(headers)

    assert refused.value.status == 401
    assert refused.value.error == "unsigned"
    assert missing in str(refused.value)


def test_a_repeated_header_is_refused() -> None:
    headers = CIMultiDict(headers_for(PIPELINE))
    headers.add(DATE_HEADER.lower(), "2024-05-01T12:00:01.000Z")

    with pytest.raises(UnauthenticatedRequestError, match="given 2 times"):
        RequestVerifier(ROOT, clock=Clock()).credentials(headers)


def test_a_flipped_bit_in_the_signature_is_401() -> None:
    headers = headers_for(PIPELINE)
    signature = bytearray(base64.b64decode(headers[SIGNATURE_HEADER]))
    signature[10] ^= 0x01
    headers[SIGNATURE_HEADER] = base64.b64encode(bytes(signature)).decode()

    with pytest.raises(UnauthenticatedRequestError) as refused:
        authenticate(RequestVerifier(ROOT, clock=Clock()), headers)

    assert refused.value.error == "bad-signature"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", PATH, BODY.replace(b"broken", b"brokeN")),
        ("POST", "/v1/expunges", BODY),
        ("PUT", PATH, BODY),
    ],
    ids=["body", "path", "method"],
)
def test_a_request_altered_after_signing_is_401(method: str, path: str, body: bytes) -> None:
    headers = headers_for(PIPELINE)

    with pytest.raises(UnauthenticatedRequestError, match="does not verify"):
        authenticate(
            RequestVerifier(ROOT, clock=Clock()), headers, body=body, method=method, path=path
        )


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_flipped_bit_of_the_signature_or_the_body_is_refused(data: st.DataObject) -> None:
    headers = headers_for(PIPELINE)
    body = BODY
    if data.draw(st.booleans(), label="flip the body"):
        index = data.draw(st.integers(0, len(BODY) * 8 - 1), label="bit")
        flipped = bytearray(BODY)
        flipped[index // 8] ^= 1 << (index % 8)
        body = bytes(flipped)
    else:
        signature = bytearray(base64.b64decode(headers[SIGNATURE_HEADER]))
        index = data.draw(st.integers(0, 64 * 8 - 1), label="bit")
        signature[index // 8] ^= 1 << (index % 8)
        headers[SIGNATURE_HEADER] = base64.b64encode(bytes(signature)).decode()

    with pytest.raises(UnauthenticatedRequestError):
        authenticate(RequestVerifier(ROOT, clock=Clock()), headers, body=body)


def test_a_signature_by_another_key_under_a_delegated_key_id_is_401() -> None:
    headers = headers_for(STRANGER)
    headers[KEY_ID_HEADER] = PIPELINE.public_key.keyid

    with pytest.raises(UnauthenticatedRequestError, match="does not verify"):
        authenticate(RequestVerifier(ROOT, clock=Clock()), headers)


def test_a_key_unknown_to_the_trust_root_is_401() -> None:
    with pytest.raises(UnauthenticatedRequestError) as refused:
        authenticate(RequestVerifier(ROOT, clock=Clock()), headers_for(STRANGER))

    assert refused.value.error == "unknown-key"
    assert "not in trust root v1" in str(refused.value)


@pytest.mark.parametrize("signature", ["not base64!", base64.b64encode(b"short").decode(), ""])
def test_a_signature_that_is_not_64_bytes_of_base64_is_401(signature: str) -> None:
    headers = {**headers_for(PIPELINE), SIGNATURE_HEADER: signature}

    with pytest.raises(UnauthenticatedRequestError, match="base64 of a 64-byte"):
        RequestVerifier(ROOT, clock=Clock()).credentials(headers)


def test_a_valid_signature_by_a_key_delegated_elsewhere_is_403() -> None:
    verifier = RequestVerifier(ROOT, clock=Clock())
    credentials = verifier.credentials(headers_for(ACME))
    verifier.verify(credentials, "POST", PATH, digest(BODY))  # authenticated: it is acme's key

    with pytest.raises(ForbiddenRequestError) as refused:
        verifier.authorize(credentials, "drupal/token")

    assert refused.value.status == 403
    assert refused.value.error == "undelegated-key"
    assert "delegated for acme/*" in str(refused.value)
    assert "drupal.org's keys" in str(refused.value)


def test_a_root_key_is_authenticated_but_may_publish_nothing() -> None:
    verifier = RequestVerifier(ROOT, clock=Clock())
    credentials = verifier.credentials(headers_for(ROOT_KEY))
    verifier.verify(credentials, "POST", PATH, digest(BODY))

    with pytest.raises(ForbiddenRequestError, match="not delegated"):
        verifier.authorize(credentials, "drupal/token")


def test_a_namespace_nobody_owns_is_403() -> None:
    verifier = RequestVerifier(ROOT, clock=Clock())
    credentials = verifier.credentials(headers_for(PIPELINE))

    with pytest.raises(ForbiddenRequestError) as refused:
        verifier.authorize(credentials, "symfony/console")

    assert refused.value.error == "undelegated-namespace"


@pytest.mark.parametrize(
    "offset",
    [timedelta(minutes=-5, seconds=-1), timedelta(minutes=5, seconds=1), timedelta(hours=-3)],
    ids=["stale", "future", "old"],
)
def test_a_date_beyond_five_minutes_of_the_clock_is_401(offset: timedelta) -> None:
    headers = headers_for(PIPELINE, at=NOW + offset)

    with pytest.raises(UnauthenticatedRequestError) as refused:
        authenticate(RequestVerifier(ROOT, clock=Clock()), headers)

    assert refused.value.error == "stale-date"
    assert "sync the client's clock" in str(refused.value)


@pytest.mark.parametrize("offset", [timedelta(minutes=-5), timedelta(minutes=5)])
def test_a_date_within_five_minutes_is_accepted(offset: timedelta) -> None:
    headers = headers_for(PIPELINE, at=NOW + offset)

    assert authenticate(RequestVerifier(ROOT, clock=Clock()), headers)


@pytest.mark.parametrize(
    "date",
    [
        "2024-05-01 12:00:00Z",
        "2024-05-01T12:00:00",
        "2024-05-01T14:00:00+02:00",
        "2024-05-01T12:00:00.1234567Z",
        "2024-13-01T12:00:00Z",
        "Wed, 01 May 2024 12:00:00 GMT",
    ],
)
def test_a_date_that_is_not_rfc3339_utc_is_401(date: str) -> None:
    headers = {**headers_for(PIPELINE), DATE_HEADER: date}

    with pytest.raises(UnauthenticatedRequestError) as refused:
        RequestVerifier(ROOT, clock=Clock()).credentials(headers)

    assert refused.value.error == "bad-date"


@pytest.mark.parametrize("date", ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.5+00:00"])
def test_other_rfc3339_utc_spellings_verify_as_signed(date: str) -> None:
    message = request_message("POST", PATH, date, digest(BODY))
    signature = nacl.signing.SigningKey(PIPELINE.seed).sign(message).signature
    headers = {
        KEY_ID_HEADER: PIPELINE.public_key.keyid,
        DATE_HEADER: date,
        SIGNATURE_HEADER: base64.b64encode(signature).decode(),
    }

    assert authenticate(RequestVerifier(ROOT, clock=Clock()), headers)


def test_a_replayed_request_is_401_even_with_the_same_valid_signature() -> None:
    clock = Clock()
    verifier = RequestVerifier(ROOT, clock=clock)
    headers = headers_for(PIPELINE)
    authenticate(verifier, headers)
    clock.now += timedelta(minutes=4)

    with pytest.raises(UnauthenticatedRequestError) as refused:
        authenticate(verifier, headers)

    assert refused.value.error == "replayed"
    assert "sign every request and every retry anew" in str(refused.value)


def test_after_the_window_a_replay_is_refused_by_its_date_and_forgotten() -> None:
    clock = Clock()
    verifier = RequestVerifier(ROOT, clock=clock)
    headers = headers_for(PIPELINE)
    authenticate(verifier, headers)
    clock.now += timedelta(minutes=5, seconds=1)

    with pytest.raises(UnauthenticatedRequestError) as refused:
        authenticate(verifier, headers)

    assert refused.value.error == "stale-date"
    # Another request verifies; the expired signature is no longer remembered.
    authenticate(verifier, headers_for(PIPELINE, at=clock.now))
    assert len(verifier._seen) == 1


def test_a_forged_signature_does_not_burn_the_genuine_one() -> None:
    verifier = RequestVerifier(ROOT, clock=Clock())
    genuine = headers_for(PIPELINE)
    forged = {**genuine, SIGNATURE_HEADER: base64.b64encode(bytes(64)).decode()}
    with pytest.raises(UnauthenticatedRequestError):
        authenticate(verifier, forged)

    assert authenticate(verifier, genuine) == PIPELINE.public_key.keyid


def test_two_requests_in_the_same_second_are_both_accepted() -> None:
    verifier = RequestVerifier(ROOT, clock=Clock())

    authenticate(verifier, headers_for(PIPELINE, at=NOW))
    authenticate(verifier, headers_for(PIPELINE, at=NOW + timedelta(milliseconds=1)))


class BodyReader:
    """Stands in for reading a request body: counts the reads, returns the body and digest."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.reads = 0

    async def __call__(self) -> tuple[bytes, str]:
        self.reads += 1
        return self.body, digest(self.body)


async def test_an_announced_body_digest_is_verified_before_the_body_is_read() -> None:
    verifier = RequestVerifier(ROOT, clock=Clock())
    headers = headers_for(PIPELINE)
    assert headers[CONTENT_SHA256_HEADER] == digest(BODY)
    forged = {**headers, SIGNATURE_HEADER: base64.b64encode(bytes(64)).decode()}
    reader = BodyReader(BODY)

    with pytest.raises(UnauthenticatedRequestError, match="does not verify"):
        await verifier.verify_body(verifier.credentials(forged), "POST", PATH, reader)

    assert reader.reads == 0, "a forged request is refused before its body is read"
    body = await verifier.verify_body(verifier.credentials(headers), "POST", PATH, reader)
    assert (body, reader.reads) == (BODY, 1)


async def test_a_body_that_differs_from_the_announced_digest_is_401() -> None:
    verifier = RequestVerifier(ROOT, clock=Clock())
    credentials = verifier.credentials(headers_for(PIPELINE))

    with pytest.raises(UnauthenticatedRequestError, match="altered or cut in transit"):
        await verifier.verify_body(credentials, "POST", PATH, BodyReader(BODY + b" "))


async def test_without_an_announced_digest_the_body_is_read_then_verified() -> None:
    verifier = RequestVerifier(ROOT, clock=Clock())
    headers = headers_for(PIPELINE)
    del headers[CONTENT_SHA256_HEADER]

    body = await verifier.verify_body(verifier.credentials(headers), "POST", PATH, BodyReader(BODY))
    assert body == BODY
    other = headers_for(PIPELINE, at=NOW + timedelta(seconds=1))
    del other[CONTENT_SHA256_HEADER]
    with pytest.raises(UnauthenticatedRequestError, match="does not verify"):
        await verifier.verify_body(verifier.credentials(other), "POST", PATH, BodyReader(b"{}"))


def test_an_announced_digest_that_is_not_hex_is_401() -> None:
    headers = {**headers_for(PIPELINE), CONTENT_SHA256_HEADER: "ABC"}

    with pytest.raises(UnauthenticatedRequestError, match="lower-case hex sha256"):
        RequestVerifier(ROOT, clock=Clock()).credentials(headers)


# --- the service's own keys ------------------------------------------------------------


def test_the_service_signs_for_the_namespaces_its_keys_meet_the_threshold_of() -> None:
    served = signers_by_namespace(ROOT, [SERVICE, STRANGER])

    assert list(served) == ["drupal/*"]
    assert served["drupal/*"] == [SERVICE]


def test_service_keys_delegated_nowhere_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="meet the threshold of no namespace"):
        signers_by_namespace(ROOT, [STRANGER, ROOT_KEY])


# --- the upload form parser (multipart bodies are spooled, then split) -----------------


def write_form(tmp_path: Path, parts: list[tuple[str, bytes]], boundary: str = "b0und") -> Path:
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
        for name, value in parts
    )
    path = tmp_path / "body"
    path.write_bytes(body + f"--{boundary}--\r\n".encode())
    return path


def test_a_form_is_split_into_text_fields_and_the_zip(tmp_path: Path) -> None:
    zip_bytes = b"PK\x03\x04" + bytes(range(256)) * 10 + b"\r\n--b0un"  # boundary-like bytes
    body = write_form(tmp_path, [("package", b"drupal/token"), ("zip", zip_bytes)])

    form = read_form(body, "b0und", tmp_path / "upload.zip")

    assert form.fields == {"package": "drupal/token"}
    assert form.zip_path == tmp_path / "upload.zip"
    assert form.zip_path.read_bytes() == zip_bytes


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty"),
        (b"no boundary here", "never uses its boundary"),
        (b'--b0und\r\nContent-Disposition: form-data; name="x"\r\n\r\nvalue', "truncated"),
        (b"--b0und\r\nContent-Type: text/plain\r\n\r\nv\r\n--b0und--", "without Content-Disp"),
    ],
)
def test_a_malformed_form_is_400(tmp_path: Path, content: bytes, problem: str) -> None:
    body = tmp_path / "body"
    body.write_bytes(content)

    with pytest.raises(BadRequestError, match=problem):
        read_form(body, "b0und", tmp_path / "upload.zip")


def test_a_field_given_twice_is_400(tmp_path: Path) -> None:
    body = write_form(tmp_path, [("package", b"drupal/a"), ("package", b"drupal/b")])

    with pytest.raises(BadRequestError, match="twice"):
        read_form(body, "b0und", tmp_path / "upload.zip")


def test_the_boundary_comes_from_the_content_type() -> None:
    assert form_boundary('multipart/form-data; boundary="abc def"') == "abc def"
    with pytest.raises(BadRequestError):
        form_boundary("multipart/form-data")
