"""The README's decentralized plug-in example runs by import path and does what it says."""

from __future__ import annotations

from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from tests.conftest import tiny


def test_random_pairs_example_by_import_path() -> None:
    cfg = parse_run_config(tiny(strategy="examples.my_decentralized:RandomPairs",
                                num_clients=9, num_server_rounds=4, lr=0.3))
    result = run_experiment(cfg)
    model_bytes = result.strategy.model_bytes
    for rec in result.records[1:]:
        assert rec["round_messages"] == 8  # 4 pairs, one message each way; node left over
        assert rec["round_bytes_p2p"] == 8 * model_bytes
    assert result.records[-1]["test_accuracy"] > result.records[0]["test_accuracy"] + 0.2
    assert result.records[-1]["consensus_distance"] > 0
