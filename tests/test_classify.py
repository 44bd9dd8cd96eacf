import tomllib
from importlib.resources import files
from typing import Any

import pytest

from exporter.classify.rules import (
    CATEGORIES,
    INTERACTIONS,
    Classifier,
    _parse_table,
    default_classifier,
)
from exporter.events import tool_label

DIRECT, CONTEXT, MODEL = "direct_interaction", "context_processing", "model_operation"


# One row per classification rule (docs/reports.md): (agent, tools, compaction, web searches) → (interaction, category).
@pytest.mark.parametrize(
    ("agent", "tools", "compaction", "web_searches", "expected"),
    [
        ("auxiliary", [], False, 0, ("background", MODEL)),
        ("main", [], True, 0, ("compaction", CONTEXT)),
        ("main", ["Agent"], False, 0, ("delegation", MODEL)),
        ("main", ["Edit"], False, 0, ("code_change", DIRECT)),
        ("main", ["MultiEdit"], False, 0, ("code_change", DIRECT)),
        ("main", ["Write"], False, 0, ("code_change", DIRECT)),
        ("main", ["NotebookEdit"], False, 0, ("code_change", DIRECT)),
        ("main", ["Bash"], False, 0, ("command", DIRECT)),
        ("main", ["BashOutput"], False, 0, ("command", DIRECT)),
        ("main", ["KillShell"], False, 0, ("command", DIRECT)),
        # Claude Code 2.0.64 replaced BashOutput by TaskOutput; TaskStop followed KillShell.
        ("main", ["TaskOutput"], False, 0, ("command", DIRECT)),
        ("main", ["TaskStop"], False, 0, ("command", DIRECT)),
        ("main", ["WebFetch"], False, 0, ("web_research", CONTEXT)),
        ("main", ["WebSearch"], False, 0, ("web_research", CONTEXT)),
        ("main", [], False, 2, ("web_research", CONTEXT)),
        ("main", ["Read"], False, 0, ("context_read", CONTEXT)),
        ("main", ["Grep"], False, 0, ("context_read", CONTEXT)),
        ("main", ["Glob"], False, 0, ("context_read", CONTEXT)),
        ("main", ["LS"], False, 0, ("context_read", CONTEXT)),
        ("main", ["NotebookRead"], False, 0, ("context_read", CONTEXT)),
        ("main", ["ListMcpResourcesTool"], False, 0, ("context_read", CONTEXT)),
        ("main", ["ReadMcpResourceTool"], False, 0, ("context_read", CONTEXT)),
        ("main", ["mcp__github__create_issue"], False, 0, ("extension", MODEL)),
        ("main", ["Skill"], False, 0, ("extension", MODEL)),
        ("main", ["SlashCommand"], False, 0, ("extension", MODEL)),
        ("main", ["TodoWrite"], False, 0, ("planning", DIRECT)),
        ("main", ["EnterPlanMode"], False, 0, ("planning", DIRECT)),
        ("main", ["ExitPlanMode"], False, 0, ("planning", DIRECT)),
        ("main", ["TaskCreate"], False, 0, ("planning", DIRECT)),
        ("main", ["TaskUpdate"], False, 0, ("planning", DIRECT)),
        ("main", ["TaskList"], False, 0, ("planning", DIRECT)),
        ("main", ["TaskGet"], False, 0, ("planning", DIRECT)),
        ("main", [], False, 0, ("conversation", DIRECT)),
        ("subagent", [], False, 0, ("conversation", DIRECT)),
        ("main", ["AskUserQuestion"], False, 0, ("other_tool", DIRECT)),
    ],
)
def test_each_row_of_the_taxonomy_table_is_reached_with_its_category(agent, tools, compaction, web_searches, expected):
    assert default_classifier().classify(agent, tools, compaction, web_searches) == expected


def test_every_interaction_is_reached_by_the_table_test():
    # Guards the parametrized table above against a row added to INTERACTIONS but not tested.
    params = test_each_row_of_the_taxonomy_table_is_reached_with_its_category.pytestmark[0].args[1]
    assert {row[-1][0] for row in params} == set(INTERACTIONS)


@pytest.mark.parametrize(
    ("agent", "tools", "compaction", "web_searches", "expected"),
    [
        pytest.param("auxiliary", ["Edit", "Agent"], True, 1, "background", id="auxiliary beats tools"),
        pytest.param("main", ["Agent"], True, 0, "compaction", id="compaction beats delegation"),
        pytest.param("subagent", ["Agent", "Edit"], False, 0, "delegation", id="Agent+Edit is delegation"),
        pytest.param("main", ["Task"], False, 0, "delegation", id="Task is the older name of Agent"),
        pytest.param("main", ["Read", "Edit"], False, 0, "code_change", id="Read+Edit is a code change"),
        pytest.param("main", ["Bash", "Read"], False, 0, "command", id="Bash+Read is a command"),
        pytest.param("main", ["Read"], False, 1, "web_research", id="server web search beats Read"),
        pytest.param("main", ["Edit"], False, 1, "code_change", id="Edit beats a server web search"),
        pytest.param("main", ["mcp__x__y", "TodoWrite"], False, 0, "extension", id="mcp beats planning"),
        pytest.param("main", ["NoSuchTool"], False, 0, "other_tool", id="unknown tool is other_tool"),
        pytest.param("main", ["NoSuchTool", "Read"], False, 0, "context_read", id="known tool beats unknown"),
        pytest.param("main", frozenset(), False, 0, "conversation", id="no tools is conversation"),
    ],
)
def test_the_first_matching_rule_in_table_order_wins(agent, tools, compaction, web_searches, expected):
    interaction, _ = default_classifier().classify(agent, tools, compaction, web_searches)
    assert interaction == expected


