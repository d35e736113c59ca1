"""Clients of input-space clusters: the data split of Paris / Decentralized Diffusion Models.

Paris clusters its images by k-means on embeddings into E semantically coherent partitions,
trains one expert per cluster in isolation, and a router learns to predict an input's
cluster. Here the examples are clustered by k-means on their standardised features (no
pretrained embedding is available offline; for digits the raw 8x8 pixels already separate
well), the clients are spread over the clusters in proportion to the clusters' sizes (at
least one each), and each cluster's examples are shuffled and split evenly among its
clients. So every client holds data of exactly one cluster, and ``cluster_of`` says which.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr_datasets.partitioner import Partitioner

from flowerbed.core.rng import Stream, stream


def _spread(sizes: np.ndarray, num_clients: int) -> np.ndarray:
    """Clients per cluster: proportional to ``sizes`` (largest remainders), >= 1 each."""
    e = len(sizes)
    share = sizes / sizes.sum() * (num_clients - e)
    count = np.floor(share).astype(np.int64)
    rest = num_clients - e - int(count.sum())
    count[np.argsort(-(share - count), kind="stable")[:rest]] += 1
    return count + 1


class KMeansPartitioner(Partitioner):
    def __init__(self, num_partitions: int, num_clusters: int, feature: str,
                 seed: int = 0) -> None:
        super().__init__()
        if num_clusters > num_partitions:
            raise ValueError(f"{num_clusters} clusters need at least as many clients "
                             f"(got {num_partitions})")
        self._n, self._e, self._feature, self._seed = num_partitions, num_clusters, feature, seed
        self._partition_id_to_indices: dict[int, list[int]] = {}
        self.cluster_of = np.zeros(0, dtype=np.int64)  # client -> cluster, once assigned

    @property
    def num_partitions(self) -> int:
        return self._n

    def _assign(self) -> None:
        from sklearn.cluster import KMeans

        feats = np.asarray(self.dataset.with_format("numpy")[:][self._feature], np.float64)
        feats = feats.reshape(len(feats), -1)
        self._mean, self._std = feats.mean(axis=0), np.maximum(feats.std(axis=0), 1e-12)
        self._kmeans = KMeans(n_clusters=self._e, n_init=10, random_state=self._seed)
        labels = self._kmeans.fit_predict((feats - self._mean) / self._std)
        sizes = np.bincount(labels, minlength=self._e)
        per_cluster = _spread(sizes, self._n)
        rng = stream(self._seed, Stream.KMEANS_PARTITIONER)
        cluster_of, client = [], 0
        for c in range(self._e):
            rows = rng.permutation(np.flatnonzero(labels == c))
            for part in np.array_split(rows, per_cluster[c]):
                self._partition_id_to_indices[client] = sorted(part.tolist())
                cluster_of.append(c)
                client += 1
        self.cluster_of = np.asarray(cluster_of, dtype=np.int64)

    def clusters(self, features: np.ndarray) -> np.ndarray:
        """The cluster of each example (nearest centre), e.g. of the server's test set."""
        feats = np.asarray(features, np.float64).reshape(len(features), -1)
        return self._kmeans.predict((feats - self._mean) / self._std).astype(np.int64)

    def load_partition(self, partition_id: int) -> Any:
        if not self._partition_id_to_indices:
            self._assign()
        return self.dataset.select(self._partition_id_to_indices[partition_id])


__all__ = ["KMeansPartitioner"]
