"""Datasets and their partitions into clients.

Every dataset, offline or from the Hugging Face Hub, goes through the same path: a
``datasets.Dataset`` with a feature column and a label column, a held-out test split that
stays on the server, and a Flower Datasets partitioner chosen by name that splits the
training split into ``num-clients`` partitions. The result is cached per process (a worker
builds it once, not per message) as dense NumPy arrays; image pixels and text token ids stay
small integers (:mod:`flowerbed.clients.stored`) and become float32 batch by batch.

Offline datasets (no network needed):
- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes).
- ``synthetic``: Synthetic(alpha, beta) of FedProx (Li et al., MLSys 2020) / LEAF: client k
  draws u_k ~ N(0, alpha), B_k ~ N(0, beta), W_k, b_k ~ N(u_k, 1), v_k ~ N(B_k, 1),
  x ~ N(v_k, diag(j^-1.2)), y = argmax(W_k^T x + b_k). Each example carries its
  ``client_id``, so the ``natural-id`` partitioner recovers the generating clients.
Online: ``hf:<hub name or local path>`` loads through Flower Datasets ``FederatedDataset``,
in the dataset's own schema: an ``Image`` column (grey or RGB, as (C, H, W) uint8), a text
column (LEAF's next-character task: :mod:`flowerbed.clients.text`), a vector column or the
numeric columns; labels as ``ClassLabel``, integers or strings. ``tests/hub_fixtures.py``
writes offline copies of FEMNIST, CIFAR-10 and Shakespeare in their Hub schemas.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flowerbed.clients.stored import QuantizedArray, flat_tensor, to_float_batch
from flowerbed.clients.text import Vocabulary
from flowerbed.core.errors import ConfigError

if TYPE_CHECKING:
    import datasets

    from flowerbed.core.params import Config

log = logging.getLogger(__name__)

__all__ = ["FederatedData", "QuantizedArray", "flat_tensor", "load_federation", "standardize",
           "to_float_batch"]

OFFLINE_DATASETS = ("digits", "synthetic", "quadratic")
PARTITIONERS = ("iid", "dirichlet", "pathological", "shard", "natural-id", "linear", "square",
                "exponential", "kmeans")
# Keys that change the data a client sees; the cache is keyed on them.
DATA_KEYS = ("dataset", "feature-column", "feature-columns", "label-column", "normalize",
             "test-fraction", "partitioner",
             "partitioner-alpha", "partition-by", "classes-per-partition",
             "shards-per-partition", "min-partition-size", "synthetic-alpha", "synthetic-beta",
             "synthetic-dim", "synthetic-classes", "synthetic-samples", "synthetic-iid-size",
             "quadratic-offset", "data-clusters", "num-clients", "seed")


@dataclass
class FederatedData:
    """All partitions as dense arrays plus the server's held-out test set."""

    # x[i]: features of client i, shape (n_i, *input_shape): float32, or for images and text
    # a QuantizedArray (uint8 pixels / token ids that convert to float32 on use; stored.py)
    x: list[Any]
    y: list[np.ndarray]  # y[i]: labels of client i, int64
    test_x: Any  # like x[i]
    test_y: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    # optional: all clients' rows back to back (x[i] = x_flat[offsets[i]:offsets[i + 1]]),
    # so batched training indexes one array instead of copying per round
    x_flat: Any = None  # np.ndarray or QuantizedArray
    y_flat: np.ndarray | None = None
    offsets: np.ndarray | None = None
    # the input-space cluster of every client and of every test example (the kmeans
    # partitioner), else None
    client_clusters: np.ndarray | None = None
    test_clusters: np.ndarray | None = None
    # the dataset columns the features come from
    feature_columns: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line on what was built: features, input shape, classes, partition sizes."""
        cols = self.feature_columns
        names = (", ".join(cols) if len(cols) <= 6 else
                 f"{', '.join(cols[:3])}, ..., {cols[-1]} ({len(cols)} columns)")
        sizes = self.sizes
        return (f"features {names or '(built in)'}, input shape {self.input_shape}, "
                f"{self.num_classes} classes, {self.num_clients} clients with "
                f"{int(sizes.min())}..{int(sizes.max())} examples (median "
                f"{int(np.median(sizes))}), {len(self.test_y)} test examples{self._stored()}")

    def _stored(self) -> str:
        """How compactly the features are held (uint8 pixels, token ids), if they are."""
        if not isinstance(self.x_flat, QuantizedArray):
            return ""
        mib = (self.x_flat.nbytes + getattr(self.test_x, "nbytes", 0)) / 2**20
        return f"; features stored as {self.x_flat.raw.dtype} ({mib:.1f} MiB)"

    @property
    def num_clients(self) -> int:
        return len(self.x)

    @property
    def sizes(self) -> np.ndarray:
        return np.array([len(v) for v in self.y])

    def label_counts(self) -> np.ndarray:
        """(num_clients, num_classes) label histogram of every client."""
        return np.stack([np.bincount(v, minlength=self.num_classes) for v in self.y])


# --- building the pooled datasets ---------------------------------------------------------


def _digits(cfg: Config) -> tuple[datasets.Dataset, datasets.Dataset, tuple[int, ...], int]:
    import datasets
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=cfg.test_fraction,
                                          random_state=cfg.seed, stratify=y)
    train = datasets.Dataset.from_dict({"x": xtr, "label": ytr})
    test = datasets.Dataset.from_dict({"x": xte, "label": yte})
    return train, test, (1, 8, 8), 10


def synthetic_clients(num_clients: int, alpha: float, beta: float, dim: int, classes: int,
                      mean_samples: int, equal_sizes: bool, seed: int
                      ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Synthetic(alpha, beta) (FedProx / LEAF), one (x, y) per generating client."""
    rng = np.random.default_rng(seed)
    if equal_sizes:
        sizes = np.full(num_clients, mean_samples)
    else:  # LEAF uses a lognormal; scaled so the mean is about mean_samples
        sizes = rng.lognormal(np.log(mean_samples) - 0.5, 1.0, num_clients).astype(int)
        sizes = np.clip(sizes, 10, 20 * mean_samples)
    sigma = np.array([(j + 1) ** -1.2 for j in range(dim)])
    xs, ys = [], []
    for k in range(num_clients):
        u_k = rng.normal(0.0, np.sqrt(alpha))
        b_mean = rng.normal(0.0, np.sqrt(beta))
        w_k = rng.normal(u_k, 1.0, (dim, classes))
        bias_k = rng.normal(u_k, 1.0, classes)
        v_k = rng.normal(b_mean, 1.0, dim)
        x = rng.normal(v_k, np.sqrt(sigma), (sizes[k], dim)).astype(np.float32)
        y = np.argmax(x @ w_k + bias_k, axis=1).astype(np.int64)
        xs.append(x)
        ys.append(y)
    return xs, ys


