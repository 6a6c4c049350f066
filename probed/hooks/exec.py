"""Exec: run a command with the event in PROBED_* variables and as JSON on stdin.

The command runs without a shell (an argv list). Exit status 0 is a delivery;
anything else, or running past the timeout, is a failed delivery that is
retried. A command that outlives its timeout is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from typing import Literal

import aiohttp
from pydantic import Field, field_validator

from probed.hooks.base import Envelope, HookConfig, HookError, HookType, PermanentHookError

MAX_STDERR = 4096  # bytes of stderr kept for the failure reason
EXIT_PERMANENT = 2  # "never send me this event again": dead-lettered, not retried


class ExecConfig(HookConfig):
    type: Literal["exec"]
    command: tuple[str, ...] = Field(min_length=1)

    @field_validator("command")
    @classmethod
    def _executable(cls, command: tuple[str, ...]) -> tuple[str, ...]:
        program = command[0]
        found = shutil.which(program) if os.sep not in program else program
        if not found or not os.access(found, os.X_OK) or os.path.isdir(found):
            raise ValueError(f'command not found or not executable: "{program}"')
        return command


def environment(envelope: Envelope) -> dict[str, str]:
    """PROBED_* variables: the payload's plain fields, ``extra`` as PROBED_EXTRA_*, the last reason.

    ``id`` becomes PROBED_EVENT_ID (PROBED_EVENT is the event's kind); absent values are empty.
    """
    payload = envelope.payload()
    extra = {f"extra_{k}": v for k, v in envelope.event.extra.items()}
    fields = {k: v for k, v in {**payload, **extra}.items() if k != "id"}
    env = {
        f"PROBED_{key.upper()}": "" if value is None else str(value)
        for key, value in fields.items()
        if not isinstance(value, list | dict)
    }
    env["PROBED_EVENT_ID"] = envelope.id
    env["PROBED_REASON"] = envelope.event.reasons[-1] if envelope.event.reasons else ""
    return env


class Exec:
    def __init__(self, config: ExecConfig, session: aiohttp.ClientSession) -> None:
        del session
        self.config = config

    async def send(self, envelope: Envelope) -> None:
        process = await asyncio.create_subprocess_exec(
            *self.config.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **environment(envelope)},
        )
        try:
            _, stderr = await process.communicate(json.dumps(envelope.payload()).encode())
        finally:
            if process.returncode is None:  # cancelled: the dispatcher's timeout, or shutdown
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        code = process.returncode
        if code != 0:
            tail = stderr[-MAX_STDERR:].decode(errors="replace").strip().splitlines()
            why = f"exit status {code}" if code and code > 0 else f"killed by signal {-(code or 0)}"
            error = PermanentHookError if code == EXIT_PERMANENT else HookError
            raise error(why + (f": {tail[-1][:200]}" if tail else ""))


HOOK = HookType(name="exec", config=ExecConfig, build=Exec)
