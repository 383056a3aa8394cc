"""Benchmarks: each prints figures measured side by side in one run; `make bench` runs all."""