def _synthetic(cfg: Config) -> tuple[datasets.Dataset, datasets.Dataset, tuple[int, ...],
                                        int]:

    xs, ys = synthetic_clients(cfg.num_clients, cfg.synthetic_alpha, cfg.synthetic_beta,
                               cfg.synthetic_dim, cfg.synthetic_classes, cfg.synthetic_samples,
                               cfg.synthetic_iid_size, cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1)
    tr_x, tr_y, tr_id, te_x, te_y = [], [], [], [], []
    for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
        n_test = round(len(y) * cfg.test_fraction)
        perm = rng.permutation(len(y))
        te, tr = perm[:n_test], perm[n_test:]
        tr_x.append(x[tr])
        tr_y.append(y[tr])
        tr_id.append(np.full(len(tr), k))
        te_x.append(x[te])
        te_y.append(y[te])
    del xs, ys
    train = _arrow_dataset({"x": np.concatenate(tr_x), "label": np.concatenate(tr_y),
                            "client_id": np.concatenate(tr_id)})
    del tr_x
    test = _arrow_dataset({"x": np.concatenate(te_x), "label": np.concatenate(te_y)})
    return train, test, (cfg.synthetic_dim,), cfg.synthetic_classes


def _arrow_dataset(columns: dict[str, np.ndarray]) -> datasets.Dataset:
    """A Dataset over the arrays without copies (``from_dict`` copies and hashes them).

    2-D columns become fixed-size lists; at 10,000 clients this keeps a worker's peak
    memory while building the partitions well below a gigabyte.
    """
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    cols = {}
    for name, arr in columns.items():
        if arr.ndim == 2:
            cols[name] = pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(arr).reshape(-1)), arr.shape[1])
        else:
            cols[name] = pa.array(arr)
    # a given fingerprint spares datasets hashing a serialised copy of all the data
    return datasets.Dataset(InMemoryTable(pa.table(cols)), fingerprint=uuid.uuid4().hex)