def test_tool_names_are_case_sensitive_so_a_lookalike_is_another_tool():
    assert default_classifier().classify("main", ["edit"]) == ("other_tool", DIRECT)
    assert default_classifier().classify("main", ["MCP__x__y"]) == ("other_tool", DIRECT)


def test_a_repeated_call_returns_the_cached_answer_for_any_iterable_of_the_same_tools():
    classifier = Classifier()
    first = classifier.classify("main", ["Read", "Edit"])
    assert classifier.classify("main", iter(["Edit", "Read", "Edit"])) is first


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("mcp__github__create_issue", "mcp__github"),
        ("mcp__claude_ai_Gmail__search_threads", "mcp__claude_ai_Gmail"),
        ("mcp__plugin_x_srv__do__more", "mcp__plugin_x_srv"),
        ("mcp__github", "mcp__github"),
        ("Bash", "Bash"),
        ("ReadMcpResourceTool", "ReadMcpResourceTool"),
    ],
)
def test_mcp_tool_labels_collapse_to_their_server(name, label):
    assert tool_label(name) == label


def test_a_tool_override_moves_an_exact_tool_to_another_interaction():
    classifier = Classifier(tool_overrides={"Bash": "context_read"})
    assert classifier.classify("main", ["Bash"]) == ("context_read", CONTEXT)
    # The rule order still decides: an Edit beside the moved Bash wins.
    assert classifier.classify("main", ["Bash", "Edit"]) == ("code_change", DIRECT)


def test_a_glob_tool_override_beats_the_table_and_an_exact_override_beats_the_glob():
    classifier = Classifier(tool_overrides={"mcp__jira__*": "planning", "mcp__jira__search": "context_read"})
    assert classifier.classify("main", ["mcp__jira__create"]) == ("planning", DIRECT)
    assert classifier.classify("main", ["mcp__jira__search"]) == ("context_read", CONTEXT)
    assert classifier.classify("main", ["mcp__github__create"]) == ("extension", MODEL)


def test_a_category_override_moves_an_interaction_to_another_category():
    classifier = Classifier(category_overrides={"delegation": "direct_interaction"})
    assert classifier.classify("main", ["Agent"]) == ("delegation", DIRECT)
    assert classifier.category_of("delegation") == DIRECT
    assert classifier.category_of("extension") == MODEL


def test_overrides_do_not_change_the_default_classifier():
    Classifier(tool_overrides={"Read": "command"}, category_overrides={"command": CONTEXT})
    assert default_classifier().classify("main", ["Read"]) == ("context_read", CONTEXT)
    assert default_classifier() is default_classifier()


VALID_INTERACTIONS = (
    "valid interactions: background, compaction, delegation, code_change, command, web_research, "
    "context_read, extension, planning, conversation, other_tool"
)
VALID_CATEGORIES = "valid categories: direct_interaction, context_processing, model_operation"


def test_a_tool_override_to_an_unknown_interaction_is_rejected_listing_the_valid_ones():
    with pytest.raises(ValueError) as raised:
        Classifier(tool_overrides={"Bash": "shell"})
    assert str(raised.value) == f"tool override 'Bash': unknown interaction 'shell'; {VALID_INTERACTIONS}"


def test_a_category_override_with_unknown_names_is_rejected_with_every_error_at_once():
    with pytest.raises(ValueError) as raised:
        Classifier(category_overrides={"chat": DIRECT, "planning": "thinking"})
    assert str(raised.value) == (
        f"category override 'chat': unknown interaction; {VALID_INTERACTIONS}\n"
        f"category override 'planning': unknown category 'thinking'; {VALID_CATEGORIES}"
    )


def test_category_of_an_unknown_interaction_is_rejected_listing_the_valid_ones():
    with pytest.raises(ValueError) as raised:
        default_classifier().category_of("chat")
    assert str(raised.value) == f"unknown interaction 'chat'; {VALID_INTERACTIONS}"


def _shipped_table() -> dict[str, Any]:
    return tomllib.loads((files("exporter.classify") / "interactions.toml").read_text(encoding="utf-8"))


def test_the_shipped_table_lists_every_interaction_in_order_with_known_categories():
    rules = _shipped_table()["interaction"]
    assert tuple(rule["name"] for rule in rules) == INTERACTIONS
    assert {rule["category"] for rule in rules} <= set(CATEGORIES)


def test_the_shipped_table_names_no_tool_twice():
    tools = [tool for rule in _shipped_table()["interaction"] for tool in rule.get("tools", [])]
    assert len(tools) == len(set(tools))


def test_a_table_with_an_unknown_key_and_category_is_rejected_with_every_error():
    text = '[[interaction]]\nname = "background"\ncategory = "misc"\ntool = ["Bash"]\n'
    with pytest.raises(ValueError) as raised:
        _parse_table(text)
    assert str(raised.value) == (
        "invalid interactions table:\n"
        "interaction #1: unknown key 'tool'; valid keys: agent, category, compaction, name, no_tools, "
        "tools, web_search\n"
        f"interaction #1 (background): unknown category 'misc'; {VALID_CATEGORIES}"
    )


def test_a_table_with_interactions_out_of_order_is_rejected():
    rules = _shipped_table()["interaction"]
    swapped = [rules[1], rules[0], *rules[2:]]
    text = "".join(f'[[interaction]]\nname = "{rule["name"]}"\ncategory = "{rule["category"]}"\n' for rule in swapped)
    with pytest.raises(ValueError) as raised:
        _parse_table(text)
    assert str(raised.value).startswith(
        "invalid interactions table:\ninteractions must be, in this order: background, compaction,"
    )
