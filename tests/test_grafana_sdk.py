"""The dashboards against Grafana's own models: its official Python SDK, `grafana-foundation-sdk`, Grafana 11 line.

Grafana cannot be installed here, so each dashboard is loaded into the SDK's `Dashboard` model and written back:
a key the models drop is a key Grafana does not know, and a value of the wrong type (a string where Grafana
wants a list) is one Grafana misreads. The SDK keeps such values as they came, so its type hints are checked too.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # the test extras pin it: a missing SDK fails
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

DASHBOARDS = sorted((Path(__file__).parent.parent / "dashboards").glob("*.json"))

register_default_plugins()  # the panel types' options and the Prometheus query model


def dropped(written: Any, read: Any, path: str = "") -> list[str]:
    """Where `read` (the SDK's output) lacks or changes what `written` holds. The SDK writes no nulls."""
    if isinstance(written, dict):
        if not isinstance(read, dict):
            return [f"{path}: {written!r} became {read!r}"]
        return [
            found
            for key, value in written.items()
            for found in (
                dropped(value, read[key], f"{path}.{key}") if key in read else [f"{path}.{key} dropped ({value!r})"]
            )
        ]
    if isinstance(written, list):
        if not isinstance(read, list) or len(written) != len(read):
            return [f"{path}: {written!r} became {read!r}"]
        return [
            found for i, pair in enumerate(zip(written, read, strict=True)) for found in dropped(*pair, f"{path}[{i}]")
        ]
    return [] if written == read else [f"{path}: {written!r} became {read!r}"]


def fits(value: Any, hint: Any) -> bool:
    """Whether `value` (as the SDK's from_json left it) is of the type the SDK's model declares."""
    origin = typing.get_origin(hint)
    if hint in (Any, object):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(fits(item, typing.get_args(hint)[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        # from_json keeps enums as the JSON's plain values
        return isinstance(value, hint) or value in [member.value for member in hint]
    if isinstance(hint, type) and isinstance(value, dict) and hasattr(hint, "from_json"):
        return not mistyped(hint.from_json(value))  # e.g. transformations stay plain dicts
    return not isinstance(hint, type) or isinstance(value, hint)


def mistyped(model: Any, path: str = "") -> list[str]:
    """Every attribute of the SDK's model tree whose value does not fit its declared type."""
    if isinstance(model, list):
        return [found for i, item in enumerate(model) for found in mistyped(item, f"{path}[{i}]")]
    if isinstance(model, dict):
        return [found for key, item in model.items() for found in mistyped(item, f"{path}.{key}")]
    if isinstance(model, enum.Enum) or not hasattr(model, "to_json"):
        return []
    found = []
    for name, hint in typing.get_type_hints(type(model)).items():
        value = getattr(model, name, None)
        if not fits(value, hint):
            found.append(f"{path}.{name}: {value!r} is not {hint}")
        found += mistyped(value, f"{path}.{name}")
    return found


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_grafanas_dashboard_model_keeps_every_key_of_the_dashboard(path: Path) -> None:
    written = json.loads(path.read_text(encoding="utf-8"))
    read = json.loads(json.dumps(Dashboard.from_json(written), cls=JSONEncoder))
    assert dropped(written, read) == []


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_every_value_of_the_dashboard_has_the_type_grafanas_model_declares(path: Path) -> None:
    assert mistyped(Dashboard.from_json(json.loads(path.read_text(encoding="utf-8")))) == []


def test_the_checks_find_a_key_grafana_does_not_know_and_a_footer_fields_string() -> None:
    board = json.loads(DASHBOARDS[0].read_text(encoding="utf-8"))
    board["templating"]["list"][1]["definition"] = "label_values(up, job)"
    table = next(p for p in board["panels"] if p["type"] == "table")
    table["options"]["footer"]["fields"] = ""
    read = json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder))
    assert [found.split(" ")[0] for found in dropped(board, read)] == [".templating.list[1].definition"]
    assert [found.split(":")[0] for found in mistyped(Dashboard.from_json(board))] == [
        f".panels[{board['panels'].index(table)}].options.footer.fields"
    ]
