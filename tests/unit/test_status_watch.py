"""`fairstream status --watch`: the redraw loop, until its stop condition or Ctrl-C."""

from __future__ import annotations

import pytest
from rich.console import RenderableType

from services.cli.status import redraw


def test_it_redraws_every_period_until_the_stop_condition() -> None:
    frames: list[RenderableType] = []
    sleeps: list[float] = []
    count = iter(range(100))

    shown = redraw(
        lambda: f"frame {next(count)}",
        frames.append,
        every=2.5,
        stop=lambda: len(frames) == 3,
        sleep=sleeps.append,
    )

    assert shown == 3
    assert frames == ["frame 0", "frame 1", "frame 2"]
    assert sleeps == [2.5, 2.5, 2.5]


def test_ctrl_c_while_waiting_ends_it_quietly() -> None:
    frames: list[RenderableType] = []

    def sleep(seconds: float) -> None:
        if len(frames) == 2:
            raise KeyboardInterrupt

    shown = redraw(lambda: "table", frames.append, every=1.0, sleep=sleep)

    assert shown == 2 and frames == ["table", "table"]


def test_ctrl_c_while_rendering_ends_it_quietly() -> None:
    frames: list[RenderableType] = []

    def render() -> RenderableType:
        if frames:
            raise KeyboardInterrupt
        return "table"

    assert redraw(render, frames.append, every=1.0, sleep=lambda _: None) == 1


def test_a_render_failure_is_not_swallowed() -> None:
    def render() -> RenderableType:
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        redraw(render, lambda _: None, every=1.0, sleep=lambda _: None)


def test_a_stop_condition_true_at_once_shows_nothing() -> None:
    frames: list[RenderableType] = []
    assert redraw(lambda: "table", frames.append, every=1.0, stop=lambda: True) == 0
    assert frames == []
