"""Paris experts: the deep-ml reference in NumPy, groups, routing, isolation."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord

from flowerbed.clients.data import load_federation
from flowerbed.clients.models import build_model
from flowerbed.core.arrays import module_state, to_record
from flowerbed.run.config import ConfigError, parse_run_config
from flowerbed.run.runner import ensure_task_identity, run_experiment
from flowerbed.strategies.contract import Services
from flowerbed.strategies.paris import Paris, expert_groups
from tests.conftest import tiny


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def gd_logreg(w, b, x, y, lr, steps):
    """Full-batch gradient descent on mean softmax cross-entropy, float64."""
    onehot = np.eye(w.shape[0])[y]
    for _ in range(steps):
        g = (softmax(x @ w.T + b) - onehot) / len(y)
        w, b = w - lr * g.T @ x, b - lr * g.sum(axis=0)
    return w, b


def accuracy(w, b, x, y):
    return float(np.mean((x @ w.T + b).argmax(axis=1) == y))


def test_matches_numpy_reference_with_periodic_averaging(run):
    # deep-ml "Paris": E linear experts, expert e from seed e, trained on its own
    # partitions, all replaced by their average every S rounds. Here 3 experts own 2
    # clients each (n mod 3), FedAvg inside a group, full-batch steps (batch >= partition).
    E, S, R, steps, lr = 3, 2, 5, 2, 0.5
    over = dict(strategy="paris", experts=E, sync_every=S, num_server_rounds=R,
                num_clients=6, partitioner="iid", model="logreg", local_steps=steps,
                batch_size=10_000, lr=lr, fraction_train=1.0, seed=1)
    res = run(**over)
    cfg = parse_run_config({k.replace("_", "-"): v for k, v in over.items()})
    data = load_federation(cfg)
    xs = [x.reshape(len(x), -1).astype(np.float64) for x in data.x]
    tx, ty = data.test_x.reshape(len(data.test_y), -1).astype(np.float64), data.test_y
    experts = []
    for e in range(E):
        s = module_state(build_model(cfg, data.input_shape, data.num_classes, seed=1 + e))
        experts.append((s["1.weight"].astype(np.float64), s["1.bias"].astype(np.float64)))
    for t in range(1, R + 1):
        new = []
        for e, (w, b) in enumerate(experts):
            clients = [n for n in range(6) if n % E == e]
            sizes = np.array([len(data.y[n]) for n in clients], dtype=np.float64)
            trained = [gd_logreg(w, b, xs[n], data.y[n], lr, steps) for n in clients]
            share = sizes / sizes.sum()  # FedAvg inside the group, by num-examples
            new.append((sum(a * tw for a, (tw, _) in zip(share, trained, strict=True)),
                        sum(a * tb for a, (_, tb) in zip(share, trained, strict=True))))
        experts = new
        if t % S == 0:
            avg = (np.mean([w for w, _ in experts], 0), np.mean([b for _, b in experts], 0))
            experts = [avg] * E
        rec = res.records[t]
        for e, (w, b) in enumerate(experts):  # every round's experts, through their accuracy
            assert rec[f"expert{e}_accuracy"] == pytest.approx(accuracy(w, b, tx, ty))
    for e, (w, b) in enumerate(experts):
        np.testing.assert_allclose(res.strategy.experts[e]["1.weight"], w, atol=1e-6)
        np.testing.assert_allclose(res.strategy.experts[e]["1.bias"], b, atol=1e-6)
    w_avg = np.mean([w for w, _ in experts], 0)
    np.testing.assert_allclose(res.final_state["1.weight"], w_avg, atol=1e-6)  # evaluated
    assert not np.allclose(experts[0][0], experts[1][0])  # round 5 is not a sync round


def test_groups():
    np.testing.assert_array_equal(expert_groups("partition", 3, 7, 0), [0, 1, 2, 0, 1, 2, 0])
    counts = np.array([[9, 1, 0], [0, 1, 9], [18, 2, 0], [0, 2, 18], [5, 0, 0]])
    g = expert_groups("cluster", 2, 5, 0, counts)
    assert g[0] == g[2] == g[4] and g[1] == g[3] and g[0] != g[1]
    with pytest.raises(ConfigError, match="experts"):
        expert_groups("partition", 8, 5, 0)
    with pytest.raises(ConfigError, match="without clients"):
        expert_groups("cluster", 3, 3, 0, np.array([[1, 0], [1, 0], [2, 0]]))


class TwoNodeGrid:
    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return self.nodes


def paris(num_experts: int, num_nodes: int, routing="soft", k=2, classes=3, features=4):
    cfg = parse_run_config({"model": "logreg"})
    # expert-groups 'partition': client n trains expert n mod E
    return Paris(Paris.Params(experts=num_experts, routing=routing, routing_k=k,
                              fraction_train=1.0),
                 Services(num_nodes=num_nodes, seed=0,
                          label_counts=np.ones((num_nodes, classes)),
                          build_model=lambda seed, out: build_model(cfg, (features,), out,
                                                                    seed)))


def test_isolated_clients_get_their_expert_and_group_label():
    ensure_task_identity()
    s = paris(2, 5)
    s.experts = [module_state(s.services.build_model(e, 3)) for e in range(2)]
    s.router = module_state(s.services.build_model(9, 2))
    msgs = list(s.configure_train(4, to_record(s.pack()), ConfigRecord(),
                                  TwoNodeGrid([0, 1, 3])))  # node 2 and 4 unavailable
    experts = {}
    for m in msgs:
        tag = m.metadata.group_id.split("/")[1]
        cfg = m.content["config"]
        assert cfg["server-round"] == 4
        if tag == "router":
            assert cfg["target-label"] == m.metadata.dst_node_id % 2
        else:
            experts.setdefault(tag, []).append(m.metadata.dst_node_id)
            got = m.content["arrays"]
            assert isinstance(got, ArrayRecord)
            want = s.experts[int(tag[-1])]
            for key, v in want.items():
                np.testing.assert_array_equal(got[key].numpy(), v)
    assert experts == {"expert0": [0], "expert1": [1, 3]}
    assert sum(m.metadata.group_id.endswith("router") for m in msgs) == 3


@pytest.mark.parametrize(("routing", "k"), [("soft", 3), ("topk", 2), ("top1", 1)])
def test_routed_ensemble(routing, k):
    s = paris(3, 3, routing=routing, k=k)
    rng = np.random.default_rng(0)
    experts = [{"1.weight": rng.normal(size=(3, 4)).astype(np.float32),
                "1.bias": rng.normal(size=3).astype(np.float32)} for _ in range(3)]
    router = {"1.weight": rng.normal(size=(3, 4)).astype(np.float32),
              "1.bias": rng.normal(size=3).astype(np.float32)}
    x = rng.normal(size=(5, 4)).astype(np.float32)
    got = s.ensemble_probabilities(experts, router, x)
    gate = softmax(x @ router["1.weight"].T + router["1.bias"])
    keep = np.argsort(-gate, axis=1)[:, :k]
    mask = np.zeros_like(gate)
    np.put_along_axis(mask, keep, 1.0, axis=1)
    gate = gate * mask / (gate * mask).sum(axis=1, keepdims=True)
    want = sum(gate[:, [e]] * softmax(x @ ex["1.weight"].T + ex["1.bias"])
               for e, ex in enumerate(experts))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


def test_isolated_run_reports_experts_average_and_ensemble(run):
    res = run(strategy="paris", experts=2, num_clients=10, num_server_rounds=2,
              model="logreg", local_steps=2, fraction_train=0.6, router_epochs=1)
    rec = res.records[-1]
    for key in ("expert0_accuracy", "expert1_accuracy", "averaged_accuracy",
                "ensemble_accuracy"):
        assert 0.0 <= rec[key] <= 1.0
    assert rec["ensemble_loss"] > 0.0
    assert rec["expert0_accuracy"] != rec["expert1_accuracy"]  # isolated: they differ
    assert rec["averaged_accuracy"] == pytest.approx(rec["test_accuracy"])
    # 3 of 5 clients per group train; each exchanges its expert and the router, both ways
    assert rec["round_messages"] == 2 * 3 * 2 * 2
    assert res.strategy.router is not None
    torch.testing.assert_close(
        torch.tensor(res.strategy.router["1.weight"].shape), torch.tensor([2, 64]))


def test_start_expands_one_model_or_keeps_packed_experts():
    s = paris(2, 4)
    single = module_state(s.services.build_model(0, 3))
    seen = []
    s.start(TwoNodeGrid([0]), to_record(single), num_rounds=0,
            evaluate_fn=lambda rnd, arrays: seen.append(set(arrays.keys())))
    assert {k.split(".")[0] for k in seen[0]} == {"expert0", "expert1", "router"}
    assert s.router is not None and s.router["1.bias"].shape == (2,)  # E outputs
    for key, v in module_state(s.services.build_model(1, 3)).items():  # expert e: seed + e
        np.testing.assert_array_equal(s.experts[1][key], v)
    packed = to_record(s.pack())
    s.experts = []
    s.start(TwoNodeGrid([0]), packed, num_rounds=0)  # a resumed run's arrays: kept
    np.testing.assert_array_equal(s.experts[1]["1.weight"], packed["expert1.1.weight"].numpy())


def test_data_cluster_experts_follow_the_input_clusters_and_route_well() -> None:
    cfg = parse_run_config(tiny(strategy="paris", num_clients=12, partitioner="kmeans",
                                data_clusters=3, experts=3, expert_groups="data-cluster",
                                model="logreg", lr=0.1, local_steps=10, batch_size=16,
                                num_server_rounds=4, eval_every=4, router_epochs=10))
    data = load_federation(cfg)
    result = run_experiment(cfg)
    assert np.array_equal(result.strategy.groups, data.client_clusters)
    assert sorted(set(data.client_clusters.tolist())) == [0, 1, 2]
    target = result.strategy.router_target  # every test input's cluster
    assert target is not None and len(target) == len(data.test_y)
    assert set(target.tolist()) == {0, 1, 2}
    last = result.records[-1]
    assert last["router_accuracy"] > 0.6  # chance: 1/3
    assert last["ensemble_accuracy"] > last["averaged_accuracy"]


def test_data_cluster_groups_need_the_kmeans_partitioner() -> None:
    cfg = parse_run_config(tiny(strategy="paris", experts=2, expert_groups="data-cluster"))
    with pytest.raises(ConfigError, match="kmeans"):
        run_experiment(cfg)
