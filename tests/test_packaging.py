"""The release: `python -m build` makes an sdist and a wheel that `twine check` passes, and the wheel,
installed in a fresh venv, gives the `claude-usage-exporter` command, its version from the package's
metadata, and a `serve --once` that counts a transcript's request.

Offline: the build uses this environment's setuptools (`--no-isolation`, the test extras carry it), and
the fresh venv gets only the wheel (`--no-index --no-deps`); its dependencies are this environment's,
reached through a `.pth` file, so nothing is downloaded. The wheel's own `exporter` must be the one
imported: the test checks where it comes from.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import clean_env
from tests.support.lines import line, write

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

pytestmark = pytest.mark.slow


def run(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build(out: Path) -> Path:
    """The sdist and the wheel built from the checkout, in `out`."""
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT, cwd=ROOT)
    return out


def install(wheel: Path, venv: Path) -> Path:
    """A fresh venv with only `wheel` installed in it; the dependencies are this environment's. Its
    site-packages."""
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", wheel)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # Appended after the venv's own site-packages: the wheel's `exporter` comes first.
    (site / "zz_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)), encoding="utf-8")
    return site


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("dist"))


def test_the_build_makes_an_sdist_and_a_wheel_that_twine_accepts(dist: Path) -> None:
    stem = PROJECT["name"].replace("-", "_") + "-" + PROJECT["version"]
    assert sorted(p.name for p in dist.iterdir()) == [f"{stem}-py3-none-any.whl", f"{stem}.tar.gz"]
    run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))


def test_the_distribution_is_not_named_like_the_other_project_on_pypi() -> None:
    # PyPI's claude-usage-exporter (0.1.2, 2026-07) is someone else's: installing it by that name must not be ours.
    assert (PROJECT["name"], PROJECT["scripts"]) == (
        "claude-code-usage-exporter",
        {"claude-usage-exporter": "exporter.cli.entry:main"},
    )


def test_the_installed_wheel_serves_once_and_counts_a_transcripts_request(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    site = install(next(dist.glob("*.whl")), venv)
    python = venv / "bin" / "python"

    home, claude = tmp_path / "home", tmp_path / "claude"
    write(claude / "projects" / "-home-dev-notes-app" / "s1.jsonl", line())
    env = {**clean_env(), "HOME": str(home), "TZ": "UTC"}
    env.pop("CLAUDE_CONFIG_DIR", None)
    command = venv / "bin" / "claude-usage-exporter"
    where = run(python, "-c", "import exporter; print(exporter.__file__)", env=env, cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(site)
    assert run(command, "--version", env=env, cwd=tmp_path) == f"claude-usage-exporter, version {PROJECT['version']}\n"

    text = run(command, "serve", "--once", "--claude-dir", claude, env=env, cwd=tmp_path)
    families = text_string_to_metric_families(text)
    assert [s.value for f in families for s in f.samples if s.name == "claude_usage_requests_total"] == [1.0]
    assert (home / ".local/state/claude-usage-exporter").is_dir()


def test_the_installed_wheel_answers_a_warm_report_without_click(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    install(next(dist.glob("*.whl")), venv)
    claude = tmp_path / "claude"
    write(claude / "projects" / "-home-dev-notes-app" / "s1.jsonl", line())
    env = {**clean_env(), "HOME": str(tmp_path / "home"), "TZ": "UTC"}
    env.pop("CLAUDE_CONFIG_DIR", None)
    report = [venv / "bin" / "python", "-X", "importtime", "-m", "exporter", "report", "daily", "--json"]
    first, again = (
        subprocess.run([*map(str, report), "--claude-dir", str(claude)], capture_output=True, text=True, env=env)
        for _ in range(2)
    )
    loaded = [{row.rsplit("|", 1)[-1].strip() for row in done.stderr.splitlines()} for done in (first, again)]
    assert (first.returncode, again.returncode, again.stdout) == (0, 0, first.stdout)
    assert ("click" in loaded[0], "click" in loaded[1], "exporter.cli.warm" in loaded[1]) == (True, False, True)
