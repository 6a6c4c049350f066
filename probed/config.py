"""Load and validate the YAML configuration.

Every problem is reported as ``FILE:LINE: dotted.path: expectation`` (PyYAML's
composed nodes carry the line numbers), all problems at once, and a bad
config is never downgraded to a warning: the caller exits 78 (EX_CONFIG).
"""

from __future__ import annotations

import gc
import os
import pickle
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from probed import configfile
from probed.core import accounting
from probed.core.maintenance import DAY, EVERY_DAY, WEEK, WEEKDAYS
from probed.core.maintenance import Window as MaintenanceWindow
from probed.hooks import HOOK_TYPES, HookConfig
from probed.store.base import STORE_TIMEOUT, default_location
from probes import REGISTRY
from probes.base import (
    CheckBase,
    Duration,
    FailuresToDown,
    QuorumSetting,
    loading,
    number_in,
    read_secret,
    reads_secrets,
)

Loc: TypeAlias = tuple[str | int, ...]
EX_CONFIG = 78
DEFAULT_LISTEN = "127.0.0.1:9469"
MAX_WORKERS = 64
_PERCENT = number_in(0, 100, above=True)  # objective, minimum, credit thresholds


class ConfigError(Exception):
    """One or more problems in a config file, each already formatted for a person."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DefaultsModel(_Strict):
    interval: Duration = 60.0
    timeout: Duration = 10.0
    failures_to_down: FailuresToDown = 2
    quorum: QuorumSetting = 1


class CreditModel(_Strict):
    below: Annotated[float, _PERCENT]
    percent: Annotated[float, number_in(0, 100)]


class MaintenanceModel(_Strict):
    """A recurring window: ``{every: sunday, start: "02:00", duration: 1h, reason: ...}``."""

    every: str
    start: str
    duration: Duration
    kind: Literal["dos", "maintenance", "other"] = "maintenance"
    reason: str = Field(min_length=1, max_length=2000)

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, value: object) -> str:
        text = value.strip().lower() if isinstance(value, str) else ""
        if text not in (*WEEKDAYS, EVERY_DAY):
            raise ValueError(
                f'expected a weekday like sunday (monday .. sunday) or "day", got {_shown(value)}'
            )
        return text

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: object) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 12:30 as the base-60 number 750.
            raise ValueError(
                f'expected a local time in quotes like "02:00", got the number {value}'
                " (YAML reads an unquoted time like 12:30 as a number)"
            )
        if not isinstance(value, str) or not re.fullmatch(
            r"([01]?[0-9]|2[0-3]):[0-5][0-9]", value.strip()
        ):
            raise ValueError(f'expected a local time like "02:00" (HH:MM), got {_shown(value)}')
        return value.strip()

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: float, info: ValidationInfo) -> float:
        daily = info.data.get("every") == EVERY_DAY
        if value >= (DAY if daily else WEEK):
            raise ValueError(
                f"expected a duration shorter than its recurrence ({'1 day' if daily else '1 week'})"
                f" like 1h, got {value:g}s"
            )
        return value

    def window(self) -> MaintenanceWindow:
        hour, minute = (int(part) for part in self.start.split(":"))
        return MaintenanceWindow(
            weekday=None if self.every == EVERY_DAY else WEEKDAYS.index(self.every),
            start=time(hour, minute),
            duration=self.duration,
            kind=self.kind,
            reason=self.reason,
        )


def _shown(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


class ServiceModel(_Strict):
    objective: Annotated[float, _PERCENT]
    minimum: Annotated[float, _PERCENT] | None = None
    credits: list[CreditModel] = []
    excluded_time: Literal["not_downtime", "not_counted"] = "not_downtime"
    maintenance: list[MaintenanceModel] = []
    public: bool = False  # the status page may show this service's hosts, ports and reasons
    quorum: QuorumSetting | None = None  # for its checks, unless a check sets its own
    checks: list[dict[str, Any]] = Field(min_length=1)


class MetricsModel(_Strict):
    per_check_histograms: bool = False  # a duration histogram per check: 17 more samples each


class StatusPageModel(_Strict):
    """``status_page:``: what ``GET /status`` shows (safe to publish)."""

    title: str = Field(default="Service status", min_length=1, max_length=200)
    logo_text: str = Field(default="", max_length=40)
    services: list[str] | None = None  # default: every service, in config order
    refresh: Duration = Field(default=10.0, gt=0)  # how often an open page polls


class ConfigModel(_Strict):
    timezone: str = "UTC"
    storage: str | None = None
    storage_password_file: str | None = None  # PostgreSQL only; never a password inline
    storage_timeout: Duration | None = Field(default=None, gt=0)  # PostgreSQL only
    location: str | None = Field(
        default=None, description="this instance's identity in the store (default: host name)"
    )
    listen: str = DEFAULT_LISTEN
    api_token_file: str | None = None
    concurrency: Annotated[int, number_in(1, 1_000_000, whole=True)] = 1000  # tests at once
    workers: Annotated[int, number_in(1, MAX_WORKERS, whole=True)] = 1  # probing processes
    metrics: MetricsModel = MetricsModel()
    defaults: DefaultsModel = DefaultsModel()
    services: dict[str, ServiceModel] = Field(min_length=1)
    hooks: list[dict[str, Any]] = []  # each hook type validates its own (probed.hooks)
    status_page: StatusPageModel = StatusPageModel()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f'expected an IANA time zone like Europe/Berlin, got "{value}"'
            ) from None
        return value

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        if value is not None and is_postgresql(value):
            from probed.store.postgresql import check_url  # psycopg only when it is used

            check_url(value)
            return value
        if value is not None and (
            not value.strip()
            or ("://" in value and not value.startswith("sqlite://"))
            or value.removeprefix("sqlite://").strip() in ("", "/")
        ):
            raise ValueError(
                "expected sqlite:////path/to/probed.db, a file path or"
                f' postgresql://USER@HOST:PORT/DB, got "{value}"'
            )
        return value

    @field_validator("location")
    @classmethod
    def _location(cls, value: str | None) -> str | None:
        if value is not None:
            check_location(value)
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("services")
    @classmethod
    def _service_names(cls, value: dict[str, ServiceModel]) -> dict[str, ServiceModel]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(
                    f'service names use letters, digits, "_", "." and "-", got "{name}"'
                )
        return value


LOCATION_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"


def check_location(value: str) -> str:
    """A location names a probing instance: letters, digits, "_", "." and "-", at most 63."""
    if not re.fullmatch(LOCATION_PATTERN, value):
        raise ValueError(
            'a location uses letters, digits, "_", "." and "-" (at most 63, '
            f'starting with a letter or digit), got "{value}"'
        )
    return value


def ratio(percent: float) -> float:
    """A percentage as the ratio it was written as: 99.9 is 0.999, not 0.9990000000000001."""
    return float(Decimal(repr(percent)) / 100)


def adopt_windows(old: Config, new: Config, now: float) -> Config:
    """A reload's config whose new maintenance windows are stamped as added ``now``."""
    services = {}
    for name, service in new.services.items():
        before = old.services.get(name)
        known = before.maintenance if before is not None else ()
        windows = tuple(
            next((k for k in known if k == w), replace(w, since=now)) for w in service.maintenance
        )
        services[name] = replace(service, maintenance=windows)
    return replace(new, services=services)


