"""A rejected hook event never blocks its hook: permanent refusals and events older than
``max_age`` are dead-lettered (kept with their reason, counted, listed) and delivery goes
on; transient errors keep retrying, with jitter."""

from __future__ import annotations

import json
import random
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from probed.hooks import Dispatcher
from probed.hooks.base import HookConfig
from probed.hooks.exec import ExecConfig
from probed.store.base import open_store
from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config, wait_for
from tests.daemon_storage import DaemonStorage
from tests.hooks_receiver import Receiver, free_port
from tests.test_hooks_delivery import FAST, numbered, webhook


def picky(status: int) -> Receiver:
    """Refuses with ``status`` the events of check c0 (a poison event), and every event of
    the daemon test (check "site" and service events); accepts the others."""
    return Receiver(
        refuse=lambda body: status if body.get("check") in ("c0", "site", None) else None
    )


def checks(bodies: list[Any]) -> list[str]:
    return [str(b.get("check")) for b in bodies]


@asynccontextmanager
async def dispatching(
    db: Path | str, hook: HookConfig, jitter: Callable[[], float] = lambda: 1.0
) -> AsyncIterator[tuple[Dispatcher, list[str]]]:
    store = await open_store(db)
    dead: list[str] = []
    dispatcher = Dispatcher(store, [hook], **FAST, jitter=jitter, on_dead_letter=dead.append)
    await dispatcher.start()
    try:
        yield dispatcher, dead
    finally:
        await dispatcher.stop(2.0)
        await store.close()


async def dead_letters(db: Path | str) -> list[Any]:
    store = await open_store(db, readonly=True)
    try:
        return await store.dead_letters()
    finally:
        await store.close()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
async def test_a_permanent_refusal_is_dead_lettered_and_the_next_events_go_out(
    daemon_storage: DaemonStorage, status: int
) -> None:
    async with picky(status) as receiver:
        hook = webhook(receiver.url("/h"))
        async with dispatching(daemon_storage.url, hook) as (d, dead):
            with capture_logs() as logs:
                for event in numbered(3):
                    await d.submit(event)
                await wait_for(
                    lambda: checks(receiver.bodies()) == ["c1", "c2"], 10, "c1, c2 delivered"
                )
            pending = await d.outbox.pending()
    assert checks(receiver.seen) == ["c0", "c1", "c2"]  # refused once, never retried
    assert dead == ["hook"]
    [letter] = await dead_letters(daemon_storage.url)
    assert letter.reason == f"HTTP {status} {web.Response(status=status).reason}: no such tenant"
    assert (letter.hook, letter.attempts) == ("hook", 0)
    assert json.loads(letter.payload)["event"]["check"] == "c0"
    assert pending == {}
    [logged] = [e for e in logs if e["event"] == "hook.dead_letter"]
    assert (logged["log_level"], logged["check"]) == ("error", "c0")


@pytest.mark.parametrize("status", [500, 503, 429, 408])
async def test_transient_refusals_keep_retrying(tmp_path: Path, status: int) -> None:
    async with picky(status) as receiver:
        hook = webhook(receiver.url("/h"))
        async with dispatching(tmp_path / "p.db", hook) as (d, dead):
            await d.submit(numbered(1)[0])
            await wait_for(lambda: checks(receiver.seen).count("c0") >= 3, 10, "three attempts")
    assert (dead, await dead_letters(tmp_path / "p.db")) == ([], [])


def exec_hook(tmp_path: Path, code: int) -> ExecConfig:
    script = tmp_path / "hook.py"
    script.write_text(
        f"import sys\nsys.stdin.read()\nprint('refused', file=sys.stderr)\nsys.exit({code})\n"
    )
    return ExecConfig.model_validate(
        {"type": "exec", "name": "pager", "command": [sys.executable, str(script)]}
    )


async def test_exec_exit_2_is_dead_lettered_exit_1_is_retried(tmp_path: Path) -> None:
    async with dispatching(tmp_path / "a.db", exec_hook(tmp_path, 2)) as (d, dead):
        await d.submit(numbered(1)[0])
        await wait_for(lambda: dead, 10, "a dead letter")
    [letter] = await dead_letters(tmp_path / "a.db")
    assert letter.reason == "exit status 2: refused"
    async with dispatching(tmp_path / "b.db", exec_hook(tmp_path, 1)) as (d, dead):
        with capture_logs() as logs:
            await d.submit(numbered(1)[0])
            await wait_for(lambda: sum(e["event"] == "hook.failed" for e in logs) >= 2, 10)
    assert (dead, await dead_letters(tmp_path / "b.db")) == ([], [])


async def test_an_event_older_than_max_age_is_dead_lettered(
    daemon_storage: DaemonStorage,
) -> None:
    hook = webhook(f"http://127.0.0.1:{free_port()}/h", max_age="300ms")  # refused: down
    async with dispatching(daemon_storage.url, hook) as (d, dead):
        with capture_logs() as logs:
            await d.submit(numbered(1)[0])
            await wait_for(lambda: dead, 10, "a dead letter after max_age")
            failures = sum(e["event"] == "hook.failed" for e in logs)
            pending = await d.outbox.pending()
    [letter] = await dead_letters(daemon_storage.url)
    assert letter.reason == "not delivered within max_age (0.3s)"
    assert failures >= 2 and letter.attempts == failures
    assert pending == {}


async def test_retries_are_jittered_within_half_to_all_of_the_backoff(tmp_path: Path) -> None:
    rng = random.Random(7)
    hook = webhook(f"http://127.0.0.1:{free_port()}/h")
    async with dispatching(tmp_path / "p.db", hook, jitter=rng.random) as (d, _):
        with capture_logs() as logs:
            await d.submit(numbered(1)[0])
            await wait_for(lambda: sum(e["event"] == "hook.failed" for e in logs) >= 5, 10)
    delays = [e["retry_in"] for e in logs if e["event"] == "hook.failed"][:5]
    full = [0.05, 0.1, 0.2, 0.2, 0.2]
    assert all(f / 2 <= got <= f for got, f in zip(delays, full, strict=True)), delays
    assert len(set(delays[2:])) > 1  # capped ones differ too: not in lockstep


@pytest.mark.e2e
async def test_the_daemon_lists_and_counts_dead_letters(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    async with picky(404) as receiver, ScriptedHTTP({"site": [True, False, False, True]}) as http:
        hooks = f'hooks:\n  - {{type: webhook, name: team, url: "{receiver.url("/")}"}}\n'
        config = http_config(
            tmp_path, http.port, ["site"], extra=hooks, storage=daemon_storage.lines
        )
        daemon = await DaemonProcess(config).start()
        try:
            await wait_for(
                lambda: _metric_at_least(daemon, 4), what="four dead letters (all events 404)"
            )
            status = await daemon.json("/api/v1/status")
        finally:
            assert await daemon.stop() == 0
    [team] = status["hooks"]
    assert team["hook"] == "team" and team["undelivered"] == 0
    kinds = [d["kind"] for d in team["dead_letters"]]
    assert sorted(kinds) == ["outage_closed", "outage_opened", "service_down", "service_up"]
    assert all(d["reason"].startswith("HTTP 404") for d in team["dead_letters"])


async def _metric_at_least(daemon: DaemonProcess, n: int) -> bool:
    value = await daemon.metric("probed_hook_dead_letters_total", hook="team")
    return value is not None and value >= n
