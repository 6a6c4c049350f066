"""Hook types by their ``type:`` name: adding one is a module and an entry here."""

from __future__ import annotations

from probed.hooks import alertmanager, apprise_hook, exec, webhook
from probed.hooks.base import HookType

_MODULES = (webhook, alertmanager, apprise_hook, exec)

HOOK_TYPES: dict[str, HookType] = {module.HOOK.name: module.HOOK for module in _MODULES}
