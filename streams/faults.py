"""Fault points: places in the node's processing where a fault test kills the worker on purpose.

Luck does not reliably stop a process between its store write and its offset
commit; a fault point does. The points sit where a crash is most likely to lose or
double an effect: in the middle of a zip streamed into the store (a part uploaded, its
last bytes unchecked), after a zip is stored (before the metadata that lists it), after
a package's view is derived (before its view record is produced), after a view
record is acknowledged (before the worker holds it in its local view and serves
it), after the batch's view records are acknowledged and held (before the batch's
records are), and after the records are acknowledged (before the consumer commits
their offsets). A node is
armed with ``--fault-point NAME[@N]`` (hidden; for the fault harness only): the
N-th time the point is reached (default the first), the process sends itself
SIGKILL, exactly what ``kill -9`` does, with nothing flushed or closed.

One point refuses instead of killing: ``refuse-rejection@N`` makes the first N
attempts to produce a rejection fail as a broker refusing the rejected topic would
(the embedded broker cannot refuse one topic and take the others: Tansu accepts
records of any size, and deleting a topic leaves its producers writing to a ghost).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from schemas.errors import ConfigurationError

log = logging.getLogger(__name__)

#: In the middle of a zip streamed into the store: a part is in the store's multipart
#: upload, the zip's last bytes not yet checked (nothing may land under its key).
MID_ARTIFACT_UPLOAD: Final = "mid-artifact-upload"
AFTER_STORE_WRITE: Final = "after-store-write"
#: After a package's view was derived (rendered, dated), before its view record is produced.
AFTER_METADATA_WRITE: Final = "after-metadata-write"
#: After a view record was acknowledged, before the worker holds it locally (serves it).
BEFORE_LOCAL_WRITE: Final = "before-local-write"
#: After the batch's view records were acknowledged, before its offsets are committed.
AFTER_VIEW_RECORD: Final = "after-view-record"
#: After the whole batch (its rejections recorded too), right before the intake commits.
BEFORE_OFFSET_COMMIT: Final = "before-offset-commit"
#: Not a kill: the first N attempts to produce a rejection are refused.
REFUSE_REJECTION: Final = "refuse-rejection"
FAULT_POINTS: Final = (
    MID_ARTIFACT_UPLOAD,
    AFTER_STORE_WRITE,
    AFTER_METADATA_WRITE,
    BEFORE_LOCAL_WRITE,
    AFTER_VIEW_RECORD,
    BEFORE_OFFSET_COMMIT,
    REFUSE_REJECTION,
)


class InjectedRefusalError(Exception):
    """What a refusing fault point raises: the broker's refusal, as the producer reports it."""


@dataclass(frozen=True)
class FaultSpec:
    """A fault point armed to fire on its ``nth`` visit."""

    point: str
    nth: int = 1

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """``NAME`` or ``NAME@N``; raises ``ConfigurationError`` for an unknown point or bad N."""
        point, _, count = text.partition("@")
        if point not in FAULT_POINTS:
            raise ConfigurationError(
                f"fault point {point!r} is not one of {', '.join(FAULT_POINTS)}; "
                "give NAME or NAME@N (fire on the N-th visit)"
            )
        try:
            nth = int(count) if count else 1
        except ValueError:
            nth = 0
        if nth < 1:
            raise ConfigurationError(
                f"fault point {text!r}: N must be a positive whole number (NAME@N)"
            )
        return cls(point, nth)


def _kill_self() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class FaultPoints:
    """Counts visits to the armed point and fires on the N-th; other points cost a compare."""

    def __init__(self, spec: FaultSpec | None, fire: Callable[[], None] = _kill_self) -> None:
        self._spec = spec
        self._fire = fire
        self._visits = 0

    def reached(self, point: str) -> None:
        """Called by the code at ``point``; fires (by default: SIGKILL) on the armed visit."""
        spec = self._spec
        if spec is None or point != spec.point:
            return
        self._visits += 1
        if self._visits == spec.nth:
            log.critical("fault point %s reached (visit %d): killing this process", point, spec.nth)
            for handler in logging.getLogger().handlers:
                handler.flush()
            self._fire()

    def refuse(self, point: str) -> None:
        """Called by the code at a refusing ``point``: raises ``InjectedRefusalError`` on each of
        the first N visits when armed, then never again."""
        spec = self._spec
        if spec is None or point != spec.point or self._visits >= spec.nth:
            return
        self._visits += 1
        log.warning("fault point %s: refusal %d of %d injected", point, self._visits, spec.nth)
        raise InjectedRefusalError(
            f"{point}: refused by the fault harness ({self._visits}/{spec.nth})"
        )
