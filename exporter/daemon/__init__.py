"""The daemon: its loop, the file watcher, clock-driven gauges, team mode's inbox."""
