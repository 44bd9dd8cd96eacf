"""The `claude-usage-exporter` command: each subcommand parses, builds settings, calls one function."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

if TYPE_CHECKING:  # imported where used: `--help` and a warm report stay quick
    from exporter.cli.tables import Layout
    from exporter.ledger.ingest import IngestResult
    from exporter.ledger.store import Ledger
    from exporter.pipeline import Pipeline

F = Callable[..., Any]


def common(func: F) -> F:
    """Options every command shares; each has an environment variable (`config.ENV_VARS`)."""
    options = [
        click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML config file."),
        click.option("--state-dir", type=click.Path(path_type=Path), help="Where the ledger lives."),
        click.option(
            "--claude-dir",
            "claude_dirs",
            multiple=True,
            type=click.Path(path_type=Path),
            help="Claude Code config dir to read (repeatable). Default: $CLAUDE_CONFIG_DIR, else"
            " ~/.config/claude and ~/.claude.",
        ),
        click.option("--timezone", "-z", help="IANA time zone for dates. Default: the machine's."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def table_options(func: F) -> F:
    """`--wide` and `--width`: how a table fits the screen (see `layout_of`)."""
    func = click.option("--wide", is_flag=True, help="Every column, however wide the table gets.")(func)
    return click.option(
        "--width",
        type=click.IntRange(min=20),
        help="Columns to fit the table in. Default: the terminal's; piped output is never narrowed.",
    )(func)


def layout_of(width: int | None, wide: bool) -> Layout:
    from exporter.cli.tables import Layout as TableLayout

    return TableLayout(width=width, wide=wide)


def load(
    config_file: Path | None,
    state_dir: Path | None,
    claude_dirs: tuple[Path, ...],
    timezone: str | None,
    mode: str | None = None,
) -> Pipeline:
    """The Pipeline for one command: flags > environment > config file > defaults."""
    from exporter.defaults import (
        ENV_PREFIX,
        config_file_from,
        default_roots,
        default_state_dir,
        default_timezone,
        is_zone,
    )
    from exporter.pipeline import Pipeline, Setup

    env = dict(os.environ)
    path = config_file_from(config_file, env)
    if path is None and not any(name.startswith(ENV_PREFIX) for name in env):
        if timezone and not is_zone(timezone):
            raise click.BadParameter(f"{timezone!r} is not an IANA time zone", param_hint="--timezone")
        return Pipeline(
            Setup(
                state_dir=(state_dir or default_state_dir(env)).expanduser(),
                roots=tuple(p.expanduser() for p in claude_dirs) or default_roots(env),
                timezone=timezone or default_timezone(env),
                pricing_mode=mode or "auto",
            )
        )
    from exporter.config import ConfigError, load_settings

    flags = {
        "state_dir": state_dir,
        "timezone": timezone,
        "sources.transcripts.roots": list(claude_dirs),
        "pricing.mode": mode,
    }
    try:
        return Pipeline(Setup.from_settings(load_settings(path, env, flags), env))
    except ConfigError as err:
        raise click.ClickException(str(err)) from None


def check_claude_dirs(roots: tuple[Path, ...], env: dict[str, str], projects: bool = True) -> None:
    """A Claude Code dir given by name (--claude-dir, CLAUDE_CONFIG_DIR, the config file) that does not
    exist is a mistake to name, not a folder to wait for; for `report` (`projects`) so is one without
    `projects/`, or old ledger data would pass for a report of it. The defaults may be missing: on a
    fresh machine Claude Code has not run yet."""
    from exporter.defaults import default_roots

    if roots == default_roots({k: v for k, v in env.items() if k != "CLAUDE_CONFIG_DIR"}):
        return
    for root in roots:
        if not root.is_dir():
            raise click.ClickException(
                f"the Claude Code dir {root} does not exist (given by --claude-dir, CLAUDE_CONFIG_DIR or the"
                " config file)"
            )
        if projects and not (root / "projects").is_dir():
            raise click.ClickException(
                f"the Claude Code dir {root} has no projects/ folder: give the folder Claude Code writes its"
                " transcripts under (e.g. ~/.claude)"
            )


def not_counted(malformed: int, since: str) -> str:
    """The one line `report` and `serve` say about lines they could not use."""
    return (
        f"{malformed:,} line(s) malformed or unrecognised {since}, not counted;"
        " `claude-usage-exporter explain TRANSCRIPT` shows what became of each line"
    )


def refreshed(app: Pipeline, beside: bool = False) -> tuple[Ledger, IngestResult]:
    """Ingests what is new (with a progress bar on a long first ingest) and returns the ledger; `beside`:
    see `Pipeline.refresh`."""
    from exporter.ledger.store import LedgerError

    try:
        with _progress() as progress:
            result = app.refresh(progress, beside=beside)
        for error in result.errors[:20]:
            click.echo(f"warning: {error}", err=True)
        return app.ledger, result
    except LedgerError as err:
        raise click.ClickException(str(err)) from None


def finished(app: Pipeline) -> None:
    """`Pipeline.finished`, its ledger errors as `refreshed` gives them."""
    from exporter.ledger.store import LedgerError

    try:
        app.finished()
    except LedgerError as err:
        raise click.ClickException(str(err)) from None


class _progress:
    """A rich progress bar on stderr, shown only when a terminal waits on a long ingest."""

    def __enter__(self) -> Callable[[int, int], None] | None:
        self.bar: Any = None
        if not sys.stderr.isatty():
            return None
        return self.update

    def update(self, done: int, total: int) -> None:
        if self.bar is None and total >= 64 << 20:
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(transient=True, console=Console(stderr=True))  # stdout may carry JSON
            self.bar.start()
            self.task = self.bar.add_task("reading transcripts", total=total)
        if self.bar is not None:
            self.bar.update(self.task, completed=done)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def emit(data: object) -> None:
    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    # Looked up only when asked: importlib.metadata is a third of a warm report's imports.
    if value and not ctx.resilient_parsing:
        from exporter import __version__

        click.echo(f"claude-usage-exporter, version {__version__}")
        ctx.exit()


class _Commands(click.Group):
    """The commands, `setup` imported only when it runs or help lists it: it is a group of its own
    (status line, telemetry, service) whose imports a report does not need."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "setup"])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "setup":
            from exporter.cli.setup import setup

            return setup
        return super().get_command(ctx, name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and exit.",
)
def main() -> None:
    """What Claude Code use costs, and why: ledger, reports and Prometheus metrics."""


