"""Tools on top of runs: the CLI, sweeps, reports, the local SuperLink, cost calculator."""
