"""Availability on the virtual clock: which clients are online at a simulated time t.

A platform service beside participation and the device profiles (strategies never see it).
Real devices join when they are idle, charging and on Wi-Fi (Bonawitz et al., "Towards
Federated Learning at Scale", SysML 2019; FedScale's client availability traces, Lai et
al., ICML 2022), so availability is a function of wall time, not of the round number:

- ``always``: every client is online at every t.
- ``on-off``: an alternating renewal process per client, with exponential online and
  offline stretches of means ``online-mean-s`` and ``offline-mean-s``. A client starts
  online with the stationary probability on / (on + off); by memorylessness its first
  stretch is again exponential, so the process is stationary from t = 0.
- ``diurnal``: client k is online for the share ``availability-online-share`` of every
  period of ``availability-period-s`` seconds (a day), starting at its own uniformly drawn
  phase phi_k (its time zone): online iff frac(t / P + phi_k) < share.
- ``trace``: online intervals read from the file ``availability-trace`` (format below).

Trace format (CSV, UTF-8): ``#`` lines are comments; the first other line is the header
``device,start_s,end_s``; every further line is one online interval [start_s, end_s) of a
trace device (any integer id). Run client k is trace device ``ids[k mod D]``, ids the
sorted distinct devices of the file, D their number (so a short trace serves any number of
clients, as FedScale maps its trace onto clients). A device is offline outside its
intervals. With ``availability-period-s`` P > 0 the trace repeats: t is read as t mod P,
and every interval must lie in [0, P]; with P = 0 it does not repeat (after the last
interval the device stays offline). ``examples/traces/availability.csv`` is an example.

Every process is seeded (its own stream) and a pure function of (seed, client, t): the
answer does not depend on the order of the questions, so checkpoints need no state of it.
What is not modelled: a client going offline while it trains (availability is checked
when a client is picked, at a round's or a job's simulated start).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from flowerbed.core.errors import ConfigError
from flowerbed.core.params import (
    Config,
    Key,
    non_negative,
    one_of,
    positive,
    unit_interval_open_left,
)
from flowerbed.core.rng import Stream, stream
from flowerbed.simulation.participation import Participation

KEYS: tuple[Key, ...] = (
    Key("availability", "always", "virtual time: when clients are online: always, on-off, "
        "diurnal, trace", one_of("always", "on-off", "diurnal", "trace")),
    Key("online-mean-s", 3600.0, "availability on-off: mean online stretch, seconds", positive),
    Key("offline-mean-s", 3600.0, "availability on-off: mean offline stretch, seconds",
        positive),
    Key("availability-period-s", 86400.0, "availability diurnal/trace: the period P, seconds "
        "(trace: 0 = the trace does not repeat)", non_negative),
    Key("availability-online-share", 0.5, "availability diurnal: share of each period a "
        "client is online", unit_interval_open_left),
    Key("availability-trace", "", "availability trace: CSV file of online intervals "
        "(device,start_s,end_s)"),
)

TRACE_KEY = "availability-trace"
CHUNK = 64  # on-off stretches drawn per client at a time


class Availability:
    """Base (``always``): every client is online at every time."""

    def __init__(self, num_clients: int) -> None:
        self.num_clients = num_clients

    def online(self, t: float) -> np.ndarray:
        """Boolean mask over the clients: online at simulated time ``t``."""
        return np.ones(self.num_clients, dtype=bool)

    def next_change(self, t: float) -> float:
        """The first time > ``t`` at which some client goes on- or offline (inf: none)."""
        return math.inf


class OnOff(Availability):
    """Alternating exponential online/offline stretches (see the module docstring)."""

    def __init__(self, num_clients: int, on_mean: float, off_mean: float, seed: int) -> None:
        super().__init__(num_clients)
        self.on_mean, self.off_mean = on_mean, off_mean
        self.rng = stream(seed, Stream.AVAILABILITY)
        self.starts_online = self.rng.random(num_clients) < on_mean / (on_mean + off_mean)
        # switch times of every client (row), increasing, extended CHUNK at a time
        self.switches = np.zeros((num_clients, 0))
        self._extend()

    def _extend(self) -> None:
        """Draw the next CHUNK stretches of every client (always in this order: seeded)."""
        done = self.switches.shape[1]
        i = np.arange(done, done + CHUNK)
        # stretch j of a client that starts online is online iff j is even
        online = (i[None, :] % 2 == 0) == self.starts_online[:, None]
        scale = np.where(online, self.on_mean, self.off_mean)
        stretch = self.rng.exponential(1.0, (self.num_clients, CHUNK)) * scale
        last = self.switches[:, -1:] if done else np.zeros((self.num_clients, 1))
        self.switches = np.concatenate([self.switches, last + np.cumsum(stretch, axis=1)],
                                       axis=1)

    def _cover(self, t: float) -> None:
        while self.switches[:, -1].min() <= t:
            self._extend()

    def online(self, t: float) -> np.ndarray:
        self._cover(t)
        passed = (self.switches <= t).sum(axis=1)
        return (passed % 2 == 0) == self.starts_online

    def next_change(self, t: float) -> float:
        self._cover(t)
        later = np.where(self.switches > t, self.switches, np.inf)
        return float(later.min())


class Diurnal(Availability):
    """Online for a share of each period, from a per-client phase."""

    def __init__(self, num_clients: int, period: float, share: float, seed: int) -> None:
        super().__init__(num_clients)
        self.period, self.share = period, share
        self.phase = stream(seed, Stream.AVAILABILITY).random(num_clients)

    def _position(self, t: float) -> np.ndarray:
        return np.mod(t / self.period + self.phase, 1.0)

    def online(self, t: float) -> np.ndarray:
        if self.share >= 1.0:
            return np.ones(self.num_clients, dtype=bool)
        return self._position(t) < self.share

    def next_change(self, t: float) -> float:
        if self.share >= 1.0:
            return math.inf
        pos = self._position(t)
        wait = np.where(pos < self.share, self.share - pos, 1.0 - pos) * self.period
        return float(t + np.maximum(wait, 1e-9).min())


class Trace(Availability):
    """Online intervals read from a trace file (format: the module docstring)."""

    def __init__(self, num_clients: int, intervals: dict[int, list[tuple[float, float]]],
                 period: float) -> None:
        super().__init__(num_clients)
        ids = sorted(intervals)
        self.period = period
        device = [ids[k % len(ids)] for k in range(num_clients)]
        width = max(len(v) for v in intervals.values())
        self.start = np.full((num_clients, width), np.inf)
        self.end = np.full((num_clients, width), np.inf)
        for k, d in enumerate(device):
            spans = sorted(intervals[d])
            self.start[k, :len(spans)] = [a for a, _ in spans]
            self.end[k, :len(spans)] = [b for _, b in spans]
        edges = np.concatenate([self.start[np.isfinite(self.start)],
                                self.end[np.isfinite(self.end)]])
        self.edges = np.unique(edges)

    @classmethod
    def load(cls, path: str, num_clients: int, period: float) -> Trace:
        def bad(why: str) -> ConfigError:
            return ConfigError(TRACE_KEY, path, why)

        file = Path(path).expanduser()
        if not file.is_file():
            raise bad("no such trace file")
        lines = [ln for ln in file.read_text(encoding="utf-8").splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
        rows = list(csv.reader(lines))
        if not rows or [c.strip() for c in rows[0]] != ["device", "start_s", "end_s"]:
            raise bad("the first line (after # comments) must be the header "
                      "'device,start_s,end_s'")
        intervals: dict[int, list[tuple[float, float]]] = {}
        for n, row in enumerate(rows[1:], start=2):
            try:
                device, a, b = int(row[0]), float(row[1]), float(row[2])
            except (ValueError, IndexError):
                raise bad(f"data line {n}: want 'device,start_s,end_s' (an integer and two "
                          f"numbers), got {','.join(row)!r}") from None
            if not (0 <= a < b) or not math.isfinite(b):
                raise bad(f"data line {n}: want 0 <= start_s < end_s, got {a}, {b}")
            if period > 0 and b > period:
                raise bad(f"data line {n}: end_s {b} is past availability-period-s {period} "
                          "(set availability-period-s = 0 for a trace that does not repeat)")
            intervals.setdefault(device, []).append((a, b))
        if not intervals:
            raise bad("the trace has no intervals")
        return cls(num_clients, intervals, period)

    def _local(self, t: float) -> float:
        return t % self.period if self.period > 0 else t

    def online(self, t: float) -> np.ndarray:
        u = self._local(t)
        return ((self.start <= u) & (u < self.end)).any(axis=1)

    def next_change(self, t: float) -> float:
        u = self._local(t)
        later = self.edges[self.edges > u]
        if later.size:
            return float(t + (later[0] - u))
        if self.period > 0 and self.edges.size:  # the next period's first edge
            return float(t + (self.period - u) + self.edges[0])
        return math.inf


def build_availability(cfg: Config, num_clients: int) -> Availability:
    """The availability process the run config names, seeded by ``cfg.seed``."""
    kind = cfg.availability
    if kind == "on-off":
        return OnOff(num_clients, cfg.online_mean_s, cfg.offline_mean_s, cfg.seed)
    if kind == "diurnal":
        if cfg.availability_period_s <= 0:
            raise ConfigError("availability-period-s", cfg.availability_period_s,
                              "must be > 0 for diurnal availability")
        return Diurnal(num_clients, cfg.availability_period_s, cfg.availability_online_share,
                       cfg.seed)
    if kind == "trace":
        if not cfg.availability_trace:
            raise ConfigError(TRACE_KEY, "", "availability = 'trace' needs a trace file")
        return Trace.load(cfg.availability_trace, num_clients, cfg.availability_period_s)
    return Availability(num_clients)


class AvailableAt(Participation):
    """Participation intersected with availability at the round's simulated start time.

    The round loop sets :attr:`now` (the simulated time so far) before each round opens;
    a client is reachable if the participation model lets it in this round and it is
    online at ``now``.
    """

    def __init__(self, inner: Participation, availability: Availability) -> None:
        self.inner, self.availability = inner, availability
        self.num_nodes = inner.num_nodes
        self.rng = inner.rng
        self.probabilities = inner.probabilities
        self.now = 0.0

    def available(self, server_round: int) -> np.ndarray:
        ids = self.inner.available(server_round)
        return ids[self.availability.online(self.now)[ids]]

    def state_dict(self) -> dict:
        return {**self.inner.state_dict(), "now": self.now}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)
        self.now = float(state.get("now", 0.0))


__all__ = ["KEYS", "Availability", "AvailableAt", "Diurnal", "OnOff", "Trace",
           "build_availability"]
