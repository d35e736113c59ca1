"""The closed-form network costs reproduce the course exercise numbers."""

from __future__ import annotations

from flowerbed.tools import costs


def test_server_capacity_of_the_exercise() -> None:
    cap = costs.server_capacity(costs.model_bytes(85_098), down_bps=1e9, up_bps=100e6,
                                budget_s=60)
    assert cap.model_bytes == 340_392
    assert (cap.n_download, cap.n_upload, cap.n_max) == (22_033, 2_203, 2_203)


def test_capacity_boundary_is_exact() -> None:
    # exactly 10 models fit into the budget: float rounding must not lose the 10th
    cap = costs.server_capacity(100, down_bps=8000, up_bps=7999, budget_s=1)
    assert (cap.n_download, cap.n_upload) == (10, 9)


def test_download_cost_of_the_exercise() -> None:
    usd = costs.download_cost(costs.model_bytes(4_950_544), clients_per_round=200,
                              rounds=1000, price_per_gib=0.03)
    assert round(usd, 2) == 110.65
    assert abs(usd - 1000 * 200 * 4_950_544 * 4 * 0.03 / 2**30) < 1e-9


def test_dpsgd_and_allreduce_messages_of_the_exercise() -> None:
    assert costs.dpsgd_messages(128, 8, 50) == 51_200
    assert costs.naive_allreduce_messages(128) == 16_256
    assert costs.dpsgd_messages(128, 8, 50) + costs.naive_allreduce_messages(128) == 67_456
