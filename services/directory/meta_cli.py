"""The ``fairstream directory refer`` command: a meta-directory in front of regional directories."""

from __future__ import annotations

import click
import uvloop

from schemas.errors import ConfigurationError
from schemas.federation import REGION_NAME
from services.cli.options import (
    GEO_HEADER_OPTION,
    REGION_MAP_OPTION,
    listen_address,
    log_settings,
)
from services.directory.meta import MetaDirectory, MetaDirectorySettings, Reference
from services.directory.registry import RegionMap
from services.shared.serving import serve_app

__all__ = ["refer", "register"]


def register(group: click.Group) -> None:
    """Add ``refer`` to the ``fairstream directory`` command group."""
    group.add_command(refer)


@click.command("refer")
@click.option(
    "--refer",
    "references",
    multiple=True,
    required=True,
    metavar="REGION=URL",
    help="A directory serving REGION; repeatable. Several URLs for one region are linked "
    "directories serving the same catalogue: clients are spread over them.",
)
@REGION_MAP_OPTION
@GEO_HEADER_OPTION
@click.option(
    "--default-region",
    default=None,
    help="The region of clients whose region is unknown or has no directory  "
    "[default: the region of the first --refer]",
)
@click.option(
    "--listen", default="127.0.0.1:8091", show_default=True, help="HOST:PORT to serve on."
)
@click.option(
    "--probe-every",
    type=click.FloatRange(0.2, 300),
    default=3.0,
    show_default=True,
    help="Seconds between health probes of each directory.",
)
@click.option(
    "--probe-timeout",
    type=click.FloatRange(0.1, 60),
    default=2.0,
    show_default=True,
    help="Seconds a directory's /health may take before it counts as unhealthy.",
)
def refer(
    references: tuple[str, ...],
    region_map: tuple[str, ...],
    geo_header: str | None,
    default_region: str | None,
    listen: str,
    probe_every: float,
    probe_timeout: float,
) -> None:
    """Serve a meta-directory: every request is redirected (302, or 307 for a POST) to the
    same path on a healthy directory of the client's region, else of another region.

    It holds no catalogue. Of a region's linked directories, those on the newest trust
    root are chosen, each client always the same one while it stays healthy. Start linked
    directories with `directory serve --public-url` set to this meta-directory's URL, so
    the URLs in their documents come back here.

    \b
    Example: fairstream directory refer --refer eu=https://eu.packages.example \\
      --refer us=https://us1.packages.example \\
      --refer us=https://us2.packages.example \\
      --region-map 10.0.0.0/8=eu --default-region us --listen 0.0.0.0:8091
    """
    parsed = []
    for text in references:
        try:
            parsed.append(Reference.parse(text))
        except ValueError as exc:
            raise ConfigurationError(f"--refer {exc}") from None
    duplicates = sorted({f"{r.region}={r.url}" for r in parsed if parsed.count(r) > 1})
    if duplicates:
        raise ConfigurationError(f"--refer {', '.join(duplicates)} is given more than once")
    regions_referred = sorted({r.region for r in parsed})
    default = (default_region or parsed[0].region).strip().lower()
    if not REGION_NAME.fullmatch(default) or default not in regions_referred:
        raise ConfigurationError(
            f"--default-region {default!r} has no directory; choose one of "
            f"{', '.join(regions_referred)} (the regions given with --refer)"
        )
    try:
        regions = RegionMap.parse(region_map, geo_header=geo_header)
    except ValueError as exc:
        raise ConfigurationError(f"--region-map {exc}") from None
    host, port = listen_address(listen)
    meta = MetaDirectory(
        MetaDirectorySettings(
            references=tuple(parsed),
            default_region=default,
            regions=regions,
            probe_every=probe_every,
            probe_timeout=probe_timeout,
        )
    )
    uvloop.install()
    serve_app(meta.app, host, port, logs=log_settings())
