"""A plain static file server standing in for an origin (ftp.drupal.org) in the demo and tests."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from connectors.metrics import instrument


def origin_app(root: Path) -> web.Application:
    """Serve the files under ``root`` at ``/``, as an origin of release zips."""
    app = web.Application()

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/health", health)
    instrument(app, "origin")  # /metrics before the static files
    app.router.add_static("/", root, show_index=False, follow_symlinks=False)
    return app
