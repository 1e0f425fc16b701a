"""Benchmarks (not tests): each prints a table and a ratio measured side by side in one run. See docs/benchmarks.md."""
