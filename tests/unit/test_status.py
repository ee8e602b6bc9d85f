"""The region status a person reads: states and the rendered table."""

from __future__ import annotations

from rich.console import Console

from services.status import RegionStatus, status_table


def status(**changes: object) -> RegionStatus:
    fields: dict[str, object] = {
        "region": "eu",
        "url": "http://127.0.0.1:8081",
        "healthy": True,
        "committed": 12,
        "behind": 0,
        "behind_is_lower_bound": False,
        "trust_root": 2,
    }
    fields.update(changes)
    return RegionStatus(**fields)  # type: ignore[arg-type]


def test_states_say_in_sync_behind_and_down() -> None:
    assert status().state == "in sync"
    assert status(behind=3).state == "behind by 3 events"
    assert status(behind=10_000, behind_is_lower_bound=True).state == "behind by 10000+ events"
    assert status(healthy=False).state == "down"


def test_the_table_shows_every_region_with_its_root_and_state() -> None:
    console = Console(width=200, record=True)
    console.print(status_table([status(), status(region="us", behind=5, trust_root=None)]))
    text = console.export_text()

    rows = [line for line in text.splitlines() if "│ eu" in line or "│ us" in line]
    assert len(rows) == 2
    assert "v2" in rows[0] and "in sync" in rows[0] and "12" in rows[0]
    assert "behind by 5 events" in rows[1] and "v2" not in rows[1]
