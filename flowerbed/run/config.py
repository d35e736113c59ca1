"""The run config: the schema collected from every layer's declarations, and its parser.

Flower hands the ServerApp and every ClientApp a flat dict (``[tool.flwr.app.config]``
plus ``--run-config`` overrides). :func:`parse_run_config` turns it into one immutable
:class:`RunConfig` before anything starts, so a typo or an out-of-range value fails at
once with a message naming the key, the value and what is allowed, instead of deep inside
torch or Flower twenty minutes later.

The schema (:data:`KEYS`) is the run's own keys (below), the clients' (data, model, local
training), the built-in strategies' declared parameters and the simulation's (participation,
faults, execution). A plug-in strategy's own parameters are accepted when it is the
strategy: as flat keys (``flowerbed run -c``, run-config files, sweeps) or, through plain
``flwr run``, which only accepts keys listed in pyproject, inside the one key
``strategy-params`` (comma-separated ``key = value`` pairs with TOML values).
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flowerbed.clients import keys as client_keys
from flowerbed.clients.data import check_data_config
from flowerbed.clients.device import resolve as resolve_device
from flowerbed.clients.models import check_model_name
from flowerbed.core import codecs
from flowerbed.core.errors import ConfigError
from flowerbed.core.params import (
    Config,
    Key,
    build_params,
    keys_of,
    non_negative,
    positive,
    toml_value,
)
from flowerbed.run import presets
from flowerbed.simulation import keys as simulation_keys
from flowerbed.simulation.clock import enabled as clock_enabled
from flowerbed.strategies import dp
from flowerbed.strategies.registry import builtin_classes, strategy_class

STRATEGY_PARAMS = "strategy-params"

RUN_KEYS: tuple[Key, ...] = (
    Key("strategy", "fedavg", "registry name (see flowerbed.strategies) or 'pkg.mod:Class'"),
    Key(STRATEGY_PARAMS, "", "a plug-in strategy's own parameters, 'key = value, ...' (TOML "
        "values); for plain flwr run, which only accepts the keys listed here"),
    Key("num-server-rounds", 20, "rounds (decentralized: gossip steps)", positive),
    Key("num-clients", 100, "virtual clients / nodes N", positive),
    Key("seed", 42, "drives partitioning, participation, sampling, init and shuffling",
        lambda v: None if 0 <= v < 2**32 else "must be in 0..4294967295 (2**32 - 1, the "
        "range NumPy and scikit-learn seed from)"),
)


def one_path_component(v: Any) -> str | None:
    """A run name is one folder name inside output-dir ('' = the automatic one)."""
    if v == "":
        return None
    if not v.strip():
        return "must not be blank ('' = strategy-dataset-timestamp)"
    if any(c in v for c in ("/", "\\", "\0")):
        return "must be one folder name, without '/' or '\\'"
    if v.startswith("."):
        return "must not start with '.' (no '.', '..' or hidden folders)"
    return None


OUTPUT_KEYS: tuple[Key, ...] = (
    Key("eval-every", 1, "centralized evaluation every this many rounds", positive),
    Key("output-dir", "outputs", "parent folder of the run folders"),
    Key("run-name", "", "run folder name ('' = strategy-dataset-timestamp)",
        one_path_component),
    Key("tracking", True, "write metrics.jsonl, summary.json, curves.png and a W&B run"),
    Key("wandb", True, "log to W&B (offline without an API key)"),
    Key("wandb-project", "flowerbed", "W&B project"),
    Key("wandb-group", "", "W&B group (sweeps set it)"),
    Key("checkpoint-every", 0, "checkpoint every this many rounds (0 = off)", non_negative),
    Key("resume-from", "", "run folder to resume from its last checkpoint ('' = new run)"),
    Key("progress", True, "print one progress line per round"),
)


def _collect(groups: Iterable[Iterable[Key]]) -> tuple[Key, ...]:
    """The keys in order; a name declared twice must be declared alike (shared fields)."""
    out: dict[str, Key] = {}
    for group in groups:
        for key in group:
            if key.name in out and out[key.name] != key:
                raise TypeError(f"run-config key {key.name!r} is declared twice, differently")
            out.setdefault(key.name, key)
    return tuple(out.values())


# Every key of the run config. Names are kebab-case like Flower's own apps.
KEYS: tuple[Key, ...] = _collect([
    RUN_KEYS, presets.KEYS, client_keys.DATA_KEYS, client_keys.MODEL_KEYS,
    client_keys.TRAINING_KEYS,
    *(keys_of(cls.Params) for cls in builtin_classes()), dp.KEYS,
    simulation_keys.KEYS, codecs.KEYS, OUTPUT_KEYS,
])
KEYS_BY_NAME: dict[str, Key] = {k.name: k for k in KEYS}


class RunConfig(Config):
    """The validated run config (see :class:`flowerbed.core.params.Config`)."""

    __slots__ = ()

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some keys changed (kebab or snake case), validated again."""
        raw = self.as_dict()
        raw.update({k.replace("_", "-"): v for k, v in changes.items()})
        return parse_run_config(raw)

    def plugin_keys(self) -> tuple[str, ...]:
        """The strategy's own keys that are not in the schema (a plug-in's parameters)."""
        return tuple(k for k in self.values if k not in KEYS_BY_NAME)

    def for_flower(self) -> dict[str, Any]:
        """The values as plain ``flwr run`` accepts them: only schema keys, a plug-in's own
        parameters folded into ``strategy-params``."""
        out = {k: v for k, v in self.values.items() if k in KEYS_BY_NAME}
        out[STRATEGY_PARAMS] = encode_strategy_params(
            {k: self.values[k] for k in self.plugin_keys()})
        return out