def parse_listen(value: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[?([^\[\]]*?)\]?:(\d{1,5})", value.strip())
    if match is None or not 0 <= int(match.group(2)) <= 65535:
        raise ValueError(f'expected HOST:PORT like 127.0.0.1:9469, got "{value}"')
    return (match.group(1) or "127.0.0.1", int(match.group(2)))


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    policy: accounting.Policy
    checks: tuple[CheckBase, ...]
    maintenance: tuple[MaintenanceWindow, ...] = ()
    public: bool = False

    def check(self, name: str) -> CheckBase | None:
        return next((c for c in self.checks if c.name == name), None)


@dataclass(frozen=True, slots=True)
class StatusPage:
    title: str = "Service status"
    logo_text: str = ""
    services: tuple[str, ...] = ()  # shown on /status and as badges, in this order
    refresh: float = 10.0


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    timezone: str
    storage_path: Path | None  # SQLite; None with PostgreSQL
    listen_host: str
    listen_port: int
    api_token: str | None
    concurrency: int
    services: Mapping[str, Service]
    per_check_histograms: bool = False
    workers: int = 1  # 1: this process probes; N > 1: N worker processes do (daemon/workers.py)
    hooks: tuple[HookConfig, ...] = ()
    status_page: StatusPage = StatusPage()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    location: str = field(default_factory=default_location)
    storage_dsn: str | None = None  # the postgresql:// URL, without a password
    storage_password: str | None = field(default=None, repr=False)
    storage_timeout: float = STORE_TIMEOUT  # PostgreSQL: one operation's bound

    @property
    def storage_url(self) -> str:
        """The storage URL :func:`probed.store.base.open_store` takes."""
        return self.storage_dsn or f"sqlite://{self.storage_path}"

    def all_checks(self) -> Iterator[tuple[Service, CheckBase]]:
        for service in self.services.values():
            for check in service.checks:
                yield service, check

    def find_check(self, ref: str) -> tuple[Service, CheckBase]:
        """``CHECK`` or ``service/check``; raises KeyError with the candidates."""
        service_name, _, check_name = ref.rpartition("/")
        found = [
            (s, c)
            for s, c in self.all_checks()
            if c.name == check_name and service_name in ("", s.name)
        ]
        if len(found) == 1:
            return found[0]
        known = ", ".join(f"{s.name}/{c.name}" for s, c in self.all_checks())
        why = "is ambiguous, use service/check" if found else "is not configured"
        raise KeyError(f"check {ref!r} {why}; known checks: {known}")


# ---------------------------------------------------------------- loading


def load(path: str | os.PathLike[str], *, secrets: bool = True) -> Config:
    """Read, validate and resolve a config file. Raises ConfigError, never anything else.

    ``secrets=False`` skips reading probe and hook secrets (and the API token),
    for commands that do not probe: report, exclude, reload.
    """
    file = Path(path)
    with no_collections():
        try:
            text = configfile.read_text(file)
        except configfile.FileProblem as exc:
            raise ConfigError([f"{file}:{exc.line}: {exc.message}"]) from None
        return loads(text, file, secrets=secrets)


def loads(text: str, file: Path, *, secrets: bool = True) -> Config:
    """Relative paths in the config resolve against ``file``'s directory."""
    with loading(file.absolute().parent, read_secrets=secrets), no_collections():
        blob = pickle.dumps(_loads(text, file), pickle.HIGHEST_PROTOCOL)
        return _compacted(blob)


def _compacted(blob: bytes) -> Config:
    """The config built afresh once everything parsing allocated is gone.

    Parsing allocates short-lived YAML nodes, marks and dicts in between the objects
    that stay (each check's model, name and URL), and Python's allocator returns a page
    only when nothing on it stays: 100 000 checks kept ~3.4 KiB of RSS each for ~1 KiB
    of objects. Unpickled after the rest is freed, the checks lie together (~1 KiB
    each); the round trip costs ~0.8 s of CPU at 100 000 checks."""
    config: Config = pickle.loads(blob)
    return config


@contextmanager
def no_collections() -> Iterator[None]:
    """No garbage collections while a config loads: it only allocates (a million YAML
    nodes and values for 100 000 checks), so every collection the allocations trigger
    scans a growing heap for cycles it cannot find - 70 % of the load's CPU time at
    100 000 checks. Re-enabled only if it was enabled (a reload runs in a thread)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _loads(text: str, file: Path) -> Config:
    try:
        root, data = configfile.parse(text)
    except configfile.FileProblem as exc:
        raise ConfigError([f"{file}:{exc.line}: invalid YAML: {exc.message}"]) from None
    if not isinstance(data, dict) or root is None:
        raise ConfigError([f"{file}:1: expected a mapping with a services: section"])
    locator = _Locator(file, root)
    try:
        model = ConfigModel.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([locator.format(e) for e in exc.errors()]) from None
    problems: list[str] = []
    services = {
        name: _service(name, svc, model, locator, problems) for name, svc in model.services.items()
    }
    hooks = _hooks(model, locator, problems)
    token = _token(model, file, locator, problems)
    status_page = _status_page(model, locator, problems)
    dsn = model.storage if model.storage and is_postgresql(model.storage) else None
    storage_path = None if dsn else _storage_path(model.storage, file)
    if storage_path is not None and storage_path.is_dir():  # what `run` refuses, check-config too
        problems.append(locator.message(("storage",), f"{storage_path} is a directory"))
    password = _storage_password(model, dsn, locator, problems)
    if model.storage_timeout is not None and dsn is None:
        problems.append(
            locator.message(
                ("storage_timeout",),
                "only a postgresql:// storage takes a timeout (SQLite is a local file)",
            )
        )
    if problems:
        raise ConfigError(problems)
    host, port = parse_listen(model.listen)
    return Config(
        path=file,
        timezone=model.timezone,
        storage_path=storage_path,
        listen_host=host,
        listen_port=port,
        api_token=token,
        concurrency=model.concurrency,
        workers=model.workers,
        per_check_histograms=model.metrics.per_check_histograms,
        services=services,
        hooks=hooks,
        status_page=status_page,
        raw={k: v for k, v in data.items() if k != "services"},  # the checks are in services
        location=model.location or default_location(),
        storage_dsn=dsn,
        storage_password=password,
        storage_timeout=model.storage_timeout or STORE_TIMEOUT,
    )


def _status_page(model: ConfigModel, locator: _Locator, problems: list[str]) -> StatusPage:
    page = model.status_page
    for index, name in enumerate(page.services or ()):
        if name not in model.services:
            known = ", ".join(model.services)
            loc: Loc = ("status_page", "services", index)
            problems.append(locator.message(loc, f'unknown service "{name}"; configured: {known}'))
    return StatusPage(
        title=page.title,
        logo_text=page.logo_text,
        services=tuple(page.services if page.services is not None else model.services),
        refresh=page.refresh,
    )


def _service(
    name: str, svc: ServiceModel, model: ConfigModel, locator: _Locator, problems: list[str]
) -> Service:
    checks: list[CheckBase] = []
    seen: set[str] = set()
    inherited = _inherited(model.defaults, svc)  # once: each check merges it into a new dict
    for index, raw in enumerate(svc.checks):
        loc: Loc = ("services", name, "checks", index)
        check = _check(raw, inherited, loc, locator, problems)
        if check is None:
            continue
        if check.name in seen:
            problems.append(locator.message((*loc, "name"), f'duplicate check name "{check.name}"'))
        seen.add(check.name)
        checks.append(check)
    policy = accounting.Policy(
        objective=ratio(svc.objective),
        minimum=None if svc.minimum is None else ratio(svc.minimum),
        credits=tuple(
            accounting.CreditTier(below=ratio(c.below), percent=c.percent) for c in svc.credits
        ),
        excluded_time=svc.excluded_time,
    )
    return Service(
        name=name,
        policy=policy,
        checks=tuple(checks),
        maintenance=tuple(m.window() for m in svc.maintenance),
        public=svc.public,
    )


def _inherited(defaults: DefaultsModel, svc: ServiceModel) -> dict[str, Any]:
    """What a check inherits: ``defaults``, then its service's own settings."""
    own = {} if svc.quorum is None else {"quorum": svc.quorum}
    return {**defaults.model_dump(), **own}


def _check(
    raw: Mapping[str, Any],
    defaults: Mapping[str, Any],
    loc: Loc,
    locator: _Locator,
    problems: list[str],
) -> CheckBase | None:
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in REGISTRY:
        valid = ", ".join(sorted(REGISTRY))
        what = f'unknown check type "{kind}"' if kind else "missing check type"
        problems.append(locator.message((*loc, "type"), f"{what}; valid types: {valid}"))
        return None
    merged = {**defaults, **raw}
    try:
        return _compact(REGISTRY[kind].config.model_validate(merged))
    except ValidationError as exc:
        problems.extend(locator.format(e, prefix=loc) for e in exc.errors())
        return None


# Checks are frozen and nothing changes a check's values, so equal small values are shared
# by every check that has them (100 000 checks, docs/scale.md "Memory"): the set of fields
# given (pydantic keeps one per model, ~700 bytes, and copies it for model_copy), lists of
# numbers or words (HTTP's expected statuses), empty dicts (headers) and the type's name.
_SHARED: dict[tuple[str, object], Any] = {}


def _compact(check: CheckBase) -> CheckBase:
    """The check, its equal small values shared with the other checks'."""
    given = check.__pydantic_fields_set__
    object.__setattr__(
        check, "__pydantic_fields_set__", _SHARED.setdefault(("", frozenset(given)), given)
    )
    values = check.__dict__
    for name, value in values.items():
        if isinstance(value, list) and all(isinstance(v, int | str) for v in value):
            values[name] = _SHARED.setdefault((name, tuple(value)), value)
        elif isinstance(value, dict) and not value:
            values[name] = _SHARED.setdefault((name, None), value)
    values["type"] = sys.intern(check.type)
    return check


# ------------------------------------------------------------------ hooks


def _hooks(model: ConfigModel, locator: _Locator, problems: list[str]) -> tuple[HookConfig, ...]:
    """Each hook validated by its type's model; a hook named ``{type}-{index}`` unless named."""
    hooks: list[HookConfig] = []
    for index, raw in enumerate(model.hooks):
        loc: Loc = ("hooks", index)
        kind = raw.get("type")
        if not isinstance(kind, str) or kind not in HOOK_TYPES:
            what = f'unknown hook type "{kind}"' if kind else "missing hook type"
            valid = ", ".join(HOOK_TYPES)
            problems.append(locator.message((*loc, "type"), f"{what}; valid types: {valid}"))
            continue
        try:
            hook = HOOK_TYPES[kind].config.model_validate({"name": f"{kind}-{index}", **raw})
        except ValidationError as exc:
            problems.extend(locator.format(e, prefix=loc) for e in exc.errors())
            continue
        if any(h.name == hook.name for h in hooks):
            problems.append(locator.message((*loc, "name"), f'duplicate hook name "{hook.name}"'))
        for i, service in enumerate(hook.services):
            if service not in model.services:
                known = ", ".join(model.services)
                text = f'unknown service "{service}"; configured services: {known}'
                problems.append(locator.message((*loc, "services", i), text))
        hooks.append(hook)
    return tuple(hooks)


def _token(model: ConfigModel, file: Path, locator: _Locator, problems: list[str]) -> str | None:
    if model.api_token_file is None or not reads_secrets():
        return None
    try:
        token = read_secret(model.api_token_file).strip()
    except ValueError as exc:
        problems.append(locator.message(("api_token_file",), str(exc)))
        return None
    if len(token) < 16:
        problems.append(
            locator.message(("api_token_file",), "the token must be at least 16 characters")
        )
        return None
    return token


def is_postgresql(url: str) -> bool:
    return url.partition("://")[0].lower() in ("postgresql", "postgres")


def _storage_password(
    model: ConfigModel, dsn: str | None, locator: _Locator, problems: list[str]
) -> str | None:
    """The PostgreSQL password from its file; read by every command (they all open the store)."""
    if model.storage_password_file is None:
        return None
    where = ("storage_password_file",)
    if dsn is None:
        problems.append(locator.message(where, "only a postgresql:// storage takes a password"))
        return None
    try:
        password = read_secret(model.storage_password_file)
    except ValueError as exc:
        problems.append(locator.message(where, str(exc)))
        return None
    if not password:
        problems.append(locator.message(where, "the password file is empty"))
        return None
    return password


def _storage_path(url: str | None, config_file: Path) -> Path:
    if url is None:
        state_dir = os.environ.get("STATE_DIRECTORY", "/var/lib/probed").split(":")[0]
        return Path(state_dir) / "probed.db"
    return resolve_storage(url, config_file.absolute().parent)


def resolve_storage(url: str, base: Path) -> Path:
    """``sqlite:////abs`` and ``sqlite:///abs`` are absolute; ``sqlite://rel`` and plain
    relative paths are relative to ``base`` (the config file's directory)."""
    text = url.removeprefix("sqlite://")
    if text.startswith("/"):
        return Path("/" + text.lstrip("/"))  # POSIX would keep a leading "//" as it is
    return base / text


# ------------------------------------------------------- error locations


class _Locator:
    """Maps a pydantic error location to the YAML line it came from."""

    def __init__(self, file: Path, root: yaml.Node) -> None:
        self.file = file
        self.root = root

    def line(self, loc: Loc) -> int:
        node = self.root
        for part in loc:
            child = _child(node, part)
            if child is None:
                break
            node = child
        return int(node.start_mark.line) + 1

    def message(self, loc: Loc, text: str) -> str:
        return f"{self.file}:{self.line(loc)}: {dotted(loc)}: {text}"

    def format(self, error: Any, prefix: Loc = ()) -> str:
        loc: Loc = prefix + tuple(p for p in error["loc"] if not _is_internal(p))
        return self.message(loc, _explain(error))


def _is_internal(part: str | int) -> bool:
    # pydantic adds validator names (e.g. "function-after[...]") to some locations
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                return value  # type: ignore[no-any-return]
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]  # type: ignore[no-any-return]
    return None


def dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _explain(error: Any) -> str:
    kind = error["type"]
    msg = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (check its spelling)"
    given = error.get("input")
    if kind.endswith(("_parsing", "_type")) and not isinstance(given, dict | list):
        return f"{msg.lower()}, got {given!r}"
    return msg


def summary(config: Config) -> str:
    """What ``probed check-config`` prints."""
    lines = [
        f"config {config.path}: OK",
        f"  timezone {config.timezone}, storage {config.storage_path or config.storage_dsn}, location {config.location}, "
        f"listen {config.listen_host}:{config.listen_port}, "
        f"write API {'enabled' if config.api_token else 'disabled (no api_token_file)'}",
    ]
    for service in config.services.values():
        p = service.policy
        minimum = f", minimum {p.minimum * 100:g}%" if p.minimum is not None else ""
        lines.append(
            f"  service {service.name}: objective {p.objective * 100:g}%{minimum}, {len(service.checks)} checks"
        )
        for c in service.checks:
            lines.append(
                f"    {c.name:<16} {c.type:<9} every {c.interval:g}s, timeout {c.timeout:g}s, "
                f"down after {c.failures_to_down} failed tests, quorum {c.quorum}  {c.target()}"
            )
        for w in service.maintenance:
            lines.append(f"    {w.kind} window {w.describe()}: {w.reason}")
    lines.append(f"  hooks: {len(config.hooks)}")
    return "\n".join(lines)
