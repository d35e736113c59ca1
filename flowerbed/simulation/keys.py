"""The run-config keys of the simulation services: participation, faults, adversaries,
execution (the threat model's own keys are declared in :mod:`flowerbed.simulation.adversary`)."""

from __future__ import annotations

from flowerbed.core.errors import ConfigError
from flowerbed.core.params import (
    Config,
    Key,
    non_negative,
    one_of,
    positive,
    unit_interval_open_left,
    unit_interval_open_right,
)
from flowerbed.simulation import adversary, clock

PARTICIPATION_KEYS: tuple[Key, ...] = (
    Key("participation", "always", "always, bernoulli, data-bernoulli, cyclic, markov",
        one_of("always", "bernoulli", "data-bernoulli", "cyclic", "markov")),
    Key("participation-mean", 0.1, "mean participation probability p_mean",
        unit_interval_open_left),
    Key("participation-min", 0.02, "minimum participation probability p_min",
        unit_interval_open_left),
    Key("participation-alpha", 0.1, "data-bernoulli: Dirichlet alpha of the label weights m",
        positive),
    Key("cycle-length", 10, "cyclic participation: cycle length C", positive),
    Key("markov-q", 0.05, "markov participation: to-active probability q",
        unit_interval_open_left),
)

FAULT_KEYS: tuple[Key, ...] = (
    Key("failure-rate", 0.0, "per-round probability that a client's ClientApp raises",
        unit_interval_open_right),
    Key("dropout-rate", 0.0, "per-round probability that a client silently drops out",
        unit_interval_open_right),
    Key("straggler-rate", 0.0, "per-round probability that a client answers too late",
        unit_interval_open_right),
    Key("corrupt-rate", 0.0, "per-round probability that a client sends a NaN update",
        unit_interval_open_right),
)

EXECUTION_KEYS: tuple[Key, ...] = (
    Key("engine", "flower", "'flower' (Flower transport, Ray backend) or 'inprocess'",
        one_of("flower", "inprocess")),
    Key("workers", 0, "Flower workers (SuperNodes) used; 0 = all that are connected",
        non_negative),
    Key("round-timeout", 3600.0, "seconds the server waits for a round's replies", positive),
)

KEYS: tuple[Key, ...] = (PARTICIPATION_KEYS + FAULT_KEYS + adversary.KEYS + EXECUTION_KEYS
                         + clock.KEYS)


def check_simulation_config(cfg: Config) -> None:
    """Checks of the simulation's keys that involve more than one key."""
    if cfg.participation_min > cfg.participation_mean:
        raise ConfigError("participation-min", cfg.participation_min,
                          f"must be <= participation-mean ({cfg.participation_mean})")
    rates = [key.name for key in FAULT_KEYS]
    if sum(cfg[k] for k in rates) > 1.0:
        last = [k for k in rates if cfg[k] > 0][-1]
        raise ConfigError(last, cfg[last], "the fault rates (" + " + ".join(rates)
                          + ") must add up to at most 1")
    adversary.check_config(cfg)


__all__ = ["EXECUTION_KEYS", "FAULT_KEYS", "KEYS", "PARTICIPATION_KEYS",
           "check_simulation_config"]
