"""How an experiment runs: config, ServerApp wiring, trackers, ledger, participation, engines."""
