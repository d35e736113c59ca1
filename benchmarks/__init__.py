"""Performance harness (not timed unit tests): ``python -m benchmarks.run``."""
