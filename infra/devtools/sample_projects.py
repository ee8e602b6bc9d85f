"""Small Drupal-shaped project zips for the demo and the tests: one top directory each."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import orjson


def sample_zip(
    dest_dir: Path,
    project: str,
    drupal_version: str,
    require: Mapping[str, str] | None = None,
    *,
    build: str | None = None,
) -> Path:
    """Write ``<project>-<drupal_version>.zip`` as drupal.org packages it and return its path.

    The zip holds ``<project>/composer.json``, ``<project>.info.yml`` and a
    ``.module`` file whose contents name the project and version, so an install
    can be checked byte for byte. ``build`` (a dev release rebuilt after a commit) is written
    into the ``.module`` file: another build, other bytes.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"{project}-{drupal_version}.zip"
    composer = {
        "name": f"drupal/{project}",
        "type": "drupal-module",
        "description": f"The {project} module (fairstream sample).",
        "license": "GPL-2.0-or-later",
        "require": dict(require or {}),
    }
    files = {
        f"{project}/composer.json": orjson.dumps(composer, option=orjson.OPT_INDENT_2),
        f"{project}/{project}.info.yml": (
            f"name: {project}\ntype: module\ncore_version_requirement: ^9 || ^10\n"
            f"version: '{drupal_version}'\nproject: '{project}'\n"
        ).encode(),
        f"{project}/{project}.module": (
            f"<?php\n// {project} {drupal_version}: served by fairstream.\n"
            + (f"// build {build}\n" if build is not None else "")
        ).encode(),
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            # Fixed timestamps: the same project and version always give the same bytes.
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return path
