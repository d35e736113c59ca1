"""The README's plug-in example runs by import path and is robust to an outlier."""

import numpy as np

from flowerbed.strategies.base import ClientUpdate
from flowerbed.strategies.registry import strategy_class


def test_median_ignores_one_outlier():
    cls = strategy_class("examples.my_strategy:FedMedian")
    x = {"w": np.zeros(2, np.float32)}
    ups = [ClientUpdate(i, {"w": np.array(v, np.float32)}, 1.0, {})
           for i, v in enumerate([[1.0, 2.0], [2.0, 3.0], [1e6, -1e6]])]
    np.testing.assert_allclose(cls().aggregate(1, x, ups)["w"], [2.0, 2.0])


def test_runs_by_import_path(run):
    res = run(strategy="examples.my_strategy:FedMedian", num_clients=10,
              num_server_rounds=4, fraction_train=1.0, model="logreg", local_steps=5,
              partitioner="iid")
    assert type(res.strategy).__name__ == "FedMedian"
    assert res.summary["status"] == "completed"
    acc = [r["test_accuracy"] for r in res.records]
    assert acc[-1] > acc[0] + 0.3  # it learns
