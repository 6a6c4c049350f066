"""Probes, one module per protocol, registered by their ``type:`` name.

Adding a probe type is one module exposing ``PROBE = ProbeType(...)`` and one
entry in ``_MODULES`` below; the scheduler and config never change.
"""

from __future__ import annotations

from probes import http, imap, mailflow, pop3, smtp, tcp
from probes.base import ProbeType

_MODULES = (http, tcp, pop3, smtp, imap, mailflow)

REGISTRY: dict[str, ProbeType] = {module.PROBE.name: module.PROBE for module in _MODULES}


def share() -> None:
    """Tests on the running loop share what may be shared (one HTTP session) until
    :func:`unshare`; calls nest. A test outside makes its own."""
    http.SharedSession.hold()


async def unshare() -> None:
    """The end of one :func:`share`; the last one closes what was shared."""
    await http.SharedSession.release()


__all__ = ["REGISTRY", "ProbeType", "share", "unshare"]
