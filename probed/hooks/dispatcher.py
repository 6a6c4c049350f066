"""Delivery: one task per hook takes the hook's oldest undelivered row and sends it.

A hook's next event waits until the previous one is delivered (order matters:
an "up" must never overtake its "down"); hooks do not wait for each other.
Failures are retried with jittered exponential backoff up to ``backoff_cap``,
for ever unless the hook has a ``max_age``: a dropped page is worse than a
late one. A permanent refusal (:class:`PermanentHookError`) is dead-lettered at
once, so that one poison event never blocks the events after it. Probing never waits for delivery:
``submit`` only commits rows and wakes the tasks. Rows are claimed with a
lease, so several daemons sharing one store deliver each row once.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import aiohttp

from probed.core.events import Event
from probed.hooks.base import Envelope, Hook, HookConfig, PermanentHookError, Resending, describe
from probed.hooks.outbox import Outbox, Row, entry
from probed.hooks.registry import HOOK_TYPES
from probed.logs import log
from probed.store.base import OutboxEntry, Store
from probes.base import describe_error

BACKOFF_BASE = 2.0  # seconds before the first retry; doubles per failed attempt
BACKOFF_CAP = 300.0
LEASE_MARGIN = 30.0  # seconds a claimed row stays ours beyond the hook's timeout
RESOLVING = frozenset({"outage_closed", "service_up"})  # never muted: they close what opened


@dataclass(slots=True)
class _Slot:
    config: HookConfig
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    next_resend: float = 0.0
    task: asyncio.Task[None] | None = None


class Dispatcher:
    def __init__(
        self,
        store: Store,
        hooks: Sequence[HookConfig],
        *,
        clock: Callable[[], float] = time.time,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        muted: Callable[[Event], frozenset[str]] = lambda event: frozenset(),
        jitter: Callable[[], float] = random.random,  # 0..1: a retry waits 50..100 % of its backoff
        on_dead_letter: Callable[[str], None] = lambda hook: None,
    ) -> None:
        self.outbox = Outbox(store)
        self.muted = muted  # exclusion kinds covering an event's service at its time
        self.clock = clock
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.jitter = jitter
        self.on_dead_letter = on_dead_letter
        self.configs: dict[str, HookConfig] = {h.name: h for h in hooks}
        self.slots: dict[str, _Slot] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------ the sink

    def route(self, event: Event) -> OutboxEntry | None:
        """The outbox entry for every hook that wants the event (None when none does)."""
        names = [c.name for c in self.configs.values() if c.accepts(event)]
        if names and event.kind not in RESOLVING:  # good news always goes out: nothing stays open
            kinds = self.muted(event)
            names = [n for n in names if not kinds.intersection(self.configs[n].mute_during)]
        return entry(names, Envelope(uuid.uuid4().hex, event)) if names else None

    def wake(self, hooks: Iterable[str]) -> None:
        for name in hooks:
            slot = self.slots.get(name)
            if slot is not None:
                slot.wake.set()

    async def submit(self, event: Event) -> None:
        """Commit the event for every hook that wants it; never raises."""
        routed = self.route(event)
        if routed is None:
            return
        try:
            await self.outbox.store.enqueue([routed], self.clock())
        except Exception as exc:  # a sink must never break the outcome path that calls it
            log.error(
                "hook.outbox_failed",
                kind=event.kind,
                service=event.service,
                reason=describe_error(exc),
            )
            return
        self.wake(routed.hooks)

    # ------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        orphaned = {k: v for k, v in (await self.outbox.pending()).items() if k not in self.configs}
        if orphaned:  # renamed or removed hooks: their rows wait for a hook of that name
            log.warning("hook.orphaned_events", undelivered=orphaned)
        for config in self.configs.values():
            self._start(config)

    def configure(self, hooks: Sequence[HookConfig]) -> None:
        """Adopt a reloaded config: restart the hooks that changed, once their delivery ends."""
        self.configs = {h.name: h for h in hooks}
        if self._session is None:
            return
        for name, slot in list(self.slots.items()):
            config = self.configs.get(name)
            if config == slot.config:
                continue
            del self.slots[name]
            self._retire(slot)
            if config is not None:
                self._start(config, after=slot.task)
        for name, config in self.configs.items():
            if name not in self.slots:
                self._start(config)

    async def stop(self, deadline: float) -> None:
        """Let deliveries in flight finish within ``deadline`` seconds, then cancel them."""
        for slot in list(self.slots.values()):
            self._retire(slot)
        self.slots.clear()
        tasks = set(self._retiring)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=deadline)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        try:
            pending = await self.outbox.pending()
        except Exception as exc:  # the store failed: shutdown goes on
            pending = {}
            log.error("hook.error", reason=describe_error(exc))
        if pending:
            log.info("hook.undelivered", undelivered=pending)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _start(self, config: HookConfig, after: asyncio.Task[None] | None = None) -> None:
        slot = _Slot(config)
        slot.task = asyncio.create_task(self._run(slot, after), name=f"hook:{config.name}")
        self.slots[config.name] = slot

    def _retire(self, slot: _Slot) -> None:
        slot.stopping = True
        slot.wake.set()
        if slot.task is not None and not slot.task.done():
            self._retiring.add(slot.task)
            slot.task.add_done_callback(self._retiring.discard)

    # --------------------------------------------------------- delivery

    async def _run(self, slot: _Slot, after: asyncio.Task[None] | None) -> None:
        if after is not None:  # the old version of this hook finishes its delivery first
            await asyncio.wait([after])
        if slot.stopping or self._session is None:
            return
        try:
            hook = HOOK_TYPES[slot.config.type].build(slot.config, self._session)
            if isinstance(hook, Resending):
                hook.restore(await self.outbox.history(slot.config.name))
        except Exception as exc:  # validated at config load: only a bug or a vanished file
            log.error("hook.broken", hook=slot.config.name, reason=describe_error(exc))
            return
        while not slot.stopping:
            try:
                await self._step(slot, hook)
            except Exception as exc:  # the outbox itself failed: keep the task, try later
                log.error("hook.error", hook=slot.config.name, reason=describe_error(exc))
                await asyncio.sleep(self.backoff_base)

    async def _step(self, slot: _Slot, hook: Hook) -> None:
        slot.wake.clear()  # before reading: a submit from now on wakes the wait below
        now = self.clock()
        lease = slot.config.timeout + LEASE_MARGIN
        row = await self.outbox.claim(slot.config.name, now, lease)
        if row is not None and row.claimed:
            await self._deliver(slot.config, hook, row)
            return
        due = row.next_attempt_at if row is not None else math.inf
        if isinstance(hook, Resending):
            if now >= slot.next_resend:
                await self._resend(slot, hook)
                return
            due = min(due, slot.next_resend)
        try:
            async with asyncio.timeout(None if due == math.inf else max(0.0, due - now)):
                await slot.wake.wait()
        except TimeoutError:
            pass

    async def _deliver(self, config: HookConfig, hook: Hook, row: Row) -> None:
        event = row.envelope.event
        fields = {"hook": config.name, "kind": event.kind, "service": event.service}
        if event.check:
            fields["check"] = event.check
        now = self.clock()
        if config.max_age is not None and now - row.created_at > config.max_age:
            reason = f"not delivered within max_age ({config.max_age:g}s)"
            await self._dead_letter(config, row, reason, fields)
            return
        try:
            async with asyncio.timeout(config.timeout):
                await hook.send(row.envelope)
        except PermanentHookError as exc:  # retrying cannot help: the next event goes out
            await self._dead_letter(config, row, describe(exc, config.timeout), fields)
            return
        except Exception as exc:  # CancelledError is not an Exception: shutdown passes through
            reason = describe(exc, config.timeout)
            # jitter: hooks refused together (a receiver restarting) do not retry together
            full = min(self.backoff_cap, self.backoff_base * 2 ** min(row.attempts, 32))
            delay = round(full * (0.5 + 0.5 * self.jitter()), 3)
            await self.outbox.failed(row.id, reason, self.clock() + delay)
            log.warning(
                "hook.failed", **fields, attempt=row.attempts + 1, reason=reason, retry_in=delay
            )
            return
        await self.outbox.delivered(row.id, self.clock())
        log.info("hook.delivered", **fields, attempt=row.attempts + 1)

    async def _dead_letter(
        self, config: HookConfig, row: Row, reason: str, fields: dict[str, str]
    ) -> None:
        await self.outbox.dead_letter(row.id, reason, self.clock())
        self.on_dead_letter(config.name)
        log.error("hook.dead_letter", **fields, attempt=row.attempts + 1, reason=reason)

    async def _resend(self, slot: _Slot, hook: Resending) -> None:
        try:
            async with asyncio.timeout(slot.config.timeout):
                await hook.resend()
        except Exception as exc:
            reason = describe(exc, slot.config.timeout)
            log.warning("hook.resend_failed", hook=slot.config.name, reason=reason)
        slot.next_resend = self.clock() + hook.resend_every
