"""What the last configuration reload did (``GET /-/reload``, ``probed reload``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReloadState:
    """Reloads done since start; the last one's verdict and problems."""

    generation: int = 0
    successful: bool = True
    problems: tuple[str, ...] = ()
