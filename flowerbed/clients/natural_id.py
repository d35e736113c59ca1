"""Natural-id partitioning on any column, by one vectorised group-by.

A federated dataset's natural clients are the values of one column: FEMNIST's
``writer_id`` (LEAF: one client per writer), Shakespeare's ``character_id`` (one per
play and character), Synthetic's ``client_id``. Flower Datasets' ``NaturalIdPartitioner``
filters the dataset once per id and was reported to take hours at FEMNIST's size
(~3,600 writers, ~800,000 rows; flwr PR #3276). Here the column is dictionary-encoded
by Arrow once and the rows are grouped by a stable sort of the codes: seconds.

Partition ``i`` is the ``i``-th id in sorted order, as in Flower's partitioner
(``sorted(Dataset.unique(...))``), and its rows keep the dataset's order, so both give
the same partitions. With fewer clients than ids (``num-clients`` < ids) a seeded sample
of the ids is kept, as LEAF subsamples users (its ``--sf`` option), in sorted order;
rows of the other ids are unused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flowerbed.core.errors import ConfigError


def group_rows(codes: np.ndarray) -> list[np.ndarray]:
    """Row indices of every code 0..k-1 (codes: int array, one per row), rows in order."""
    k = int(codes.max()) + 1 if len(codes) else 0
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=k))])
    return [order[bounds[i]:bounds[i + 1]].astype(np.int64) for i in range(k)]


def id_codes(column: Any) -> tuple[np.ndarray, list[Any]]:
    """Every row's id as its rank among the sorted distinct ids, and those ids."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if col.null_count:
        raise ValueError(f"the id column has {col.null_count} missing values")
    encoded = col.dictionary_encode()  # dictionary in order of first appearance
    order = pc.array_sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)]
    return codes, encoded.dictionary.take(pa.array(order)).to_pylist()


class NaturalIdGrouping:
    """A Flower-Datasets-style partitioner (``dataset`` + ``load_partition``)."""

    def __init__(self, num_partitions: int, partition_by: str, seed: int) -> None:
        self.num_partitions = num_partitions
        self.partition_by = partition_by
        self.seed = seed
        self._dataset: Any = None
        self._partition_id_to_indices: dict[int, np.ndarray] = {}
        self.ids: list[Any] = []  # the id of every partition

    @property
    def dataset(self) -> Any:
        return self._dataset

    @dataset.setter
    def dataset(self, value: Any) -> None:
        self._dataset = value
        self._partition_id_to_indices = {}

    def _assign(self) -> None:
        table = self._dataset.with_format("arrow")[:]
        if self.partition_by not in table.column_names:
            raise ConfigError("partition-by", self.partition_by, "natural-id: no such column; "
                              f"the columns are {', '.join(map(repr, table.column_names))}")
        codes, values = id_codes(table[self.partition_by])
        n, k = self.num_partitions, len(values)
        if n > k:
            raise ConfigError("num-clients", n, f"natural-id: column {self.partition_by!r} "
                              f"has {k} distinct ids; set num-clients <= {k}")
        groups = group_rows(codes)
        keep = np.arange(k) if n == k else np.sort(
            np.random.default_rng(self.seed).choice(k, size=n, replace=False))
        self.ids = [values[int(i)] for i in keep]
        self._partition_id_to_indices = {p: groups[int(i)] for p, i in enumerate(keep)}

    def load_partition(self, partition_id: int) -> Any:
        if not self._partition_id_to_indices:
            self._assign()
        return self._dataset.select(self._partition_id_to_indices[partition_id])


__all__ = ["NaturalIdGrouping", "group_rows", "id_codes"]
