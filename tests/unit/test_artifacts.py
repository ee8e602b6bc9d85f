"""streams.artifacts: replica registry, hot statistics, the download tally and the pure
eviction choice. No sockets."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import layout
from schemas.errors import MalformedEventError
from schemas.events import DownloadCount, DownloadCounts, ReplicaAvailable
from streams.artifacts import (
    DownloadTally,
    Heat,
    HotStats,
    ReplicaRegistry,
    choose_evictions,
)

# Whole milliseconds: the Avro timestamps of the events keep no more.
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW = datetime(2025, 3, 10, 12, 0, 0, tzinfo=UTC)


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def replica(region: str, sha256: str, *, base: str | None = None) -> ReplicaAvailable:
    base = base if base is not None else f"http://{region}.fairstream.test:8080"
    return ReplicaAvailable(
        node_id=f"{region}-1",
        region=region,
        package="drupal/token",
        version="1.9.0",
        sha256=sha256,
        size=1234,
        url=base + layout.dist_path("drupal/token", "1.9.0", sha256),
        verified_at=T0,
    )


# ---------------------------------------------------------------------------
# ReplicaRegistry
# ---------------------------------------------------------------------------


def test_registry_ignores_its_own_region() -> None:
    registry = ReplicaRegistry("eu")

    registry.add(replica("eu", sha("a")))

    assert registry.urls(sha("a")) == []
    assert registry.peers() == []


def test_registry_urls_are_other_regions_in_a_stable_order() -> None:
    added_one_way = ReplicaRegistry("eu")
    added_other_way = ReplicaRegistry("eu")
    regions = ["us", "ap", "sa"]

    for region in regions:
        added_one_way.add(replica(region, sha("a")))
    for region in reversed(regions):
        added_other_way.add(replica(region, sha("a")))

    expected = [
        replica(region, sha("a")).url for region in sorted(regions)
    ]  # ap, sa, us: by region name
    assert added_one_way.urls(sha("a")) == expected
    assert added_other_way.urls(sha("a")) == expected
    assert added_one_way.urls(sha("a")) == added_one_way.urls(sha("a"))


def test_registry_urls_are_per_sha256() -> None:
    registry = ReplicaRegistry("eu")
    registry.add(replica("us", sha("a")))
    registry.add(replica("ap", sha("b")))

    assert registry.urls(sha("a")) == [replica("us", sha("a")).url]
    assert registry.urls(sha("b")) == [replica("ap", sha("b")).url]
    assert registry.urls(sha("c")) == []


def test_registry_keeps_one_url_per_region_and_the_latest() -> None:
    registry = ReplicaRegistry("eu")
    registry.add(replica("us", sha("a"), base="http://old.us.test"))
    registry.add(replica("us", sha("a"), base="http://new.us.test"))

    assert registry.urls(sha("a")) == [replica("us", sha("a"), base="http://new.us.test").url]
    assert registry.peers() == ["http://new.us.test"]


def test_registry_peers_are_the_base_urls_before_dist() -> None:
    registry = ReplicaRegistry("eu")
    registry.add(replica("us", sha("a"), base="https://us.fairstream.test/mirror"))
    registry.add(replica("ap", sha("b"), base="http://ap.fairstream.test:8080"))
    registry.add(replica("us", sha("c"), base="https://us.fairstream.test/mirror"))
    registry.add(replica("eu", sha("d"), base="http://eu.fairstream.test"))

    assert registry.peers() == [
        "http://ap.fairstream.test:8080",
        "https://us.fairstream.test/mirror",
    ]


def test_registry_add_record_decodes_a_replicas_topic_record() -> None:
    registry = ReplicaRegistry("eu")
    announced = replica("us", sha("a"))

    registry.add_record(announced.to_bytes())
    registry.add_record(replica("eu", sha("a")).to_bytes())

    assert registry.urls(sha("a")) == [announced.url]
    assert registry.peers() == ["http://us.fairstream.test:8080"]


def test_registry_add_record_refuses_junk() -> None:
    registry = ReplicaRegistry("eu")

    with pytest.raises(MalformedEventError):
        registry.add_record(b"\x00not an event")

    assert registry.peers() == []


# ---------------------------------------------------------------------------
# HotStats
# ---------------------------------------------------------------------------


def test_hot_stats_add_sums_downloads_and_keeps_the_latest_time() -> None:
    stats = HotStats("eu")

    stats.add(sha("a"), 2, T0 + timedelta(hours=2))
    stats.add(sha("a"), 3, T0)  # an older period arriving late
    stats.add(sha("b"), 1, T0)

    assert stats.snapshot() == {
        sha("a"): Heat(5, T0 + timedelta(hours=2)),
        sha("b"): Heat(1, T0),
    }


def test_hot_stats_snapshot_is_a_copy() -> None:
    stats = HotStats("eu")
    stats.add(sha("a"), 1, T0)

    taken = stats.snapshot()
    stats.add(sha("b"), 1, T0)

    assert set(taken) == {sha("a")}


def test_hot_stats_record_serve_makes_an_artifact_hot_now() -> None:
    stats = HotStats("eu")
    stats.add(sha("a"), 4, T0)
    before = datetime.now(UTC)

    stats.record_serve("drupal/token", "1.9.0", sha("a"))

    heat = stats.snapshot()[sha("a")]
    assert heat.downloads == 5
    assert heat.last_download >= before


def test_hot_stats_add_record_counts_only_its_own_region_and_known_artifacts() -> None:
    stats = HotStats("eu")
    end = T0 + timedelta(minutes=5)

    def counts(region: str, *items: DownloadCount) -> bytes:
        return DownloadCounts(
            node_id=f"{region}-1",
            region=region,
            period_start=T0,
            period_end=end,
            counts=items,
        ).to_bytes()

    stats.add_record(
        counts(
            "eu",
            DownloadCount("drupal/token", "1.9.0", 3, sha("a")),
            DownloadCount("drupal/core", "11.0.0", 7, None),  # a v1 count: no artifact known
            DownloadCount("drupal/ctools", "4.0.0", 2, sha("b")),
        )
    )
    stats.add_record(counts("us", DownloadCount("drupal/token", "1.9.0", 100, sha("a"))))
    stats.add_record(counts("eu", DownloadCount("drupal/token", "1.9.0", 1, sha("a"))))

    assert stats.snapshot() == {sha("a"): Heat(4, end), sha("b"): Heat(2, end)}


# ---------------------------------------------------------------------------
# DownloadTally
# ---------------------------------------------------------------------------


def test_tally_drain_is_none_when_nothing_was_downloaded() -> None:
    tally = DownloadTally("eu-1", "eu", T0)

    assert tally.drain(T0 + timedelta(minutes=1)) is None


def test_tally_drain_aggregates_counts_over_the_period() -> None:
    tally = DownloadTally("eu-1", "eu", T0)
    tally.record("drupal/token", "1.9.0", sha("a"))
    tally.record("drupal/token", "1.9.0", sha("a"))
    tally.record("drupal/core", "11.0.0", sha("c"))
    tally.record("drupal/token", "1.9.0", sha("a"))
    end = T0 + timedelta(minutes=1)

    drained = tally.drain(end)

    assert drained == DownloadCounts(
        node_id="eu-1",
        region="eu",
        period_start=T0,
        period_end=end,
        counts=(
            DownloadCount("drupal/core", "11.0.0", 1, sha("c")),
            DownloadCount("drupal/token", "1.9.0", 3, sha("a")),
        ),
    )
    # What is produced decodes to the same event.
    assert DownloadCounts.from_bytes(drained.to_bytes()) == drained


def test_tally_drain_empties_and_moves_the_period() -> None:
    tally = DownloadTally("eu-1", "eu", T0)
    t1, t2, t3 = (T0 + timedelta(minutes=m) for m in (1, 2, 3))
    tally.record("drupal/token", "1.9.0", sha("a"))

    first = tally.drain(t1)
    empty = tally.drain(t2)  # nothing between t1 and t2
    tally.record("drupal/token", "1.9.0", sha("a"))
    third = tally.drain(t3)

    assert first is not None and (first.period_start, first.period_end) == (T0, t1)
    assert empty is None
    assert third is not None and (third.period_start, third.period_end) == (t2, t3)
    assert third.counts == (DownloadCount("drupal/token", "1.9.0", 1, sha("a")),)


def test_tally_restore_puts_counts_back_and_keeps_the_earliest_start() -> None:
    tally = DownloadTally("eu-1", "eu", T0)
    t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    tally.record("drupal/token", "1.9.0", sha("a"))
    tally.record("drupal/core", "11.0.0", sha("c"))
    unsent = tally.drain(t1)
    assert unsent is not None
    tally.record("drupal/token", "1.9.0", sha("a"))

    tally.restore(unsent)  # producing it failed
    resent = tally.drain(t2)

    assert resent is not None
    assert resent.period_start == T0
    assert resent.period_end == t2
    assert resent.counts == (
        DownloadCount("drupal/core", "11.0.0", 1, sha("c")),
        DownloadCount("drupal/token", "1.9.0", 2, sha("a")),
    )


def test_tally_restore_into_an_empty_tally_gives_the_same_counts_back() -> None:
    tally = DownloadTally("eu-1", "eu", T0)
    for _ in range(3):
        tally.record("drupal/token", "1.9.0", sha("a"))
    t1 = T0 + timedelta(minutes=1)
    unsent = tally.drain(t1)
    assert unsent is not None

    tally.restore(unsent)
    again = tally.drain(t1 + timedelta(minutes=1))

    assert again is not None
    assert again.counts == unsent.counts
    assert again.period_start == unsent.period_start


def test_tally_restore_of_a_later_period_keeps_the_earlier_start() -> None:
    tally = DownloadTally("eu-1", "eu", T0)
    later = DownloadCounts(
        node_id="eu-1",
        region="eu",
        period_start=T0 + timedelta(hours=1),
        period_end=T0 + timedelta(hours=2),
        counts=(DownloadCount("drupal/token", "1.9.0", 2, sha("a")),),
    )

    tally.restore(later)
    drained = tally.drain(T0 + timedelta(hours=3))

    assert drained is not None
    assert drained.period_start == T0
    assert drained.counts == later.counts


# ---------------------------------------------------------------------------
# choose_evictions
# ---------------------------------------------------------------------------


def hours_ago(hours: float, downloads: int = 1) -> Heat:
    return Heat(downloads, NOW - timedelta(hours=hours))


def test_nothing_is_evicted_when_it_fits() -> None:
    sizes = {sha("a"): 40, sha("b"): 40}

    assert choose_evictions(sizes, {}, quota=100, incoming=20, now=NOW) == []
    assert choose_evictions(sizes, {}, quota=80, now=NOW) == []
    assert choose_evictions({}, {}, quota=1, incoming=1, now=NOW) == []


def test_never_downloaded_ones_go_first() -> None:
    sizes = {sha("hot"): 10, sha("cold"): 10, sha("never"): 10}
    heat = {sha("hot"): hours_ago(5), sha("cold"): hours_ago(500)}

    assert choose_evictions(sizes, heat, quota=30, incoming=10, now=NOW) == [sha("never")]


def test_then_the_least_recently_downloaded() -> None:
    sizes = {sha("a"): 10, sha("b"): 10, sha("c"): 10, sha("d"): 10}
    heat = {
        sha("a"): hours_ago(5, downloads=1),
        sha("b"): hours_ago(50, downloads=1000),
        sha("c"): hours_ago(20, downloads=1),
        sha("d"): hours_ago(2, downloads=1),
    }

    chosen = choose_evictions(sizes, heat, quota=40, incoming=30, now=NOW)

    assert chosen == [sha("b"), sha("c"), sha("a")]


def test_fewest_downloads_break_a_tie_in_recency() -> None:
    sizes = {sha("many"): 10, sha("few"): 10, sha("some"): 10}
    heat = {
        sha("many"): hours_ago(10, downloads=50),
        sha("few"): hours_ago(10, downloads=2),
        sha("some"): hours_ago(10, downloads=9),
    }

    assert choose_evictions(sizes, heat, quota=30, incoming=20, now=NOW) == [
        sha("few"),
        sha("some"),
    ]


def test_protected_ones_are_never_evicted() -> None:
    sizes = {sha("pinned"): 50, sha("other"): 50}

    chosen = choose_evictions(sizes, {}, quota=100, incoming=50, protected=[sha("pinned")], now=NOW)

    assert chosen == [sha("other")]


def test_recently_downloaded_ones_are_kept() -> None:
    sizes = {sha("recent"): 50, sha("old"): 50}
    heat = {sha("recent"): hours_ago(0.5), sha("old"): hours_ago(2)}

    chosen = choose_evictions(
        sizes, heat, quota=100, incoming=50, now=NOW, keep_recent=timedelta(hours=1)
    )

    assert chosen == [sha("old")]


def test_keep_recent_is_configurable() -> None:
    sizes = {sha("a"): 50}
    heat = {sha("a"): hours_ago(2)}

    assert (
        choose_evictions(
            sizes, heat, quota=50, incoming=10, now=NOW, keep_recent=timedelta(hours=3)
        )
        is None
    )
    assert choose_evictions(
        sizes, heat, quota=50, incoming=10, now=NOW, keep_recent=timedelta(hours=1)
    ) == [sha("a")]


def test_none_when_even_every_candidate_cannot_make_room() -> None:
    sizes = {sha("pinned"): 60, sha("recent"): 30, sha("cold"): 10}
    heat = {sha("recent"): hours_ago(0.1)}

    chosen = choose_evictions(
        sizes, heat, quota=100, incoming=20, protected={sha("pinned")}, now=NOW
    )

    # Evicting "cold" frees 10 of the 20 needed; the others may not go.
    assert chosen is None


def test_none_when_the_incoming_one_is_larger_than_the_quota() -> None:
    sizes = {sha("a"): 10}

    assert choose_evictions(sizes, {}, quota=100, incoming=101, now=NOW) is None


def test_evicts_no_more_than_needed() -> None:
    sizes = {sha(f"x{i}"): 10 for i in range(10)}
    heat = {sha(f"x{i}"): hours_ago(100 - i) for i in range(10)}  # x0 the coldest

    chosen = choose_evictions(sizes, heat, quota=100, incoming=25, now=NOW)

    # 25 bytes over: three of ten bytes each, the three coldest.
    assert chosen == [sha("x0"), sha("x1"), sha("x2")]


def test_a_single_large_cold_one_can_be_enough() -> None:
    sizes = {sha("big"): 90, sha("small"): 10}
    heat = {sha("small"): hours_ago(10)}

    assert choose_evictions(sizes, heat, quota=100, incoming=5, now=NOW) == [sha("big")]


HEAT_AGES = st.one_of(st.none(), st.integers(min_value=0, max_value=48 * 60))


@given(
    entries=st.dictionaries(
        keys=st.text(alphabet="abcdef", min_size=1, max_size=3),
        values=st.tuples(
            st.integers(min_value=0, max_value=1000),  # size
            HEAT_AGES,  # minutes since the last download, None: never
            st.integers(min_value=1, max_value=20),  # downloads
            st.booleans(),  # protected
        ),
        max_size=12,
    ),
    quota=st.integers(min_value=1, max_value=8000),
    incoming=st.integers(min_value=0, max_value=3000),
    keep_recent_minutes=st.integers(min_value=0, max_value=24 * 60),
)
def test_choose_evictions_properties(
    entries: dict[str, tuple[int, int | None, int, bool]],
    quota: int,
    incoming: int,
    keep_recent_minutes: int,
) -> None:
    sizes = {key: size for key, (size, _, _, _) in entries.items()}
    heat = {
        key: Heat(downloads, NOW - timedelta(minutes=age))
        for key, (_, age, downloads, _) in entries.items()
        if age is not None
    }
    protected = {key for key, (_, _, _, pinned) in entries.items() if pinned}
    keep_recent = timedelta(minutes=keep_recent_minutes)

    def recent(key: str) -> bool:
        return key in heat and NOW - heat[key].last_download <= keep_recent

    candidates = [key for key in sizes if key not in protected and not recent(key)]
    used = sum(sizes.values())

    chosen = choose_evictions(
        sizes,
        heat,
        quota=quota,
        incoming=incoming,
        protected=protected,
        now=NOW,
        keep_recent=keep_recent,
    )

    if chosen is None:
        assert used - sum(sizes[key] for key in candidates) + incoming > quota
        return
    freed = sum(sizes[key] for key in chosen)
    assert used - freed + incoming <= quota
    assert len(set(chosen)) == len(chosen)
    assert not set(chosen) & protected
    assert not any(recent(key) for key in chosen)

    # Coldest first: no candidate left in place is colder than one chosen.
    def coldness(key: str) -> tuple[bool, datetime, int]:
        entry = heat.get(key)
        return (False, NOW, 0) if entry is None else (True, entry.last_download, entry.downloads)

    for kept in set(candidates) - set(chosen):
        assert all(coldness(gone) <= coldness(kept) for gone in chosen)
    if used + incoming <= quota:
        assert chosen == []
    else:
        # No more than needed: without the last one chosen it would not have fit.
        assert used - (freed - sizes[chosen[-1]]) + incoming > quota
