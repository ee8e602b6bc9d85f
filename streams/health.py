"""Liveness and readiness of a worker, as pure rules over what the worker last observed.

``/health`` (liveness) says whether the process is doing its work: it fails when the
worker's loop is stuck (a batch in progress for longer than ``stuck_after``, or records
waiting on partitions it holds while no batch has finished for as long), when it holds
rejections it could not record, or when its trust root has expired (it applies nothing
until a newer root comes). A process that fails it should be restarted or looked at.

``/ready`` (readiness) says whether clients should be sent to it: it fails until the
worker was given its partitions, has read its view to the region's end (topic mode),
is within ``ready_lag`` records of the log's end on the partitions it holds, and its
broker and store answered recently. A worker that is catching up is alive but not ready.

The worker fills a ``Vitals``; ``liveness`` and ``readiness`` judge it at a time ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: A batch in progress longer than this, or records waiting with no batch finished for as
#: long, is a stuck loop (a bootstrap batch of 1,000 records takes seconds, not minutes).
DEFAULT_STUCK_AFTER = timedelta(seconds=120)
#: Records behind on the partitions a worker holds beyond which it is not ready.
DEFAULT_READY_LAG = 1_000
#: The broker and the store must have answered within this long (heartbeats measure both
#: every status interval, 10 s by default).
DEFAULT_ANSWERED_WITHIN = timedelta(seconds=60)


@dataclass
class Vitals:
    """What a worker last observed of itself; written by its loop, read by its HTTP app."""

    #: When the consumer group last gave this worker its partitions (None: not yet).
    assigned_at: datetime | None = None
    #: Whether the worker has read its view to the region's end at start (its follower
    #: keeps it there after); set once the bucket is there when the view is in the bucket.
    view_caught_up: bool = False
    #: When the batch in progress started (None: none in progress).
    batch_since: datetime | None = None
    #: When a batch last finished.
    progressed_at: datetime | None = None
    #: Records behind on the partitions this worker holds, as last measured (None: unknown).
    behind: int | None = None
    #: When the broker and the store last answered, and what they said when they did not.
    broker_answered_at: datetime | None = None
    store_answered_at: datetime | None = None
    broker_error: str | None = None
    store_error: str | None = None
    #: Rejections this worker could not record yet (its dead-letter file).
    unrecorded_rejections: int = 0
    #: When the trust root in force expires.
    root_expires: datetime | None = None


@dataclass(frozen=True)
class Verdict:
    """A health answer: ok, and the reasons when not (each one sentence)."""

    ok: bool
    reasons: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        return "ok" if self.ok else "; ".join(self.reasons)


@dataclass(frozen=True)
class HealthRules:
    stuck_after: timedelta = DEFAULT_STUCK_AFTER
    ready_lag: int = DEFAULT_READY_LAG
    answered_within: timedelta = DEFAULT_ANSWERED_WITHIN


def liveness(vitals: Vitals, now: datetime, rules: HealthRules = HealthRules()) -> Verdict:
    """Whether the worker does its work (``/health``)."""
    reasons: list[str] = []
    if vitals.batch_since is not None and now - vitals.batch_since > rules.stuck_after:
        reasons.append(
            f"stuck: one batch in progress for {_seconds(now - vitals.batch_since)} "
            f"(more than {_seconds(rules.stuck_after)})"
        )
    elif vitals.behind and vitals.assigned_at is not None:
        last = vitals.progressed_at or vitals.assigned_at
        if now - last > rules.stuck_after:
            reasons.append(
                f"stuck: {vitals.behind} records waiting on its partitions and no batch "
                f"finished for {_seconds(now - last)} (more than {_seconds(rules.stuck_after)})"
            )
    if vitals.unrecorded_rejections:
        reasons.append(
            f"{vitals.unrecorded_rejections} rejections not recorded: the rejected topic "
            "refuses them (kept in the worker's dead-letter file and re-sent)"
        )
    if vitals.root_expires is not None and vitals.root_expires <= now:
        reasons.append(
            f"frozen: the trust root expired at {vitals.root_expires.isoformat()}; nothing is "
            "applied until a newer root is on the trust topic"
        )
    return Verdict(not reasons, tuple(reasons))


def readiness(vitals: Vitals, now: datetime, rules: HealthRules = HealthRules()) -> Verdict:
    """Whether clients should be sent to the worker (``/ready``)."""
    reasons: list[str] = []
    if vitals.assigned_at is None:
        reasons.append("not ready: the consumer group has not given it its partitions yet")
    elif not vitals.view_caught_up:
        reasons.append("not ready: it is reading the region's view to its end")
    if vitals.behind is None:
        reasons.append("not ready: its lag has not been measured yet")
    elif vitals.behind > rules.ready_lag:
        reasons.append(
            f"not ready: {vitals.behind} records behind on its partitions "
            f"(ready within {rules.ready_lag})"
        )
    for what, answered, error in (
        ("broker", vitals.broker_answered_at, vitals.broker_error),
        ("store", vitals.store_answered_at, vitals.store_error),
    ):
        if answered is None or now - answered > rules.answered_within:
            since = "yet" if answered is None else f"for {_seconds(now - answered)}"
            detail = f" ({error})" if error else ""
            reasons.append(f"not ready: the {what} has not answered {since}{detail}")
    live = liveness(vitals, now, rules)
    return Verdict(not reasons and live.ok, (*reasons, *live.reasons))


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():.0f} s"