def _quadratic(cfg: Config) -> Any:
    from flowerbed.clients.quadratic import build

    return build(cfg)


OFFLINE_BUILDERS: dict[str, Callable[[Config], Any]] = {
    "digits": _digits,
    "synthetic": _synthetic,
    "quadratic": _quadratic,  # Teleportation's synthetic objective (clients/quadratic.py)
}


# --- partitioners --------------------------------------------------------------------------


def make_partitioner(cfg: Config, feature: str = "x") -> Any:
    """The Flower Datasets partitioner named by ``cfg.partitioner``."""
    from flwr_datasets import partitioner as p

    n, by, seed = cfg.num_clients, cfg.partition_by, cfg.seed
    name = cfg.partitioner
    if name == "iid":
        return p.IidPartitioner(num_partitions=n)
    if name == "dirichlet":
        return p.DirichletPartitioner(num_partitions=n, partition_by=by,
                                      alpha=cfg.partitioner_alpha,
                                      min_partition_size=cfg.min_partition_size,
                                      self_balancing=False, seed=seed)
    if name == "pathological":
        return p.PathologicalPartitioner(num_partitions=n, partition_by=by,
                                         num_classes_per_partition=cfg.classes_per_partition,
                                         seed=seed)
    if name == "shard":
        return p.ShardPartitioner(num_partitions=n, partition_by=by,
                                  num_shards_per_partition=cfg.shards_per_partition, seed=seed)
    if name == "natural-id":  # any column (FEMNIST's writer_id); synthetic: client_id
        from flowerbed.clients.natural_id import NaturalIdGrouping

        column = by if cfg.dataset.startswith("hf:") else "client_id"
        return NaturalIdGrouping(n, column, seed)
    if name == "kmeans":
        from flowerbed.clients.kmeans_partitioner import KMeansPartitioner

        return KMeansPartitioner(n, cfg.data_clusters, feature, seed)
    sized = {"linear": p.LinearPartitioner, "square": p.SquarePartitioner,
             "exponential": p.ExponentialPartitioner}
    return sized[name](num_partitions=n)


def _to_array(ds: datasets.Dataset, feature: str,
              vocab: Vocabulary | None = None) -> np.ndarray | QuantizedArray:
    """The feature column as the model sees it: float32, or stored integers that stand
    for float32 (:mod:`flowerbed.clients.stored`): image pixels as uint8 scaled to [0, 1]
    (channels first), text as token ids of ``vocab``."""
    import datasets
    import pyarrow as pa

    kind = ds.features[feature]
    if isinstance(kind, datasets.Image):
        return _image_array(ds, feature)
    if vocab is not None:  # text: strings -> token ids (stored as uint8 for <= 256 letters)
        col = ds.with_format("arrow")[:][feature].to_numpy(zero_copy_only=False)
        return QuantizedArray.of(vocab.encode_sequences(col, "feature-column"))
    col = ds.with_format("arrow")[:][feature].combine_chunks()
    if (pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type)) and (
            pa.types.is_floating(col.type.value_type)) and col.null_count == 0:
        # vectors of floats (e.g. synthetic): one flat copy out of Arrow, no per-row work
        flat = col.flatten().to_numpy(zero_copy_only=False)
        if len(ds) and flat.size % len(ds) == 0:
            return np.array(flat, dtype=np.float32).reshape(len(ds), -1)  # writable copy
    # ds[:] converts the whole column at once; ds[feature] would iterate row by row
    col = ds.with_format("numpy")[:][feature]
    arr = np.asarray(col)
    if arr.dtype == object:  # e.g. nested lists of unequal types
        arr = np.stack([np.asarray(v) for v in col])
    arr = arr.astype(np.float32)
    if arr.size and arr.max() > 1.5 and np.issubdtype(np.asarray(col[:1]).dtype, np.integer):
        arr = arr / 255.0
    return arr


