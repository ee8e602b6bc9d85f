"""The package-name rule, once: what Composer accepts as a package name, in lower case, and
what is safe as an object key or a URL path segment.

Every layer that takes a package name from outside (events, p2 paths, request paths, the
importer, the publishing service, nginx's location) asks here.
"""

from __future__ import annotations

import re
from typing import Final

from schemas.errors import MalformedEventError, UnsafeNameError

# Composer's package name rule (ValidatingArrayLoader::hasPackageNamingError), lower case only
# (Composer lower-cases every name it asks a repository for), written so no string has two
# ways to match: Composer's own form, [a-z0-9]([_.-]?[a-z0-9]+)*, backtracks exponentially on
# a long run of letters followed by a character it refuses (one such request held a node's
# event loop for good). Both forms accept the same names.
VENDOR_PATTERN: Final = r"[a-z0-9]+(?:[_.-][a-z0-9]+)*"
NAME_PATTERN: Final = r"[a-z0-9]+(?:(?:[_.]|-{1,2})[a-z0-9]+)*"
PACKAGE_NAME: Final = re.compile(rf"^{VENDOR_PATTERN}/{NAME_PATTERN}$")
#: Device names on Windows, which Composer refuses as vendor or project names.
RESERVED_NAMES: Final = frozenset(
    [
        "nul",
        "con",
        "prn",
        "aux",
        *(f"com{n}" for n in range(1, 10)),
        *(f"lpt{n}" for n in range(1, 10)),
    ]
)
_PLAIN_TEXT: Final = re.compile(r"[A-Za-z0-9._+~-]+(/[A-Za-z0-9._+~-]+)?")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def is_package_name(name: str) -> bool:
    """Whether Composer accepts ``name`` as a package name (``check_package_name`` says why not)."""
    return (
        PACKAGE_NAME.fullmatch(name) is not None
        and not name.endswith(".json")
        and RESERVED_NAMES.isdisjoint(name.split("/"))
    )


def check_package_name(name: str) -> str:
    """Return ``name`` if it is a package name Composer accepts, safe as a path.

    Raises:
        UnsafeNameError: traversal (``..``), escapes (``%``), empty segments (``//``),
            control characters, non-ASCII look-alikes; such a name must never become a
            path such as ``p2/<name>.json``.
        MalformedEventError: a safe text that is not a Composer name.
    """
    check_safe_text(name, "package name")
    if not PACKAGE_NAME.fullmatch(name):
        raise MalformedEventError(
            f"package {name!r} is not a Composer name like drupal/token: lower-case "
            "'vendor/project' (letters, digits, and single '.', '_' or '-' between them)"
        )
    if not is_package_name(name):
        raise MalformedEventError(
            f"package {name!r} is not a Composer name: Composer refuses names ending in "
            f"'.json' and vendor or project names among {', '.join(sorted(RESERVED_NAMES))}"
        )
    return name


def check_safe_text(text: str, what: str) -> None:
    """Refuse ``text`` (a name or a version) if it is unsafe as an object key or a URL path.

    Raises ``UnsafeNameError`` saying each thing wrong with it.
    """
    # Fast path for the common case (every event goes through here); the
    # detailed diagnosis below only runs for text that fails it.
    if _PLAIN_TEXT.fullmatch(text) and ".." not in text and "//" not in text:
        return
    problems = []
    if not text:
        problems.append("it is empty")
    if not text.isascii():
        problems.append("it has non-ASCII characters (look-alikes of ASCII letters)")
    if _CONTROL.search(text):
        problems.append("it has control characters")
    if ".." in text:
        problems.append("it has '..' (path traversal)")
    if "//" in text or text.startswith("/") or text.endswith("/"):
        problems.append("it has an empty path segment")
    if "%" in text or "\\" in text:
        problems.append("it has an escape character (% or \\)")
    if problems:
        raise UnsafeNameError(f"{what} {text!r} is unsafe as an object key: {'; '.join(problems)}")


#: A jurisdiction a node declares and a sovereign region's policy lists: a two-letter code
#: (ISO 3166-1 for a country, ``EU`` for the Union), optionally qualified (``US-gov``).
JURISDICTION: Final = re.compile(r"[A-Z]{2}(?:-[A-Za-z0-9]{1,16})?")


def check_jurisdiction(code: str) -> str:
    """Return ``code`` if it is a jurisdiction code; raises ``MalformedEventError`` otherwise."""
    if not JURISDICTION.fullmatch(code):
        raise MalformedEventError(
            f"jurisdiction {code[:40]!r} is not a code such as EU, DE or US-gov: two upper-case "
            "letters, optionally '-' and up to 16 letters or digits"
        )
    return code
