"""Who is reachable in a round: a platform service, invisible to strategies.

A strategy only sees ``grid.get_node_ids()`` (the available nodes) and who answered; the
true per-node probabilities stay here (only the idealized ``fedavg-known`` baseline is
handed them, explicitly).
"""

from __future__ import annotations

import numpy as np

from flowerbed.core.rng import Stream, stream


class Participation:
    """Base: every node is available every round."""

    def __init__(self, num_nodes: int, seed: int) -> None:
        self.num_nodes = num_nodes
        self.rng = stream(seed, Stream.PARTICIPATION)
        self.probabilities = np.ones(num_nodes)

    def available(self, server_round: int) -> np.ndarray:
        """Sorted ids of the nodes available in ``server_round``; call rounds in order."""
        return np.arange(self.num_nodes)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]

