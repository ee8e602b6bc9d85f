"""The fault harness's checker and the node's fault points: pure logic."""

from __future__ import annotations

import pytest

from schemas.errors import ConfigurationError
from schemas.events import ReleasePublished, decode_package_event
from schemas.signing import SigningKey, open_sealed
from streams.faults import (
    AFTER_METADATA_WRITE,
    AFTER_STORE_WRITE,
    REFUSE_REJECTION,
    FaultPoints,
    FaultSpec,
    InjectedRefusalError,
)
from tests.faults.checker import Acknowledged, Observation, Served, check
from tests.faults.harness import bulk_release

ALL = {"eu": (("drupal/*",), ()), "ap": (("drupal/a*",), ())}
A1 = Acknowledged("drupal/alpha", "1.0.0", "a" * 64, "1" * 40)
B1 = Acknowledged("drupal/beta", "1.0.0", "b" * 64, "2" * 40)


def good(ack: Acknowledged) -> list[Served]:
    return [Served(ack.sha1, ack.sha256)]


def final_all() -> dict[str, dict[tuple[str, str], list[Served]]]:
    return {
        "eu": {("drupal/alpha", "1.0.0"): good(A1), ("drupal/beta", "1.0.0"): good(B1)},
        "ap": {("drupal/alpha", "1.0.0"): good(A1)},
    }


def test_a_clean_history_passes_and_respects_each_regions_policy() -> None:
    verdict = check(
        [A1, B1], {("drupal/alpha", "1.0.0"), ("drupal/beta", "1.0.0")}, ALL, final_all(), []
    )
    assert verdict.clean, str(verdict)


def test_an_acknowledged_release_missing_from_the_log_is_lost() -> None:
    verdict = check([A1, B1], {("drupal/alpha", "1.0.0")}, ALL, final_all(), [])
    assert verdict.lost == 1
    assert "drupal/beta" in str(verdict)


def test_a_region_that_does_not_serve_a_release_of_its_policy_leaves_it_unseen() -> None:
    final = final_all()
    del final["ap"][("drupal/alpha", "1.0.0")]
    verdict = check([A1, B1], {(a.package, a.version) for a in (A1, B1)}, ALL, final, [])
    assert (verdict.unseen, verdict.lost) == (1, 0)
    assert "unseen: ap" in str(verdict)


def test_other_bytes_or_another_sha1_are_wrongly_served() -> None:
    final = final_all()
    final["eu"][("drupal/beta", "1.0.0")] = [Served(B1.sha1, "f" * 64)]
    final["ap"][("drupal/alpha", "1.0.0")] = [Served("9" * 40, A1.sha256)]
    verdict = check([A1, B1], {(a.package, a.version) for a in (A1, B1)}, ALL, final, [])
    assert verdict.wrongly_served == 2


def test_a_zip_that_cannot_be_fetched_is_wrongly_served() -> None:
    final = final_all()
    final["eu"][("drupal/beta", "1.0.0")] = [Served(B1.sha1, None)]
    verdict = check([A1, B1], {(a.package, a.version) for a in (A1, B1)}, ALL, final, [])
    assert verdict.wrongly_served == 1


def test_a_served_release_nobody_acknowledged_is_counted() -> None:
    final = final_all()
    final["eu"][("drupal/gamma", "1.0.0")] = [Served("3" * 40, "c" * 64)]
    verdict = check([A1, B1], {(a.package, a.version) for a in (A1, B1)}, ALL, final, [])
    assert verdict.never_acknowledged == 1


def test_duplicates_in_the_final_state_and_in_observations_are_counted() -> None:
    final = final_all()
    final["eu"][("drupal/beta", "1.0.0")] = good(B1) * 2
    polls = [Observation("eu", "drupal/alpha", 1.0, ("1.0.0", "1.0.0"))]
    verdict = check([A1, B1], {(a.package, a.version) for a in (A1, B1)}, ALL, final, polls)
    assert verdict.duplicate == 2


def test_a_version_that_disappears_between_polls_is_a_rollback() -> None:
    polls = [
        Observation("eu", "drupal/alpha", 2.0, ("1.0.0",)),
        Observation("eu", "drupal/alpha", 1.0, ("1.0.0", "1.1.0")),
        Observation("ap", "drupal/alpha", 1.5, ()),
    ]
    verdict = check([A1, B1], {(a.package, a.version) for a in (A1, B1)}, ALL, final_all(), polls)
    assert verdict.rolled_back == 1
    assert "1.1.0" in str(verdict)