IMAGE_CHUNK = 4096  # rows decoded at a time: the decoded copies of a chunk, not of all


def _image_array(ds: datasets.Dataset, feature: str) -> QuantizedArray:
    """An ``Image`` column as uint8 (n, C, H, W) pixels standing for raw / 255, decoded
    chunk by chunk into one preallocated array (decoding all rows at once held every
    image twice more: 1.6 GiB peak for CIFAR-10's 60,000 images, for 176 MiB kept)."""
    fmt = ds.with_format("numpy")
    out: np.ndarray | None = None
    for start in range(0, max(len(ds), 1), IMAGE_CHUNK):
        col = fmt[start:start + IMAGE_CHUNK][feature] if len(ds) else np.zeros((0, 1, 1))
        arr = np.asarray(col)
        if arr.dtype == object:  # images of different modes or sizes: one by one
            arr = np.stack([np.asarray(v) for v in col])
        if arr.dtype != np.uint8 and len(ds):
            raise ConfigError("feature-column", feature, f"image pixels are {arr.dtype}; "
                              "flowerbed reads 8-bit images (grey or RGB)")
        if arr.ndim == 3:  # grey (n, H, W)
            arr = arr[:, None]
        elif arr.ndim == 4:  # (n, H, W, C) as PIL gives it -> channels first
            arr = arr.transpose(0, 3, 1, 2)
        if out is None:
            out = np.empty((len(ds), *arr.shape[1:]), np.uint8)
        out[start:start + len(arr)] = arr
    assert out is not None
    return QuantizedArray.of(out, 1.0 / 255.0)


def _is_text(feature: Any) -> bool:
    import datasets

    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def _hf(cfg: Config) -> tuple[datasets.Dataset, datasets.Dataset, str, tuple[str, ...]]:
    """A Hugging Face dataset through FederatedDataset (hub name or local folder).

    Its "test" split stays on the server; without one, test-fraction of "train" is held out.
    """
    from flwr_datasets import FederatedDataset

    name = cfg.dataset.removeprefix("hf:")
    kwargs: dict[str, Any] = {"dataset": name}
    local = Path(name).expanduser()
    if local.is_file():  # one data file: datasets' builder of its format
        builder = DATA_FILE_BUILDERS.get(local.suffix.lower())
        if builder is None:
            raise ConfigError("dataset", cfg.dataset, "a local data file must be one of "
                              + ", ".join(DATA_FILE_BUILDERS) + " (or a folder of them)")
        kwargs = {"dataset": builder, "data_files": str(local)}
    try:
        fds = FederatedDataset(**kwargs, partitioners={"train": cfg.num_clients},
                               seed=cfg.seed)
        train = fds.load_split("train")
    except ConfigError:
        raise
    except Exception as err:  # not on the Hub (or it is unreachable), no data files, ...
        raise ConfigError("dataset", cfg.dataset, "cannot load it as a Hugging Face dataset, "
                          f"local folder or data file: {type(err).__name__}: {err}") from None
    if len(train) == 0:
        raise ConfigError("dataset", cfg.dataset, "its train split has no rows")
    try:
        test = fds.load_split("test")
    except (ValueError, KeyError):
        split = train.train_test_split(test_size=cfg.test_fraction, seed=cfg.seed)
        train, test = split["train"], split["test"]
    features = _feature_columns(cfg, train)
    if len(features) > 1:  # tabular: the numeric columns side by side, one vector a row
        train, test = _stack_columns(train, features), _stack_columns(test, features)
        feature = STACKED
    else:
        feature = features[0]
    return train, test, feature, tuple(features)


