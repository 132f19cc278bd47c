"""Benchmarks and load tooling: `make bench`, `make load` (see docs/benchmarks.md)."""
