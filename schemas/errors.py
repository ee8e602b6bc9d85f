"""Every error fairstream raises: one root, two families (rejected, transient)."""

from __future__ import annotations

from dataclasses import dataclass


class FairstreamError(Exception):
    """Root of every error fairstream raises on purpose."""


class ConfigurationError(FairstreamError):
    """A setting, a file or a command-line value is wrong; the message says which and how to fix it."""


class RejectedError(FairstreamError):
    """An event that can never be applied: recorded in ``fair.rejected`` with ``reason``, never retried.

    ``reason`` is a short stable code (``bad-signature``, ``malformed``, ...), the message says
    what exactly was wrong with which input.
    """

    reason = "rejected"


class MalformedEventError(RejectedError):
    """The bytes are not a fairstream event we can decode."""

    reason = "malformed"


class OversizedEventError(MalformedEventError):
    """A record larger than the largest event the contract allows (``MAX_EVENT_BYTES``)."""

    reason = "oversized"


class UnknownSchemaError(MalformedEventError):
    """The single-object fingerprint names a schema this reader does not have."""

    reason = "unknown-schema"


class SignatureError(RejectedError):
    """No trusted key produced a valid signature over the event."""

    reason = "bad-signature"


class ArtifactMismatchError(RejectedError):
    """The artifact's bytes do not match the sha256, sha1 or size the event signed."""

    reason = "artifact-mismatch"


class TransientError(FairstreamError):
    """An IO failure that may pass: retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BrokerUnavailableError(TransientError):
    """The Kafka broker did not answer or refused a request."""


class StoreUnavailableError(TransientError):
    """The object store did not answer or failed a request."""


class OriginUnavailableError(TransientError):
    """The artifact's origin did not deliver it (refused, timed out, 5xx, 404)."""

    def __init__(
        self, message: str, *, url: str, status_code: int | None = None, retry_after: float = 1.0
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.url = url
        self.status_code = status_code


class InvalidVersionError(RejectedError):
    """A Drupal or Composer version string that does not follow any known scheme."""

    reason = "invalid-version"


class VersionConflictError(RejectedError):
    """A (package, version) already published with other bytes: published versions are immutable."""

    reason = "version-conflict"


# --- one rejected-error type per attack the trust chain stops -------------------------


class UndelegatedKeyError(SignatureError):
    """Signed only by keys the trust root does not delegate for the package's namespace
    (namespace squatting, dependency confusion)."""

    reason = "undelegated-key"


class ThresholdError(SignatureError):
    """Too few distinct delegated keys signed (a key listed or signing twice counts once)."""

    reason = "threshold-not-met"


class RootExpiredError(RejectedError):
    """The trust root in force has expired: the node fails closed until a newer root arrives."""

    reason = "root-expired"


class RootRotationError(RejectedError):
    """A new trust root that is not version N+1 signed by a threshold of root N and of N+1."""

    reason = "bad-root-rotation"


class RollbackError(RejectedError):
    """A package event whose sequence is not above the last one applied (rollback, freeze)."""

    reason = "rollback"


class ReplayError(RejectedError):
    """An event already applied, produced again at another position of the log."""

    reason = "replay"


class WrongPackageError(RejectedError):
    """Metadata or artifact that belongs to another package than the event names."""

    reason = "wrong-package"


class ArtifactTooLargeError(ArtifactMismatchError):
    """An artifact over its signed size or the node's size limit (endless data)."""

    reason = "too-large"


class UnsafeNameError(MalformedEventError):
    """A package name or version unsafe as an object key or a URL path segment."""

    reason = "unsafe-name"


# --- fetching a release zip from the origin or a replica ------------------------------

# Down here rather than at the top: this block was appended to the error families above.


@dataclass(frozen=True)
class SourceFailure:
    """Why one source (the origin or a replica) did not deliver an artifact.

    ``definite`` is true when the source delivered other bytes than the signed
    ones (a mismatch), false when it did not deliver at all (refused, timeout,
    too slow, error status) and may well deliver later.
    """

    url: str
    reason: str
    definite: bool


class ArtifactMismatchEverywhereError(ArtifactMismatchError):
    """Every source delivered other bytes than the signed ones: nobody has the artifact."""

    def __init__(self, message: str, *, attempts: tuple[SourceFailure, ...]) -> None:
        super().__init__(message)
        self.attempts = attempts


class ArtifactUnreachableError(OriginUnavailableError):
    """No source delivered the signed artifact, and not every one delivered other bytes.

    ``url`` is the artifact's signed origin URL, ``attempts`` says what each
    source did, in the order they were tried (empty when there was no source).
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        attempts: tuple[SourceFailure, ...],
        retry_after: float = 30.0,
    ) -> None:
        super().__init__(message, url=url, retry_after=retry_after)
        self.attempts = attempts


class InternalFailureError(RejectedError):
    """Applying an event kept failing for a reason that is a bug of ours, not bad input: it is
    set aside (with the failure) so that the events behind it are not held up."""

    reason = "internal-error"