def _labels(cfg: Config, train: datasets.Dataset, test: datasets.Dataset,
            vocab: Vocabulary | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer labels of both splits and the number of classes: a ClassLabel's own
    indices, a text task's next characters in the input vocabulary, other strings in
    sorted order, integers as they are."""
    label = cfg.label_column
    kind = train.features[label]

    def column(ds: datasets.Dataset) -> np.ndarray:
        return ds.with_format("arrow")[:][label].to_numpy(zero_copy_only=False)

    if hasattr(kind, "num_classes"):
        return column(train).astype(np.int64), column(test).astype(np.int64), kind.num_classes
    if vocab is not None:
        return (vocab.encode_chars(column(train), "label-column"),
                vocab.encode_chars(column(test), "label-column"), len(vocab))
    if _is_text(kind):
        names = np.unique(np.concatenate([column(train), column(test)]).astype(str))
        return (np.searchsorted(names, column(train).astype(str)).astype(np.int64),
                np.searchsorted(names, column(test).astype(str)).astype(np.int64), len(names))
    y_tr, y_te = column(train).astype(np.int64), column(test).astype(np.int64)
    if len(y_tr) and min(y_tr.min(), y_te.min() if len(y_te) else 0) < 0:
        raise ConfigError("label-column", label, "integer labels must be >= 0")
    return y_tr, y_te, int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1


STACKED = "__features__"  # the column of stacked tabular features


def _is_scalar_number(feature: Any) -> bool:
    import datasets

    return isinstance(feature, datasets.Value) and (
        feature.dtype.startswith(("int", "uint", "float")) or feature.dtype == "bool")


def _feature_columns(cfg: Config, train: datasets.Dataset) -> list[str]:
    """The columns the features come from (one, or several numeric ones to stack)."""
    columns = train.column_names
    have = ", ".join(repr(c) for c in columns)
    if cfg.feature_columns:
        chosen = [c.strip() for c in cfg.feature_columns.split(",") if c.strip()]
        for c in chosen:
            if c not in columns:
                raise ConfigError("feature-columns", cfg.feature_columns, f"{cfg.dataset} "
                                  f"has no column {c!r}; its columns are {have}")
            if not _is_scalar_number(train.features[c]):
                raise ConfigError("feature-columns", cfg.feature_columns, f"column {c!r} "
                                  f"is {train.features[c]}, not a number")
        return chosen
    first = _check_columns(cfg, columns)
    if cfg.feature_column or not _is_scalar_number(train.features[first]):
        return [first]  # named, or an image / vector column
    skip = {cfg.label_column, "client_id"}
    if cfg.partitioner in ID_PARTITIONERS:
        skip.add(cfg.partition_by)
    numeric = [c for c in columns if c not in skip and _is_scalar_number(train.features[c])]
    other = [c for c in columns if c not in skip and c not in numeric]
    if other:
        log.warning("%s: using the numeric columns as features; not using %s",
                    cfg.dataset, ", ".join(repr(c) for c in other))
    return numeric


def _stack_columns(ds: datasets.Dataset, columns: list[str]) -> datasets.Dataset:
    """``ds`` with the scalar ``columns`` replaced by one float32 vector column."""
    table = ds.with_format("arrow")[:]
    flat = np.stack([np.asarray(table[c].to_numpy(zero_copy_only=False), np.float32)
                     for c in columns], axis=1)
    vectors = pa_fixed_list(flat)
    return ds.remove_columns(columns).add_column(STACKED, vectors)


def pa_fixed_list(matrix: np.ndarray) -> Any:
    """A (rows, k) float32 matrix as an Arrow fixed-size-list column (no per-row Python)."""
    import pyarrow as pa

    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])


DATA_FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
                      ".parquet": "parquet", ".txt": "text"}
LABEL_PARTITIONERS = ("dirichlet", "pathological", "shard")  # they split on partition-by
ID_PARTITIONERS = (*LABEL_PARTITIONERS, "natural-id")  # partition-by is not a feature


def _check_columns(cfg: Config, columns: list[str]) -> str:
    """The feature column; ConfigError if a configured column is not in the data."""
    have = ", ".join(repr(c) for c in columns)
    named = [("label-column", cfg.label_column), ("feature-column", cfg.feature_column)]
    if cfg.partitioner in ID_PARTITIONERS:
        named.append(("partition-by", cfg.partition_by))
    for key, column in named:
        if column and column not in columns:
            raise ConfigError(key, column, f"{cfg.dataset} has no such column; its columns "
                              f"are {have}")
    not_features = {cfg.label_column, "client_id"}
    if cfg.partitioner == "natural-id":
        not_features.add(cfg.partition_by)
    feature = cfg.feature_column or next((c for c in columns if c not in not_features), None)
    if feature is None:
        raise ConfigError("feature-column", cfg.feature_column, f"{cfg.dataset} has no column "
                          f"besides the label column {cfg.label_column!r}: {have}")
    return feature


def standardize(train_x: Any, test_x: Any) -> tuple[Any, Any]:
    """Both sets scaled by the training set's mean and std: per feature for vectors, per
    channel for (C, H, W) images. Constant features stay at 0. Stored integers
    (:class:`QuantizedArray`) stay stored: the scaling is folded into their affine map."""
    if isinstance(train_x, QuantizedArray):
        mean, std = _channel_stats(train_x)
        scale = (1.0 / std).astype(np.float32)
        shift = (-mean / std).astype(np.float32)
        return train_x.affine(scale, shift), test_x.affine(scale, shift)
    axes = (0,) if train_x.ndim == 2 else (0, *range(2, train_x.ndim))
    mean = train_x.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = train_x.std(axis=axes, keepdims=True, dtype=np.float64)
    std[std == 0] = 1.0
    return ((train_x - mean) / std).astype(np.float32), ((test_x - mean) / std).astype(np.float32)


def _channel_stats(q: QuantizedArray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (float64, shape (C, 1, 1) for images, (L,) for sequences) of the
    values ``q`` stands for, from a histogram of its stored integers per channel: exact,
    and no float copy of the data."""
    raw = q.raw
    channels = raw.shape[1] if raw.ndim >= 2 else 1
    per = raw.reshape(len(raw), channels, -1) if len(raw) else np.zeros((0, channels, 1),
                                                                       raw.dtype)
    levels = int(per.max()) + 1 if per.size else 1
    mean = np.zeros(channels)
    std = np.ones(channels)
    scale = np.broadcast_to(q.scale.reshape(-1), (channels,)) if q.scale.size in (1, channels) \
        else None
    shift = np.broadcast_to(q.shift.reshape(-1), (channels,)) if q.shift.size in (1, channels) \
        else None
    if scale is None or shift is None or raw.dtype.kind not in "ui":
        raise ValueError("standardize: stored features need a scalar or per-channel scale")
    for c in range(channels):
        counts = np.bincount(per[:, c].ravel(), minlength=levels).astype(np.float64)
        values = np.arange(levels) * float(scale[c]) + float(shift[c])
        total = counts.sum()
        if total:
            mean[c] = (counts * values).sum() / total
            var = (counts * (values - mean[c]) ** 2).sum() / total
            std[c] = np.sqrt(var) if var > 0 else 1.0
    shape = (channels,) + (1,) * (raw.ndim - 2)
    return mean.reshape(shape), std.reshape(shape)


def _partition_rows(train: datasets.Dataset, partitioner: Any, n: int) -> list[np.ndarray]:
    """Row indices of every partition, as the partitioner assigns them.

    ``load_partition(i)`` per client costs milliseconds each (10,000 clients: minutes), so
    the assignment the partitioner computes for all clients on its first call is read
    directly when it exposes one, and checked against ``load_partition`` on two clients.
    The Arrow format makes the partitioners' own column reads fast.
    """
    from flwr_datasets.partitioner import IidPartitioner

    train = train.add_column("_row", np.arange(len(train))).with_format("arrow")
    partitioner.dataset = train

    def load(i: int) -> np.ndarray:
        return np.asarray(partitioner.load_partition(i)["_row"], dtype=np.int64)

    rows: list[np.ndarray] | None = None
    first = load(0)  # makes the partitioner assign every partition
    mapping = getattr(partitioner, "_partition_id_to_indices", None)
    if isinstance(mapping, dict) and len(mapping) == n:
        rows = [np.asarray(mapping[i], dtype=np.int64) for i in range(n)]
    elif isinstance(partitioner, IidPartitioner):  # datasets' contiguous shards
        div, mod = divmod(len(train), n)
        starts = [div * i + min(i, mod) for i in range(n + 1)]
        rows = [np.arange(starts[i], starts[i + 1], dtype=np.int64) for i in range(n)]
    if rows is None or not (np.array_equal(rows[0], first)
                            and np.array_equal(rows[n - 1], load(n - 1))):
        return [first] + [load(i) for i in range(1, n)]
    return rows


def _data_key(cfg: Config) -> tuple[Any, ...]:
    return tuple(cfg[k] for k in DATA_KEYS)


def load_federation(cfg: Config) -> FederatedData:
    """The partitioned data for ``cfg``, built once per process (once per ``flowerbed
    run``, and a built-in dataset's once per config: :mod:`flowerbed.clients.data_cache`)."""
    return _load_cached(_data_key(cfg), cfg)


@functools.lru_cache(maxsize=4)
def _load_cached(key: tuple[Any, ...], cfg: Config) -> FederatedData:
    from flowerbed.clients import data_cache

    data = data_cache.load(key)
    if data is not None:
        _log_sizes(cfg, data, " (built by the CLI)")
        return data
    kept = cfg.dataset in OFFLINE_DATASETS  # a function of the config: kept between runs
    data = data_cache.load_kept(key) if kept else None
    if data is not None:
        _log_sizes(cfg, data, f" (as built by an earlier run, kept in "
                              f"{data_cache.kept_folder()})")
    else:
        data = _build(cfg)
        if kept:
            data_cache.keep(key, data)
    data_cache.store(key, data)
    return data


def _build(cfg: Config) -> FederatedData:
    label = cfg.label_column
    vocab: Vocabulary | None = None
    if cfg.dataset.startswith("hf:"):
        train, test, feature, columns = _hf(cfg)
        if _is_text(train.features[feature]):  # next-character prediction (LEAF)
            def text(ds: datasets.Dataset, col: str) -> np.ndarray:
                return ds.with_format("arrow")[:][col].to_numpy(zero_copy_only=False)

            cols = [text(ds, c) for ds in (train, test) for c in (feature, label)
                    if _is_text(ds.features[c])]
            vocab = Vocabulary.covering(*cols)
        shape, classes = (), 0
    else:
        train, test, shape, classes = OFFLINE_BUILDERS[cfg.dataset](cfg)
        feature, columns = "x", ()
    try:
        partitioner = make_partitioner(cfg, feature)
        parts = _partition_rows(train, partitioner, cfg.num_clients)
    except (ValueError, ZeroDivisionError) as err:  # Flower Datasets' checks: a config mistake
        key = "min-partition-size" if cfg.min_partition_size > 0 else "partitioner"
        raise ConfigError(key, cfg[key], f"Flower Datasets cannot partition {cfg.dataset} "
                          f"over {cfg.num_clients} clients this way: {err}") from None
    try:
        x_all, test_x = _to_array(train, feature, vocab), _to_array(test, feature, vocab)
    except ValueError as err:  # e.g. characters outside the vocabulary
        raise ConfigError("feature-column", feature, str(err)) from None
    if cfg.dataset.startswith("hf:"):
        y_all, test_y, classes = _labels(cfg, train, test, vocab)
        shape = tuple(x_all.shape[1:]) or (1,)
        if len(shape) == 2 and vocab is None:  # a 2-D array a row: one channel
            shape = (1, *shape)
    else:
        y_all = np.asarray(train.with_format("numpy")[:][label], dtype=np.int64)
        test_y = np.asarray(test.with_format("numpy")[:][label], dtype=np.int64)
    x_all = x_all.reshape(len(train), *shape)
    test_x = test_x.reshape(len(test), *shape)
    if cfg.normalize == "standardize":
        if vocab is not None:
            raise ConfigError("normalize", cfg.normalize, "standardize scales numeric and "
                              "image features; this dataset's features are token ids")
        x_all, test_x = standardize(x_all, test_x)
    # clients' rows stored contiguously: x[i] and y[i] are views into x_flat and y_flat
    order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    x_flat, y_flat = x_all[order], y_all[order]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in parts])]).astype(np.int64)
    data = FederatedData(x=[x_flat[offsets[i]:offsets[i + 1]] for i in range(len(parts))],
                         y=[y_flat[offsets[i]:offsets[i + 1]] for i in range(len(parts))],
                         test_x=test_x, test_y=test_y, num_classes=int(classes),
                         input_shape=tuple(int(s) for s in shape), x_flat=x_flat,
                         y_flat=y_flat, offsets=offsets,
                         client_clusters=getattr(partitioner, "cluster_of", None),
                         test_clusters=(partitioner.clusters(test_x)
                                        if hasattr(partitioner, "clusters") else None),
                         feature_columns=tuple(columns))
    empty = [i for i, v in enumerate(data.y) if len(v) == 0]
    if empty:
        raise ConfigError("partitioner", cfg.partitioner,
                          f"left {len(empty)} of {cfg.num_clients} clients with no data "
                          f"(first: {empty[:5]}); use fewer clients, a larger alpha or "
                          "min-partition-size")
    _log_sizes(cfg, data)
    return data


