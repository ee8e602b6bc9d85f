"""The meta-directory's pure choice: which directory for which client, linked directories
preferred by trust root version, a stable spread, fallback to another region, and 503."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from unittest import mock

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from services.directory.meta import (
    DirectoryHealth,
    MetaDirectory,
    MetaDirectorySettings,
    Reference,
    choose_directory,
    health_from_probe,
)
from services.directory.registry import RegionMap

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
EU = Reference("eu", "http://eu.example")
US1 = Reference("us", "http://us1.example")
US2 = Reference("us", "http://us2.example")


def up(reference: Reference, root: int | None = 1) -> DirectoryHealth:
    return DirectoryHealth(reference, True, T0, root, "ok")


def down(reference: Reference) -> DirectoryHealth:
    return DirectoryHealth(reference, False, T0, None, "/health failed")


def url_for(
    directories: list[DirectoryHealth], region: str | None, client: str = "10.0.0.1"
) -> str | None:
    return choose_directory(
        directories, client_region=region, default_region="us", client_key=client
    ).url


def test_the_clients_region_first_else_the_default_region() -> None:
    directories = [up(EU), up(US1)]
    assert url_for(directories, "eu") == EU.url
    assert url_for(directories, "us") == US1.url
    assert url_for(directories, None) == US1.url  # unknown region: the default
    assert url_for(directories, "ap") == US1.url  # a region without directories: the default


def test_another_region_when_the_clients_has_no_healthy_directory() -> None:
    choice = choose_directory(
        [up(EU), down(US1), down(US2)], client_region="us", default_region="us", client_key="a"
    )
    assert choice.url == EU.url and choice.region == "eu"
    assert "no healthy directory in region us" in choice.why


def test_none_healthy_is_no_choice_with_a_reason() -> None:
    choice = choose_directory(
        [down(EU), down(US1)], client_region="eu", default_region="us", client_key="a"
    )
    assert choice.url is None
    assert choice.why == "none of the 2 referenced directories is healthy right now"
    assert (
        "refers to no directory"
        in choose_directory([], client_region=None, default_region="us", client_key="a").why
    )


def test_linked_directories_behind_on_the_trust_root_are_not_chosen() -> None:
    directories = [up(US1, root=2), up(US2, root=3)]
    clients = [f"10.0.{i // 256}.{i % 256}" for i in range(200)]
    assert {url_for(directories, "us", c) for c in clients} == {US2.url}
    # One that states no root at all ranks below one that does.
    assert {url_for([up(US1, root=None), up(US2, root=1)], "us", c) for c in clients} == {US2.url}


def test_clients_are_spread_stably_and_only_a_failed_directorys_clients_move() -> None:
    directories = [up(US1), up(US2)]
    clients = [f"10.0.{i // 256}.{i % 256}" for i in range(400)]
    first = {c: url_for(directories, "us", c) for c in clients}
    spread = Counter(first.values())
    assert spread[US1.url] > 120 and spread[US2.url] > 120
    assert first == {c: url_for(directories, "us", c) for c in clients}  # stable
    after = {c: url_for([down(US1), up(US2)], "us", c) for c in clients}
    assert set(after.values()) == {US2.url}
    # A client of US2 is not moved by US1's failure (nor, when US1 returns, back).
    assert all(after[c] == US2.url for c in clients if first[c] == US2.url)


def test_health_is_read_from_the_directorys_health_document() -> None:
    body = orjson.dumps({"region": "d", "status": "ok", "trust_root": {"version": 4}})
    health = health_from_probe(US1, 200, body, T0)
    assert health.healthy and health.trust_root_version == 4 and health.last_probe == T0
    frozen = orjson.dumps({"status": "frozen: trust root expired", "trust_root": {"version": 4}})
    assert not health_from_probe(US1, 200, frozen, T0).healthy
    assert health_from_probe(US1, 503, body, T0).reason == "/health answered 503"
    assert health_from_probe(US1, 200, b"<html>", T0).reason == "/health answered 200, not JSON"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("eu", "is not REGION=URL"),
        ("eu=ftp://x", "is not an http:// or https:// URL"),
        ("e u=http://x", "lower-case letters"),
        ("eu=http://x/?a=1", "no query or fragment"),
    ],
)
def test_a_bad_reference_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Reference.parse(text)
    assert Reference.parse("EU=https://eu.example/repo/") == Reference(
        "eu", "https://eu.example/repo"
    )


def meta(directories: list[DirectoryHealth]) -> MetaDirectory:
    service = MetaDirectory(
        MetaDirectorySettings(
            references=tuple(d.reference for d in directories),
            default_region="us",
            regions=RegionMap.parse(["127.0.0.0/8=us"]),
        )
    )
    service.directories = directories
    return service


def answer(service: MetaDirectory, method: str, path: str, **headers: str) -> web.HTTPException:
    transport = mock.Mock()
    transport.get_extra_info.return_value = ("127.0.0.1", 5555)
    request = make_mocked_request(method, path, headers=headers, transport=transport)
    with pytest.raises(web.HTTPException) as raised:
        asyncio.run(service.redirect(request))
    return raised.value


def test_requests_are_redirected_with_their_path_and_query() -> None:
    service = meta([up(EU), up(US1)])
    found = answer(service, "GET", "/p2/drupal/token.json?x=1")
    assert (
        found.status == 302 and found.headers["Location"] == f"{US1.url}/p2/drupal/token.json?x=1"
    )
    posted = answer(service, "POST", "/api/security-advisories/", **{"X-Fairstream-Region": "eu"})
    assert (
        posted.status == 307 and posted.headers["Location"] == f"{EU.url}/api/security-advisories/"
    )
    unavailable = answer(meta([down(EU)]), "GET", "/packages.json")
    assert unavailable.status == 503 and unavailable.headers["Retry-After"] == "3"
    assert "none of the 1 referenced directories is healthy" in (unavailable.text or "")
