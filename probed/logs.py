"""Structured logs: dotted event names with key=value fields.

JSON lines when not on a terminal (journald, files) or with
``--log-format json``; aligned human lines on a terminal. Secrets never reach
a log call: probes only ever report masked transcripts and reasons.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["auto", "json", "console"]


_settings: tuple[LogFormat, str] = ("auto", "info")


def settings() -> tuple[LogFormat, str]:
    """The format and level :func:`configure` was given (worker processes log the same way)."""
    return _settings


def configure(fmt: LogFormat = "auto", level: str = "info") -> None:
    global _settings
    _settings = (fmt, level)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # one write per line: worker processes (workers: N) share stderr without mixing lines
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library: one structlog line each, never the
    # multi-line text that Python's last-resort handler would print into a JSON log.
    logging.basicConfig(handlers=[_ToStructlog()], level=logging.WARNING, force=True)


class _ToStructlog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        method = log.error if record.levelno >= logging.ERROR else log.warning
        method(
            "library.log",
            logger=record.name,
            message=record.getMessage().splitlines()[0][:300] if record.msg else "",
            exc_info=record.exc_info if record.exc_info and record.exc_info[0] else None,
        )


log = structlog.get_logger("probed")
