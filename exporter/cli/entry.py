"""The console script: `statusline` runs without loading click or the rest of the package, and so does a
warm `report --json` (see warm.py).

Claude Code runs the status line on every message, so its start-up must stay near a bare Python's.
"""

import os
import sys


def main() -> None:
    if sys.argv[1:2] == ["statusline"] and not {"-h", "--help"} & set(sys.argv[2:]):
        from exporter.sources.statusline import main as statusline

        sys.exit(statusline(sys.argv[2:]))
    cli()


def cli() -> None:
    """The commands (`python -m exporter` too): a report the ledger's cache answers as it stands is
    printed from there; anything else goes to click."""
    if sys.argv[1:2] == ["report"]:
        from exporter.cli.warm import answer

        try:
            body = answer(sys.argv[1:], os.environ)
        except KeyboardInterrupt:
            sys.stderr.write("\nAborted!\n")  # as click ends on Ctrl-C
            sys.exit(1)
        if body is not None:
            try:
                sys.stdout.buffer.write(body + b"\n")
                sys.stdout.buffer.flush()
            except BrokenPipeError:
                os._exit(1)  # the reader is gone: status 1 and no word, as click ends then
            # All is written and nothing is left open: the interpreter's teardown (~4 ms of freeing every
            # module, a tenth of the answer) is skipped.
            os._exit(0)
    from exporter.cli.commands import main as commands

    commands()
