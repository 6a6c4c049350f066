"""The runner: one place for timeouts, error reasons and masking."""

from __future__ import annotations

from typing import Literal

from probed.daemon.runner import run_test, seconds
from probes.base import CheckBase, ProbeFailure, ProbeResult, ProbeType, Transcript


class EchoCheck(CheckBase):
    type: Literal["echo"] = "echo"
    secret: str = "hunter2-secret"

    def secrets(self) -> tuple[str, ...]:
        return (self.secret,)


async def echoing_server(check: EchoCheck, transcript: Transcript) -> ProbeResult:
    raise ProbeFailure(f"SMTP 535 bad credentials {check.secret}")


async def test_secrets_echoed_by_a_server_are_masked_in_the_reason() -> None:
    outcome = await run_test(ProbeType("echo", EchoCheck, echoing_server), EchoCheck(name="e"))
    assert outcome.result.reason == "SMTP 535 bad credentials ********"


async def test_connection_reset_without_errno_has_a_plain_reason() -> None:
    async def reset(check: EchoCheck, transcript: Transcript) -> ProbeResult:
        raise ConnectionResetError()

    outcome = await run_test(ProbeType("echo", EchoCheck, reset), EchoCheck(name="e"))
    assert outcome.result.reason == "connection reset by peer"


def test_timeout_seconds_are_never_rounded_misleadingly() -> None:
    assert [seconds(v) for v in (10.0, 0.5, 0.15, 120.0)] == ["10.0s", "0.5s", "0.15s", "120.0s"]