def encode_strategy_params(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} = {toml_value(v)}" for k, v in values.items())


def parse_strategy_params(text: str) -> dict[str, Any]:
    """``'a = 1, b = "x"'`` (or the same in braces) -> {'a': 1, 'b': 'x'}."""
    body = text.strip()
    if not body:
        return {}
    if not body.startswith("{"):
        body = "{" + body + "}"
    try:
        return dict(tomllib.loads(f"p = {body}")["p"])
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(STRATEGY_PARAMS, text, "must be comma-separated key = value pairs "
                          f"with TOML values, e.g. \"trim = 0.2, mode = 'fast'\" ({err})"
                          ) from None


def strategy_keys(name: str) -> tuple[Key, ...]:
    """Every parameter the strategy ``name`` declares (its bases' included)."""
    cls = strategy_class(name)
    keys = keys_of(cls.Params)
    if getattr(cls, "native", None) is not None:  # an adopted Flower strategy: a parameter
        # named like a platform key (FedProx's proximal-mu) is that key
        keys = tuple(KEYS_BY_NAME.get(k.name, k) for k in keys)
    for key in keys:
        if key.name in KEYS_BY_NAME and KEYS_BY_NAME[key.name] != key:
            raise ConfigError("strategy", name, f"declares the parameter {key.name!r}, which "
                              "is a platform key with another meaning; rename it")
    return keys


def _unknown(name: str, value: Any, known: Iterable[str], where: str = "") -> ConfigError:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "`flowerbed keys` lists them"
    return ConfigError(name, value, f"unknown key{where}; {hint}")


