"""Virtual time, checked on the course exercise: a 1 Gbit/s down / 100 Mbit/s up server
link, an 85,098-parameter float32 model and a 60 s budget serve 22,033 clients by download
and 2,203 by upload; a 60 s local step adds exactly 60 s to a round."""

from __future__ import annotations

import numpy as np
import pytest

from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.simulation.clock import Clock, DeviceProfiles, local_steps
from flowerbed.simulation.ledger import SERVER, RoundTraffic
from flowerbed.tools import costs
from tests.conftest import tiny

MODEL_BYTES = 85_098 * 4


def exercise(**over):
    return parse_run_config(tiny(**{"server-down-mbps": 1000.0, "server-up-mbps": 100.0,
                                    "num-clients": 10, **over}))


def traffic(clients: int, down: bool, up: bool) -> RoundTraffic:
    """A FedAvg round with ``clients`` clients: the model out and/or back."""
    t = RoundTraffic()
    for k in range(clients):
        if down:
            t.sent[SERVER] += MODEL_BYTES
            t.received[k] += MODEL_BYTES
        if up:
            t.sent[k] += MODEL_BYTES
            t.received[SERVER] += MODEL_BYTES
    return t


def test_the_server_link_is_shared_as_in_the_exercise() -> None:
    clock = Clock(exercise(), 25_000)  # profiles for 25,000 clients
    limits = costs.server_capacity(MODEL_BYTES, 1e9, 1e8, 60.0)  # the closed form
    assert (limits.n_download, limits.n_upload) == (22_033, 2_203)
    assert clock.round_seconds(traffic(22_033, True, False), {}) <= 60.0
    assert clock.round_seconds(traffic(22_034, True, False), {}) > 60.0
    assert clock.round_seconds(traffic(2_203, False, True), {}) <= 60.0
    assert clock.round_seconds(traffic(2_204, False, True), {}) > 60.0
    # n b / B exactly: 2,203 x 2,723,136 bits / 1e8 bit/s
    assert clock.round_seconds(traffic(2_203, False, True), {}) == pytest.approx(
        2_203 * 85_098 * 32 / 1e8, rel=1e-12)


def test_a_60_s_local_step_adds_exactly_60_s() -> None:
    t = traffic(100, True, True)
    without = Clock(exercise(), 100).round_seconds(t, {k: 1 for k in range(100)})
    with_compute = Clock(exercise(**{"step-seconds": 60.0}), 100).round_seconds(
        t, {k: 1 for k in range(100)})
    assert with_compute - without == pytest.approx(60.0, abs=1e-9)


def test_the_slowest_client_sets_the_pace() -> None:
    cfg = exercise(**{"client-up-mbps": 10.0, "bandwidth-spread": 0.5, "num-clients": 50,
                      "step-seconds": 1.0, "speed-spread": 0.3})
    clock = Clock(cfg, 50)
    p = clock.profiles
    t = traffic(50, True, True)
    steps = {k: 3 for k in range(50)}
    upload = max(50 * MODEL_BYTES * 8 / 1e8, max(MODEL_BYTES * 8 / p.up_bps))
    download = 50 * MODEL_BYTES * 8 / 1e9  # client downlinks unlimited
    compute = max(3 * 1.0 / p.speed)
    assert clock.round_seconds(t, steps) == pytest.approx(download + compute + upload)
    again = DeviceProfiles.draw(cfg, 50)  # seeded: the same devices every time
    np.testing.assert_array_equal(again.up_bps, p.up_bps)
    assert np.median(p.up_bps) == pytest.approx(1e7, rel=0.3) and p.up_bps.std() > 0


def test_local_steps_follow_the_training_keys() -> None:
    sizes = np.array([10, 17, 3])
    cfg = parse_run_config(tiny(local_epochs=2, batch_size=8))
    assert local_steps(cfg, sizes, [0, 1, 2]) == {0: 4, 1: 6, 2: 2}
    cfg = parse_run_config(tiny(local_steps=5))
    assert local_steps(cfg, sizes, [1]) == {1: 5}


def test_a_run_records_simulated_time(tmp_path, monkeypatch) -> None:
    from tests.figures import capture_figures

    cfg = exercise(**{"num-server-rounds": 3, "fraction-train": 0.5, "step-seconds": 2.0,
                      "local-steps": 4, "tracking": True, "output-dir": str(tmp_path),
                      "run-name": "t", "wandb": False})
    figures = capture_figures(monkeypatch)
    res = run_experiment(cfg)
    rounds = [r["sim_round_s"] for r in res.records]
    assert rounds[0] == 0.0
    for r in res.records[1:]:
        model = r["round_server_bytes_sent"] / r["participants"]  # every sampled client
        expected = (r["round_server_bytes_sent"] * 8 / 1e9 + 4 * 2.0
                    + r["round_server_bytes_received"] * 8 / 1e8)
        assert model > 0 and r["sim_round_s"] == pytest.approx(expected)
    assert res.records[-1]["sim_time_s"] == pytest.approx(sum(rounds))
    assert res.summary["totals"]["sim_time_s"] == res.records[-1]["sim_time_s"]
    assert "sim_time_s" not in run_experiment(parse_run_config(tiny())).records[-1]  # off
    timed = [ax for ax in figures["curves.png"].axes
             if ax.get_xlabel() == "simulated time (s)"]
    assert len(timed) == 1  # curves.png: accuracy vs simulated time beside vs bytes
    xs = timed[0].lines[0].get_xdata()
    assert list(xs) == pytest.approx([r["sim_time_s"] for r in res.records])


def test_a_gossip_step_lasts_as_long_as_its_slowest_node() -> None:
    """D-SGD on a ring: every node sends its model to its two neighbours over its own
    uplink; no server link is involved."""
    cfg = parse_run_config(tiny(**{"strategy": "dsgd", "topology": "ring", "num-clients": 8,
                                   "num-server-rounds": 2, "client-up-mbps": 10.0,
                                   "server-up-mbps": 0.001, "local-steps": 1}))
    res = run_experiment(cfg)
    for r in res.records[1:]:
        sent = r["round_max_node_bytes_sent"]
        assert r["round_server_bytes_received"] == 0  # the server only routes
        assert r["sim_round_s"] == pytest.approx(sent * 8 / 1e7)
        assert sent == 2 * r["round_bytes_p2p"] / 16  # two neighbours, 8 nodes
