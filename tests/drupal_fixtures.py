"""Where the tests find the real packages.drupal.org documents copied into the repo."""

from __future__ import annotations

from pathlib import Path

#: ``p2/drupal/<project>.json`` as packages.drupal.org serves them (provenance in the README).
DRUPAL_P2 = Path(__file__).parent / "fixtures" / "packages.drupal.org" / "p2" / "drupal"
