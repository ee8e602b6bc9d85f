"""An aiohttp application run as a mode service beside a Faust worker, in the same event loop."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from mode import Service

from services.shared.logs import LogSettings, access_log_options


class HttpServerService(Service):
    """Starts ``app`` on ``host:port`` when the worker starts and stops it with the worker;
    logs each request when ``logs`` asks for an access log."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        logs: LogSettings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._app = app
        self._host = host
        self._port = port
        self._logs = logs or LogSettings()
        self._runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        self._runner = web.AppRunner(self._app, **access_log_options(self._logs))
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
