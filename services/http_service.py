"""An aiohttp application run as a mode service beside a Faust worker, in the same event loop."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from mode import Service


class HttpServerService(Service):
    """Starts ``app`` on ``host:port`` when the worker starts and stops it with the worker."""

    def __init__(self, app: web.Application, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._app = app
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
