"""The outbox and its dispatcher, through the webhook transport and a loopback receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from probed.core.events import Event
from probed.hooks import Dispatcher
from probed.hooks.webhook import WebhookConfig
from probed.store.base import open_store
from tests.daemon_helpers import wait_for
from tests.daemon_storage import DaemonStorage
from tests.hooks_receiver import Receiver, free_port

FAST = {"backoff_base": 0.05, "backoff_cap": 0.2}


def webhook(url: str, name: str = "hook", **fields: Any) -> WebhookConfig:
    return WebhookConfig.model_validate({"type": "webhook", "name": name, "url": url, **fields})


def opened(check: str = "home", at: float = 1_790_000_000.0, **fields: Any) -> Event:
    return Event(
        "outage_opened",
        "web",
        at,
        check=check,
        outage_id=7,
        start=at - 60,
        end=at,
        failed_tests=2,
        reasons=("connection refused", "connection refused"),
        summary=f"web/{check} is down: connection refused",
        **fields,
    )


def numbered(n: int) -> list[Event]:
    return [opened(check=f"c{i}", at=1_790_000_000.0 + i) for i in range(n)]


@asynccontextmanager
async def dispatching(
    db: Path | str, *hooks: WebhookConfig, clock: Callable[[], float] | None = None
) -> AsyncIterator[Dispatcher]:
    store = await open_store(db)
    extra: dict[str, Any] = {"clock": clock} if clock else {}
    dispatcher = Dispatcher(store, hooks, **FAST, **extra, jitter=lambda: 1.0)
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop(2.0)
        await store.close()


async def undelivered(db: Path | str) -> int:
    """Undelivered outbox rows, as another process reads them through the store."""
    store = await open_store(db, readonly=True)
    try:
        return sum((await store.undelivered()).values())
    finally:
        await store.close()


async def none_undelivered(db: Path | str) -> bool:
    return await undelivered(db) == 0


def checks_of(receiver: Receiver) -> list[str]:
    return [body["check"] for body in receiver.bodies()]


async def test_webhook_posts_the_event_json_signed_with_hmac_sha256(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    (tmp_path / "secret").write_text("s3cret-key\n")
    async with Receiver() as receiver:
        hook = webhook(receiver.url(), secret_file=str(tmp_path / "secret"))
        async with dispatching(daemon_storage.url, hook) as dispatcher:
            with capture_logs() as logs:
                await dispatcher.submit(opened(severity="P1"))
                await wait_for(lambda: receiver.requests, 10, "the webhook")
                await wait_for(lambda: none_undelivered(daemon_storage.url), 10, "the mark")
    [request] = receiver.requests
    expected = "sha256=" + hmac.new(b"s3cret-key", request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Probed-Signature"] == expected
    assert request.headers["X-Probed-Event"] == "outage_opened"
    assert request.headers["Content-Type"] == "application/json"
    body = request.json()
    assert request.headers["X-Probed-Delivery"] == body.pop("id")
    assert body == {
        "event": "outage_opened",
        "service": "web",
        "check": "home",
        "severity": "P1",
        "summary": "web/home is down: connection refused",
        "at": "2026-09-21T14:13:20Z",
        "start": "2026-09-21T14:12:20Z",
        "end": "2026-09-21T14:13:20Z",
        "outage_id": 7,
        "failed_tests": 2,
        "downtime_seconds": None,
        "reasons": ["connection refused", "connection refused"],
        "extra": {},
    }
    assert [e for e in logs if e["event"].startswith("hook.")] == [
        {
            "event": "hook.delivered",
            "hook": "hook",
            "kind": "outage_opened",
            "service": "web",
            "check": "home",
            "attempt": 1,
            "log_level": "info",
        }
    ]


async def test_webhook_without_secret_sends_no_signature(daemon_storage: DaemonStorage) -> None:
    async with (
        Receiver() as receiver,
        dispatching(daemon_storage.url, webhook(receiver.url())) as dispatcher,
    ):
        await dispatcher.submit(opened())
        await wait_for(lambda: receiver.requests, 10, "the webhook")
    assert "X-Probed-Signature" not in receiver.requests[0].headers


async def test_receiver_down_for_a_while_gets_every_event_in_order_once(
    daemon_storage: DaemonStorage,
) -> None:
    async with (
        Receiver(status=503) as receiver,
        dispatching(daemon_storage.url, webhook(receiver.url())) as dispatcher,
    ):
        with capture_logs() as logs:
            for event in numbered(5):
                await dispatcher.submit(event)
            await wait_for(
                lambda: sum(e["event"] == "hook.failed" for e in logs) >= 3, 10, "retries"
            )
            assert receiver.requests == []
            receiver.status = 200
            await wait_for(lambda: len(receiver.requests) >= 5, 10, "all five events")
            await asyncio.sleep(0.5)  # room for a duplicate to show up
    assert checks_of(receiver) == ["c0", "c1", "c2", "c3", "c4"]
    failed = [e for e in logs if e["event"] == "hook.failed"]
    # the first event is retried alone: a hook's later events wait for it
    assert {e["check"] for e in failed} == {"c0"}
    assert failed[0]["reason"] == "HTTP 503 Service Unavailable: receiver is down for maintenance"
    assert [e["attempt"] for e in failed[:3]] == [1, 2, 3]


async def test_refused_connections_are_retried_with_growing_backoff(
    daemon_storage: DaemonStorage,
) -> None:
    port = free_port()
    async with dispatching(daemon_storage.url, webhook(f"http://127.0.0.1:{port}/h")) as d:
        with capture_logs() as logs:
            await d.submit(opened())
            await wait_for(lambda: sum(e["event"] == "hook.failed" for e in logs) >= 4, 10)
        async with Receiver(port=port) as receiver:
            await wait_for(lambda: receiver.requests, 10, "the event after the receiver came up")
    failed = [e for e in logs if e["event"] == "hook.failed"]
    assert failed[0]["reason"] == "connection refused"
    assert [e["retry_in"] for e in failed[:4]] == [0.05, 0.1, 0.2, 0.2]  # capped


async def test_undelivered_events_survive_a_restart_and_are_sent_once(
    daemon_storage: DaemonStorage,
) -> None:
    db = daemon_storage.url
    port = free_port()
    hook = webhook(f"http://127.0.0.1:{port}/h")
    first, second = numbered(5)[:3], numbered(5)[3:]
    async with dispatching(db, hook) as dispatcher:
        for event in first:
            await dispatcher.submit(event)
        await asyncio.sleep(0.2)  # attempts fail: nobody listens yet
    assert await undelivered(db) == 3
    async with Receiver(port=port) as receiver, dispatching(db, hook) as dispatcher:
        await wait_for(lambda: len(receiver.requests) == 3, 10, "the events from before")
        for event in second:
            await dispatcher.submit(event)
        await wait_for(lambda: len(receiver.requests) == 5, 10, "the new events")
    async with Receiver(port=port) as again, dispatching(db, hook):
        await asyncio.sleep(0.5)  # a third start finds nothing to send
    assert checks_of(receiver) == ["c0", "c1", "c2", "c3", "c4"]
    assert again.requests == []
    assert await undelivered(db) == 0


async def test_a_failing_hook_does_not_delay_the_others(daemon_storage: DaemonStorage) -> None:
    async with Receiver(status=500) as down, Receiver() as up:
        hooks = (webhook(down.url(), name="down"), webhook(up.url(), name="up"))
        async with dispatching(daemon_storage.url, *hooks) as dispatcher:
            for event in numbered(3):
                await dispatcher.submit(event)
            await wait_for(lambda: len(up.requests) == 3, 10, "the healthy hook")
    assert down.requests == []
    assert checks_of(up) == ["c0", "c1", "c2"]


async def test_filters_choose_events_services_and_severity(daemon_storage: DaemonStorage) -> None:
    async with Receiver() as receiver:
        hooks = (
            webhook(receiver.url("/all"), name="all"),
            webhook(receiver.url("/closed"), name="closed", events=["outage_closed"]),
            webhook(receiver.url("/mail"), name="mail", services=["mail"]),
            webhook(receiver.url("/p1"), name="p1", min_severity="P1"),
        )
        events = [
            opened(check="a", severity="P2"),
            opened(check="b", severity="P1"),
            Event("outage_closed", "web", 1.0, check="a"),
            Event("service_down", "mail", 2.0, severity="P1"),
            Event("outage_extended", "web", 3.0, check="a"),  # opt-in only
        ]
        async with dispatching(daemon_storage.url, *hooks) as dispatcher:
            for event in events:
                await dispatcher.submit(event)
            await wait_for(lambda: len(receiver.requests) == 8, 10, "the filtered events")
            await asyncio.sleep(0.3)
    seen = {
        path: [(b["event"], b["service"], b["check"]) for b in receiver.bodies(path)]
        for path in ("/all", "/closed", "/mail", "/p1")
    }
    assert seen == {
        "/all": [
            ("outage_opened", "web", "a"),
            ("outage_opened", "web", "b"),
            ("outage_closed", "web", "a"),
            ("service_down", "mail", None),
        ],
        "/closed": [("outage_closed", "web", "a")],
        "/mail": [("service_down", "mail", None)],
        "/p1": [("outage_opened", "web", "b"), ("service_down", "mail", None)],
    }


async def test_one_event_has_the_same_id_for_every_hook(daemon_storage: DaemonStorage) -> None:
    async with Receiver() as receiver:
        hooks = (webhook(receiver.url("/a"), name="a"), webhook(receiver.url("/b"), name="b"))
        async with dispatching(daemon_storage.url, *hooks) as dispatcher:
            await dispatcher.submit(opened())
            await wait_for(lambda: len(receiver.requests) == 2, 10, "both hooks")
    [a], [b] = receiver.bodies("/a"), receiver.bodies("/b")
    assert a["id"] == b["id"] and len(a["id"]) == 32


async def test_submit_only_writes_rows_and_returns(daemon_storage: DaemonStorage) -> None:
    store = await open_store(daemon_storage.url)
    try:
        dispatcher = Dispatcher(store, [webhook("http://127.0.0.1:9/x")])  # never started
        await dispatcher.submit(opened())
        other = await open_store(daemon_storage.url, location="other")  # another process
        try:
            waiting = await other.undelivered()
            row = await other.claim("hook", time.time(), 60.0)
        finally:
            await other.close()
    finally:
        await store.close()
    assert waiting == {"hook": 1}
    assert row is not None and row.claimed  # nobody had tried it yet: free to claim
    assert (row.hook, row.attempts, row.location) == ("hook", 0, store.location)


async def test_slow_receiver_times_out_with_a_short_reason(daemon_storage: DaemonStorage) -> None:
    gate = asyncio.Event()

    class Slow(Receiver):
        async def _handle(self, request: Any) -> Any:
            await gate.wait()
            return await super()._handle(request)

    async with Slow() as receiver:
        hook = webhook(receiver.url(), timeout="200ms")
        async with dispatching(daemon_storage.url, hook) as dispatcher:
            with capture_logs() as logs:
                await dispatcher.submit(opened())
                await wait_for(lambda: any(e["event"] == "hook.failed" for e in logs), 10)
            gate.set()
            await wait_for(lambda: receiver.requests, 10, "the retry")
    failed = next(e for e in logs if e["event"] == "hook.failed")
    assert failed["reason"] == "timeout after 0.2s"


async def test_stop_cancels_a_delivery_past_the_deadline(daemon_storage: DaemonStorage) -> None:
    deadline = 0.3
    never = asyncio.Event()

    class Hung(Receiver):
        async def _handle(self, request: Any) -> Any:
            await never.wait()
            return await super()._handle(request)

    async with Hung() as receiver:
        store = await open_store(daemon_storage.url)
        dispatcher = Dispatcher(store, [webhook(receiver.url(), timeout="30s")], **FAST)
        await dispatcher.start()
        await dispatcher.submit(opened())
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await dispatcher.stop(deadline)
        took = loop.time() - began
        await store.close()
        never.set()  # lets the receiver shut down
    assert deadline <= took < deadline + 1.0
    assert await undelivered(daemon_storage.url) == 1  # sent again after the next start


async def test_reload_moves_a_changed_hook_and_its_pending_events(
    daemon_storage: DaemonStorage,
) -> None:
    port = free_port()
    async with (
        Receiver() as moved,
        Receiver() as kept,
        dispatching(
            daemon_storage.url,
            webhook(f"http://127.0.0.1:{port}/old", name="team"),
            webhook(kept.url(), name="audit"),
        ) as dispatcher,
    ):
        await dispatcher.submit(opened(check="before"))
        await wait_for(lambda: len(kept.requests) == 1, 10, "the unchanged hook")
        # SIGHUP: the team's endpoint moved, a hook was removed, another added
        dispatcher.configure(
            [webhook(moved.url("/new"), name="team"), webhook(moved.url("/extra"), name="extra")]
        )
        await dispatcher.submit(opened(check="after"))
        await wait_for(lambda: len(moved.requests) == 3, 10, "events at the new endpoints")
        await asyncio.sleep(0.3)
    assert [(b["check"]) for b in moved.bodies("/new")] == ["before", "after"]
    assert [(b["check"]) for b in moved.bodies("/extra")] == ["after"]
    assert checks_of(kept) == ["before"]
