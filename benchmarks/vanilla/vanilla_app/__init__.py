"""Vanilla Flower baseline app (benchmarks only)."""