def _day(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            pass
    raise click.BadParameter(f"{value!r} is not a date: use YYYY-MM-DD")


@main.command()
@click.argument("kind", type=click.Choice(["daily", "weekly", "monthly", "session", "blocks", "budgets", "reconcile"]))
@click.option("--since", callback=_day, help="First local day (reconcile: UTC day), YYYY-MM-DD.")
@click.option("--until", callback=_day, help="Last local day (reconcile: UTC day), YYYY-MM-DD.")
@click.option("--json", "as_json", is_flag=True, help="JSON in ccusage's shape, plus our own fields.")
@click.option(
    "--by",
    type=click.Choice(["model", "category", "interaction", "project", "agent", "speed"]),
    default="model",
    show_default=True,
    help="Label to break rows down by (speed: fast mode).",
)
@click.option("--breakdown", is_flag=True, help="Show the breakdown rows in the table.")
@click.option(
    "--mode",
    type=click.Choice(["auto", "calculate", "reported"]),
    default=None,
    help="Cost as the source reported it where it did, else from token prices (auto, the default);"
    " always from token prices (calculate); or only as reported (reported).",
)
@click.option("--start-of-week", type=click.Choice(["monday", "sunday"]), default="sunday", show_default=True)
@table_options
@common
def report(
    kind: str,
    since: date | None,
    until: date | None,
    as_json: bool,
    by: str,
    breakdown: bool,
    mode: str | None,
    start_of_week: str,
    width: int | None,
    wide: bool,
    **opts: Any,
) -> None:
    """Usage and cost per day, week, month, session or 5-hour block; where each budget stands; or our estimate
    beside what Anthropic billed (reconcile: per UTC day and model, needs sources.anthropic_admin)."""
    from exporter.cli import warm
    from exporter.events import Outcome
    from exporter.reports import blocks
    from exporter.reports import periods as reports

    if since and until and since > until:
        raise click.BadParameter("--since is after --until")
    if kind == "reconcile":
        _reconcile(since, until, as_json, layout_of(width, wide), opts)
        return
    app = load(**opts, mode=mode)
    check_claude_dirs(app.core.roots, dict(os.environ))
    ledger, result = refreshed(app, beside=kind in ("daily", "weekly", "monthly", "session"))
    if malformed := result.outcomes.get(Outcome.MALFORMED, 0):  # on stderr: stdout may carry JSON
        click.echo(f"note: {not_counted(malformed, 'since the last run')}", err=True)
    if result.files == 0 and ledger.empty():
        looked = ", ".join(str(r / "projects") for r in app.core.roots)
        raise click.ClickException(
            f"no Claude Code transcripts found (looked in {looked}); set CLAUDE_CONFIG_DIR or --claude-dir"
        )
    week_start = reports.WEEKDAYS.index(start_of_week)
    q = reports.Query(app.core.zone, since, until, by, app.core.pricing_mode, week_start)
    if kind == "budgets":
        _budgets(app, ledger, q.cost, as_json, layout_of(width, wide))
        return
    if kind == "blocks":  # depends on the clock (active block, projection): never cached
        body = orjson.dumps(blocks.report(ledger, q, int(time.time() * 1000)), option=orjson.OPT_INDENT_2)
    else:

        def compute() -> bytes:
            data = reports.sessions(ledger, q) if kind == "session" else reports.periods(ledger, kind, q)
            return orjson.dumps(data, option=orjson.OPT_INDENT_2)

        # After a first ingest (nothing cached), the report is read while the ledger finishes beside it.
        early = compute() if app.finishing else None
        finished(app)
        c = app.core
        code = warm.drop_other_codes_reports(ledger.db)
        body = ledger.cached_report(
            warm.cache_key(kind, c.timezone, since, until, by, c.pricing_mode, start_of_week),
            (lambda: early) if early is not None else compute,
        )
        if not (c.overrides or c.tools or c.categories):  # priced as with no config: a warm answer may follow
            warm.remember(ledger.db, app.fingerprint, code)
    if as_json:
        sys.stdout.buffer.write(body + b"\n")
    else:
        from exporter.cli.tables import print_report

        print_report(kind, orjson.loads(body), by, breakdown, layout_of(width, wide))


def _reconcile(since: date | None, until: date | None, as_json: bool, layout: Layout, opts: dict[str, Any]) -> None:
    """`report reconcile`: its own options are the dates, --json and the table's; the others shape other reports."""
    from click.core import ParameterSource

    from exporter.reports.reconcile import default_since, reconcile

    ctx = click.get_current_context()
    others = ("by", "breakdown", "mode", "start_of_week")
    given = [f"--{o.replace('_', '-')}" for o in others if ctx.get_parameter_source(o) is ParameterSource.COMMANDLINE]
    if given:
        raise click.UsageError(f"report reconcile does not take {', '.join(given)}")
    app = load(**opts)
    check_claude_dirs(app.core.roots, dict(os.environ))
    ledger, _ = refreshed(app)
    today = datetime.now(UTC).date()
    until = until or today
    data = reconcile(ledger.db, since or default_since(ledger.db, until), until, today, app.core.timezone)
    if as_json:
        emit(data)
    else:
        from exporter.cli.tables import print_reconcile

        print_reconcile(data, layout)


def _budgets(app: Pipeline, ledger: Ledger, cost: str, as_json: bool, layout: Layout) -> None:
    from exporter.reports import budgets

    if not app.core.budgets:
        raise click.ClickException(
            "no budgets configured: add a `budgets:` list to the config file (see docs/budgets-and-statusline.md)"
        )
    c = app.core
    states = budgets.evaluate(ledger, c.budgets, int(time.time() * 1000), c.zone, c.week_start, cost)
    if as_json:
        emit(budgets.report(states, c.zone))
    else:
        from exporter.cli.tables import print_budgets

        print_budgets(states, c.timezone, layout)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@table_options
@common
def explain(path: Path, as_json: bool, width: int | None, wide: bool, **opts: Any) -> None:
    """One row per request of a transcript: tokens, cost, classification, duplicates."""
    from exporter.reports.explain import explain_file

    app = load(**opts)
    ledger, _ = refreshed(app)
    rows = explain_file(path, ledger, app.enrich)
    if as_json:
        emit(rows)
    else:
        from exporter.cli.tables import print_explain

        print_explain(rows, layout_of(width, wide))


@main.command()
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True)
@table_options
@common
def pricing(model: str | None, as_json: bool, width: int | None, wide: bool, **opts: Any) -> None:
    """The prices in use (USD per million tokens) and where they come from, fast mode's where known."""
    from exporter.cli.tables import print_pricing, quote_json

    pricer = load(**opts).pricer
    if model is None:
        pairs = pricer.price_list()
    else:
        standard = pricer.describe(model)
        if standard is None:
            raise click.ClickException(f"no price known for {model!r}: its tokens are counted as unpriced")
        pairs = [(standard, pricer.describe(model, "fast"))]
    if as_json:
        emit([quote_json(standard, fast) for standard, fast in pairs])
    else:
        print_pricing(pairs, layout_of(width, wide))


