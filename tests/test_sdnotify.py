"""probed.daemon.sdnotify against real AF_UNIX datagram sockets, as systemd's would be."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from probed.daemon.sdnotify import Notifier, keep_watchdog_fed


class Manager:
    """The service manager's end: a bound datagram socket that collects messages."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(5)

    def receive(self) -> str:
        return self.sock.recv(4096).decode()

    def fields(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.receive().split("\n"))

    def pending(self) -> list[str]:
        self.sock.setblocking(False)
        try:
            messages = []
            while True:
                try:
                    messages.append(self.sock.recv(4096).decode())
                except BlockingIOError:
                    return messages
        finally:
            self.sock.settimeout(5)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, Manager]]:
    address = str(tmp_path / "notify.sock")
    manager = Manager(address)
    yield address, manager
    manager.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, Manager]]:
    name = f"probed-test-{uuid.uuid4().hex}"
    manager = Manager("\0" + name)
    yield "@" + name, manager
    manager.close()


def test_without_notify_socket_everything_is_a_quiet_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.reloading() is False
    assert notifier.stopping() is False
    assert notifier.status("idle") is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval() is None


def test_ready_reaches_a_socket_in_the_file_system(path_socket: tuple[str, Manager]) -> None:
    address, manager = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready() is True
    assert manager.receive() == "READY=1"


def test_abstract_socket_names_start_with_at(abstract_socket: tuple[str, Manager]) -> None:
    address, manager = abstract_socket
    assert Notifier({"NOTIFY_SOCKET": address}).ready("serving 3 checks") is True
    assert manager.receive() == "READY=1\nSTATUS=serving 3 checks"


def test_status_stopping_and_watchdog_messages(path_socket: tuple[str, Manager]) -> None:
    address, manager = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    notifier.status("12 checks, 1 in outage")
    notifier.watchdog()
    notifier.stopping("draining")
    assert manager.receive() == "STATUS=12 checks, 1 in outage"
    assert manager.receive() == "WATCHDOG=1"
    assert manager.receive() == "STOPPING=1\nSTATUS=draining"


def test_reloading_carries_the_monotonic_clock(path_socket: tuple[str, Manager]) -> None:
    address, manager = path_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier({"NOTIFY_SOCKET": address}).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields = manager.fields()
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_a_status_text_cannot_add_fields(path_socket: tuple[str, Manager]) -> None:
    address, manager = path_socket
    Notifier({"NOTIFY_SOCKET": address}).status("bad\nREADY=1")
    assert manager.receive() == "STATUS=bad READY=1"


def test_field_names_must_be_upper_case() -> None:
    with pytest.raises(ValueError, match="upper case"):
        Notifier({"NOTIFY_SOCKET": "/nonexistent"}).send(ready=1)


def test_a_missing_manager_is_a_false_not_an_exception(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.enabled
    assert notifier.ready() is False


def test_sending_recovers_when_the_manager_comes_back(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    notifier = Notifier({"NOTIFY_SOCKET": address})
    first = Manager(address)
    assert notifier.watchdog() is True
    first.close()
    os.unlink(address)
    assert notifier.watchdog() is False  # nobody listening
    second = Manager(address)  # e.g. systemd re-executed itself
    try:
        assert notifier.watchdog() is True
        assert second.receive() == "WATCHDOG=1"
    finally:
        second.close()


def test_a_manager_that_does_not_read_never_blocks_the_sender(
    path_socket: tuple[str, Manager],
) -> None:
    address, manager = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    started = time.monotonic()
    results = [notifier.watchdog() for _ in range(5000)]
    assert time.monotonic() - started < 5
    assert results[0] is True
    assert results[-1] is False  # the queue filled up: dropped, not waited for
    assert manager.pending()


def test_unsupported_socket_kinds_are_ignored() -> None:
    assert not Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
    assert not Notifier({"NOTIFY_SOCKET": "@"}).enabled
    assert not Notifier({"NOTIFY_SOCKET": ""}).enabled


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval() == 15.0
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(env).watchdog_interval() == 15.0


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    assert Notifier(env, pid=4242).watchdog_interval() is None
    assert Notifier(env, pid=1).watchdog_interval() == 15.0


@pytest.mark.parametrize("usec", ["", "0", "-5", "soon", "1.5"])
def test_watchdog_interval_rejects_nonsense(usec: str) -> None:
    assert Notifier({"WATCHDOG_USEC": usec}).watchdog_interval() is None
    env = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "not-a-pid"}
    assert Notifier(env).watchdog_interval() is None


def test_datagram_comes_from_the_main_pid(path_socket: tuple[str, Manager]) -> None:
    # NotifyAccess=main: systemd drops messages whose sender (SCM_CREDENTIALS,
    # which the kernel attaches) is not the service's main process.
    address, manager = path_socket
    manager.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    code = (
        "from probed.daemon.sdnotify import Notifier; import sys; sys.exit(not Notifier().ready())"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "NOTIFY_SOCKET": address}
    )
    assert child.wait(timeout=30) == 0
    data, ancillary, _, _ = manager.sock.recvmsg(4096, socket.CMSG_SPACE(12))
    assert data == b"READY=1"
    ((level, kind, creds),) = ancillary
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
    pid, _uid, _gid = struct.unpack("3i", creds)
    assert pid == child.pid


async def test_keep_watchdog_fed_pings_every_half_interval(
    path_socket: tuple[str, Manager],
) -> None:
    address, manager = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"})  # 0.1 s
    task = asyncio.create_task(keep_watchdog_fed(notifier))
    await asyncio.sleep(0.32)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pings = manager.pending()
    assert set(pings) == {"WATCHDOG=1"}
    assert 3 <= len(pings) <= 8  # one at once, then every 0.05 s (7 on an idle machine)


async def test_keep_watchdog_fed_stays_silent_while_unhealthy(
    path_socket: tuple[str, Manager],
) -> None:
    address, manager = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"})
    task = asyncio.create_task(keep_watchdog_fed(notifier, healthy=lambda: False))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert manager.pending() == []


async def test_keep_watchdog_fed_returns_without_a_watchdog() -> None:
    await asyncio.wait_for(keep_watchdog_fed(Notifier({})), timeout=1)
