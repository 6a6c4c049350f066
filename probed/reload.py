"""``probed reload``: ask the running daemon to reload and wait until it has.

With the daemon's pid (systemd passes ``$MAINPID``) it sends SIGHUP and polls
``GET /-/reload`` until the reload generation moves on; without one it calls
``POST /-/reload`` with the API token, which answers once the reload is done.
Either way the answer is the daemon's own verdict and problems.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from probed import config as config_mod
from probed import configfile
from probes.base import loading, read_secret

POLL_EVERY = 0.05  # seconds between looks at /-/reload after the signal


class ReloadError(Exception):
    """The daemon could not be asked, or did not answer in time."""


@dataclass(frozen=True, slots=True)
class Verdict:
    applied: bool
    problems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Target:
    """Where the daemon of a config file listens, and where its API token is."""

    url: str
    config_dir: Path
    token_file: str | None


def target(path: str) -> Target:
    """From the config file; a file the daemon will refuse still names the daemon (so that
    the daemon itself records the refusal), unless even its ``listen`` is unreadable."""
    try:
        config = config_mod.load(path, secrets=False)
        raw = dict(config.raw)
        host, port = config.listen_host, config.listen_port
    except config_mod.ConfigError as exc:
        try:
            _, raw = configfile.parse(configfile.read_text(Path(path)))
            host, port = config_mod.parse_listen(str(raw.get("listen", config_mod.DEFAULT_LISTEN)))
        except (configfile.FileProblem, AttributeError, ValueError):
            raise exc from None
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    token = raw.get("api_token_file")
    return Target(url, Path(path).absolute().parent, None if token is None else str(token))


def api_token(where: Target) -> str | None:
    """The token from api_token_file (a credential, or a file beside the config), if any."""
    if where.token_file is None:
        return None
    with loading(where.config_dir):
        try:
            return read_secret(where.token_file).strip()
        except ValueError as exc:
            raise ReloadError(f"{exc}; give the daemon's --pid instead") from None


def _verdict(body: dict[str, Any]) -> Verdict:
    return Verdict(body.get("status") == "applied", tuple(body.get("problems", ())))


async def _state(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/-/reload") as response:
        if response.status != 200:
            raise ReloadError(f"GET {url}/-/reload answered {response.status}")
        body: dict[str, Any] = await response.json()
        return body


async def by_signal(where: Target, pid: int) -> Verdict:
    """SIGHUP, then poll until the reload generation moves on (the caller bounds the wait)."""
    url = where.url
    async with aiohttp.ClientSession() as session:
        before = int((await _state(session, url))["generation"])
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            raise ReloadError(f"cannot signal pid {pid}: {exc.strerror or exc}") from None
        while True:
            state = await _state(session, url)
            if int(state["generation"]) > before:
                return _verdict(state)
            await asyncio.sleep(POLL_EVERY)


async def by_api(where: Target, token: str) -> Verdict:
    url = f"{where.url}/-/reload"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session, session.post(url, headers=headers) as response:
        if response.status not in (200, 422):
            raise ReloadError(f"POST {url} answered {response.status}: {await response.text()}")
        return _verdict(await response.json())


async def reload(where: Target, pid: int | None, wait: float) -> Verdict:
    """The daemon's verdict on its reload, within ``wait`` seconds."""
    token = None if pid is not None else api_token(where)
    try:
        async with asyncio.timeout(wait):
            if pid is not None:
                return await by_signal(where, pid)
            if token is not None:
                return await by_api(where, token)
    except TimeoutError:
        raise ReloadError(f"the daemon did not report the reload within {wait:g}s") from None
    except aiohttp.ClientError as exc:
        raise ReloadError(
            f"cannot reach the daemon at {where.url}: {exc or type(exc).__name__}"
        ) from None
    raise ReloadError("give the daemon's --pid, or configure api_token_file for POST /-/reload")
