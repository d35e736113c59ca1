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
from flowerbed.simulation import adversary, availability, clock, deadline

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
    Key("client-resources-num-gpus", 0.0, "flowerbed run: GPUs per Ray worker, fractional "
        "(0.25 = four workers share a GPU); 0 = workers see no GPU", non_negative),
)

KEYS: tuple[Key, ...] = (PARTICIPATION_KEYS + FAULT_KEYS + adversary.KEYS + EXECUTION_KEYS
                         + clock.KEYS + availability.KEYS + deadline.KEYS)



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
    check_time_config(cfg)
    adversary.check_config(cfg)


def check_time_config(cfg: Config) -> None:
    """Availability and deadlines live on the virtual clock: it must be on."""
    timed = clock.enabled(cfg)
    if cfg.availability != "always" and not timed:
        raise ConfigError("availability", cfg.availability, "needs the virtual clock (set "
                          "step-seconds or a bandwidth key): without it time never advances")
    for key in ("round-deadline-s", "over-selection"):
        if cfg[key] > 0 and not timed:
            raise ConfigError(key, cfg[key], "needs the virtual clock (set step-seconds or a "
                              "bandwidth key): stragglers then follow from the clock")
    if deadline.enabled(cfg) and cfg.straggler_rate > 0:
        key = "round-deadline-s" if cfg.round_deadline_s > 0 else "over-selection"
        raise ConfigError("straggler-rate", cfg.straggler_rate, f"must be 0 with {key}: "
                          "stragglers follow from the clock, not from a random draw")


__all__ = ["EXECUTION_KEYS", "FAULT_KEYS", "KEYS", "PARTICIPATION_KEYS",
           "check_simulation_config", "check_time_config"]
