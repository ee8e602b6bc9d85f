"""One benchmark figure: ours and a baseline measured in the same run, several runs, a goal."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def figure(
    name: str,
    *,
    unit: str,
    ours: Sequence[float],
    baseline: Sequence[float],
    baseline_name: str,
    goal: str,
    met: bool,
    higher_is_better: bool = True,
    gap: str = "",
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A row of docs/benchmarks.md.

    ``ours`` and ``baseline`` hold one value per run, in ``unit`` (a rate such
    as ``releases/s``, or a time such as ``s``); run i of each was measured
    back to back. The ratio of run i is ours/baseline for a rate
    (``higher_is_better``) and baseline/ours for a time, so that a ratio
    above 1 always means ours did better. ``goal`` is the issue's goal as
    text (``">= 0.5x"``, ``"p99 < 1 s"``); ``met`` says whether the medians
    meet it; ``gap`` says why not, when not. ``details`` are the absolute
    numbers for the record (peak RSS, counts, per-run figures).
    """
    if len(ours) != len(baseline) or not ours:
        raise ValueError("ours and baseline need one value per run, at least one run")
    ratios = [
        (o / b if higher_is_better else b / o) if (b and o) else 0.0
        for o, b in zip(ours, baseline, strict=True)
    ]
    return {
        "figure": name,
        "unit": unit,
        "ours": list(ours),
        "baseline": list(baseline),
        "baseline_name": baseline_name,
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "higher_is_better": higher_is_better,
        "goal": goal,
        "met": met,
        "gap": gap,
        "details": details or {},
    }


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a running process (``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmHWM for pid {pid}")
