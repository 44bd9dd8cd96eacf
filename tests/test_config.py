from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pydantic
import pytest

from exporter.config import (
    ENV_VARS,
    AnthropicAdminSettings,
    Budget,
    BudgetFilter,
    ClassifySettings,
    ConfigError,
    ExportSettings,
    LabelSettings,
    LongContextTier,
    OtlpPushSettings,
    OtlpSettings,
    PriceOverride,
    PricingSettings,
    Settings,
    Sources,
    TranscriptsSettings,
    WebSettings,
    check_config,
    claude_roots,
    load_settings,
    split_host_port,
)
from exporter.defaults import config_file_from, default_state_dir, default_timezone

FIXTURES = Path(__file__).parent / "fixtures"
BAD_CONFIGS = sorted((FIXTURES / "bad-configs").glob("*.yaml"))
HOME = Path("/home/dev")
ENV = {"TZ": "UTC", "HOME": str(HOME)}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def error_text(config_file: Path | None, env: dict[str, str], flags: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file, env, flags)
    return str(caught.value)


def test_defaults_follow_the_product_contract():
    settings = load_settings(None, ENV, {})

    assert settings == Settings(
        timezone="UTC",
        state_dir=HOME / ".local/state/claude-usage-exporter",
        sources=Sources(
            transcripts=TranscriptsSettings(enabled=True, roots=(), poll=False, poll_interval=timedelta(seconds=1)),
            otlp=OtlpSettings(
                enabled=False,
                listen="127.0.0.1:4318",
                bearer_tokens_file=None,
                max_body_bytes=16777216,
                grace=timedelta(seconds=30),
            ),
            anthropic_admin=AnthropicAdminSettings(
                enabled=False, key_file=None, base_url="https://api.anthropic.com", interval=timedelta(minutes=15)
            ),
        ),
        web=WebSettings(listen="127.0.0.1:9477", config_file=None),
        labels=LabelSettings(project="name", max_projects=100, user="off"),
        pricing=PricingSettings(mode="auto", overrides=()),
        budgets=(),
        export=ExportSettings(otlp_push=OtlpPushSettings(endpoint=None, interval=timedelta(seconds=60), headers={})),
        classify=ClassifySettings(tools={}, categories={}),
        settle=timedelta(milliseconds=500),
    )


def test_an_empty_file_means_defaults(tmp_path):
    assert load_settings(write(tmp_path, "# nothing set yet\n"), ENV, {}) == load_settings(None, ENV, {})


def test_the_full_good_config_sets_every_field(monkeypatch):
    monkeypatch.setenv("HOME", str(HOME))
    settings = load_settings(FIXTURES / "good-config.yaml", ENV, {})

    assert settings == Settings(
        timezone="Europe/Berlin",
        state_dir=Path("/var/lib/claude-usage-exporter"),
        settle=timedelta(milliseconds=750),
        week_start="sunday",
        sources=Sources(
            transcripts=TranscriptsSettings(
                enabled=True,
                roots=(Path("/data/claude"), HOME / ".claude"),
                poll=True,
                poll_interval=timedelta(seconds=2),
            ),
            otlp=OtlpSettings(
                enabled=True,
                listen="0.0.0.0:4318",
                bearer_tokens_file=Path("/etc/claude-usage-exporter/tokens"),
                max_body_bytes=1048576,
                grace=timedelta(seconds=45),
            ),
        ),
        web=WebSettings(listen="[::1]:9477", config_file=Path("/etc/claude-usage-exporter/web.yaml")),
        labels=LabelSettings(project="hash", max_projects=50, user="off"),
        pricing=PricingSettings(
            mode="reported",
            overrides=(
                PriceOverride(
                    model="claude-opus-4-8*",
                    input=Decimal(5),
                    output=Decimal(25),
                    cache_read=Decimal("0.5"),
                    cache_write_5m=Decimal("6.25"),
                    cache_write_1h=Decimal(10),
                ),
                PriceOverride(
                    model="claude-sonnet-5",
                    input=Decimal(3),
                    output=Decimal(15),
                    cache_read=Decimal("0.3"),
                    cache_write_5m=Decimal("3.75"),
                    cache_write_1h=Decimal(6),
                    long_context=LongContextTier(
                        threshold=200000,
                        input=Decimal(6),
                        output=Decimal("22.5"),
                        cache_read=Decimal("0.6"),
                        cache_write_5m=Decimal("7.5"),
                        cache_write_1h=Decimal(12),
                    ),
                ),
            ),
        ),
        budgets=(
            Budget(name="team-month", window="month", limit_usd=Decimal(500)),
            Budget(
                name="acme-daily",
                window="day",
                limit_usd=Decimal(25),
                filter=BudgetFilter(project="acme-api"),
            ),
            Budget(
                name="subagents-weekly",
                window="week",
                limit_usd=Decimal("40.5"),
                filter=BudgetFilter(model_family="opus", category="model_operation", agent="subagent"),
            ),
        ),
        export=ExportSettings(
            otlp_push=OtlpPushSettings(
                endpoint="http://collector:4318",
                interval=timedelta(minutes=5),
                headers={"X-Scope-OrgID": "team-a"},
            )
        ),
        classify=ClassifySettings(
            tools={"mcp__github__*": "context_read", "Deploy": "command"},
            categories={"planning": "model_operation"},
        ),
    )


