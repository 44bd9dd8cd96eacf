"""Settings: the YAML config file, environment variables and flags merged into one frozen `Settings`.

Config is ours, so it is strict: unknown keys are errors, and every error of a file is listed at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from exporter.configfile import Loader, validation_message, yaml_problem
from exporter.defaults import (
    CONFIG_ENV,
    config_file_from,
    default_roots,
    default_state_dir,
    default_timezone,
)

# Environment variable -> dotted settings path. "config_file" names the file itself, not a key in it.
ENV_VARS: dict[str, str] = {
    CONFIG_ENV: "config_file",
    "CLAUDE_USAGE_EXPORTER_STATE_DIR": "state_dir",
    "CLAUDE_USAGE_EXPORTER_TIMEZONE": "timezone",
    "CLAUDE_USAGE_EXPORTER_CLAUDE_DIR": "sources.transcripts.roots",
    "CLAUDE_USAGE_EXPORTER_POLL": "sources.transcripts.poll",
    "CLAUDE_USAGE_EXPORTER_WEB_LISTEN_ADDRESS": "web.listen",
    "CLAUDE_USAGE_EXPORTER_WEB_CONFIG_FILE": "web.config_file",
    "CLAUDE_USAGE_EXPORTER_OTLP_LISTEN": "sources.otlp.listen",
    "CLAUDE_USAGE_EXPORTER_OTLP_PUSH_ENDPOINT": "export.otlp_push.endpoint",
    "CLAUDE_USAGE_EXPORTER_PRICING_MODE": "pricing.mode",
    "CLAUDE_USAGE_EXPORTER_LOG_FORMAT": "log.format",
    "CLAUDE_USAGE_EXPORTER_LOG_LEVEL": "log.level",
}
_LIST_PATHS = frozenset({"sources.transcripts.roots"})  # comma-separated in the environment
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_ADDRESS = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]\s/]*)):(\d{1,5})")


class ConfigError(Exception):
    """Invalid configuration; `errors` holds every problem, each `"<dotted.path>: <message>"`."""

    what = "configuration"

    def __init__(self, source: str, errors: list[str]) -> None:
        super().__init__(source, errors)
        self.source = source
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join([f"{self.source}: invalid {self.what}", *(f"  {e}" for e in self.errors)])


def _invalid(kind: str, value: object, hint: str) -> PydanticCustomError:
    return PydanticCustomError(kind, "invalid " + kind + " {value}: " + hint, {"value": repr(value)})


def _duration(value: object) -> timedelta:
    seconds: float = -1
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and re.fullmatch(r"\d+(?:\.\d+)?", value.strip()):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(f"(?:{_DURATION_PART.pattern})+", value.strip()):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(value))
    if not 0 <= seconds < 1e9:  # also false for NaN
        raise _invalid("duration", value, "use seconds or 500ms, 1s, 5m, 1h")
    return timedelta(seconds=seconds)


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise PydanticCustomError("duration", "duration should be greater than 0")
    return value


def _at_least_a_minute(value: timedelta) -> timedelta:
    # the Admin API's reports change by the minute at most; a tighter poll only spends its rate limit
    if value < timedelta(minutes=1):
        raise PydanticCustomError("duration", "duration should be at least 1m")
    return value


def _zone_name(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _invalid("time zone", value, "use an IANA name such as Europe/Berlin") from None
    return value


def split_host_port(address: str) -> tuple[str, int]:
    """`"127.0.0.1:9477"` -> `("127.0.0.1", 9477)`; `"[::1]:9477"` and `":9477"` (all interfaces) too."""
    match = _ADDRESS.fullmatch(address)
    if not match or int(match[3]) > 65535:
        raise ValueError(f"invalid address {address!r}")
    return match[1] or match[2], int(match[3])


def _listen(value: str) -> str:
    try:
        split_host_port(value)
    except ValueError:
        raise _invalid("address", value, "use HOST:PORT, e.g. 127.0.0.1:9477") from None
    return value


def _url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise _invalid("URL", value, "use http(s)://HOST:PORT/PATH")
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
PositiveDuration = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_positive)]
ZoneName = Annotated[str, AfterValidator(_zone_name)]
ListenAddress = Annotated[str, AfterValidator(_listen)]
UserPath = Annotated[Path, AfterValidator(lambda p: p.expanduser())]
Rate = Annotated[Decimal, Field(ge=0)]  # USD per million tokens


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class TranscriptsSettings(_Strict):
    enabled: bool = True
    roots: tuple[UserPath, ...] = ()  # empty: $CLAUDE_CONFIG_DIR, else ~/.config/claude and ~/.claude
    poll: bool = False
    poll_interval: PositiveDuration = timedelta(seconds=1)


class OtlpSettings(_Strict):
    enabled: bool = False
    listen: ListenAddress = "127.0.0.1:4318"
    bearer_tokens_file: UserPath | None = None
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    grace: Duration = timedelta(seconds=30)  # how long an api_request waits for its transcript line


class AnthropicAdminSettings(_Strict):
    """Anthropic's Admin API as a billing source; the key itself is only ever read from `key_file`."""

    enabled: bool = False
    key_file: UserPath | None = None
    base_url: Annotated[str, AfterValidator(_url)] = "https://api.anthropic.com"  # a proxy or a test server
    interval: Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_at_least_a_minute)] = timedelta(
        minutes=15
    )

    @model_validator(mode="after")
    def _key_when_enabled(self) -> AnthropicAdminSettings:
        if self.enabled and self.key_file is None:
            raise PydanticCustomError("missing_key_file", "key_file is needed when the Admin API source is enabled")
        return self


