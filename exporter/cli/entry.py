"""The console script: `statusline` runs without loading click or the rest of the package.

Claude Code runs the status line on every message, so its start-up must stay near a bare Python's.
"""

import sys


def main() -> None:
    if sys.argv[1:2] == ["statusline"] and not {"-h", "--help"} & set(sys.argv[2:]):
        from exporter.sources.statusline import main as statusline

        sys.exit(statusline(sys.argv[2:]))
    from exporter.cli.commands import main as cli

    cli()