def test_the_good_config_round_trips_through_a_dump():
    settings = load_settings(FIXTURES / "good-config.yaml", ENV, {})

    assert Settings.model_validate(settings.model_dump()) == settings


def test_rates_keep_their_decimal_digits_exactly():
    override = load_settings(FIXTURES / "good-config.yaml", ENV, {}).pricing.overrides[1]

    assert (override.cache_read, override.cache_write_5m) == (Decimal("0.3"), Decimal("3.75"))


def test_off_stays_the_word_off_not_a_yaml_1_1_boolean(tmp_path):
    labels = load_settings(write(tmp_path, "labels: {project: off, user: off}\n"), ENV, {}).labels

    assert (labels.project, labels.user) == ("off", "off")


def test_settings_are_frozen():
    settings = load_settings(None, ENV, {})

    with pytest.raises(pydantic.ValidationError):
        settings.timezone = "Europe/Berlin"


def test_check_config_summarises_a_valid_file():
    path = FIXTURES / "good-config.yaml"

    assert check_config(path) == (
        f"{path}: OK (timezone Europe/Berlin; sources: transcripts, OTLP on 0.0.0.0:4318; web [::1]:9477; "
        "pricing reported, 2 override(s); 3 budget(s); OTLP push to http://collector:4318)"
    )


@pytest.mark.parametrize("config", BAD_CONFIGS, ids=[p.stem for p in BAD_CONFIGS])
def test_each_bad_config_fails_with_exactly_its_pinned_message(config, monkeypatch):
    monkeypatch.chdir(config.parent)  # so the file name line reads the same on every machine

    with pytest.raises(ConfigError) as caught:
        check_config(Path(config.name))

    assert str(caught.value) + "\n" == config.with_suffix(".txt").read_text()


def test_there_are_enough_bad_configs_each_with_its_message():
    assert len(BAD_CONFIGS) >= 8
    assert {p.stem for p in BAD_CONFIGS} == {p.stem for p in (FIXTURES / "bad-configs").glob("*.txt")}


def test_load_settings_lists_a_bad_file_against_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "web: {listn: 1}\n")

    assert error_text(Path("config.yaml"), ENV, {}) == "config.yaml: invalid configuration\n  web.listn: unknown key"


def test_a_missing_file_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    assert error_text(Path("absent.yaml"), ENV, {}) == (
        "absent.yaml: invalid configuration\n  cannot read the file: No such file or directory"
    )