class Sources(_Strict):
    transcripts: TranscriptsSettings = Field(default_factory=TranscriptsSettings)
    otlp: OtlpSettings = Field(default_factory=OtlpSettings)
    anthropic_admin: AnthropicAdminSettings = Field(default_factory=AnthropicAdminSettings)


class WebSettings(_Strict):
    listen: ListenAddress = "127.0.0.1:9477"
    config_file: UserPath | None = None


class LabelSettings(_Strict):
    project: Literal["name", "hash", "off"] = "name"
    max_projects: int = Field(default=100, ge=1)
    max_models: int = Field(default=50, ge=1)
    max_tools: int = Field(default=100, ge=1)
    user: Literal["off", "hash", "email"] = "off"
    max_users: int = Field(default=200, ge=1)


class LogSettings(_Strict):
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class _Rates(_Strict):
    input: Rate
    output: Rate
    cache_read: Rate
    cache_write_5m: Rate
    cache_write_1h: Rate


class LongContextTier(_Rates):
    threshold: int = Field(gt=0)  # input tokens (uncached + cache) above which the whole request costs this


class PriceOverride(_Rates):
    model: str = Field(min_length=1)  # an id or a glob such as "claude-opus-4-8*"
    long_context: LongContextTier | None = None
    # Fast mode at these rates times this; without it, fast requests of matching models are unpriced.
    fast_multiplier: Decimal | None = Field(default=None, gt=0)


class PricingSettings(_Strict):
    # auto: a line's own costUSD (Claude Code before 1.0.9) or an OTLP event's cost_usd where there is one,
    # else the cost from tokens, as ccusage's default; calculate: always from tokens; reported: only the
    # source's own cost (requests without one are unpriced).
    mode: Literal["auto", "calculate", "reported"] = "auto"
    overrides: tuple[PriceOverride, ...] = ()


class BudgetFilter(_Strict):
    project: str | None = None
    model_family: str | None = None
    category: str | None = None
    agent: Literal["main", "subagent", "auxiliary"] | None = None


class Budget(_Strict):
    name: str = Field(min_length=1)
    window: Literal["day", "week", "month"]
    limit_usd: Decimal = Field(gt=0)
    filter: BudgetFilter = Field(default_factory=BudgetFilter)


def _duplicate_names(budgets: object) -> list[tuple[tuple[int | str, ...], str]]:
    """Each budget named like an earlier one, as (location, message); works on raw or parsed budgets."""
    seen: dict[object, int] = {}
    found: list[tuple[tuple[int | str, ...], str]] = []
    for i, budget in enumerate(budgets if isinstance(budgets, list | tuple) else []):
        name = budget.get("name") if isinstance(budget, dict) else getattr(budget, "name", None)
        if isinstance(name, str) and name in seen:
            found.append((("budgets", i, "name"), f"duplicate budget name {name!r} (also budgets.{seen[name]})"))
        elif isinstance(name, str):
            seen[name] = i
    return found


def _unique_names(budgets: tuple[Budget, ...]) -> tuple[Budget, ...]:
    for _, message in _duplicate_names(budgets):
        raise PydanticCustomError("duplicate_budget", message)
    return budgets


class OtlpPushSettings(_Strict):
    endpoint: Annotated[str, AfterValidator(_url)] | None = None
    interval: PositiveDuration = timedelta(seconds=60)
    headers: dict[str, str] = {}


class ExportSettings(_Strict):
    otlp_push: OtlpPushSettings = Field(default_factory=OtlpPushSettings)


class ClassifySettings(_Strict):
    """Remaps over the shipped taxonomy; names are checked against it by `classify`, not here."""

    tools: dict[str, str] = {}  # tool name or glob -> interaction
    categories: dict[str, str] = {}  # interaction -> category