def parse_run_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate ``raw`` (Flower's run config) against the schema; fill in defaults (a
    ``preset``'s values first, for keys absent or at their default)."""
    merged = presets.apply_preset(raw, {k.name: k.default for k in KEYS})
    name = KEYS_BY_NAME["strategy"].value(merged.get("strategy", "fedavg"))
    declared = strategy_keys(name)
    own = tuple(k for k in declared if k.name not in KEYS_BY_NAME)
    text = KEYS_BY_NAME[STRATEGY_PARAMS].value(merged.get(STRATEGY_PARAMS, ""))
    for key, value in parse_strategy_params(text).items():
        if key not in {k.name for k in declared}:
            raise _unknown(key, value, [k.name for k in declared],
                           f" in strategy-params: not a parameter of {name}")
        if key in raw and raw[key] != value:
            raise ConfigError(key, raw[key], f"is also set in strategy-params ({value!r})")
        merged[key] = value
    merged[STRATEGY_PARAMS] = ""
    schema = KEYS + own
    names = {k.name for k in schema}
    for key in merged:
        if key not in names:
            raise _unknown(key, merged[key], names)
    values = {k.name: k.value(merged[k.name]) if k.name in merged else k.default
              for k in schema}
    cfg = RunConfig(values)
    check_model_name(cfg.model)
    check_data_config(cfg)
    resolve_device(cfg.device)  # 'cuda' where no GPU is visible: a clear error now
    simulation_keys.check_simulation_config(cfg)
    codecs.Codec.from_config(cfg)  # error-feedback only with a codec that can use it
    cls = strategy_class(name)
    if cfg.attack_per_neighbour and not getattr(cls, "peer_views", False):
        raise ConfigError("attack-per-neighbour", True, f"needs a decentralized strategy that "
                          f"mixes the models each node received (dsgd, monna, clipped-gossip, "
                          f"sybilwall, bristle), not {name!r}")
    cls.check_params(build_params(cls.Params, values), cfg.num_clients)
    if hasattr(cls, "check_run"):
        cls.check_run(values)
    dp.check_dp(cfg, cls)
    check_asynchronous(cfg, cls)
    if (cfg.checkpoint_every > 0 or cfg.resume_from) and not cfg.tracking:
        key = "checkpoint-every" if cfg.checkpoint_every > 0 else "resume-from"
        raise ConfigError(key, cfg[key], "needs tracking = true (checkpoints live in the "
                          "run folder)")
    return cfg


def check_asynchronous(cfg: RunConfig, cls: type) -> None:
    """An asynchronous strategy runs on the virtual clock, without synchronous rounds."""
    if not getattr(cls, "asynchronous", False):
        return
    if not clock_enabled(cfg):
        raise ConfigError("strategy", cfg.strategy, "is asynchronous: it runs on the virtual "
                          "clock; set step-seconds (and/or a bandwidth key)")
    for key in ("round-deadline-s", "over-selection"):
        if cfg[key]:
            raise ConfigError(key, cfg[key], f"must be unset with strategy {cfg.strategy}: "
                              "an asynchronous strategy has no synchronous rounds to time")


def check_paths(cfg: RunConfig, base: Path | None = None) -> None:
    """Reject output-dir and resume-from values that name what cannot be used, on the machine
    that writes the run folder (relative paths are relative to ``base``, default the current
    folder). Not part of :func:`parse_run_config`: clients parse the config too, elsewhere."""
    root = Path.cwd() if base is None else base

    def local(value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else root / path

    if cfg.tracking:
        out = local(cfg.output_dir)
        blocker = next((p for p in (out, *out.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise ConfigError("output-dir", cfg.output_dir, f"{blocker} is a file, not a folder; "
                              "name a folder (it is created if missing)")
    if cfg.resume_from:
        folder = local(cfg.resume_from)
        if not folder.is_dir():
            raise ConfigError("resume-from", cfg.resume_from, f"no such run folder: {folder}")


def defaults() -> dict[str, Any]:
    """The default value of every key (what an empty run config means)."""
    return {k.name: k.default for k in KEYS}


def pyproject_section() -> str:
    """``[tool.flwr.app.config]`` listing every key with its default.

    Flower rejects ``--run-config`` overrides of keys the app's pyproject does not list,
    so the pyproject must carry all of them; a test keeps it in sync with :data:`KEYS`
    (``flowerbed keys --pyproject`` prints it).
    """
    lines = ["[tool.flwr.app.config]"]
    lines += [f"{k.name} = {toml_value(k.default)}" for k in KEYS]
    return "\n".join(lines) + "\n"


def describe(keys: Iterable[Key] = KEYS) -> str:
    """A Markdown table of ``keys``, for the README and ``flowerbed keys``."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    rows += [f"| `{k.name}` | `{k.default!r}` | {k.doc} |" for k in keys]
    return "\n".join(rows)


__all__ = ["KEYS", "STRATEGY_PARAMS", "ConfigError", "RunConfig", "check_paths", "defaults",
           "describe", "parse_run_config", "pyproject_section", "strategy_keys"]
