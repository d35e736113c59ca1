"""Virtual time: how long a round would take on real devices and links.

A platform service like participation and faults; strategies never see it. Every client
gets a seeded device profile: a compute speed and a downlink and uplink bandwidth, each
drawn from a lognormal with the configured median and spread (spread 0: all equal), and a
link latency. The server has a link of its own, shared by the clients it serves in a round:
sending n clients a model of b bits over a downlink of B bit/s takes n b / B seconds.

A round is three phases, each as long as its slowest part (a synchronous round waits for
everyone it served):

- download: max(server bits sent / server downlink, max_k bits client k received / its
  downlink) + latency;
- compute: max_k local steps of client k x ``step-seconds`` / its speed;
- upload: max(server bits received / server uplink, max_k bits client k sent / its uplink)
  + latency.

The bytes are the ledger's (what a deployment would send). A decentralized round has no
server traffic, so a gossip step lasts as long as its slowest node's links. A bandwidth of
0 means unlimited, and ``step-seconds = 0`` leaves compute out: with every setting at its
default the clock is off. One client's own time (:meth:`Clock.client_seconds`) uses the
same terms with its 1/n share of the server link; round deadlines and over-selection
(:mod:`flowerbed.simulation.deadline`), availability (:mod:`flowerbed.simulation.availability`)
and asynchronous runs (:mod:`flowerbed.simulation.event_grid`) build on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowerbed.core.params import Config, Key, non_negative
from flowerbed.core.rng import Stream, stream
from flowerbed.simulation.ledger import SERVER, RoundTraffic

MBIT = 1e6

KEYS: tuple[Key, ...] = (
    Key("server-down-mbps", 0.0, "virtual time: the server's link to the clients, Mbit/s, "
        "shared by the clients of a round (0 = unlimited)", non_negative),
    Key("server-up-mbps", 0.0, "virtual time: the clients' shared link to the server, Mbit/s "
        "(0 = unlimited)", non_negative),
    Key("client-down-mbps", 0.0, "virtual time: median client downlink, Mbit/s (0 = unlimited)",
        non_negative),
    Key("client-up-mbps", 0.0, "virtual time: median client uplink, Mbit/s (0 = unlimited)",
        non_negative),
    Key("bandwidth-spread", 0.0, "virtual time: lognormal sigma of the client bandwidths",
        non_negative),
    Key("step-seconds", 0.0, "virtual time: seconds of one local step on a median device "
        "(0 = compute not timed)", non_negative),
    Key("speed-spread", 0.0, "virtual time: lognormal sigma of the device speeds",
        non_negative),
    Key("latency-s", 0.0, "virtual time: one-way link latency, seconds", non_negative),
)


def enabled(cfg: Config) -> bool:
    return any(cfg[k.name] > 0 for k in KEYS if k.name not in ("bandwidth-spread",
                                                                "speed-spread"))


def _bps(mbps: float) -> float:
    return mbps * MBIT if mbps > 0 else math.inf


@dataclass
class DeviceProfiles:
    """Per-client compute speed (1 = a median device) and link bandwidths (bit/s)."""

    speed: np.ndarray
    down_bps: np.ndarray
    up_bps: np.ndarray

    @classmethod
    def draw(cls, cfg: Config, num_clients: int) -> DeviceProfiles:
        rng = stream(cfg.seed, Stream.DEVICES)

        def lognormal(median: float, sigma: float) -> np.ndarray:
            draws = rng.lognormal(0.0, sigma, num_clients) if sigma > 0 else np.ones(
                num_clients)
            return median * draws

        speed = lognormal(1.0, cfg.speed_spread)
        down = lognormal(_bps(cfg.client_down_mbps), cfg.bandwidth_spread)
        up = lognormal(_bps(cfg.client_up_mbps), cfg.bandwidth_spread)
        return cls(speed, down, up)


class Clock:
    """The simulated duration of each round, from its traffic and its clients' work."""

    def __init__(self, cfg: Config, num_clients: int) -> None:
        self.profiles = DeviceProfiles.draw(cfg, num_clients)
        self.server_down = _bps(cfg.server_down_mbps)
        self.server_up = _bps(cfg.server_up_mbps)
        self.step_seconds = cfg.step_seconds
        self.latency = cfg.latency_s

    def round_seconds(self, traffic: RoundTraffic, steps: Mapping[int, int]) -> float:
        """The round's duration; ``steps``: local steps of each client that trained."""
        clients_in = [k for k in traffic.received if k != SERVER]
        clients_out = [k for k in traffic.sent if k != SERVER]
        p = self.profiles
        down = max([8 * traffic.sent.get(SERVER, 0) / self.server_down,
                    *(8 * traffic.received[k] / p.down_bps[k] for k in clients_in)],
                   default=0.0)
        up = max([8 * traffic.received.get(SERVER, 0) / self.server_up,
                  *(8 * traffic.sent[k] / p.up_bps[k] for k in clients_out)], default=0.0)
        compute = max((n * self.step_seconds / p.speed[k] for k, n in steps.items()),
                      default=0.0)
        latency = self.latency * ((1 if clients_in else 0) + (1 if clients_out else 0))
        return float(down + compute + up + latency)

    def client_seconds(self, k: int, down_bytes: int, up_bytes: int, steps: int,
                       n_down: int = 1, n_up: int = 1) -> float:
        """Client k's time from the server's send to its reply's arrival.

        Its download lasts max(b / its downlink, n_down b / server downlink): the server's
        link is shared equally by the n_down clients served at once (n_up for the uplink),
        so the slowest client of a round finishes at :meth:`round_seconds` when all are sent
        the same bytes. Each transfer adds one latency.
        """
        p = self.profiles
        down = max(8 * down_bytes / p.down_bps[k], 8 * down_bytes * n_down / self.server_down)
        up = max(8 * up_bytes / p.up_bps[k], 8 * up_bytes * n_up / self.server_up)
        latency = self.latency * ((down_bytes > 0) + (up_bytes > 0))
        return float(down + steps * self.step_seconds / p.speed[k] + up + latency)


def local_steps(cfg: Any, sizes: np.ndarray, clients: list[int]) -> dict[int, int]:
    """Local steps each client takes in a round (local-steps, or epochs over its data)."""
    if cfg.local_steps > 0:
        return {k: int(cfg.local_steps) for k in clients}
    return {k: int(cfg.local_epochs * math.ceil(sizes[k] / cfg.batch_size)) for k in clients}


__all__ = ["KEYS", "Clock", "DeviceProfiles", "enabled", "local_steps"]