class Settings(_Strict):
    timezone: ZoneName = Field(default_factory=lambda: default_timezone(os.environ))
    state_dir: UserPath = Field(default_factory=lambda: default_state_dir(os.environ))
    sources: Sources = Field(default_factory=Sources)
    web: WebSettings = Field(default_factory=WebSettings)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    pricing: PricingSettings = Field(default_factory=PricingSettings)
    budgets: Annotated[tuple[Budget, ...], AfterValidator(_unique_names)] = ()
    export: ExportSettings = Field(default_factory=ExportSettings)
    classify: ClassifySettings = Field(default_factory=ClassifySettings)
    log: LogSettings = Field(default_factory=LogSettings)
    week_start: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = "monday"
    settle: Duration = timedelta(seconds=0.5)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def claude_roots(settings: Settings, env: Mapping[str, str]) -> tuple[Path, ...]:
    """Transcript roots: configured ones, else `$CLAUDE_CONFIG_DIR` (comma-separated), else both defaults;
    none when the transcript source is turned off."""
    if not settings.sources.transcripts.enabled:
        return ()
    return settings.sources.transcripts.roots or default_roots(env)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), [f"cannot read the file: {getattr(e, 'strerror', None) or e}"]) from None
    try:
        data = yaml.load(text, Loader=Loader)
    except yaml.YAMLError as e:
        raise ConfigError(str(path), [yaml_problem(e)]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(str(path), [f"top level: should be a mapping of settings, got a {kind}"])
    return data


def _order(loc: tuple[int | str, ...]) -> tuple[tuple[int, int, str], ...]:
    return tuple((1, 0, p) if isinstance(p, str) else (0, p, "") for p in loc)


def _validate(raw: dict[str, Any], source: str, origins: Mapping[str, str]) -> Settings:
    """Validate once; on failure list every error by path, each named by where its value came from."""
    # Checked on the raw data too, so a duplicate name is reported even when another budget is invalid.
    problems = _duplicate_names(raw.get("budgets"))
    settings = None
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as e:
        problems += [(err["loc"], validation_message(err)) for err in e.errors() if err["type"] != "duplicate_budget"]
    if settings is not None and not problems:
        return settings
    lines = []
    for loc, message in sorted(problems, key=lambda problem: _order(problem[0])):
        path = ".".join(str(p) for p in loc) or "top level"
        origin = next((o for p, o in origins.items() if path == p or path.startswith(p + ".")), path)
        lines.append(f"{origin}: {message}")
    raise ConfigError(source, lines)


def _set(raw: dict[str, Any], dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        child = node.get(key)
        node[key] = child = dict(child) if isinstance(child, dict) else {}
        node = child
    node[leaf] = value


def _overrides(env: Mapping[str, str], flags: Mapping[str, object]) -> dict[str, tuple[object, str]]:
    """Dotted path -> (value, where it came from); flags win over the environment."""
    found: dict[str, tuple[object, str]] = {}
    for name, path in ENV_VARS.items():
        value: object = env.get(name, "").strip()
        if path in _LIST_PATHS:
            value = [p.strip() for p in str(value).split(",") if p.strip()]
        if value and path != "config_file":
            found[path] = (value, name)
    for path, value in flags.items():
        if value is not None and value != () and value != []:
            found[path] = (value, f"{path} (flag)")
    if "sources.otlp.listen" in found:  # asking for a listen address means turning the receiver on
        found["sources.otlp.enabled"] = (True, found["sources.otlp.listen"][1])
    return found


def load_settings(config_file: Path | None, env: Mapping[str, str], flags: Mapping[str, object]) -> Settings:
    """Settings from flags > environment > config file > defaults.

    `flags` maps dotted paths (e.g. "web.listen") to values; None (or an empty sequence) means "not
    given". The file must be valid on its own; errors in the environment or flags name their source.
    """
    path = config_file_from(config_file, env)
    raw = _read_yaml(path) if path else {}
    defaults = {"timezone": default_timezone(env), "state_dir": default_state_dir(env)}
    settings = _validate({**defaults, **raw}, str(path), {}) if path else None
    overrides = _overrides(env, flags)
    if settings is not None and not overrides:
        return settings
    for dotted, (value, _) in overrides.items():
        _set(raw, dotted, value)
    origins = {dotted: origin for dotted, (_, origin) in overrides.items()}
    return _validate({**defaults, **raw}, "environment and flags", origins)


def check_config(path: Path) -> str:
    """Validate one config file on its own (`check-config`); a one-line summary, else ConfigError."""
    s = _validate(_read_yaml(path), str(path), {})
    t, o, push = s.sources.transcripts, s.sources.otlp, s.export.otlp_push.endpoint
    inputs = [*(["transcripts"] if t.enabled else []), *([f"OTLP on {o.listen}"] if o.enabled else [])]
    if s.sources.anthropic_admin.enabled:
        inputs.append(f"Admin API at {s.sources.anthropic_admin.base_url}")
    return (
        f"{path}: OK (timezone {s.timezone}; sources: {', '.join(inputs) or 'none'}; "
        f"web {s.web.listen}; pricing {s.pricing.mode}, {len(s.pricing.overrides)} override(s); "
        f"{len(s.budgets)} budget(s); OTLP push {'to ' + push if push else 'off'})"
    )
