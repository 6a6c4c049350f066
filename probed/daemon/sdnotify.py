"""Tell systemd how the daemon is doing: the sd_notify datagram protocol, no library.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name``
for an abstract socket) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` and
``WATCHDOG_PID``. A message is one datagram of ``KEY=value`` lines. Outside
systemd nothing is set and every call is a no-op, so the daemon calls these
unconditionally.

A failed delivery never raises and sending never blocks: the socket is
non-blocking, so a manager that is not reading costs one lost message (the
next watchdog ping retries) instead of a stalled event loop. The result says
whether the datagram was handed to the kernel; callers normally ignore it.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import Callable, Mapping

_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


class Notifier:
    """A client of one service manager socket, read from the environment once."""

    def __init__(self, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = _watchdog_usec(env, os.getpid() if pid is None else pid)

    @property
    def enabled(self) -> bool:
        """True when a service manager socket is configured."""
        return self._address is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` fields as one message; True if it was delivered.

        Field names are upper case (``READY``, ``STATUS``, ``WATCHDOG`` ...); a
        malformed name is a programming error and raises ``ValueError``. Line
        breaks in values are replaced by spaces: one line per field is what
        the protocol has, and a STATUS text must not be able to add fields.
        """
        lines = []
        for name, value in fields.items():
            if not _FIELD_NAME.fullmatch(name):
                raise ValueError(f"sd_notify field name must be upper case, got {name!r}")
            text = str(value).replace("\r", " ").replace("\n", " ")
            lines.append(f"{name}={text}")
        if self._address is None or not lines:
            return False
        return self._sendto("\n".join(lines).encode("utf-8", "replace"))

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete."""
        return self.send(READY=1, **_status(status))

    def reloading(self, status: str | None = None) -> bool:
        """A reload starts; send :meth:`ready` when it is done.

        MONOTONIC_USEC lets systemd >= 253 (``Type=notify-reload``) tell this
        reload from an earlier one; older versions ignore it.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING=1, MONOTONIC_USEC=usec, **_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun."""
        return self.send(STOPPING=1, **_status(status))

    def status(self, text: str) -> bool:
        """A one-line state shown by ``systemctl status``."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """I am alive: reset the ``WatchdogSec=`` timer."""
        return self.send(WATCHDOG=1)

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of ``WatchdogSec=``), or None.

        None when no watchdog is configured for this process: WATCHDOG_USEC is
        missing or invalid, or WATCHDOG_PID names another process (the
        variables were inherited from a parent).
        """
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def _sendto(self, data: bytes) -> bool:
        # A socket per message, as libsystemd does: nothing to close or to
        # leak, and a manager that re-executed is simply found again. At a
        # few messages a second the extra socket() call costs nothing.
        assert self._address is not None
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(data, self._address)
        except OSError:  # ENOENT/ECONNREFUSED: no manager; EAGAIN: its queue is full
            return False
        return True


async def keep_watchdog_fed(notifier: Notifier, healthy: Callable[[], bool] = lambda: True) -> None:
    """Ping the watchdog every :meth:`Notifier.watchdog_interval` while ``healthy()``.

    Run it as a task on the daemon's event loop: that the task runs at all
    proves the loop is not wedged, and ``healthy`` can add a deeper check
    (e.g. the scheduler ran recently). A missed ping is not an error; systemd
    acts only when a whole WatchdogSec passes without one. Returns at once
    when no watchdog is configured; cancel it to stop.
    """
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    while True:
        if healthy():
            notifier.watchdog()
        await asyncio.sleep(interval)


def _socket_address(value: str) -> str | None:
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # unset, empty, or a kind we do not speak (e.g. vsock:)


def _watchdog_usec(env: Mapping[str, str], pid: int) -> int | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid is not None:
        try:
            if int(watchdog_pid) != pid:
                return None
        except ValueError:
            return None
    return usec


def _status(status: str | None) -> dict[str, str]:
    return {} if status is None else {"STATUS": status}
