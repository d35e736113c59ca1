"""The run-config keys of the client side: data, partitions, model, local training."""

from __future__ import annotations

from flowerbed.clients.device import check_device
from flowerbed.core.params import (
    Key,
    at_least,
    int_list,
    non_negative,
    one_of,
    positive,
    unit_interval_open_right,
)

DATA_KEYS: tuple[Key, ...] = (
    Key("dataset", "digits", "offline name (digits, synthetic, ...) or 'hf:<hub name or path>'"),
    Key("feature-column", "", "HF datasets: the feature column ('' = auto: an image or "
        "vector column, or else every numeric column)"),
    Key("feature-columns", "", "HF datasets: comma-separated numeric columns used together "
        "as the features (tabular data; '' = auto)"),
    Key("label-column", "label", "HF datasets: the label column"),
    Key("normalize", "none", "features scaled with the training split's statistics: 'none' or "
        "'standardize' (per feature; images: per channel)", one_of("none", "standardize")),
    Key("test-fraction", 0.2, "held-out share of the data for centralized evaluation",
        unit_interval_open_right),
    Key("partitioner", "dirichlet", "Flower Datasets partitioner (see flowerbed.clients.data)"),
    Key("partitioner-alpha", 0.5, "Dirichlet concentration (smaller = more non-IID)", positive),
    Key("partition-by", "label", "column the label-based partitioners split on; natural-id: "
        "the id column of an hf: dataset (e.g. writer_id), one client per id"),
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
)

MODEL_KEYS: tuple[Key, ...] = (
    Key("model", "mlp", "registry name (logreg, mlp, cnn, femnist-cnn, lenet5, resnet18-gn, "
        "char-lstm) or 'pkg.mod:factory'"),
    Key("hidden-sizes", "64", "MLP hidden layer sizes, comma-separated", int_list),
)

TRAINING_KEYS: tuple[Key, ...] = (
    Key("lr", 0.1, "client learning rate eta", positive),
    Key("momentum", 0.0, "client SGD momentum", unit_interval_open_right),
    Key("weight-decay", 0.0, "client SGD weight decay", non_negative),
    Key("local-epochs", 5, "local epochs (used when local-steps = 0)", positive),
    Key("local-steps", 0, "local SGD steps I per round (0 = use local-epochs)", non_negative),
    Key("batch-size", 8, "local mini-batch size", positive),
    Key("proximal-mu", 0.0, "FedProx mu: (mu/2)||x_i - x||^2 added to the local loss",
        non_negative),
    Key("vmap", True, "train a worker's clients batched with torch.func.vmap"),
    Key("vmap-max-params", 250_000, "vmap on a CPU: models with more parameters than this "
        "train one client at a time, which is faster there (same results; 0 = always batch; "
        "an accelerator always batches)", non_negative),
    Key("vmap-memory-mb", 4096, "vmap: clients trained in one call are chunked so that their "
        "stacked parameters, gradients and optimiser state fit this many MiB (0 = one call "
        "for all)", non_negative),
    Key("augment", "none", "training-batch augmentation: 'none' or 'crop-flip' (CIFAR's pad 4, "
        "random 32x32 crop, horizontal flip; images only), drawn per client", one_of(
            "none", "crop-flip")),
    Key("device", "auto", "where workers train and the server evaluates: 'auto' (a visible "
        "GPU, else the CPU), 'cpu', 'cuda' or 'cuda:N'", check_device),
)

KEYS: tuple[Key, ...] = DATA_KEYS + MODEL_KEYS + TRAINING_KEYS

__all__ = ["DATA_KEYS", "KEYS", "MODEL_KEYS", "TRAINING_KEYS"]