# One row per key: dotted flag path, its variable, then the file's, the variable's and the flag's value,
# then what each layer should produce.
PRECEDENCE = [
    (
        "timezone",
        "Asia/Tokyo",
        "Europe/Berlin",
        "America/New_York",
        "UTC",
        "Asia/Tokyo",
        "Europe/Berlin",
        "America/New_York",
    ),
    (
        "state_dir",
        "/file/state",
        "/env/state",
        Path("/flag/state"),
        HOME / ".local/state/claude-usage-exporter",
        Path("/file/state"),
        Path("/env/state"),
        Path("/flag/state"),
    ),
    (
        "sources.transcripts.roots",
        ["/file/claude"],
        "/env/a, /env/b",
        (Path("/flag/claude"),),
        (),
        (Path("/file/claude"),),
        (Path("/env/a"), Path("/env/b")),
        (Path("/flag/claude"),),
    ),
    ("sources.transcripts.poll", True, "false", True, False, True, False, True),
    (
        "web.listen",
        "0.0.0.0:1",
        "127.0.0.1:2",
        "[::]:3",
        "127.0.0.1:9477",
        "0.0.0.0:1",
        "127.0.0.1:2",
        "[::]:3",
    ),
    (
        "web.config_file",
        "/file/web.yml",
        "/env/web.yml",
        Path("/flag/web.yml"),
        None,
        Path("/file/web.yml"),
        Path("/env/web.yml"),
        Path("/flag/web.yml"),
    ),
    (
        "sources.otlp.listen",
        "0.0.0.0:1",
        "127.0.0.1:2",
        "[::]:3",
        "127.0.0.1:4318",
        "0.0.0.0:1",
        "127.0.0.1:2",
        "[::]:3",
    ),
    (
        "export.otlp_push.endpoint",
        "http://file:1",
        "http://env:2",
        "https://flag:3",
        None,
        "http://file:1",
        "http://env:2",
        "https://flag:3",
    ),
    ("pricing.mode", "reported", "calculate", "reported", "auto", "reported", "calculate", "reported"),
]


def get(settings: Settings, dotted: str) -> object:
    value: object = settings
    for key in dotted.split("."):
        value = getattr(value, key)
    return value


def nested(dotted: str, value: object) -> str:
    *parents, leaf = dotted.split(".")
    text = f"{leaf}: {value!r}" if not isinstance(value, bool) else f"{leaf}: {str(value).lower()}"
    if isinstance(value, list):
        text = f"{leaf}: [{', '.join(value)}]"
    for parent in reversed(parents):
        text = f"{parent}: {{{text}}}"
    return text + "\n"


@pytest.mark.parametrize("row", PRECEDENCE, ids=[row[0] for row in PRECEDENCE])
def test_flags_beat_the_environment_which_beats_the_file_which_beats_defaults(row, tmp_path):
    dotted, in_file, in_env, in_flag, default, from_file, from_env, from_flag = row
    variable = next(name for name, path in ENV_VARS.items() if path == dotted)
    config = write(tmp_path, nested(dotted, in_file))

    assert get(load_settings(None, ENV, {}), dotted) == default
    assert get(load_settings(config, ENV, {}), dotted) == from_file
    assert get(load_settings(config, {**ENV, variable: in_env}, {}), dotted) == from_env
    assert get(load_settings(config, {**ENV, variable: in_env}, {dotted: in_flag}), dotted) == from_flag


def test_flags_given_as_none_or_empty_are_not_given(tmp_path):
    config = write(tmp_path, "timezone: Asia/Tokyo\nsources: {transcripts: {roots: [/file]}}\n")

    settings = load_settings(config, ENV, {"timezone": None, "sources.transcripts.roots": ()})

    assert (settings.timezone, settings.sources.transcripts.roots) == ("Asia/Tokyo", (Path("/file"),))


def test_empty_environment_values_are_not_given():
    env = {**ENV, "CLAUDE_USAGE_EXPORTER_TIMEZONE": "", "CLAUDE_USAGE_EXPORTER_CLAUDE_DIR": " , "}

    assert load_settings(None, env, {}) == load_settings(None, ENV, {})


