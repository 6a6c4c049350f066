"""sd_notify: tell systemd about readiness, reloads, status and liveness (placeholder)."""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET") or None

    def send(self, **fields: str) -> bool:
        if not self.address:
            return False
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        payload = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload, address)
        except OSError:
            return False
        return True

    def ready(self) -> bool:
        return self.send(READY="1")

    def reloading(self) -> bool:
        return self.send(RELOADING="1")

    def stopping(self) -> bool:
        return self.send(STOPPING="1")

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def watchdog_interval(self) -> float | None:
        usec = os.environ.get("WATCHDOG_USEC")
        return int(usec) / 1e6 if usec and usec.isdigit() else None
