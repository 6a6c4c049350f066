"""Apprise: one notification to any of the services Apprise knows (its URLs).

Apprise URLs usually embed tokens, so they may come from ``urls_file`` (one a
line, a secret) as well as from ``urls`` in the YAML. Every URL is checked when
the config loads, so a typo is a config error, not a silent hook.
"""

from __future__ import annotations

from typing import Any, Literal

import aiohttp
from pydantic import Field, field_validator, model_validator

from probed.core.times import iso
from probed.hooks.base import Envelope, HookConfig, HookError, HookType
from probes.base import read_secret, reads_secrets

_GOOD_NEWS = frozenset({"outage_closed", "service_up"})


class AppriseConfig(HookConfig):
    type: Literal["apprise"]
    urls: tuple[str, ...] = ()
    urls_file: str | None = None
    secret_urls: tuple[str, ...] = Field(default=(), exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _load_urls(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "secret_urls" in data:
            raise ValueError("secret_urls is internal: put the URLs in urls_file")
        if data.get("urls_file") and reads_secrets():
            path = str(data["urls_file"])
            urls: list[str] = []
            for number, line in enumerate(read_secret(path).splitlines(), 1):
                url = line.strip()
                if not url or url.startswith("#"):
                    continue
                if not _valid(url):  # never echo a URL from the secret file
                    raise ValueError(f"{path} line {number}: not a valid Apprise URL")
                urls.append(url)
            data = {**data, "secret_urls": tuple(urls)}
        return data

    @field_validator("urls")
    @classmethod
    def _valid_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for index, url in enumerate(urls):
            if not _valid(url):
                raise ValueError(f'not a valid Apprise URL: "{url}" (item {index})')
        return urls

    @model_validator(mode="after")
    def _some_urls(self) -> AppriseConfig:
        if not self.urls and not self.secret_urls and (reads_secrets() or not self.urls_file):
            raise ValueError("expected urls: [...] or a urls_file with at least one Apprise URL")
        return self


def _valid(url: str) -> bool:
    import apprise  # ~0.5 s to import: only when an apprise hook is configured

    return apprise.Apprise.instantiate(url) is not None


class AppriseHook:
    def __init__(self, config: AppriseConfig, session: aiohttp.ClientSession) -> None:
        import apprise  # see above

        del session  # Apprise brings its own HTTP clients
        self.apprise = apprise
        self.notifier = apprise.Apprise()
        self.notifier.add([*config.urls, *config.secret_urls])

    async def send(self, envelope: Envelope) -> None:
        e = envelope.event
        kind = (
            self.apprise.NotifyType.SUCCESS
            if e.kind in _GOOD_NEWS
            else self.apprise.NotifyType.FAILURE
        )
        lines = [e.summary, f"event: {e.kind}, severity {e.severity}, at {iso(e.at)}"]
        lines += [f"reason: {r}" for r in dict.fromkeys(e.reasons)]
        title = f"[{e.severity}] probed: {e.service}" + (f"/{e.check}" if e.check else "")
        result = await self.notifier.async_notify(
            body="\n".join(lines), title=title, notify_type=kind
        )
        if not result:
            raise HookError(_reason(result))


def _reason(result: object) -> str:
    # apprise >= 2 returns a result with the services' logs; older ones a bare False
    logs = getattr(result, "logs", None)
    entries = list(logs()) if callable(logs) else []
    bad = [str(e.message) for e in entries if getattr(e, "level", "") in ("WARNING", "ERROR")]
    return f"apprise: {bad[-1][:200]}" if bad else "apprise: notification failed"


HOOK = HookType(name="apprise", config=AppriseConfig, build=AppriseHook)
