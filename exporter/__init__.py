"""claude-usage-exporter: what Claude Code use costs, and why."""

__version__ = "0.1.0"
