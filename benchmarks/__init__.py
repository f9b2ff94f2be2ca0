"""Benchmarks: documented commands that write JSON (not timed tests)."""
