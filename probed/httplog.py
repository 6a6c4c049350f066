"""What aiohttp's server says about a bad request, as one structlog line.

aiohttp logs a malformed request (a NUL in a header, a 20 kB URL, TLS bytes
on the plain port) with ``logger.exception``: a multi-line traceback whose
text quotes the raw header, token included. Given as the server's
``logger``, :class:`BadRequestLog` logs it as ``http.bad_request`` with the
peer, the status and the error's type: never the request's text or headers.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from logging import DEBUG, Logger
from types import TracebackType
from typing import Any, TypeAlias

from aiohttp.http_exceptions import HttpProcessingError

from probed.logs import log

_ExcInfo: TypeAlias = (
    bool
    | BaseException
    | tuple[type[BaseException], BaseException, TracebackType | None]
    | tuple[None, None, None]
    | None
)


class BadRequestLog(Logger):
    def __init__(self) -> None:
        super().__init__("probed.http")

    def _log(  # the one method every Logger call goes through
        self,
        level: int,
        msg: object,
        args: Any,
        exc_info: _ExcInfo = None,
        extra: Mapping[str, object] | None = None,
        stack_info: bool = False,
        stacklevel: int = 1,
    ) -> None:
        exc = _exception(exc_info)
        remote = str(args[0]) if isinstance(args, tuple) and args else None
        if isinstance(exc, HttpProcessingError):  # the client's fault: a short line
            method = log.debug if level <= DEBUG else log.warning
            method("http.bad_request", remote=remote, status=exc.code, error=type(exc).__name__)
        elif exc is not None:  # ours: a bug in a handler, with its traceback (one JSON line)
            log.error("http.handler_failed", error=type(exc).__name__, exc_info=exc)
        else:
            log.warning("http.server", message=str(msg).splitlines()[0][:200])


def _exception(exc_info: _ExcInfo) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple):
        return exc_info[1]
    return sys.exc_info()[1] if exc_info else None
