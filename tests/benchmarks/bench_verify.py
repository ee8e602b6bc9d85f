"""Verify path: decode + verify of signed release events vs bare PyNaCl verify of the same signatures.

Run with ``make bench`` (or ``uv run python -m tests.benchmarks.bench_verify``).
Every figure is a ratio against the baseline measured in the same run, the
median over several runs, with the absolute numbers kept for the record.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import nacl.signing

from schemas.event_verification import verify_event
from schemas.events import Artifact, ReleasePublished, utc_now
from schemas.signing import SignedEvent, SigningKey, seal, signing_message
from services.publishing.publisher import next_sequence
from services.publishing.trust_admin import DelegationSpec, build_root

EVENTS = 2_000
RUNS = 9


def make_events(count: int, threshold: int = 2) -> tuple[Any, list[bytes]]:
    """``count`` signed releases of distinct packages, and the root that delegates their keys."""
    root_key = SigningKey.generate()
    publishers = [SigningKey.generate() for _ in range(threshold)]
    root = build_root(
        version=1,
        root_keys=[root_key.public_key],
        root_threshold=1,
        delegations=[
            DelegationSpec(
                "drupal/*", "drupal.org", tuple(k.public_key for k in publishers), threshold
            )
        ],
    )
    events = []
    for index in range(count):
        project = f"project{index}"
        event = ReleasePublished(
            package=f"drupal/{project}",
            drupal_version="8.x-1.9",
            version="1.9.0",
            sequence=next_sequence(),
            published_at=utc_now(),
            artifact=Artifact(
                sha256=f"{index:064x}",
                sha1=f"{index:040x}",
                size=123_456,
                origin_url=f"https://ftp.drupal.org/files/projects/{project}-8.x-1.9.zip",
            ),
            composer={
                "name": f"drupal/{project}",
                "version": "1.9.0",
                "type": "drupal-module",
                "description": "A realistic description of a contributed module for Drupal.",
                "require": {"drupal/core": "^9 || ^10"},
                "extra": {"drupal": {"version": "8.x-1.9", "datestamp": "1608284866"}},
            },
        )
        events.append(seal(event.to_bytes(), publishers))
    return root, events


CHUNK = 50


def time_both(
    root: Any,
    events: list[bytes],
    jobs: list[list[tuple[nacl.signing.VerifyKey, bytes, bytes]]],
    now: datetime,
) -> tuple[float, float]:
    """Seconds for our path and for the baseline over all events, alternating every ``CHUNK``.

    Fine-grained alternation puts both under the same machine conditions,
    which on a shared machine drift within a second.
    """
    ours = bare = 0.0
    for start in range(0, len(events), CHUNK):
        began = time.perf_counter()
        for per_event in jobs[start : start + CHUNK]:
            for key, message, sig in per_event:
                key.verify(message, sig)
        middle = time.perf_counter()
        for data in events[start : start + CHUNK]:
            verify_event(data, root, now=now)
        ended = time.perf_counter()
        bare += middle - began
        ours += ended - middle
    return ours, bare


def run(threshold: int) -> dict[str, Any]:
    """One figure: ``RUNS`` alternating timings of ours and the baseline over the same events."""
    root, events = make_events(EVENTS, threshold)
    now = datetime.now(UTC) + timedelta(seconds=1)
    # The baseline gets everything for free that a real verifier must do: keys
    # already loaded, messages already built, signatures already parsed.
    jobs = []
    for data in events:
        envelope = SignedEvent.from_bytes(data)
        message = signing_message(envelope.payload)
        jobs.append(
            [
                (nacl.signing.VerifyKey(root.keys[s.keyid].raw), message, s.sig)
                for s in envelope.signatures
            ]
        )
    ours, bare = [], []
    for _ in range(RUNS):
        ours_seconds, bare_seconds = time_both(root, events, jobs, now)
        ours.append(ours_seconds)
        bare.append(bare_seconds)
    ratios = [o / b for o, b in zip(ours, bare, strict=True)]
    return {
        "figure": f"verify path, {threshold} signature(s) per event",
        "ours": "decode envelope + event, check names, trust root, signatures, consistency",
        "baseline": f"bare PyNaCl VerifyKey.verify of the same {threshold} signature(s)",
        "events": EVENTS,
        "signatures_per_event": threshold,
        "runs": RUNS,
        "ours_us_per_event": [o / EVENTS * 1e6 for o in ours],
        "bare_us_per_event": [b / EVENTS * 1e6 for b in bare],
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "goal": "<= 1.3",
    }


def results() -> list[dict[str, Any]]:
    return [run(threshold) for threshold in (1, 2)]


if __name__ == "__main__":
    for result in results():
        print(
            f"{result['figure']}: ours {statistics.median(result['ours_us_per_event']):.1f} "
            f"µs/event, bare {statistics.median(result['bare_us_per_event']):.1f} µs/event, "
            f"median ratio {result['median_ratio']:.2f} (goal {result['goal']})"
        )
