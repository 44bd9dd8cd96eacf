"""Benchmarks: never part of the test suite. See bench/README.md."""
