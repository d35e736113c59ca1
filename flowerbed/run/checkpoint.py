"""Checkpoints of a run, and what resuming one needs.

A checkpoint is one file, ``<run_dir>/checkpoint.npz``, written atomically (temp file,
fsync, rename): a crash at any moment leaves either the previous checkpoint or the new
one, never half of one. It holds, after round r:

- the global arrays the round loop carries (the model, as the strategy reported it),
- the strategy's ``state_dict()`` (for CentralizedStrategy: global model and sampling RNG),
- the participation model's, the ledger's and the tracker records' state,
- Python's, NumPy's and torch's global RNG states, and the run config.

Arrays go into the .npz as arrays; everything else is one JSON document stored as bytes
in the same file (nested arrays are replaced by ``{"__array__": name}``). It is read with
``allow_pickle=False``: nothing but arrays and JSON is ever loaded.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowerbed.core.arrays import State
from flowerbed.core.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.npz"
_JSON = "__json__"
FORMAT_VERSION = 1
# keys that may differ between the run that wrote a checkpoint and the one resuming it
RESUMABLE_CHANGES = frozenset({"resume-from", "num-server-rounds", "progress", "wandb",
                               "checkpoint-every"})


def _split(obj: Any, arrays: dict[str, np.ndarray], path: str) -> Any:
    """``obj`` with every numpy array moved into ``arrays`` (JSON placeholder left)."""
    if isinstance(obj, np.ndarray):
        arrays[path] = obj
        return {"__array__": path}
    if isinstance(obj, dict):
        return {str(k): _split(v, arrays, f"{path}/{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_split(v, arrays, f"{path}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def split_arrays(doc: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """(JSON part, {path: array}) of a nested state: what a checkpoint stores."""
    arrays: dict[str, np.ndarray] = {}
    return _split(doc, arrays, ""), arrays


def _join(obj: Any, arrays: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return np.array(arrays[obj["__array__"]])
        return {k: _join(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, arrays) for v in obj]
    return obj


def rng_states() -> dict[str, Any]:
    return {"python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
            "numpy": np.random.get_state(legacy=False),
            "torch": torch.get_rng_state().numpy()}


def set_rng_states(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(torch.from_numpy(np.asarray(state["torch"], dtype=np.uint8)))


def save(run_dir: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` (JSON values and numpy arrays, nested) atomically."""
    meta, arrays = split_arrays(doc)
    arrays[_JSON] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = Path(run_dir) / CHECKPOINT_FILE
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError("resume-from", str(run_dir), f"no checkpoint: {path} does not exist "
                          "(was the run started with checkpoint-every > 0?)")
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(bytes(npz[_JSON]).decode())
        return _join(meta, npz)


@dataclass
class Resume:
    """What a resumed run starts from: the state after round ``last_round``."""

    run_dir: Path
    last_round: int
    doc: dict[str, Any]

    @property
    def arrays(self) -> State:
        return dict(self.doc["arrays"])


def open_resume(run_dir: str | Path, config: dict[str, Any]) -> Resume:
    """The checkpoint of ``run_dir``, checked against the resuming run's ``config``."""
    doc = load(Path(run_dir))
    if doc.get("version") != FORMAT_VERSION:
        raise ConfigError("resume-from", str(run_dir),
                          f"checkpoint format {doc.get('version')} is not {FORMAT_VERSION}")
    old = doc["config"]
    differ = sorted(k for k in set(old) | set(config)
                    if k not in RESUMABLE_CHANGES and old.get(k) != config.get(k))
    if differ:
        raise ConfigError("resume-from", str(run_dir), "the checkpoint was written with "
                          "another config; differing keys: " + ", ".join(differ))
    return Resume(Path(run_dir), int(doc["round"]), doc)


class Checkpointer:
    """Saves the run's state every ``every`` rounds (called by the round hook)."""

    def __init__(self, run_dir: Path, every: int, config: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.every = every
        self.config = config

    def due(self, server_round: int, num_rounds: int) -> bool:
        return self.every > 0 and server_round > 0 and (
            server_round % self.every == 0 or server_round == num_rounds)

    def save(self, server_round: int, arrays: State, strategy: Any, participation: Any,
             ledger: Any, records: list[dict[str, Any]]) -> Path:
        doc = {"version": FORMAT_VERSION, "round": server_round, "config": self.config,
               "arrays": dict(arrays),
               "strategy": strategy.state_dict() if hasattr(strategy, "state_dict") else {},
               "participation": participation.state_dict(),
               "ledger": ledger.state_dict(), "records": records, "rng": rng_states()}
        path = save(self.run_dir, doc)
        log.info("checkpoint after round %d: %s", server_round, path)
        return path
