"""How the long-running commands run: an aiohttp app alone, or a Faust worker with services beside it, until a signal.

SIGTERM (a supervisor's stop) ends them with status 0; Ctrl-C (SIGINT) with 130, as a
shell reports a command a terminal interrupted, after the same clean shutdown.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import faust
from aiohttp import web
from mode import ServiceT

from services.shared.logs import LogSettings, access_log_options

__all__ = ["INTERRUPTED", "run_worker", "serve_app"]

#: The exit status after Ctrl-C: 128 + SIGINT, as shells report it.
INTERRUPTED = 128 + signal.SIGINT


def serve_app(app: web.Application, host: str, port: int, *, logs: LogSettings) -> None:
    """Serve ``app`` on ``host:port`` until SIGTERM (returns) or SIGINT (``SystemExit(130)``);
    either way the app's shutdown and cleanup hooks run first."""
    if asyncio.run(_serve(app, host, port, logs)) == signal.SIGINT:
        raise SystemExit(INTERRUPTED)


async def _serve(app: web.Application, host: str, port: int, logs: LogSettings) -> int:
    runner = web.AppRunner(app, **access_log_options(logs))
    await runner.setup()
    loop = asyncio.get_running_loop()
    stopped_by: asyncio.Future[int] = loop.create_future()

    def stop(signum: int) -> None:
        if not stopped_by.done():
            stopped_by.set_result(signum)

    try:
        await web.TCPSite(runner, host, port).start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop, signum)
        return await stopped_by
    finally:
        await runner.cleanup()


class Worker(faust.Worker):
    """A Faust worker that remembers whether Ctrl-C stopped it (Faust exits 0 either way)
    and prints nothing of its own: Faust's spinner writes its terminal codes (cursor back,
    cursor shown) to stdout when the app has started, tty or not."""

    interrupted = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None

    def _on_sigint(self) -> None:
        self.interrupted = True
        super()._on_sigint()


def run_worker(app: faust.App, *services: ServiceT, logs: LogSettings) -> None:
    """Run a Faust worker of ``app`` with ``services`` (an HTTP server) until SIGTERM
    (``SystemExit(0)``) or SIGINT (``SystemExit(130)``), after its clean shutdown.

    The worker keeps the logging ``configure_logging`` set up: Faust's own would replace
    the handler with its colored one (and its box tables), redirect stdout and stderr into
    the log, and print a spinner and ``-INT-`` lines outside it.
    """
    worker = Worker(app, *services, loglevel=logs.level, quiet=True, override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if worker.interrupted and exc.code in (None, 0):
            raise SystemExit(INTERRUPTED) from None
        raise