def test_errors_are_sorted_by_path_with_list_indexes_in_numeric_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    windows = ["day"] * 12
    windows[2] = windows[10] = "year"
    budgets = ", ".join(f"{{name: b{i}, window: {w}, limit_usd: 1}}" for i, w in enumerate(windows))
    write(tmp_path, f"web: {{listn: 1}}\nbudgets: [{budgets}]\n")

    assert error_text(Path("config.yaml"), ENV, {}) == (
        "config.yaml: invalid configuration\n"
        "  budgets.2.window: Input should be 'day', 'week' or 'month'\n"
        "  budgets.10.window: Input should be 'day', 'week' or 'month'\n"
        "  web.listn: unknown key"
    )


def test_an_otlp_listen_address_turns_the_receiver_on():
    from_env = load_settings(None, {**ENV, "CLAUDE_USAGE_EXPORTER_OTLP_LISTEN": "0.0.0.0:4318"}, {})
    from_flag = load_settings(None, ENV, {"sources.otlp.listen": "0.0.0.0:4318"})

    assert from_env.sources.otlp.enabled and from_flag.sources.otlp.enabled


def test_an_override_keeps_the_rest_of_its_section_from_the_file(tmp_path):
    config = write(tmp_path, "web: {listen: 127.0.0.1:1, config_file: /file/web.yml}\n")

    settings = load_settings(config, {**ENV, "CLAUDE_USAGE_EXPORTER_WEB_LISTEN_ADDRESS": "127.0.0.1:2"}, {})

    assert settings.web == WebSettings(listen="127.0.0.1:2", config_file=Path("/file/web.yml"))


def test_environment_values_of_the_wrong_type_are_named_by_their_variable():
    env = {
        **ENV,
        "CLAUDE_USAGE_EXPORTER_POLL": "sometimes",
        "CLAUDE_USAGE_EXPORTER_PRICING_MODE": "guess",
        "CLAUDE_USAGE_EXPORTER_OTLP_LISTEN": "nowhere",
        "CLAUDE_USAGE_EXPORTER_TIMEZONE": "Mars/Olympus_Mons",
    }

    assert error_text(None, env, {}) == (
        "environment and flags: invalid configuration\n"
        "  CLAUDE_USAGE_EXPORTER_PRICING_MODE: Input should be 'auto', 'calculate' or 'reported'\n"
        "  CLAUDE_USAGE_EXPORTER_OTLP_LISTEN: invalid address 'nowhere': use HOST:PORT, e.g. 127.0.0.1:9477\n"
        "  CLAUDE_USAGE_EXPORTER_POLL: Input should be a valid boolean, unable to interpret input\n"
        "  CLAUDE_USAGE_EXPORTER_TIMEZONE: invalid time zone 'Mars/Olympus_Mons': use an IANA name such as "
        "Europe/Berlin"
    )


def test_flag_values_of_the_wrong_type_are_named_by_their_path():
    assert error_text(None, ENV, {"web.listen": "9477"}) == (
        "environment and flags: invalid configuration\n"
        "  web.listen (flag): invalid address '9477': use HOST:PORT, e.g. 127.0.0.1:9477"
    )


def test_a_flag_that_corrects_a_bad_variable_wins():
    env = {**ENV, "CLAUDE_USAGE_EXPORTER_PRICING_MODE": "guess"}

    assert load_settings(None, env, {"pricing.mode": "reported"}).pricing.mode == "reported"


def test_the_file_must_be_valid_even_where_the_environment_overrides_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "timezone: Mars/Olympus_Mons\n")

    assert error_text(Path("config.yaml"), {**ENV, "CLAUDE_USAGE_EXPORTER_TIMEZONE": "UTC"}, {}) == (
        "config.yaml: invalid configuration\n"
        "  timezone: invalid time zone 'Mars/Olympus_Mons': use an IANA name such as Europe/Berlin"
    )


