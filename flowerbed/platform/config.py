"""The run config: every key, its default, its type and what it allows, in one place.

Flower hands the ServerApp and every ClientApp a flat dict (``[tool.flwr.app.config]``
plus ``--run-config`` overrides). :func:`parse_run_config` turns it into one frozen
:class:`RunConfig` before anything starts, so a typo or an out-of-range value fails at
once with a message naming the key, the value and what is allowed, instead of deep inside
torch or Flower twenty minutes later.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A run-config value that cannot work. The message names key, value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"run config: {key} = {value!r} is invalid: {allowed}")


# --- checks -------------------------------------------------------------------------------

Check = Callable[[Any], str | None]  # returns None if fine, else what is allowed


def positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def at_least(lo: float) -> Check:
    return lambda v: None if v >= lo else f"must be >= {lo}"


def unit_interval_open_left(v: Any) -> str | None:
    return None if 0 < v <= 1 else "must be in (0, 1]"


def unit_interval(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "must be in [0, 1]"


def unit_interval_open_right(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def one_of(*choices: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices else "must be one of " + ", ".join(repr(c) for c in choices)

    return check


def int_list(v: Any) -> str | None:
    if v == "":
        return None
    try:
        sizes = [int(s) for s in str(v).split(",")]
    except ValueError:
        return "must be comma-separated positive integers, e.g. '64,32'"
    return None if all(s > 0 for s in sizes) else "sizes must be > 0"


@dataclass(frozen=True)
class Key:
    """One run-config key: its default (which also fixes its type), doc and check."""

    name: str
    default: Any
    doc: str
    check: Check | None = None


# Every key of the run config. Names are kebab-case like Flower's own apps.
KEYS: tuple[Key, ...] = (
    # --- what runs
    Key("strategy", "fedavg", "registry name (see flowerbed.strategies) or 'pkg.mod:Class'"),
    Key("num-server-rounds", 20, "rounds (decentralized: gossip steps)", positive),
    Key("num-clients", 100, "virtual clients / nodes N", positive),
    Key("seed", 42, "drives partitioning, participation, sampling, init and shuffling"),
    # --- data
    Key("dataset", "digits", "offline name (digits, synthetic, ...) or 'hf:<hub name or path>'"),
    Key("feature-column", "", "HF datasets: the feature column ('' = auto)"),
    Key("label-column", "label", "HF datasets: the label column"),
    Key("test-fraction", 0.2, "held-out share of the data for centralized evaluation",
        unit_interval_open_right),
    Key("partitioner", "dirichlet", "Flower Datasets partitioner (see flowerbed.clients.data)"),
    Key("partitioner-alpha", 0.5, "Dirichlet concentration (smaller = more non-IID)", positive),
    Key("partition-by", "label", "column the label-based partitioners split on"),
    Key("classes-per-partition", 2, "pathological partitioner: classes per client", positive),
    Key("shards-per-partition", 2, "shard partitioner: shards per client", positive),
    Key("data-clusters", 4, "kmeans partitioner: input-space clusters (clients of one each)",
        positive),
    Key("min-partition-size", 0, "Dirichlet: resample until every client has this many",
        non_negative),
    Key("synthetic-alpha", 1.0, "Synthetic(alpha, beta): model heterogeneity", non_negative),
    Key("synthetic-beta", 1.0, "Synthetic(alpha, beta): data heterogeneity", non_negative),
    Key("synthetic-dim", 60, "Synthetic: feature dimension", positive),
    Key("synthetic-classes", 10, "Synthetic: number of classes", at_least(2)),
    Key("synthetic-samples", 100, "Synthetic: mean examples per client", positive),
    Key("synthetic-iid-size", False, "Synthetic: every client gets synthetic-samples examples"),
    Key("quadratic-offset", 0.0, "quadratic: distance ||m|| of the centres' mean m from x_0 = 0",
        non_negative),
    # --- model
    Key("model", "mlp", "registry name (logreg, mlp, cnn) or 'pkg.mod:factory'"),
    Key("hidden-sizes", "64", "MLP hidden layer sizes, comma-separated", int_list),
    # --- local training
    Key("lr", 0.1, "client learning rate eta", positive),
    Key("momentum", 0.0, "client SGD momentum", unit_interval_open_right),
    Key("weight-decay", 0.0, "client SGD weight decay", non_negative),
    Key("local-epochs", 5, "local epochs (used when local-steps = 0)", positive),
    Key("local-steps", 0, "local SGD steps I per round (0 = use local-epochs)", non_negative),
    Key("batch-size", 8, "local mini-batch size", positive),
    Key("proximal-mu", 0.0, "FedProx mu: (mu/2)||x_i - x||^2 added to the local loss",
        non_negative),
    # --- centralized strategies
    Key("fraction-train", 0.2, "share of available clients sampled per round",
        unit_interval_open_left),
    Key("fraction-evaluate", 0.0, "share of clients for federated evaluation (0 = off)",
        unit_interval),
    Key("min-train-nodes", 1, "minimum clients sampled per round", positive),
    Key("server-lr", 1.0, "server learning rate eta_g", positive),
    Key("fedau-cutoff", 100000, "FedAU: cutoff K of the participation-interval estimate",
        positive),
    Key("experts", 4, "Paris: number of experts E", positive),
    Key("sync-every", 0, "Paris: average experts every this many rounds (0 = never)",
        non_negative),
    Key("expert-groups", "partition", "Paris: 'partition' (client i -> i mod E), 'cluster' "
        "(k-means on label histograms) or 'data-cluster' (the kmeans partitioner's clusters)",
        one_of("partition", "cluster", "data-cluster")),
    Key("routing", "soft", "Paris: router combination", one_of("soft", "top1", "topk")),
    Key("routing-k", 2, "Paris: k for top-k routing", positive),
    Key("router-epochs", 20, "Paris: router training epochs", positive),
    # --- decentralized strategies
    Key("topology", "ring", "ring, torus, complete, exponential, one-peer-exponential, "
        "base-2, base (Base-(k+1), k = degree), erdos-renyi, random-regular"),
    Key("degree", 4, "random-regular degree / base-(k+1) max degree", positive),
    Key("edge-probability", 0.1, "Erdos-Renyi edge probability", unit_interval_open_left),
    Key("k-active", 8, "Teleportation: active nodes per round k", positive),
    Key("tuning-metric", "xbar", "teleportation-tuned: choose k by the loss of x-bar ('xbar') "
        "or by the mean loss of the run's slot models ('nodes')", one_of("xbar", "nodes")),
    Key("tuning-sets", "per-round", "teleportation-tuned: the candidates' disjoint node sets, "
        "drawn afresh from all nodes every round ('per-round') or fixed contiguous blocks "
        "('fixed')", one_of("per-round", "fixed")),
    Key("final-merge", True, "decentralized: report the globally merged model x-bar"),
    Key("variance-correction", False, "gossip/D-SGD: variance-corrected averaging"),
    Key("trainers", 10, "MoDeST: trainers sampled per round", positive),
    Key("aggregators", 2, "MoDeST: aggregators sampled per round", positive),
    Key("eval-nodes", 20, "decentralized: nodes sampled for per-node accuracy", positive),
    Key("models-memory-gib", 0.0, "decentralized: RAM for the stacked node models (0 = a "
        "quarter of RAM); larger model stacks are memory-mapped", non_negative),
    # --- participation and faults (platform services)
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
    Key("failure-rate", 0.0, "per-round probability that a client's ClientApp raises",
        unit_interval_open_right),
    Key("dropout-rate", 0.0, "per-round probability that a client silently drops out",
        unit_interval_open_right),
    Key("straggler-rate", 0.0, "per-round probability that a client answers too late",
        unit_interval_open_right),
    Key("corrupt-rate", 0.0, "per-round probability that a client sends a NaN update",
        unit_interval_open_right),
    Key("min-replies", 1, "fewest replies for a round to count", positive),
    Key("on-too-few", "skip", "what to do with a round below min-replies",
        one_of("skip", "retry")),
    Key("max-retries", 2, "on-too-few = 'retry': re-sampled attempts before skipping",
        non_negative),
    # --- execution
    Key("engine", "flower", "'flower' (Flower transport, Ray backend) or 'inprocess'",
        one_of("flower", "inprocess")),
    Key("workers", 0, "Flower workers (SuperNodes) used; 0 = all that are connected",
        non_negative),
    Key("vmap", True, "train a worker's clients batched with torch.func.vmap"),
    Key("round-timeout", 3600.0, "seconds the server waits for a round's replies", positive),
    # --- outputs
    Key("eval-every", 1, "centralized evaluation every this many rounds", positive),
    Key("output-dir", "outputs", "parent folder of the run folders"),
    Key("run-name", "", "run folder name ('' = strategy-dataset-timestamp)"),
    Key("tracking", True, "write metrics.jsonl, summary.json, curves.png and a W&B run"),
    Key("wandb", True, "log to W&B (offline without an API key)"),
    Key("wandb-project", "flowerbed", "W&B project"),
    Key("wandb-group", "", "W&B group (sweeps set it)"),
    Key("checkpoint-every", 0, "checkpoint every this many rounds (0 = off)", non_negative),
    Key("resume-from", "", "run folder to resume from its last checkpoint ('' = new run)"),
    Key("progress", True, "print one progress line per round"),
)

KEYS_BY_NAME: dict[str, Key] = {k.name: k for k in KEYS}


def _attr(name: str) -> str:
    return name.replace("-", "_")


@dataclass(frozen=True, eq=False)
class RunConfig:
    """The validated run config. Attribute names are the keys with '-' -> '_'."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.values.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunConfig) and dict(self.values) == dict(other.values)

    def __getattr__(self, attr: str) -> Any:
        values = object.__getattribute__(self, "values")
        key = attr.replace("_", "-")
        if key in values:
            return values[key]
        raise AttributeError(attr)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some keys changed (kebab or snake case), validated again."""
        raw = dict(self.values)
        raw.update({k.replace("_", "-"): v for k, v in changes.items()})
        return parse_run_config(raw)

    @property
    def hidden(self) -> tuple[int, ...]:
        s = self.values["hidden-sizes"]
        return tuple(int(x) for x in str(s).split(",")) if s != "" else ()


def _coerce(key: Key, value: Any) -> Any:
    """Accept what Flower's TOML and --run-config produce; reject mismatched types."""
    want = type(key.default)
    if want is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(key.name, value, "must be true or false")
    if want is int:
        if isinstance(value, bool):
            raise ConfigError(key.name, value, "must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(key.name, value, "must be an integer")
    if want is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key.name, value, "must be a number")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(key.name, value, "must be a finite number")
        return value
    if want is str:
        if not isinstance(value, str):
            raise ConfigError(key.name, value, "must be a string")
        return value
    raise TypeError(f"unsupported default type for {key.name}")  # pragma: no cover


