"""Hooks: events to webhooks, Alertmanager, Apprise and commands, through a durable outbox.

``Dispatcher.submit(event)`` is a daemon sink: it commits one outbox row per
hook whose filters accept the event and returns. One task per hook delivers
that hook's rows in order, retrying with exponential backoff, across
restarts. :class:`BudgetWatch` turns the month's figures into
``budget_threshold`` and ``objective_missed`` events, once per service and month.
"""

from __future__ import annotations

from probed.hooks.base import Envelope, Hook, HookConfig, HookError, HookType
from probed.hooks.budget import BudgetWatch, budget_news
from probed.hooks.dispatcher import Dispatcher
from probed.hooks.registry import HOOK_TYPES

__all__ = [
    "HOOK_TYPES",
    "BudgetWatch",
    "Dispatcher",
    "Envelope",
    "Hook",
    "HookConfig",
    "HookError",
    "HookType",
    "budget_news",
]
