"""Trackers: small callbacks with three hooks, one concern per file, heavy imports lazy."""

from flowerbed.run.trackers.base import RunInfo, Tracker, TrackerList

__all__ = ["RunInfo", "Tracker", "TrackerList"]
