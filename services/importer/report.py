"""What an import did (the report), and who is told as it goes (an observer)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from services.importer.plan import Skipped, SkipReason

__all__ = ["ImportObserver", "ImportReport"]


@dataclass
class ImportReport:
    """What an import did: releases published, releases (or packages) skipped by reason."""

    repository: str
    packages: int = 0
    published: int = 0
    skipped: Counter[SkipReason] = field(default_factory=Counter)
    examples: dict[SkipReason, str] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    downloads: int = 0
    elapsed: float = 0.0

    def skip(self, skipped: Skipped) -> None:
        self.skipped[skipped.reason] += 1
        if skipped.reason not in self.examples:
            where = skipped.package + (f" {skipped.version}" if skipped.version else "")
            self.examples[skipped.reason] = f"{where}: {skipped.detail}"


class ImportObserver(Protocol):
    """Told how an import goes, e.g. to draw a progress bar."""

    def packages_found(self, total: int) -> None: ...

    def package_done(self, package: str, *, releases: int, skipped: int) -> None: ...

    def published(self, count: int) -> None: ...
