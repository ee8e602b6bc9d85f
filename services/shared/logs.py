"""How every ``fairstream`` process logs: one handler on stderr, lines of text or one JSON object per line.

The ``fairstream`` group configures it once (``--log-level``, ``--log-format``,
``--access-log``) before any command runs, so the Faust worker, aiohttp, aiokafka
and librdkafka (``connectors.kafka_connection.LIBRDKAFKA_LOG``) all write through the same
handler in the same format.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

__all__ = [
    "ACCESS_LOG",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "AccessLogger",
    "JsonLogFormatter",
    "LogSettings",
    "access_log_options",
    "configure_logging",
    "logs_json",
]

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
#: The logger of the HTTP access log: aiohttp's own name for it.
ACCESS_LOG = logging.getLogger("aiohttp.access")
#: A line of the text format; JSON objects carry the same four fields and more.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class LogSettings:
    """How a process logs: the least severe level shown, the format, and whether its HTTP
    servers log every request."""

    level: LogLevel = "info"
    format: LogFormat = "text"
    access_log: bool = False

    @property
    def level_number(self) -> int:
        return logging.getLevelNamesMapping()[self.level.upper()]


def configure_logging(settings: LogSettings) -> None:
    """Make the root logger's only handler write ``settings.format`` lines to stderr, at
    ``settings.level``; the access log (at info, whatever the level) only when asked for."""
    handler = _StderrHandler()
    handler.setFormatter(
        JsonLogFormatter() if settings.format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    # Only a handler of ours is replaced: a host's own (pytest's capture) stays.
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level_number)
    # The access log is asked for on its own: --log-level warning --access-log shows it.
    ACCESS_LOG.setLevel(logging.INFO if settings.access_log else logging.CRITICAL + 1)


def logs_json() -> bool:
    """Whether ``configure_logging`` set this process up to write JSON lines."""
    return any(
        isinstance(handler, _StderrHandler) and isinstance(handler.formatter, JsonLogFormatter)
        for handler in logging.getLogger().handlers
    )


def access_log_options(settings: LogSettings) -> dict[str, Any]:
    """The access-log arguments of an aiohttp ``AppRunner``: ``AccessLogger`` lines on
    ``aiohttp.access`` with ``--access-log``, else none (not even formatted)."""
    if not settings.access_log:
        return {"access_log": None}
    return {"access_log": ACCESS_LOG, "access_log_class": AccessLogger}


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes: a progress bar on the
    terminal (rich) swaps it for a proxy that prints above the bar."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (ISO 8601, UTC, ``Z``), ``level``
    (``debug`` ... ``critical``), ``logger``, ``message``; ``exception`` with the traceback
    when there is one, and the fields of an access-log line (``AccessLogger``)."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        document: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update({k: v for k, v in fields.items() if k not in document})
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        # default=str: a library may log any object (Faust logs sets of partitions).
        return orjson.dumps(document, default=str).decode()


class AccessLogger(AbstractAccessLogger):
    """One line per request answered, on ``aiohttp.access``: client address, method,
    path with query, status, bytes sent, seconds taken, user agent. In the JSON format
    each is a field of its own (``remote``, ``method``, ``path``, ``status``, ``bytes``,
    ``seconds``, ``user_agent``)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        fields = {
            "remote": request.remote or "-",
            "method": request.method,
            "path": request.path_qs,
            "status": response.status,
            "bytes": response.body_length,
            "seconds": round(time, 6),
            "user_agent": request.headers.get("User-Agent", ""),
        }
        self.logger.info(
            '%s "%s %s" %d %d %.3fs "%s"',
            fields["remote"],
            fields["method"],
            fields["path"],
            fields["status"],
            fields["bytes"],
            time,
            fields["user_agent"],
            extra={"fields": fields},
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
