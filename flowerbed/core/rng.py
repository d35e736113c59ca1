"""Named random streams: one run ``seed`` drives everything, each consumer on its own stream.

A stream is ``numpy.random.default_rng([seed, salt, *coordinates])``. Distinct salts keep
the consumers independent (the participation draws never shift because a strategy drew one
number more), and coordinates such as (round, attempt, client) make a draw a pure function
of where it happens, so the server and a worker agree without talking. Every salt is listed
here, so that no two consumers share one by accident (a test checks they are distinct).

Two draws predate the salts and keep their historical form, so that existing results stay
reproducible: a client's local shuffling, ``default_rng([seed, round, client])``, and the
Synthetic(alpha, beta) generator, ``default_rng(seed)`` and ``default_rng(seed + 1)``.
"""

from __future__ import annotations

import enum

import numpy as np


class Stream(enum.IntEnum):
    """The salt of every seeded stream of the platform and the built-in strategies."""

    CENTRALIZED_SAMPLING = 104729  # which available clients a centralized strategy samples
    DECENTRALIZED = 271828  # a decentralized strategy's own draws (peers, slots, sets)
    EVAL_ROWS = 31337  # the fixed sample of nodes whose models the per-node metrics evaluate
    PARTICIPATION = 7919  # who is reachable each round
    PARTICIPATION_PROBABILITIES = 15485863  # the per-client participation probabilities
    FAULTS = 60221  # which client fails, drops out, straggles or corrupts, and how
    QUADRATIC = 2501  # the quadratic objective's centres and points
    KMEANS_PARTITIONER = 5318  # the kmeans partitioner's assignment of examples to clients
    RANDOM_REGULAR = 0x22  # random-regular graphs
    ERDOS_RENYI = 0xE2  # Erdos-Renyi graphs
    DEVICES = 6173  # the clients' device profiles (speeds, bandwidths) of virtual time
    AVAILABILITY = 8887  # the clients' availability processes (on-off stretches, phases)
    ASYNC_SAMPLING = 1299709  # which idle clients an asynchronous strategy starts
    ADVERSARY = 104723  # who is malicious, and the attacks' random draws
    ROBUST_AGGREGATION = 7727  # random starts of robust aggregators (the Flag Aggregator's)
    ZO_DIRECTION = 4093  # a zeroth-order step's shared random direction z (client, step)
    ANCHOR_ROLES = 6841  # FedAMD: which sampled clients are anchors this round
    CODEC = 4391  # a codec's random draws (random-k's indices, QSGD's rounding) per client


def stream(seed: int, salt: Stream, *coordinates: int) -> np.random.Generator:
    """The generator of stream ``salt`` at ``coordinates`` (e.g. round, attempt, client)."""
    return np.random.default_rng([seed, int(salt), *coordinates])


def client_stream(seed: int, server_round: int, client_id: int) -> np.random.Generator:
    """A client's local shuffling in one round: the same on every execution path."""
    return np.random.default_rng([seed, server_round, client_id])


__all__ = ["Stream", "client_stream", "stream"]
