"""Reading our YAML config files: the loader and the words of their errors, shared by the settings file
(`exporter.config`) and the web config file (`exporter.web.webconfig`).

YAML 1.2 booleans, so `user: off` stays the string "off"; a duplicate key is an error, not a silent overwrite.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml


class Loader(yaml.SafeLoader):
    """YAML 1.2 booleans (so `user: off` stays the string "off") and duplicate keys rejected."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


_BOOL = "tag:yaml.org,2002:bool"
Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _at(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "top level"


def yaml_problem(e: yaml.YAMLError) -> str:
    """`line 3, column 7: invalid YAML: <problem> (while parsing ... at line 2, column 11)`."""
    if not isinstance(e, yaml.MarkedYAMLError):
        return f"top level: invalid YAML: {e}"
    text = f"{_at(e.problem_mark or e.context_mark)}: invalid YAML: {e.problem or e.context}"
    if e.problem and e.context and e.context_mark:
        text += f" ({e.context} at {_at(e.context_mark)})"
    return text


def validation_message(error: Mapping[str, Any]) -> str:
    """One pydantic validation error in our words."""
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "model_type":
        return "Input should be a mapping"
    return str(error["msg"])
