"""The communication ledger counts what a real network would carry."""

from __future__ import annotations

import numpy as np

from flowerbed.clients.data import load_federation
from flowerbed.clients.models import build_model
from flowerbed.core.arrays import module_state, record_nbytes, to_record
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.simulation.ledger import SERVER, Ledger
from tests.conftest import tiny


def test_record_nbytes_is_the_array_size() -> None:
    rec = to_record({"a": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float64)})
    assert record_nbytes(rec) == 3 * 4 * 4 + 5 * 8


def test_round_and_cumulative_totals_and_per_node_maxima() -> None:
    led = Ledger()
    led.begin_round(1)
    led.record(SERVER, 0, 100)
    led.record(SERVER, 1, 100)
    led.record(0, SERVER, 40)
    led.record(0, 1, 7, count=3)  # peer messages
    r1 = led.round_summary(1)
    assert r1["messages"] == 6
    assert (r1["bytes_down"], r1["bytes_up"], r1["bytes_p2p"]) == (200, 40, 21)
    assert r1["max_node_bytes_sent"] == 61  # node 0: 40 up + 21 to peer
    assert r1["max_node_bytes_received"] == 121  # node 1: 100 down + 21 from peer
    assert r1["max_node_messages_sent"] == 4
    led.begin_round(2)
    led.record(1, SERVER, 10)
    assert led.cumulative() == {"cum_messages": 7, "cum_bytes_down": 200, "cum_bytes_up": 50,
                                "cum_bytes_p2p": 21}
    restored = Ledger()
    restored.load_state_dict(led.state_dict())
    assert restored.round_summary(1) == r1 and restored.cumulative() == led.cumulative()


def test_fedavg_run_counts_one_model_per_client_per_direction() -> None:
    cfg = parse_run_config(tiny(num_clients=10, num_server_rounds=3, fraction_train=0.5))
    result = run_experiment(cfg)
    data = load_federation(cfg)
    model_bytes = record_nbytes(to_record(module_state(
        build_model(cfg, data.input_shape, data.num_classes))))
    assert model_bytes == (64 * 64 + 64 + 64 * 10 + 10) * 4
    for rec in result.records[1:]:
        assert rec["participants"] == 5
        assert rec["round_messages"] == 10
        assert rec["round_bytes_down"] == rec["round_bytes_up"] == 5 * model_bytes
        assert rec["round_max_node_bytes_sent"] == model_bytes
    assert result.summary["totals"]["cum_bytes_down"] == 15 * model_bytes
