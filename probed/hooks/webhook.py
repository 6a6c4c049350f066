"""Webhook: POST the event JSON, optionally signed with HMAC-SHA256 of the body."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Literal

import aiohttp
from pydantic import Field, model_validator

from probed import __version__
from probed.hooks.base import Envelope, HookConfig, HookType, HttpUrl, post_json
from probes.base import read_secret, reads_secrets

SIGNATURE_HEADER = "X-Probed-Signature"


class WebhookConfig(HookConfig):
    type: Literal["webhook"]
    url: HttpUrl
    secret_file: str | None = None
    secret: str | None = Field(default=None, exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _load_secret(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "secret" in data:
                raise ValueError("inline secrets are not allowed: use secret_file")
            if data.get("secret_file") and reads_secrets():
                secret = read_secret(str(data["secret_file"]))
                if not secret:
                    raise ValueError(f"secret file {data['secret_file']} is empty")
                data = {**data, "secret": secret}
        return data


def signature(secret: str, body: bytes) -> str:
    """The header value a receiver recomputes: ``sha256=<hex HMAC of the raw body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhook:
    def __init__(self, config: WebhookConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session

    async def send(self, envelope: Envelope) -> None:
        body = json.dumps(envelope.payload(), separators=(",", ":")).encode()
        headers = {
            "User-Agent": f"probed/{__version__}",
            "X-Probed-Event": envelope.event.kind,
            "X-Probed-Delivery": envelope.id,
        }
        if self.config.secret:
            headers[SIGNATURE_HEADER] = signature(self.config.secret, body)
        await post_json(self.session, self.config.url, body, headers)


HOOK = HookType(name="webhook", config=WebhookConfig, build=Webhook)
