"""Closed-form network costs, to check the communication ledger against by hand.

The rules of the course exercise on network costs (its numbers are in the tests and in
``experiments/results/network-costs/``):

- a FedAvg server with download bandwidth B_down and upload bandwidth B_up can, within a
  time budget T, send the model (P parameters of b bytes) to floor(T B_down / (8 P b))
  clients and receive it from floor(T B_up / (8 P b)); it supports the smaller number;
- the download bill of R rounds with K clients each is R K P b / 2^30 GiB times the price;
- D-PSGD on n nodes of degree d sends n d messages per step (one per directed edge); a naive
  all-reduce (everyone sends to everyone) adds n (n - 1).

Speeds are in bit/s; "Gbit/s" is 10^9 bit/s, a GiB is 2^30 bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class ServerCapacity:
    n_download: int  # clients the server can send the model to within the budget
    n_upload: int  # clients the server can receive the model from within the budget
    model_bytes: int

    @property
    def n_max(self) -> int:
        return min(self.n_download, self.n_upload)


def model_bytes(num_params: int, bytes_per_param: int = 4) -> int:
    return num_params * bytes_per_param


def server_capacity(model_nbytes: int, down_bps: float, up_bps: float,
                    budget_s: float) -> ServerCapacity:
    """Clients a server supports by download and by upload within ``budget_s`` seconds.

    The counts use exact integer arithmetic when the inputs are integral, so a budget that
    is an exact multiple of the per-client time is not lost to float rounding.
    """
    bits = 8 * model_nbytes

    def fits(bps: float) -> int:
        total = budget_s * bps
        if float(total).is_integer():
            return int(total) // bits
        return math.floor(total / bits)

    return ServerCapacity(fits(down_bps), fits(up_bps), model_nbytes)


def download_cost(model_nbytes: int, clients_per_round: int, rounds: int,
                  price_per_gib: float) -> float:
    """Dollars for the server -> client traffic of a whole FL training."""
    return rounds * clients_per_round * model_nbytes / GIB * price_per_gib


def dpsgd_messages(nodes: int, degree: int, steps: int) -> int:
    """D-PSGD: one message per directed edge per step."""
    return steps * nodes * degree


def naive_allreduce_messages(nodes: int) -> int:
    """Every node sends its model to every other node once."""
    return nodes * (nodes - 1)


__all__ = ["ServerCapacity", "download_cost", "dpsgd_messages", "model_bytes",
           "naive_allreduce_messages", "server_capacity"]
