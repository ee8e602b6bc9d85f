"""Synthetic Drupal projects, from a seed: names, profiles, requirements, each release's metadata.

Machine names such as ``views_bulk_operations``; ``drupal/core`` constraints of the release's
era; a few requirements on other, earlier generated projects that at least one of their stable
releases satisfies (so the requirement graph has no cycles).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal

from infra.devtools.catalogue_history import PlannedRelease, ReleasePlan, release_plan, seeded_rng
from schemas.versions import drupal_to_composer

__all__ = ["project_names", "project_releases"]

_LICENSE_RENAMED: Final = 1535760000  # 2018-09-01: GPL-2.0+ became GPL-2.0-or-later

# Lower-case words of contrib machine names. None is a Composer-reserved name (nul, con, ...)
# or one of Drupal's own packages (core, drupal, recommended_project...).
_WORD_LIST: Final = """
    token pathauto ctools views bulk operations admin toolbar field group entity reference
    media image crop paragraphs webform metatag redirect search api solr layout builder block
    menu link simple sitemap xml google analytics tag manager captcha recaptcha honeypot mail
    smtp config split ignore update backup migrate plus tools upgrade devel kint rules workflow
    content moderation scheduler inline form errors address geolocation leaflet geofield
    commerce payment stripe shipping cart product feeds tamper json rest graphql jsonapi extras
    schema oauth openid connect saml ldap user role permissions access private file browser
    embed video audio gallery slideshow slick carousel colorbox lightbox responsive tables
    filter facets autocomplete widget formatter display suite panels page manager mini tabs
    accordion bootstrap barrio gin claro olivero adminimal radix tailwind theme style switcher
    color palette font awesome icon social share sharing comment notify notification message
    queue cron ultimate job scheduler batch cache purge varnish memcache redis performance lazy
    loading asset injector css js aggregation minify twig tweak debug stage file proxy environment
    indicator shield login security kit password policy session limit flood control captcha
    antibot spam protection audit trail log history revision diff clone replicate node title
    length auto label pathologic linkit editor ckeditor5 plugin pack templates charts calendar
    date range recurring smart datetime office hours event registration ticket donation
    subscription newsletter mailchimp sendgrid symfony mailer forms multistep conditional
    fields field_group validation clientside inline entity browser entity usage embed
    translation locale language negotiation multilingual lingotek tmgmt transliteration
    country state postal geocoder maps openlayers location search_api views_data export csv
    import excel pdf print printable book outline taxonomy term access unlimited menu_block
    breadcrumb easy custom easy_breadcrumb block_class block_visibility conditions context
    group_content domain domain_access workbench access_unpublished content_lock
    publishcontent revisions moderation_dashboard sidebar ajax infinite scroll pager
    mini_pager views_infinite_scroll quicktabs superfish megamenu responsive_menu mobile
    detect pwa manifest amp seo checklist robots txt hreflang canonical schema_metatag
    structured data rdf oembed remote media_entity s3fs flysystem storage swiftmailer
    oauth2 server simple_oauth consumers jwt key encrypt real aes tfa webauthn cas
    shibboleth masquerade impersonate role_delegation administerusersbyrole r4032login
    honeypot_spam anonymous redirect_403 require login registration profile avatar gravatar
