"""Probes, one module per protocol, registered by their ``type:`` name.

Adding a probe type is one module exposing ``PROBE = ProbeType(...)`` and one
entry in ``_MODULES`` below; the scheduler and config never change.
"""

from __future__ import annotations

from probes import http, imap, mailflow, pop3, smtp, tcp
from probes.base import ProbeType

_MODULES = (http, tcp, pop3, smtp, imap, mailflow)

REGISTRY: dict[str, ProbeType] = {module.PROBE.name: module.PROBE for module in _MODULES}

__all__ = ["REGISTRY", "ProbeType"]