def test_each_copy_of_a_region_is_checked_for_rollback_on_its_own() -> None:
    # Two workers of eu, each with its own copy: eu-2 a moment behind eu-1 is no rollback.
    polls = [
        Observation("eu/eu-1", "drupal/alpha", 1.0, ("1.0.0", "1.1.0")),
        Observation("eu/eu-2", "drupal/alpha", 1.1, ("1.0.0",)),
        Observation("eu/eu-2", "drupal/alpha", 1.4, ("1.0.0", "1.1.0")),
        Observation("eu/eu-2", "drupal/alpha", 1.7, ("1.0.0",)),
    ]
    copies = {"eu/eu-1": "eu", "eu/eu-2": "eu"}
    verdict = check([A1], {("drupal/alpha", "1.0.0")}, {}, {}, polls, copies=copies)
    assert (verdict.rolled_back, verdict.lagging) == (1, 0), str(verdict)
    assert "('eu/eu-2', 'drupal/alpha') no longer listed ['1.1.0']" in str(verdict)


def test_a_copy_still_missing_a_version_past_the_bound_is_lagging_broker_pauses_aside() -> None:
    copies = {"eu/eu-1": "eu", "eu/eu-2": "eu", "ap/ap": "ap"}
    in_log = {("drupal/alpha", "1.0.0")}
    paused = [(12.0, 18.0)]
    polls = [
        Observation("eu/eu-1", "drupal/alpha", 10.0, ("1.0.0",)),
        Observation("eu/eu-2", "drupal/alpha", 14.0, ()),  # within the bound
        Observation("ap/ap", "drupal/alpha", 30.0, ()),  # another region: not a copy
        Observation("eu/eu-2", "drupal/alpha", 20.0, ()),  # 10 s, 6 of them paused
    ]
    clean = check([A1], in_log, {}, {}, polls, copies=copies, outages=paused)
    assert clean.clean, str(clean)
    late = [*polls, Observation("eu/eu-2", "drupal/alpha", 22.0, ())]
    verdict = check([A1], in_log, {}, {}, late, copies=copies, outages=paused)
    assert verdict.lagging == 1, str(verdict)
    assert "lagging: eu/eu-2 does not list drupal/alpha 1.0.0 6.0 s after" in str(verdict)
    unpaused = check([A1], in_log, {}, {}, polls, copies=copies)
    assert unpaused.lagging == 1, str(unpaused)


def test_fault_specs_parse_and_refuse_what_is_not_a_point() -> None:
    assert FaultSpec.parse("after-store-write") == FaultSpec(AFTER_STORE_WRITE, 1)
    assert FaultSpec.parse("after-metadata-write@3") == FaultSpec(AFTER_METADATA_WRITE, 3)
    for bad in ("after-lunch", "after-store-write@0", "after-store-write@x"):
        with pytest.raises(ConfigurationError):
            FaultSpec.parse(bad)


def test_a_fault_point_fires_once_on_its_nth_visit_and_ignores_other_points() -> None:
    fired: list[int] = []
    points = FaultPoints(FaultSpec(AFTER_METADATA_WRITE, 2), fire=lambda: fired.append(1))
    points.reached(AFTER_STORE_WRITE)
    points.reached(AFTER_METADATA_WRITE)
    assert fired == []
    points.reached(AFTER_METADATA_WRITE)
    points.reached(AFTER_METADATA_WRITE)
    assert fired == [1]
    FaultPoints(None, fire=lambda: fired.append(2)).reached(AFTER_METADATA_WRITE)
    assert fired == [1]


def test_a_refusing_point_refuses_its_first_n_visits_then_never_again() -> None:
    points = FaultPoints(FaultSpec(REFUSE_REJECTION, 2), fire=lambda: pytest.fail("killed"))
    points.refuse(AFTER_STORE_WRITE)  # another point: nothing
    for _ in range(2):
        with pytest.raises(InjectedRefusalError, match="refuse-rejection"):
            points.refuse(REFUSE_REJECTION)
    points.refuse(REFUSE_REJECTION)
    points.refuse(REFUSE_REJECTION)
    FaultPoints(None).refuse(REFUSE_REJECTION)


def test_the_soak_bulk_loads_releases_are_signed_decodable_and_unique_per_version() -> None:
    key = SigningKey.generate()
    trusted = {key.public_key.keyid: key.public_key}
    seen = set()
    for number in (0, 1, 37):
        record_key, value, ack = bulk_release(key, "drupal/load-00042", number)
        assert record_key == b"drupal/load-00042"
        event = decode_package_event(open_sealed(value, trusted))
        assert isinstance(event, ReleasePublished)
        assert (event.package, event.version, event.sequence) == (
            ack.package,
            ack.version,
            number + 1,
        )
        assert (event.artifact.sha256, event.artifact.sha1) == (ack.sha256, ack.sha1)
        assert not ack.zip_checked
        seen.add(ack.sha256)
    assert len(seen) == 3
