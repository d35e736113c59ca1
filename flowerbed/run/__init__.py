"""One run: the run config, the runner and round loop, checkpoints, trackers, the apps."""