@main.command("check-config")
@click.argument("file", required=False, type=click.Path(path_type=Path))
def check_config(file: Path | None) -> None:
    """Validates a config file (default: $CLAUDE_USAGE_EXPORTER_CONFIG) and lists every error."""
    from exporter.config import ConfigError, check_config
    from exporter.defaults import config_file_from

    path = file or config_file_from(None, dict(os.environ))
    if path is None:
        raise click.UsageError("no config file given (argument or CLAUDE_USAGE_EXPORTER_CONFIG)")
    try:
        click.echo(check_config(path))
    except ConfigError as err:
        raise click.ClickException(str(err)) from None


@main.command()
@click.option("--web.listen-address", "listen", help="HOST:PORT to serve on. Default: 127.0.0.1:9477.")
@click.option(
    "--web.config.file",
    "web_config",
    type=click.Path(path_type=Path),
    help="Exporter-toolkit web config: TLS and basic auth.",
)
@click.option("--poll", is_flag=True, default=None, help="Poll for changes instead of inotify (some volumes).")
@click.option(
    "--otlp.listen",
    "otlp_listen",
    help="HOST:PORT to receive Claude Code's OpenTelemetry on (OTLP/HTTP; team mode). Default: off.",
)
@click.option(
    "--otlp.push-endpoint",
    "push_endpoint",
    help="OTLP/HTTP metrics URL to push our metrics to, e.g. http://collector:4318/v1/metrics.",
)
@click.option("--once", is_flag=True, help="Ingest to the end, print the exposition and exit.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --once: write the exposition to this file instead, replaced atomically (node_exporter's textfile"
    " collector reads *.prom files).",
)
@click.option("--log.format", "log_format", type=click.Choice(["text", "json"]), help="Text (default) or JSON lines.")
@click.option(
    "--log.level",
    "log_level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Least severe log level written. Default: info.",
)
@common
def serve(
    listen: str | None,
    web_config: Path | None,
    poll: bool | None,
    otlp_listen: str | None,
    push_endpoint: str | None,
    once: bool,
    output: Path | None,
    log_format: str | None,
    log_level: str | None,
    config_file: Path | None,
    state_dir: Path | None,
    claude_dirs: tuple[Path, ...],
    timezone: str | None,
) -> None:
    """Follow the transcripts and serve /metrics (Prometheus), /, /healthz and /readyz; optionally receive
    Claude Code's OpenTelemetry and push ours."""
    from exporter.cli.serve import serve as run
    from exporter.config import ConfigError, Settings, load_settings
    from exporter.ledger.store import LedgerError

    if output is not None and not once:
        raise click.UsageError("--output needs --once: it writes one exposition and exits")
    env = dict(os.environ)
    flags = {
        "state_dir": state_dir,
        "timezone": timezone,
        "sources.transcripts.roots": list(claude_dirs),
        "web.listen": listen,
        "web.config_file": web_config,
        "sources.transcripts.poll": poll,
        "log.format": log_format,
        "log.level": log_level,
        "sources.otlp.listen": otlp_listen,
        "export.otlp_push.endpoint": push_endpoint,
    }

    def settings() -> Settings:
        from exporter.defaults import config_file_from

        return load_settings(config_file_from(config_file, env), env, flags)

    try:
        from exporter.config import claude_roots

        check_claude_dirs(claude_roots(settings(), env), env, projects=False)  # the daemon waits for projects/
        code = run(settings, env, once, output)
    except (ConfigError, LedgerError, OSError) as err:  # WebConfigError is a ConfigError
        raise click.ClickException(str(err)) from None
    sys.exit(code)


