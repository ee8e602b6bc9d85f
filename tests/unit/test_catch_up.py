"""A node's catch-up progress from its successive lag readings (what `node run` shows)."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime

import pytest
from rich.console import Console

from schemas.federation import NodeStatus
from services.node.catch_up import CatchUp, CatchUpProgress


def reading(behind: int, *, lower_bound: bool = False) -> NodeStatus:
    return NodeStatus(
        node_id="a" * 64,
        region="eu",
        base_url="http://127.0.0.1:8081",
        sequence=0,
        heartbeat_at=datetime(2026, 1, 1, tzinfo=UTC),
        partitions=(),
        events_behind=behind,
        behind_is_lower_bound=lower_bound,
        seconds_behind=None,
        artifacts_pending=0,
        rejected_total=0,
        store_bytes=None,
        trust_root_version=1,
        state="in-sync" if behind == 0 else "catching-up",
    )


def progress_of(readings: list[int]) -> list[tuple[int, int, bool]]:
    catch_up = CatchUp()
    seen = []
    for behind in readings:
        catch_up.observe(behind)
        seen.append((catch_up.applied, catch_up.total, catch_up.done))
    return seen


def test_the_backlog_found_first_is_worked_down_to_done() -> None:
    assert progress_of([1000, 600, 150, 0]) == [
        (0, 1000, False),
        (400, 1000, False),
        (850, 1000, False),
        (1000, 1000, True),
    ]


def test_events_published_meanwhile_lengthen_the_bar_without_moving_it_back() -> None:
    assert progress_of([100, 40, 90, 10, 0]) == [
        (0, 100, False),
        (60, 100, False),
        (60, 150, False),
        (140, 150, False),
        (150, 150, True),
    ]


def test_a_node_in_sync_at_its_first_reading_has_nothing_to_show() -> None:
    assert progress_of([0]) == [(0, 0, True)]


def test_lag_after_the_catch_up_is_not_a_new_catch_up() -> None:
    assert progress_of([5, 0, 7, 3])[-1] == (5, 5, True)


def test_a_lower_bound_says_so() -> None:
    catch_up = CatchUp()
    catch_up.observe(4000, lower_bound=True)
    assert catch_up.describe() == "4000+ events behind, 0 applied since the start"


def test_without_a_terminal_it_logs_every_period_then_once_in_sync(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    display = CatchUpProgress(Console(file=io.StringIO()), log_every=30, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="services.node.catch_up")

    for at, behind in [(0, 900), (10, 700), (31, 400), (45, 200), (62, 0), (70, 50)]:
        now[0] = at
        display.observe(reading(behind))

    assert [r.getMessage() for r in caplog.records] == [
        "catching up: 900 events behind, 0 applied since the start",
        "catching up: 400 events behind, 500 applied since the start",
        "caught up: 900 events applied since the start",
    ]


def test_on_a_terminal_it_draws_a_bar_and_removes_it_once_in_sync() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)

    with CatchUpProgress(console) as display:
        display.observe(reading(1739))
        display.observe(reading(739))
        console.print("a log line")  # what the worker writes meanwhile
        display.observe(reading(0))
        console.print("after the catch-up")

    drawn = screen.getvalue()
    assert "catching up" in drawn and "1000/1739" in drawn
    # The bar was removed (transient) before the next line was written.
    assert drawn.rstrip().endswith("after the catch-up")
    assert display.catch_up.done
