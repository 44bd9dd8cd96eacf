"""The documentation: links that resolve, a README that stays short, the generated metrics page, the
config examples, and the layout in CONTRIBUTING.md against the package on disk."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from exporter.config import Settings, check_config
from exporter.metrics.contract import CONTRACT

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
LINKED = [
    README,
    CONTRIBUTING,
    *sorted(DOCS.glob("*.md")),
    ROOT / "dashboards" / "README.md",
    ROOT / "bench" / "README.md",
]
OURS = LINKED
SET_UP = """\
# claude-usage-exporter

```sh
python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/claude-usage-exporter serve
./scripts/test
```
"""
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
TREE_ENTRY = re.compile(r"^([│ ]*)[├└]── (\S+)", re.M)


def prose(path: Path) -> str:
    """The page without its fenced code blocks: a `[x](y)` inside a block is code, not a link."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path)) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("<")]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", prose(path), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_opens_with_the_two_set_up_commands() -> None:
    assert README.read_text(encoding="utf-8").startswith(SET_UP)


def test_the_readme_is_at_most_twelve_kibibytes() -> None:
    assert len(README.read_bytes()) <= 12_288


def test_every_relative_link_resolves_to_a_file_in_the_repository() -> None:
    broken = []
    for page in LINKED:
        for target in relative_links(page):
            path = target.split("#")[0]
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.is_relative_to(ROOT.resolve()) or not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_every_link_to_a_heading_names_a_heading_of_that_page() -> None:
    broken = []
    for page in LINKED:
        for target in relative_links(page):
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if anchor and linked.suffix == ".md" and linked.exists() and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_no_document_refers_to_a_design_document_the_project_does_not_contain() -> None:
    found = [
        f"{page.relative_to(ROOT)}: {name}"
        for page in OURS
        for name in ("PRODUCT.md", "FORMATS.md", "HOUSE-STYLE.md", "../shared")
        if name in page.read_text(encoding="utf-8")
    ]
    assert found == []


def test_the_metrics_page_is_what_the_generator_prints() -> None:
    printed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "docs_metrics.py")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    assert (DOCS / "metrics.md").read_text(encoding="utf-8") == printed, (
        "run: python scripts/docs_metrics.py > docs/metrics.md"
    )


def test_the_metrics_page_has_one_row_per_metric_of_the_contract_in_its_order() -> None:
    page = (DOCS / "metrics.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(claude_usage_\w+)` \| (\w+) \| ([^|]+) \| (.+) \|$", page, re.M)
    assert rows == [(s.name, s.kind, ", ".join(s.labels) or "–", s.help) for s in CONTRACT]


def test_every_config_example_in_the_readme_and_docs_is_a_valid_config(tmp_path: Path) -> None:
    keys = tuple(f"{key}:" for key in Settings.model_fields)
    checked = 0
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            first = next(line for line in block.splitlines() if not line.startswith("#"))
            if not first.startswith(keys):
                continue  # Prometheus, Kubernetes, a web config ...: checked by their own tests
            config = tmp_path / "config.yaml"
            config.write_text(block)
            assert check_config(config).startswith(f"{config}: OK"), f"{page.name}:\n{block}"
            checked += 1
    assert checked >= 5  # README's budget, the budgets page's, the full one, the team's, the overrides


def test_the_layout_in_contributing_is_the_package_on_disk() -> None:
    [tree] = [
        b
        for b in re.findall(r"```text\n(.*?)```", CONTRIBUTING.read_text(encoding="utf-8"), re.S)
        if b.startswith("exporter/\n")
    ]
    listed: set[str] = set()
    folders: list[str] = []  # the folders the entries below belong to, one per level of indent
    for prefix, name in TREE_ENTRY.findall(tree):
        del folders[len(prefix) // 4 :]
        listed.add("".join(folders) + name)
        if name.endswith("/"):
            folders.append(name)
    exporter = ROOT / "exporter"
    on_disk = {
        p.relative_to(exporter).as_posix() + ("/" if p.is_dir() else "")
        for p in exporter.rglob("*")
        if "__pycache__" not in p.parts and p.name != "__init__.py"
    }
    assert (sorted(listed - on_disk), sorted(on_disk - listed)) == ([], []), "(in the tree only, on disk only)"