def test_every_environment_variable_names_a_real_setting():
    settings = load_settings(None, ENV, {})

    for variable, dotted in ENV_VARS.items():
        assert variable.startswith("CLAUDE_USAGE_EXPORTER_")
        if dotted != "config_file":
            get(settings, dotted)


def test_the_config_file_comes_from_the_flag_before_the_environment():
    env = {"CLAUDE_USAGE_EXPORTER_CONFIG": "/env/config.yaml"}

    assert config_file_from(Path("/flag/config.yaml"), env) == Path("/flag/config.yaml")
    assert config_file_from(None, env) == Path("/env/config.yaml")
    assert config_file_from(None, {}) is None


def test_load_settings_reads_the_file_named_in_the_environment(tmp_path):
    config = write(tmp_path, "timezone: Asia/Tokyo\n")

    assert load_settings(None, {**ENV, "CLAUDE_USAGE_EXPORTER_CONFIG": str(config)}, {}).timezone == "Asia/Tokyo"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("1s", timedelta(seconds=1)),
        ("60s", timedelta(seconds=60)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("1.5h", timedelta(minutes=90)),
        ("1m30s", timedelta(seconds=90)),  # Go and Prometheus write compound durations
        (" 2s ", timedelta(seconds=2)),
        ("0", timedelta(0)),
        ("0.25", timedelta(milliseconds=250)),  # a bare number in a string, as environment variables give it
        (3, timedelta(seconds=3)),
        (0.5, timedelta(milliseconds=500)),
    ],
)
def test_durations_parse_from_units_or_seconds(text, expected):
    assert Settings(timezone="UTC", state_dir=HOME, settle=text).settle == expected


@pytest.mark.parametrize(
    "text", ["5 minutes", "1d", "-1s", "-2", "1.s", "s", "", "1e3", True, None, float("nan"), float("inf")]
)
def test_malformed_durations_are_rejected(text):
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings(timezone="UTC", state_dir=HOME, settle=text)

    assert caught.value.errors()[0]["msg"] == f"invalid duration {text!r}: use seconds or 500ms, 1s, 5m, 1h"


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5"])
def test_iana_time_zones_are_accepted(name):
    assert load_settings(None, {**ENV, "CLAUDE_USAGE_EXPORTER_TIMEZONE": name}, {}).zone.key == name


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "Europe", "utc", "/etc/localtime", "../etc/passwd", "+02:00"])
def test_anything_but_an_iana_time_zone_is_rejected(name):
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings(timezone=name, state_dir=HOME)

    assert caught.value.errors()[0]["msg"] == (f"invalid time zone {name!r}: use an IANA name such as Europe/Berlin")


def test_the_default_time_zone_comes_from_tz_first(tmp_path):
    assert default_timezone({"TZ": "Asia/Tokyo"}, tmp_path / "no-localtime") == "Asia/Tokyo"
    assert default_timezone({"TZ": ":Europe/Paris"}, tmp_path / "no-localtime") == "Europe/Paris"  # glibc's form


def test_the_default_time_zone_falls_back_to_the_localtime_link_then_utc(tmp_path):
    localtime = tmp_path / "localtime"
    localtime.symlink_to("/usr/share/zoneinfo/America/Chicago")

    assert default_timezone({"TZ": "not-a-zone"}, localtime) == "America/Chicago"
    assert default_timezone({}, tmp_path / "no-localtime") == "UTC"


def test_the_state_dir_follows_xdg_state_home():
    assert default_state_dir({"XDG_STATE_HOME": "/xdg/state", "HOME": "/home/dev"}) == Path(
        "/xdg/state/claude-usage-exporter"
    )
    assert default_state_dir({"HOME": "/home/dev"}) == Path("/home/dev/.local/state/claude-usage-exporter")
    # The XDG spec says relative paths in these variables are to be ignored.
    assert default_state_dir({"XDG_STATE_HOME": "state", "HOME": "/home/dev"}) == Path(
        "/home/dev/.local/state/claude-usage-exporter"
    )


