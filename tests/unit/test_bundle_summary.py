"""What ``fairstream bundle export`` and ``import`` print of a manifest's freshness window:
the span its records cover and the trust root in force, expired or not. Pure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson

from services.bundles.cli import freshness, summary_lines
from tests.unit.test_bundle import AT, manifest


def test_the_summary_states_the_span_covered_and_the_root_in_force() -> None:
    carried = replace(
        manifest(), covers_from=AT, covers_to=AT + timedelta(hours=20), root_version=2,
        root_expires=AT + timedelta(days=30),
    )  # fmt: skip

    window = freshness(carried, now=AT + timedelta(days=1))

    assert window == {
        "covers": {"from": AT, "to": AT + timedelta(hours=20)},
        "trust_root": {"version": 2, "expires": AT + timedelta(days=30), "expired": False},
    }
    assert summary_lines({"sequence": 3, **window}) == [
        "sequence: 3",
        "covers: records from 2026-12-06 12:00:00 UTC to 2026-12-07 08:00:00 UTC",
        "trust_root: v2, expires 2027-01-05 12:00:00 UTC",
    ]
    # --json: the same fields, times in UTC.
    assert orjson.loads(orjson.dumps(window, option=orjson.OPT_UTC_Z)) == {
        "covers": {"from": "2026-12-06T12:00:00Z", "to": "2026-12-07T08:00:00Z"},
        "trust_root": {"version": 2, "expires": "2027-01-05T12:00:00Z", "expired": False},
    }


def test_an_expired_root_is_said_to_freeze_the_nodes_until_a_newer_one_comes() -> None:
    carried = replace(manifest(), root_version=2, root_expires=AT)

    window = freshness(carried, now=AT)  # expiry is the first moment it no longer holds

    assert window["trust_root"] == {"version": 2, "expires": AT, "expired": True}
    [line] = [line for line in summary_lines(window) if line.startswith("trust_root")]
    assert line == (
        "trust_root: v2, expired 2026-12-06 12:00:00 UTC: the nodes apply nothing new (they "
        "freeze, as online) until a bundle carries a newer root"
    )


def test_a_bundle_with_no_new_record_says_so_and_times_show_in_utc() -> None:
    elsewhere = datetime(2026, 12, 6, 14, 0, tzinfo=UTC).astimezone(ZoneInfo("Europe/Berlin"))
    empty = replace(manifest(), covers_from=None, covers_to=None, root_expires=elsewhere)

    lines = summary_lines(freshness(empty, now=AT))

    assert lines == ["covers: no new records", "trust_root: v3, expires 2026-12-06 14:00:00 UTC"]