def parse_run_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate ``raw`` (Flower's run config) against :data:`KEYS`; fill in defaults."""
    for name in raw:
        if name not in KEYS_BY_NAME:
            close = difflib.get_close_matches(name, KEYS_BY_NAME, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "see flowerbed/platform/config.py"
            raise ConfigError(name, raw[name], f"unknown key; {hint}")
    values: dict[str, Any] = {}
    for key in KEYS:
        value = _coerce(key, raw[key.name]) if key.name in raw else key.default
        if key.check is not None:
            problem = key.check(value)
            if problem:
                raise ConfigError(key.name, value, problem)
        values[key.name] = value
    cfg = RunConfig(values)
    _check_cross_keys(cfg)
    return cfg


def _check_cross_keys(cfg: RunConfig) -> None:
    """Checks that involve more than one key (names come from the registries)."""
    from flowerbed.clients.data import check_data_config
    from flowerbed.clients.models import check_model_name
    from flowerbed.strategies.registry import check_strategy_name

    check_strategy_name(cfg.strategy)
    check_model_name(cfg.model)
    check_data_config(cfg)
    from flowerbed.platform.topologies import TOPOLOGIES

    if cfg.topology not in TOPOLOGIES:
        raise ConfigError("topology", cfg.topology, "must be one of " + ", ".join(TOPOLOGIES))
    if cfg.participation_min > cfg.participation_mean:
        raise ConfigError("participation-min", cfg.participation_min,
                          f"must be <= participation-mean ({cfg.participation_mean})")
    rates = ("failure-rate", "dropout-rate", "straggler-rate", "corrupt-rate")
    if sum(cfg[k] for k in rates) > 1.0:
        last = [k for k in rates if cfg[k] > 0][-1]
        raise ConfigError(last, cfg[last], "the fault rates (" + " + ".join(rates)
                          + ") must add up to at most 1")
    if cfg.min_replies > cfg.num_clients:
        raise ConfigError("min-replies", cfg.min_replies,
                          f"must be <= num-clients ({cfg.num_clients})")
    if (cfg.checkpoint_every > 0 or cfg.resume_from) and not cfg.tracking:
        key = "checkpoint-every" if cfg.checkpoint_every > 0 else "resume-from"
        raise ConfigError(key, cfg[key], "needs tracking = true (checkpoints live in the "
                          "run folder)")


def defaults() -> dict[str, Any]:
    """The default value of every key (what an empty run config means)."""
    return {k.name: k.default for k in KEYS}


def pyproject_section() -> str:
    """``[tool.flwr.app.config]`` listing every key with its default.

    Flower rejects ``--run-config`` overrides of keys the app's pyproject does not list,
    so the pyproject must carry all of them; a test keeps it in sync with :data:`KEYS`.
    """
    import json

    lines = ["[tool.flwr.app.config]"]
    for k in KEYS:
        v = k.default
        text = ("true" if v else "false") if isinstance(v, bool) else json.dumps(v)
        lines.append(f"{k.name} = {text}")
    return "\n".join(lines) + "\n"


def describe() -> str:
    """A Markdown table of every key, for the README and ``flowerbed keys``."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    rows += [f"| `{k.name}` | `{k.default!r}` | {k.doc} |" for k in KEYS]
    return "\n".join(rows)


__all__ = ["KEYS", "ConfigError", "Key", "RunConfig", "describe", "parse_run_config"]
