"""The narrow view of the running daemon that its HTTP surfaces use (API, status page).

The API and the status page depend on this Protocol, not on the daemon
class: they read the config, the store, the recorder's live outage state and
the accountant's snapshot, and ask for the few actions they offer.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry

from probed.config import Config
from probed.daemon.accountant import Accountant
from probed.daemon.recorder import Recorder
from probed.daemon.reload import ReloadState
from probed.store.base import Store


class DaemonView(Protocol):
    """What the HTTP surfaces need from the running daemon (the daemon implements it)."""

    config: Config
    registry: CollectorRegistry
    store: Store
    recorder: Recorder
    accountant: Accountant

    @property
    def reloads(self) -> ReloadState:
        """The last reload's verdict."""
        ...

    def health_problems(self) -> list[str]:
        """Problems other than the store's writability (e.g. a stopped scheduler)."""
        ...

    async def metrics_body(self) -> bytes:
        """The /metrics exposition, rendered off the event loop."""
        ...

    async def exclusions_changed(self) -> None:
        """Recompute the figures after an exclusion was added or revoked."""
        ...

    async def reload(self) -> bool:
        """Re-read the config file; True when the new config was applied."""
        ...