"""
_WORDS: Final = tuple(dict.fromkeys(_WORD_LIST.split()))
_RESERVED_PROJECTS: Final = frozenset(
    ["core", "drupal", "recommended_project", "legacy_project", "core_recommended"]
)

_CORE_ERAS: Final = (
    # (releases before this date, the drupal/core constraints projects then declared)
    (1506816000, ("~8.0", "^8", "~8.2")),  # 2017-10-01
    (1575158400, ("^8", "^8.5", "^8.7")),  # 2019-12-01
    (1591142400, ("^8.8 || ^9", "^8.7.7 || ^9", "^8 || ^9")),  # 2020-06-03: Drupal 9
    (1671062400, ("^9 || ^10", "^8.8 || ^9 || ^10", "^9.2 || ^10")),  # 2022-12-15: Drupal 10
    (1718582400, ("^9.5 || ^10", "^10", "^9.3 || ^10 || ^11")),  # 2024-06-17: Drupal 11
    (1 << 62, ("^10.3 || ^11", "^10 || ^11", "^11")),
)
_COVERED: Final = {"status": "covered", "message": "Covered by Drupal's security advisory policy"}
_NOT_OPTED_IN: Final = {
    "status": "not-covered",
    "message": "Project has not opted into security advisory coverage!",
}
_STAGE_NOT_COVERED: Final = {
    stage: {
        "status": "not-covered",
        "message": f"{label} releases are not covered by Drupal security advisories.",
    }
    for stage, label in (("alpha", "Alpha"), ("beta", "Beta"), ("rc", "RC"), ("dev", "Dev"))
}
_FIRST_NAMES: Final = (
    "Alex Ana Ben Carla Dave Elena Femi Greg Hana Ivan Jo Kasia Lars Maria Nico Olga Pierre "
    "Quinn Rosa Sam Tomas Uma Vera Wim Xena Yuki Zoe"
)
_LAST_NAMES: Final = (
    "Reid Berg Costa Dubois Ekstrom Fischer Garcia Haas Ito Jansen Kowalski Lund Moreau Novak "
    "Okafor Petrov Quist Rossi Silva Tanaka Ueda Varga Weber Young Zimmer"
)


@dataclass(frozen=True, slots=True)
class _Profile:
    """What stays the same across a project's releases."""

    kind: Literal["module", "theme"]
    description: str
    authors: tuple[tuple[str, int], ...]
    covered: bool
    old_license: bool
    keywords: str | None
    drush: bool
    issues_link: bool


@dataclass(frozen=True, slots=True)
class _Requirement:
    package: str
    constraint: str
    since_branch: int


def project_names(seed: int, count: int) -> list[str]:
    """Return ``count`` unique Drupal machine names (``token``, ``views_bulk_operations``).

    Lower-case words joined by ``_``, never a Composer-reserved name nor one of Drupal's own
    packages. Position 0 is the most depended-upon project. The first N names for a seed are
    the same whatever ``count``. Never raises for ``count`` up to ``catalogue.MAX_PROJECTS``.
    """
    rng = seeded_rng(f"fairstream-catalogue/{seed}/names")
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        words = rng.choices((1, 2, 3), weights=(3, 5, 2))[0]
        name = "_".join(rng.sample(_WORDS, words))
        if name in seen or name in _RESERVED_PROJECTS:
            continue
        seen.add(name)
        names.append(name)
    return names


def _core_constraint(plan: ReleasePlan, release: PlannedRelease) -> str:
    for era, (until, choices) in enumerate(_CORE_ERAS):
        if release.timestamp < until:
            # Semver releases of contrib need Drupal 8.8 at least.
            if not release.drupal_version.startswith("8.x-") and era < 2:
                continue
            return choices[(plan.core_variant + era) % len(choices)]
    raise AssertionError("the last era has no end")  # pragma: no cover


def _requirements(seed: int, index: int, names: Sequence[str], branches: int) -> list[_Requirement]:
    """A few requirements on earlier, popular projects that have a stable release."""
    rng = seeded_rng(f"fairstream-catalogue/{seed}/requirements/{index}")
    if index == 0 or rng.random() > 0.35:
        return []
    wanted = rng.choice((1, 1, 1, 2, 2, 3))
    requirements: dict[str, _Requirement] = {}
    for attempt in range(wanted):
        # Cubing favours the first projects, as everyone requires token and ctools.
        target = int(index * rng.random() ** 3)
        stable = [
            drupal_to_composer(release.drupal_version)
            for release in release_plan(seed, target).releases
            if release.stage == "stable"
        ]
        package = f"drupal/{names[target]}"
        if not stable or package in requirements:
            continue
        if rng.random() < 0.15:
            constraint = "*"
        else:
            major, minor, _ = rng.choice(stable).split(".", 2)
            constraint = f"^{major}.{minor}"
        since = 0 if attempt == 0 else rng.randrange(branches)
        requirements[package] = _Requirement(package, constraint, since)
    return sorted(requirements.values(), key=lambda requirement: requirement.package)


