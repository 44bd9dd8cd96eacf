"""The command line: click commands, terminal tables, the console script."""
