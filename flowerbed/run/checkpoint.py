"""Checkpoints of a run, and what resuming one needs.

A checkpoint is one file, ``<run_dir>/checkpoint.npz``, written atomically (temp file,
fsync, rename): a crash at any moment leaves either the previous checkpoint or the new
one, never half of one. The one before it is kept as ``checkpoint.prev.npz``: a checkpoint
damaged later (truncated, flipped bytes, cut JSON, arrays of the wrong shape) is named in
a warning and the run resumes from the previous one; with both damaged, resuming fails
with an error naming the files. It holds, after round r:

- the global arrays the round loop carries (the model, as the strategy reported it),
- the strategy's ``state_dict()`` (for CentralizedStrategy: global model and sampling RNG),
- the participation model's, the ledger's and the tracker records' state,
- an asynchronous run's event grid (``event_grid``: the clock and the jobs in flight),
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
import uuid
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowerbed.core.arrays import State
from flowerbed.core.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.npz"
PREVIOUS_FILE = "checkpoint.prev.npz"
# what the sections of a checkpoint document must be
SECTIONS = {"version": int, "round": int, "config": dict, "arrays": dict, "strategy": dict,
            "participation": dict, "ledger": dict, "records": list, "rng": dict}
# what reading a damaged .npz or its JSON raises
DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, TypeError,
          UnicodeDecodeError)
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
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"  # the user's umask applies
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():  # keep the one before: linked, so ``path`` never goes missing
            prev_tmp = path.parent / f".{PREVIOUS_FILE}.tmp"
            prev_tmp.unlink(missing_ok=True)
            os.link(path, prev_tmp)
            os.replace(prev_tmp, path.parent / PREVIOUS_FILE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read(path: Path) -> dict[str, Any]:
    """The document in one checkpoint file (raises one of :data:`DAMAGE` if damaged)."""
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(bytes(npz[_JSON]).decode())
        return _join(meta, npz)


class DamagedCheckpoint(ValueError):
    """A checkpoint file that cannot be read, or whose contents are not a run's state."""


def check_document(doc: Any, shapes: Mapping[str, tuple[int, ...]] | None = None) -> None:
    """Raise :class:`DamagedCheckpoint` unless ``doc`` has every section, of the right type,
    and (given ``shapes``, the run's model) every array named like a model parameter has
    its shape. (Strategies that carry several models, e.g. Paris' experts, name their
    arrays otherwise; their own state checks its shapes when it loads.)"""
    if not isinstance(doc, dict):
        raise DamagedCheckpoint("not a checkpoint document")
    for name, kind in SECTIONS.items():
        if not isinstance(doc.get(name), kind):
            raise DamagedCheckpoint(f"section {name!r} is missing or not a {kind.__name__}")
    if doc["version"] != FORMAT_VERSION:
        raise DamagedCheckpoint(f"checkpoint format {doc['version']} is not {FORMAT_VERSION}")
    for key, shape in (shapes or {}).items():
        got = doc["arrays"].get(key)
        if got is not None and np.shape(got) != tuple(shape):
            raise DamagedCheckpoint(f"array {key!r} has shape {np.shape(got)}, the model's "
                                    f"is {tuple(shape)}")


def load(run_dir: Path, shapes: Mapping[str, tuple[int, ...]] | None = None
         ) -> dict[str, Any]:
    """The newest good checkpoint of ``run_dir``: ``checkpoint.npz``, or the one before it
    if that is damaged (with a warning naming the file and the damage)."""
    run_dir = Path(run_dir)
    path, prev = run_dir / CHECKPOINT_FILE, run_dir / PREVIOUS_FILE
    if not path.is_file() and not prev.is_file():
        raise ConfigError("resume-from", str(run_dir), f"no checkpoint: {path} does not exist "
                          "(was the run started with checkpoint-every > 0?)")
    problems = []
    for candidate in (path, prev):
        if not candidate.is_file():
            continue
        try:
            doc = read(candidate)
            check_document(doc, shapes)
        except DAMAGE as err:  # DamagedCheckpoint is a ValueError
            problems.append(f"{candidate}: {type(err).__name__}: {err}")
            log.warning("checkpoint %s is damaged (%s: %s)", candidate, type(err).__name__,
                        err)
            continue
        if problems:
            log.warning("resuming from the previous checkpoint %s (round %d)", candidate,
                        doc["round"])
        return doc
    raise ConfigError("resume-from", str(run_dir), "no usable checkpoint: "
                      + "; ".join(problems))


@dataclass
class Resume:
    """What a resumed run starts from: the state after round ``last_round``."""

    run_dir: Path
    last_round: int
    doc: dict[str, Any]

    @property
    def arrays(self) -> State:
        return dict(self.doc["arrays"])


def open_resume(run_dir: str | Path, config: dict[str, Any],
                shapes: Mapping[str, tuple[int, ...]] | None = None) -> Resume:
    """The checkpoint of ``run_dir``, checked against the resuming run's ``config`` (and,
    given ``shapes``, the run's model)."""
    doc = load(Path(run_dir), shapes)
    old = doc["config"]
    differ = sorted(k for k in set(old) | set(config)
                    if k not in RESUMABLE_CHANGES and old.get(k) != config.get(k))
    if differ:
        raise ConfigError("resume-from", str(run_dir), "the checkpoint was written with "
                          "another config; differing keys: " + ", ".join(differ))
    done, total = int(doc["round"]), config.get("num-server-rounds")
    if isinstance(total, int) and total <= done:
        raise ConfigError("num-server-rounds", total, f"must be more than the {done} rounds "
                          f"the checkpoint of {run_dir} already completed (nothing to resume)")
    return Resume(Path(run_dir), done, doc)


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
             ledger: Any, records: list[dict[str, Any]], client_states: Any = None,
             event_grid: Any = None) -> Path:
        doc = {"version": FORMAT_VERSION, "round": server_round, "config": self.config,
               "arrays": dict(arrays),
               "strategy": strategy.state_dict() if hasattr(strategy, "state_dict") else {},
               "participation": participation.state_dict(),
               "ledger": ledger.state_dict(), "records": records, "rng": rng_states()}
        if client_states is not None and len(client_states):  # optional section
            doc["client_states"] = client_states.state_dict()
        if event_grid is not None:  # asynchronous runs
            doc["event_grid"] = event_grid.state_dict()
        path = save(self.run_dir, doc)
        log.info("checkpoint after round %d: %s", server_round, path)
        return path