def test_load_settings_takes_xdg_state_home_from_the_given_environment():
    settings = load_settings(None, {**ENV, "XDG_STATE_HOME": "/xdg/state"}, {})

    assert settings.state_dir == Path("/xdg/state/claude-usage-exporter")


def test_a_tilde_in_a_configured_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", "/home/dev")

    settings = load_settings(write(tmp_path, "state_dir: ~/state\n"), ENV, {})

    assert settings.state_dir == Path("/home/dev/state")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9477", ("127.0.0.1", 9477)),
        ("localhost:9477", ("localhost", 9477)),
        ("[::1]:9477", ("::1", 9477)),
        (":9477", ("", 9477)),  # every interface, as Go exporters write it
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_listen_addresses_split_into_host_and_port(address, expected):
    assert split_host_port(address) == expected


@pytest.mark.parametrize("address", ["localhost", "9477", "::1:9477", "host:65536", "host:port", "[::1]", "a b:1"])
def test_listen_addresses_without_a_valid_port_are_rejected(address):
    with pytest.raises(ValueError, match="invalid address"):
        split_host_port(address)


def test_transcript_roots_default_to_claude_config_dir_then_both_home_dirs():
    settings = load_settings(None, ENV, {})

    assert claude_roots(settings, {"CLAUDE_CONFIG_DIR": "/a, /b", "HOME": "/home/dev"}) == (
        Path("/a"),
        Path("/b"),
    )
    assert claude_roots(settings, {"HOME": "/home/dev"}) == (
        Path("/home/dev/.config/claude"),
        Path("/home/dev/.claude"),
    )


def test_configured_transcript_roots_win_over_claude_config_dir():
    settings = load_settings(None, ENV, {"sources.transcripts.roots": [Path("/mine")]})

    assert claude_roots(settings, {"CLAUDE_CONFIG_DIR": "/theirs"}) == (Path("/mine"),)


def test_a_transcript_source_turned_off_has_no_roots():
    settings = load_settings(None, ENV, {"sources.transcripts.enabled": False, "sources.transcripts.roots": ["/a"]})

    assert claude_roots(settings, {"CLAUDE_CONFIG_DIR": "/theirs"}) == ()


def test_a_config_error_lists_its_source_then_each_error():
    error = ConfigError("c.yaml", ["a.b: broken", "c: unknown key"])

    assert (str(error), error.errors) == (
        "c.yaml: invalid configuration\n  a.b: broken\n  c: unknown key",
        error.errors,
    )


def test_the_admin_api_source_is_read_with_its_key_file_expanded_and_named_by_check_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(HOME))
    admin = "{enabled: true, key_file: ~/admin.key, base_url: 'http://127.0.0.1:8080', interval: 1h}"
    path = write(tmp_path, f"sources:\n  anthropic_admin: {admin}\n")

    assert load_settings(path, ENV, {}).sources.anthropic_admin == AnthropicAdminSettings(
        enabled=True, key_file=HOME / "admin.key", base_url="http://127.0.0.1:8080", interval=timedelta(hours=1)
    )
    assert "sources: transcripts, Admin API at http://127.0.0.1:8080;" in check_config(path)


def test_the_admin_api_source_is_strict_and_needs_a_key_file_once_enabled(tmp_path):
    path = write(
        tmp_path, "sources: {anthropic_admin: {enabled: true, interval: 10s, base_url: 'ftp://x', key: abc}}\n"
    )

    assert error_text(path, ENV, {}).splitlines()[1:] == [
        "  sources.anthropic_admin.base_url: invalid URL 'ftp://x': use http(s)://HOST:PORT/PATH",
        "  sources.anthropic_admin.interval: duration should be at least 1m",
        "  sources.anthropic_admin.key: unknown key",
    ]
    path = write(tmp_path, "sources: {anthropic_admin: {enabled: true}}\n")
    assert error_text(path, ENV, {}).splitlines()[1:] == [
        "  sources.anthropic_admin: key_file is needed when the Admin API source is enabled"
    ]
