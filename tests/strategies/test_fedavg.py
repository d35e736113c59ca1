"""FedAvg: the weighted mean by hand, the server learning rate, FedProx's proximal term."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from flowerbed.clients.data import load_federation
from flowerbed.clients.models import build_model
from flowerbed.clients.training import TrainParams, local_train
from flowerbed.core.arrays import module_state, to_record
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import ensure_task_identity
from flowerbed.strategies.base import ClientUpdate
from flowerbed.strategies.contract import Services
from flowerbed.strategies.fedavg import FedAvg

X = {"w": np.array([1.0, 2.0], np.float32)}


def fedavg(num_nodes: int = 4, **params) -> FedAvg:
    return FedAvg(FedAvg.Params(**params), Services(num_nodes=num_nodes, seed=0))


UPDATES = [ClientUpdate(0, {"w": np.array([3.0, 2.0], np.float32)}, 1.0, {}),
           ClientUpdate(1, {"w": np.array([1.0, 6.0], np.float32)}, 3.0, {})]


def test_weighted_mean_by_num_examples():
    # (1 * (3, 2) + 3 * (1, 6)) / 4 = (1.5, 5)
    np.testing.assert_allclose(fedavg().aggregate(1, X, UPDATES)["w"], [1.5, 5.0])


def test_server_learning_rate():
    # x + eta_g (avg - x) = (1, 2) + 0.5 * ((1.5, 5) - (1, 2)) = (1.25, 3.5)
    np.testing.assert_allclose(fedavg(server_lr=0.5).aggregate(1, X, UPDATES)["w"],
                               [1.25, 3.5])
    np.testing.assert_allclose(fedavg(server_lr=2.0).aggregate(1, X, UPDATES)["w"], [2.0, 8.0])


class Grid:
    def get_node_ids(self):
        return [0, 1, 2, 3]


def test_replies_through_aggregate_train_skip_bad_updates():
    ensure_task_identity()
    s = fedavg(fraction_train=1.0)
    msgs = list(s.configure_train(1, to_record(X), ConfigRecord(), Grid()))
    assert [m.metadata.dst_node_id for m in msgs] == [0, 1, 2, 3]
    assert msgs[0].content["config"]["server-round"] == 1

    def reply(msg, w, n):
        return Message(RecordDict({"arrays": to_record({"w": np.array(w, np.float32)}),
                                   "metrics": MetricRecord({"num-examples": n,
                                                            "train_loss": 1.0})}),
                       reply_to=msg)

    replies = [reply(msgs[0], [3.0, 2.0], 1.0), reply(msgs[1], [1.0, 6.0], 3.0),
               reply(msgs[2], [np.nan, 0.0], 100.0),           # non-finite: rejected
               reply(msgs[3], [1.0, 2.0, 3.0], 100.0)]          # wrong shape: rejected
    arrays, metrics = s.aggregate_train(1, replies)
    assert metrics["train_loss"] == pytest.approx(1.0)
    np.testing.assert_allclose(arrays["w"].numpy(), [1.5, 5.0])
    assert s.round_metrics(1)["rejected_updates"] == 2


def test_fedprox_term_changes_local_training_as_predicted():
    # The proximal term (mu/2)||x - x_g||^2 adds mu (x - x_g) to the gradient. At the first
    # step x = x_g, so it changes nothing; at the second step it moves the iterate by
    # exactly -lr mu (x_1 - x_g) relative to plain SGD from the same x_1.
    cfg = parse_run_config({"num-clients": 4, "model": "logreg"})
    data = load_federation(cfg)
    model = build_model(cfg, data.input_shape, data.num_classes)
    x_g = module_state(model)
    x, y = data.x[0], data.y[0]
    lr, mu = 0.3, 0.7

    def train(steps, prox):
        p = TrainParams(lr=lr, local_steps=steps, batch_size=10_000, proximal_mu=prox)
        return local_train(model, x_g, x, y, p, np.random.default_rng(0))[0]

    x1, x1_prox = train(1, 0.0), train(1, mu)
    for k in x_g:
        np.testing.assert_array_equal(x1[k], x1_prox[k])
    x2, x2_prox = train(2, 0.0), train(2, mu)
    for k in x_g:
        np.testing.assert_allclose(x2_prox[k] - x2[k], -lr * mu * (x1[k] - x_g[k]), atol=1e-6)
    assert np.abs(x1["1.weight"] - x_g["1.weight"]).max() > 1e-3  # the check is not vacuous
