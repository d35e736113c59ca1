"""One file per algorithm, plus a registry. No I/O, no tracking code."""