def _log_sizes(cfg: Config, data: FederatedData, source: str = "") -> None:
    log.info("data %s: %d clients, %d train / %d test examples, %d classes%s", cfg.dataset,
             data.num_clients, int(data.sizes.sum()), len(data.test_y), data.num_classes,
             source)


# --- validation ------------------------------------------------------------------------------

OFFLINE_SIZES = {"digits": 1797}


def check_data_config(cfg: Config) -> None:
    """Reject dataset/partitioner combinations that cannot work, before any training."""
    ds = cfg.dataset
    if not ds.startswith("hf:") and ds not in OFFLINE_DATASETS:
        raise ConfigError("dataset", ds, "must be one of " + ", ".join(OFFLINE_DATASETS)
                          + " or 'hf:<hub name or local path>'")
    if ds == "hf:":
        raise ConfigError("dataset", ds, "'hf:' needs a dataset name, e.g. 'hf:ylecun/mnist'")
    path = ds.removeprefix("hf:")
    if ds.startswith("hf:") and path.startswith(("/", "./", "../", "~")) and not (
            Path(path).expanduser().exists()):
        raise ConfigError("dataset", ds, f"no such local folder or file: {path}")
    if cfg.partitioner not in PARTITIONERS:
        raise ConfigError("partitioner", cfg.partitioner,
                          "must be one of " + ", ".join(PARTITIONERS))
    if cfg.partitioner == "natural-id" and not ds.startswith("hf:") and ds not in (
            "synthetic", "quadratic"):
        raise ConfigError("partitioner", cfg.partitioner, "natural-id needs a dataset with "
                          "client ids (synthetic, quadratic) or an hf: dataset and its id "
                          "column as partition-by (e.g. writer_id)")
    if ds in OFFLINE_SIZES:
        n_train = int(OFFLINE_SIZES[ds] * (1 - cfg.test_fraction))
        if cfg.num_clients > n_train:
            raise ConfigError("num-clients", cfg.num_clients,
                              f"more clients than the {n_train} training examples of {ds}")
        if (cfg.partitioner == "shard"
                and cfg.num_clients * cfg.shards_per_partition > n_train):
            raise ConfigError("shards-per-partition", cfg.shards_per_partition,
                              f"{cfg.num_clients} clients x {cfg.shards_per_partition} shards "
                              f"is more shards than the {n_train} training examples of {ds}")
    if not ds.startswith("hf:") and cfg.test_fraction <= 0:
        raise ConfigError("test-fraction", cfg.test_fraction,
                          f"{ds} needs a held-out share > 0 (the server's test set)")