@main.command("metrics")
@click.option("--json", "as_json", is_flag=True)
def metrics_contract(as_json: bool) -> None:
    """The metric contract: every metric's name, type, unit, labels and help, from the code."""
    from exporter.metrics.contract import CONTRACT

    rows = [
        {"name": s.name, "type": s.kind, "unit": s.unit, "labels": list(s.labels), "help": s.help} for s in CONTRACT
    ]
    if as_json:
        emit(rows)
        return
    for row in rows:
        labels = ",".join(row["labels"]) or "-"
        click.echo(f"{row['name']}\t{row['type']}\t{row['unit'] or '-'}\t{labels}\t{row['help']}")


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--state-dir", type=click.Path(path_type=Path), help="Where `serve` keeps the ledger and summary.")
@click.option(
    "--format",
    "template",
    help="The line as a template of {model}, {session}, {today}, {block}, {5h}, {7d} and {context};"
    " a field with nothing to show is empty. Default: all of them, joined by ' · '.",
)
def statusline(state_dir: Path | None, template: str | None) -> None:
    """For Claude Code's statusLine.command: reads its JSON on stdin, records the plan usage and prints one line.

    Runs without importing the rest of the package (see exporter/cli/entry.py); this command is the same code,
    for `--help` and `python -m exporter`."""
    from exporter.sources.statusline import main as run

    args = ["--state-dir", str(state_dir)] if state_dir else []
    sys.exit(run([*args, "--format", template] if template else args))


@main.command()
@click.option("--url", default="http://127.0.0.1:9477", show_default=True, help="Where `serve` answers /readyz.")
@click.option("--json", "as_json", is_flag=True)
@common
def doctor(url: str, as_json: bool, **opts: Any) -> None:
    """Checks transcripts, ledger, prices, `serve`, the status line and the clock: one line each, with the fix.

    Exits 0 when all is well, 1 on a warning, 2 on a failure."""
    from exporter.cli.doctor import run

    sys.exit(run(lambda: load(**opts), url, as_json, time.time()))
