"""The worker's ``target-label`` hook: a client trains on one label for all its inputs."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict

from flowerbed.clients.data import load_federation
from flowerbed.clients.models import build_model
from flowerbed.clients.training import TrainParams, client_rng, local_train
from flowerbed.clients.worker import handle, training_labels
from flowerbed.core.arrays import from_record, module_state, to_record
from flowerbed.run.config import parse_run_config


def test_training_labels():
    y = np.array([3, 1, 4])
    np.testing.assert_array_equal(training_labels(y, ConfigRecord({"target-label": 2})),
                                  [2, 2, 2])
    assert training_labels(y, ConfigRecord({})) is y


@pytest.mark.parametrize("vmap", [False, True])  # every training path must honour it
def test_worker_trains_on_the_target_label(vmap):
    cfg = parse_run_config({"num-clients": 5, "model": "logreg", "local-steps": 2,
                            "vmap": vmap})
    data = load_federation(cfg)
    model = build_model(cfg, data.input_shape, 3)  # a 3-way router, e.g.
    state = module_state(model)
    conf = ConfigRecord({"server-round": 1, "target-label": 2})
    [(_, reply)] = handle("train", [(4, RecordDict({"arrays": to_record(state),
                                                      "config": conf}))], cfg)
    got = from_record(reply["arrays"])
    want, _ = local_train(model, state, data.x[4], np.full_like(data.y[4], 2),
                          TrainParams.from_config(cfg), client_rng(cfg.seed, 1, 4))
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
