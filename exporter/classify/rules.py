"""Which interaction and category a request is, and the bounded tool label.

The rules are data (`interactions.toml`); config may move tools and interactions around them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from exporter.events import Agent

# Fixed here, not read from the data: metric label values and dashboards are built on these names.
INTERACTIONS: tuple[str, ...] = (
    "background",
    "compaction",
    "delegation",
    "code_change",
    "command",
    "web_research",
    "context_read",
    "extension",
    "planning",
    "conversation",
    "other_tool",
)
CATEGORIES: tuple[str, ...] = ("direct_interaction", "context_processing", "model_operation")

_FALLBACK = "other_tool"  # a tool no rule names is "some other tool"
_RULE_KEYS = frozenset({"name", "category", "agent", "compaction", "web_search", "no_tools", "tools"})
_GLOB_CHARS = frozenset("*?[")
# Distinct keys are few (agents × tool sets seen × two flags); the cap only guards a pathological feed.
_CACHE_MAX = 65_536


@dataclass(frozen=True, slots=True)
class _Rule:
    interaction: str
    category: str
    agent: str | None = None
    compaction: bool = False
    web_search: bool = False
    no_tools: bool = False
    tools: tuple[str, ...] = ()


def _is_glob(name: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(name)


def _valid(kind: str, names: Iterable[str]) -> str:
    return f"valid {kind}: {', '.join(names)}"


def _parse_rule(index: int, raw: Any, errors: list[str]) -> _Rule | None:
    where = f"interaction #{index + 1}"
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a table")
        return None
    for key in sorted(set(raw) - _RULE_KEYS):
        errors.append(f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(_RULE_KEYS))}")
    name, category, agent = raw.get("name"), raw.get("category"), raw.get("agent")
    tools = raw.get("tools", [])
    flags = {key: raw.get(key, False) for key in ("compaction", "web_search", "no_tools")}
    if category not in CATEGORIES:
        errors.append(f"{where} ({name}): unknown category {category!r}; {_valid('categories', CATEGORIES)}")
    if agent is not None and agent not in list(Agent):
        errors.append(f"{where} ({name}): unknown agent {agent!r}; {_valid('agents', Agent)}")
    if not isinstance(tools, list) or not all(isinstance(tool, str) and tool for tool in tools):
        errors.append(f"{where} ({name}): tools must be a list of non-empty strings")
        tools = []
    for key, value in flags.items():
        if not isinstance(value, bool):
            errors.append(f"{where} ({name}): {key} must be true or false")
    return _Rule(
        str(name),
        str(category),
        agent,
        flags["compaction"] is True,
        flags["web_search"] is True,
        flags["no_tools"] is True,
        tuple(tools),
    )


def _parse_table(text: str) -> tuple[_Rule, ...]:
    """The rules of an interactions table; strict, since the table is ours. Every error at once."""
    import tomllib  # here, not at the top: a report that classifies nothing never pays for it

    data = tomllib.loads(text)
    errors = [f"unknown top-level key {key!r}" for key in sorted(set(data) - {"interaction"})]
    raw_rules = data.get("interaction", [])
    if not isinstance(raw_rules, list):
        raw_rules = []
    rules = [rule for i, raw in enumerate(raw_rules) if (rule := _parse_rule(i, raw, errors))]
    names = tuple(rule.interaction for rule in rules)
    if not errors and names != INTERACTIONS:
        errors.append(f"interactions must be, in this order: {', '.join(INTERACTIONS)}; got {', '.join(names)}")
    if errors:
        raise ValueError("invalid interactions table:\n" + "\n".join(errors))
    return tuple(rules)


@functools.cache
def _shipped_rules() -> tuple[_Rule, ...]:
    from importlib.resources import files

    return _parse_table((files("exporter.classify") / "interactions.toml").read_text(encoding="utf-8"))


class _ToolMap:
    """Tool name → interaction: exact names first, then globs in order."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.exact: dict[str, str] = {}
        self.globs: list[tuple[str, str]] = []
        for tool, interaction in pairs:
            if _is_glob(tool):
                self.globs.append((tool, interaction))
            else:
                self.exact.setdefault(tool, interaction)  # the earlier rule keeps a name listed twice

    def get(self, tool: str) -> str | None:
        found = self.exact.get(tool)
        if found is None:
            found = next((inter for pattern, inter in self.globs if fnmatchcase(tool, pattern)), None)
        return found


class Classifier:
    """Classifies requests with the shipped table, adjusted by config overrides."""

    def __init__(
        self,
        tool_overrides: Mapping[str, str] | None = None,
        category_overrides: Mapping[str, str] | None = None,
    ) -> None:
        tool_overrides = dict(tool_overrides or {})
        category_overrides = dict(category_overrides or {})
        _check_overrides(tool_overrides, category_overrides)
        self._rules = _shipped_rules()
        self._categories = {rule.interaction: rule.category for rule in self._rules} | category_overrides
        # Overrides form their own layer so that a config glob still beats an exact name of the table.
        self._tool_maps = (
            _ToolMap(tool_overrides.items()),
            _ToolMap((tool, rule.interaction) for rule in self._rules for tool in rule.tools),
        )
        self._cache: dict[tuple[str, frozenset[str], bool, bool], tuple[str, str]] = {}

    def classify(
        self, agent: str, tools: Iterable[str], compaction: bool = False, web_search_requests: int = 0
    ) -> tuple[str, str]:
        """(interaction, category) of one request: the first rule in table order that matches."""
        key = (agent, frozenset(tools), compaction, web_search_requests > 0)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            found = self._cache[key] = self._resolve(*key)
        return found

    def category_of(self, interaction: str) -> str:
        try:
            return self._categories[interaction]
        except KeyError:
            raise ValueError(f"unknown interaction {interaction!r}; {_valid('interactions', INTERACTIONS)}") from None

    def _interaction_of_tool(self, tool: str) -> str:
        for tool_map in self._tool_maps:
            found = tool_map.get(tool)
            if found is not None:
                return found
        return _FALLBACK

    def _resolve(self, agent: str, tools: frozenset[str], compaction: bool, web_search: bool) -> tuple[str, str]:
        # Each tool belongs to one interaction, so "first rule matching any tool" is the earliest of those.
        called = {self._interaction_of_tool(tool) for tool in tools}
        for rule in self._rules:
            if (
                rule.interaction in called
                or (rule.agent is not None and rule.agent == agent)
                or (rule.compaction and compaction)
                or (rule.web_search and web_search)
                or (rule.no_tools and not tools)
            ):
                return rule.interaction, self._categories[rule.interaction]
        return _FALLBACK, self._categories[_FALLBACK]


def _check_overrides(tools: Mapping[str, str], categories: Mapping[str, str]) -> None:
    errors = []
    for tool, interaction in tools.items():
        if not tool:
            errors.append("tool override: the tool name is empty")
        if interaction not in INTERACTIONS:
            errors.append(
                f"tool override {tool!r}: unknown interaction {interaction!r}; " + _valid("interactions", INTERACTIONS)
            )
    for interaction, category in categories.items():
        if interaction not in INTERACTIONS:
            errors.append(
                f"category override {interaction!r}: unknown interaction; " + _valid("interactions", INTERACTIONS)
            )
        if category not in CATEGORIES:
            errors.append(
                f"category override {interaction!r}: unknown category {category!r}; " + _valid("categories", CATEGORIES)
            )
    if errors:
        raise ValueError("\n".join(errors))


@functools.cache
def default_classifier() -> Classifier:
    """The classifier of the shipped table without overrides; built once."""
    return Classifier()