@lru_cache(maxsize=1)
def _maintainers(seed: int) -> tuple[tuple[str, int], ...]:
    rng = seeded_rng(f"fairstream-catalogue/{seed}/maintainers")
    people = sorted(
        {f"{first} {last}" for first in _FIRST_NAMES.split() for last in _LAST_NAMES.split()}
    )
    rng.shuffle(people)
    return tuple((person, rng.randint(1_000, 3_900_000)) for person in people[:400])


def _profile(seed: int, index: int, name: str) -> _Profile:
    rng = seeded_rng(f"fairstream-catalogue/{seed}/profile/{index}")
    words = name.split("_")
    title = " ".join(word.capitalize() for word in words)
    phrase = " ".join(words)
    kind: Literal["module", "theme"] = "theme" if rng.random() < 0.12 else "module"
    if kind == "theme":
        description = rng.choice(
            (f"A responsive theme with {phrase} styling.", f"{title}: a base theme for Drupal.")
        )
    else:
        description = rng.choice(
            (
                f"Provides {phrase} for Drupal sites.",
                f"Integrates Drupal with {title}.",
                f"Adds {phrase} to entities, views and forms.",
                f"Improves {phrase} for site builders and editors.",
            )
        )
    pool = _maintainers(seed)
    authors = tuple(sorted(rng.sample(pool, rng.choice((1, 1, 2, 2, 3, 4)))))
    keywords = rng.choice(
        (None, "Actively maintained", "Minimally maintained", "Seeking co-maintainer(s)")
    )
    return _Profile(
        kind=kind,
        description=description,
        authors=authors,
        covered=rng.random() < 0.7,
        old_license=rng.random() < 0.5,
        keywords=keywords,
        drush=kind == "module" and rng.random() < 0.2,
        issues_link=rng.random() < 0.5,
    )


def project_releases(
    seed: int, index: int, names: Sequence[str]
) -> Iterator[tuple[PlannedRelease, dict[str, Any]]]:
    """Each release of project ``index`` with its composer metadata (``version_entry``'s input)."""
    name = names[index]
    plan = release_plan(seed, index)
    profile = _profile(seed, index, name)
    requirements = _requirements(seed, index, names, plan.branches)
    support: dict[str, str] = {"source": f"https://git.drupalcode.org/project/{name}"}
    if profile.issues_link:
        support["issues"] = f"https://www.drupal.org/project/issues/{name}"
    authors = [
        {"name": person, "homepage": f"https://www.drupal.org/user/{uid}"}
        for person, uid in profile.authors
    ]
    for release in plan.releases:
        if not profile.covered:
            coverage = _NOT_OPTED_IN
        elif release.stage == "stable":
            coverage = _COVERED
        else:
            coverage = _STAGE_NOT_COVERED[release.stage]
        extra: dict[str, Any] = {
            "drupal": {"datestamp": str(release.timestamp), "security-coverage": coverage}
        }
        if profile.drush:
            extra["drush"] = {"services": {"drush.services.yml": "^10 || ^11"}}
        require = {"drupal/core": _core_constraint(plan, release)}
        require.update(
            (requirement.package, requirement.constraint)
            for requirement in requirements
            if requirement.since_branch <= release.branch
        )
        metadata: dict[str, Any] = {}
        if profile.keywords is not None:
            metadata["keywords"] = profile.keywords
        old = profile.old_license and release.timestamp < _LICENSE_RENAMED
        metadata.update(
            homepage=f"https://www.drupal.org/project/{name}",
            license="GPL-2.0+" if old else "GPL-2.0-or-later",
            authors=authors,
            support=support,
            type=f"drupal-{profile.kind}",
            uid=f"{name}-{release.node_id}",
            extra=extra,
            description=profile.description,
            require=require,
        )
        yield release, metadata
