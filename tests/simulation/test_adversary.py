"""The threat model: the malicious set, each attack's crafted update on hand-computed
cases, the grid applying it (strategies see only the crafted replies), label flipping on
the worker, the config checks, and the per-round metrics of a whole run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from flowerbed.clients import worker
from flowerbed.clients.injected import FAIL, FLIP_LABELS, flipped_labels
from flowerbed.clients.training import evaluate
from flowerbed.core.arrays import from_record, record_nbytes, to_record
from flowerbed.core.codecs import Codec
from flowerbed.core.errors import ConfigError
from flowerbed.core.records import first
from flowerbed.core.wire import (
    CLIENT_STATE_KEY,
    CODEC_PAYLOAD_KEY,
    INJECT_KEY,
    directive,
    error_reply,
    with_directive,
    with_records,
)
from flowerbed.run import checkpoint
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import ensure_task_identity, run_experiment
from flowerbed.simulation.adversary import Adversary, Reply, alie_z, malicious_set
from flowerbed.simulation.crafted_replies import model_of, with_model
from flowerbed.simulation.faults import FaultPlan
from flowerbed.simulation.ledger import Ledger
from flowerbed.simulation.participation import Participation
from flowerbed.simulation.virtual_grid import VirtualGrid
from flowerbed.strategies.contract import Services
from flowerbed.strategies.dsgd import DSGD, DSGDParams
from tests.conftest import tiny
from tests.run.test_checkpoint import Crash, config, metrics

torch.set_num_threads(1)

# three honest updates and one malicious node's own, all sent the zero model
HONEST = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [2.0, 2.0, 2.0]])
OWN = np.array([1.0, 1.0, 1.0])
ZERO = {"w": np.zeros(3)}


def replies(sent=ZERO):
    out = [Reply(i, sent, {"w": sent["w"] + h}) for i, h in enumerate(HONEST)]
    return [*out, Reply(3, sent, {"w": sent["w"] + OWN})]


def adversary(attack: str, **kw) -> Adversary:
    adv = Adversary(0, 4, attack, count=1, **kw)
    adv._set = frozenset({3})  # node 3 is the attacker in the hand-computed cases
    return adv


def test_malicious_set_is_seeded_fixed_and_sized():
    a = malicious_set(5, 100, 20)
    assert len(a) == 20 and len(set(a.tolist())) == 20 and list(a) == sorted(a)
    assert np.array_equal(a, malicious_set(5, 100, 20))
    assert not np.array_equal(a, malicious_set(6, 100, 20))
    adv = Adversary.from_config(parse_run_config(tiny(attack="ipm", byzantine_fraction=0.3)))
    assert len(adv.malicious) == 3 and adv.active
    assert not Adversary(0, 10).active  # attack 'none'


def test_alie_z_follows_baruch():
    # n = 10, f = 2: s = floor(10/2 + 1) - 2 = 4, z = Phi^-1(6/10)
    assert alie_z(10, 2) == pytest.approx(0.2533471, abs=1e-6)
    # n = 50, f = 12: s = 26 - 12 = 14, z = Phi^-1(36/50)
    assert alie_z(50, 12) == pytest.approx(0.5828415, abs=1e-6)


@pytest.mark.parametrize(("attack", "kw", "expected"), [
    # mu = (2, 2, 2), sample std = (1, 0, 1): mu - 1.5 sigma
    ("alie", {"z": 1.5}, [0.5, 2.0, 0.5]),
    ("ipm", {"ipm_epsilon": 0.5}, [-1.0, -1.0, -1.0]),  # -eps mu
    ("sign-flip", {"sign_flip_scale": 2.0}, [-2.0, -2.0, -2.0]),  # -s * own
    ("scale", {"attack_scale": 3.0}, [3.0, 3.0, 3.0]),  # lambda * own
])
def test_crafted_update_hand_computed(attack, kw, expected):
    crafted = adversary(attack, **kw).craft(1, replies())
    assert set(crafted) == {3}
    np.testing.assert_allclose(crafted[3]["w"], expected)
    # the update is relative to what the node was sent
    sent = {"w": np.array([10.0, 20.0, 30.0])}
    moved = adversary(attack, **kw).craft(1, replies(sent))
    np.testing.assert_allclose(moved[3]["w"], sent["w"] + np.array(expected))


def test_alie_default_z_uses_the_rounds_n_and_f():
    crafted = adversary("alie").craft(1, replies())  # n = 4, f = 1: s = 2, z = Phi^-1(1/2)
    np.testing.assert_allclose(crafted[3]["w"], [2.0, 2.0, 2.0], atol=1e-12)


def test_gaussian_and_sybil():
    big = {"w": np.zeros(4000)}
    rs = [Reply(0, big, {"w": np.ones(4000)}), Reply(1, big, {"w": np.full(4000, 3.0)}),
          Reply(2, big, {"w": np.full(4000, 2.0)})]
    g = Adversary(0, 3, "gaussian", count=1, noise_std=2.0)
    g._set = frozenset({0, 1})
    out = g.craft(4, rs)
    assert set(out) == {0, 1}
    assert out[0]["w"].std() == pytest.approx(2.0, rel=0.05)
    assert abs(out[0]["w"].mean()) < 0.2
    np.testing.assert_array_equal(out[0]["w"], g.craft(4, rs)[0]["w"])  # seeded per round
    s = Adversary(0, 3, "sybil", count=1, sybil_noise=0.01)
    s._set = frozenset({0, 1})
    out = s.craft(1, rs)
    # both identities send the mean of their own updates (2.0), perturbed by 1% of its rms
    for v in (0, 1):
        assert abs(out[v]["w"].mean() - 2.0) < 0.01
        assert out[v]["w"].std() == pytest.approx(0.02, rel=0.1)
    assert not np.array_equal(out[0]["w"], out[1]["w"])
    assert s.directive(0) == FLIP_LABELS and s.directive(2) is None


def test_label_flip_crafts_nothing_but_poisons_data():
    adv = adversary("label-flip")
    assert adv.craft(1, replies()) == {}
    assert adv.directive(3) == FLIP_LABELS and adv.directive(0) is None
    np.testing.assert_array_equal(flipped_labels(np.array([0, 3, 9]), 10), [9, 6, 0])
    # targeted: only class 1 becomes 7
    np.testing.assert_array_equal(flipped_labels(np.array([1, 3, 1, 7]), 10, "1:7"),
                                  [7, 3, 7, 7])


def test_the_worker_trains_a_label_flipper_on_flipped_labels():
    cfg = parse_run_config(tiny(num_clients=4, vmap=False))  # data.y is read directly
    data = worker.load_federation(cfg)
    model = worker.skeleton(cfg, data)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    content = RecordDict({"arrays": to_record(state),
                          "config": ConfigRecord({"server-round": 1})})
    flipped = worker.handle("train", [(1, with_directive(content, FLIP_LABELS))], cfg)[0][1]
    plain = worker.handle("train", [(1, content)], cfg)[0][1]
    a, b = from_record(first(flipped, ArrayRecord)), from_record(first(plain, ArrayRecord))
    assert any(not np.allclose(a[k], b[k]) for k in a)
    # the same as training the client on labels C - 1 - y
    orig = data.y[1].copy()
    try:
        data.y[1] = flipped_labels(orig, data.num_classes)
        relabelled = worker.handle("train", [(1, content)], cfg)[0][1]
    finally:
        data.y[1] = orig
    c = from_record(first(relabelled, ArrayRecord))
    for k in a:
        np.testing.assert_allclose(a[k], c[k], rtol=1e-5, atol=1e-6)


class Echo:
    """A transport whose clients 'train' by adding 1 to every weight; records deliveries."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, RecordDict]] = []

    def run(self, kind, items, timeout):
        self.seen.extend(items)
        out = []
        for _, content in items:
            if directive(content) == FAIL:
                out.append(error_reply("InjectedFailure: injected client failure"))
                continue
            w = from_record(first(content, ArrayRecord))
            out.append(RecordDict({"arrays": to_record({k: v + 1 for k, v in w.items()}),
                                   "metrics": MetricRecord({"num-examples": 1.0})}))
        return out


def grid_round(adv: Adversary, n: int = 6, faults: FaultPlan | None = None):
    ensure_task_identity()
    transport = Echo()
    grid = VirtualGrid(transport, n, Ledger(), Participation(n, 0), adversary=adv,
                       faults=faults)
    grid.begin_round(1)
    content = RecordDict({"arrays": to_record({"w": np.zeros(2, np.float32)}),
                          "config": ConfigRecord({"server-round": 1})})
    msgs = [Message(content=content, dst_node_id=i, message_type=MessageType.TRAIN,
                    group_id="1") for i in range(n)]
    got = {m.metadata.src_node_id: m for m in grid.send_and_receive(msgs)}
    return grid, transport, got


def test_grid_replaces_only_the_malicious_replies():
    adv = Adversary(3, 6, "sign-flip", count=2)
    bad = set(adv.malicious.tolist())
    grid, transport, got = grid_round(adv)
    for node, reply in got.items():
        w = from_record(first(reply.content, ArrayRecord))["w"]
        np.testing.assert_allclose(w, -1.0 if node in bad else 1.0)
        assert w.dtype == np.float32
    assert grid.round_stats(1).malicious == 2
    assert all(INJECT_KEY not in c for _, c in transport.seen)  # no data poisoning here


def test_grid_tells_label_flippers_and_skips_faulty_malicious_replies():
    adv = Adversary(3, 6, "label-flip", count=2)
    _, transport, _ = grid_round(adv)
    told = {vid for vid, c in transport.seen if directive(c) == FLIP_LABELS}
    assert told == set(adv.malicious.tolist())
    # every client fails: nothing is crafted or counted as a malicious update
    grid, _, got = grid_round(Adversary(3, 6, "ipm", count=2), faults=FaultPlan(0, failure=0.999))
    assert all(m.has_error() for m in got.values())
    assert grid.round_stats(1).malicious == 0


def test_config_checks():
    with pytest.raises(ConfigError, match="attack"):
        parse_run_config(tiny(attack="alie"))
    with pytest.raises(ConfigError, match="byzantine-count"):
        parse_run_config(tiny(attack="alie", byzantine_count=10))
    with pytest.raises(ConfigError, match="not both"):
        parse_run_config(tiny(attack="alie", byzantine_count=1, byzantine_fraction=0.1))
    with pytest.raises(ConfigError, match="attack"):
        parse_run_config(tiny(attack="mimic", byzantine_count=1))
    with pytest.raises(ConfigError, match="byzantine-fraction"):
        parse_run_config(tiny(attack="alie", byzantine_fraction=1.0))
    for bad in ("1", "1:1", "a:b", "1:7:2"):
        with pytest.raises(ConfigError, match="label-flip-classes"):
            parse_run_config(tiny(attack="label-flip", byzantine_count=1,
                                  label_flip_classes=bad))
    with pytest.raises(ConfigError, match="only attack"):
        parse_run_config(tiny(attack="alie", byzantine_count=1, label_flip_classes="1:7"))
    cfg = parse_run_config(tiny(attack="sybil", sybil_identities=4))
    assert len(Adversary.from_config(cfg).malicious) == 4


def test_runs_report_malicious_updates_and_honest_accuracy():
    res = run_experiment(parse_run_config(tiny(attack="sign-flip", byzantine_count=3,
                                               num_server_rounds=2)))
    for r in res.records[1:]:
        assert r["malicious_updates"] == 3  # all 10 clients train every round
        assert r["honest_accuracy"] == r["test_accuracy"]
    assert res.summary["totals"]["malicious_updates"] == 6
    dec_cfg = parse_run_config(tiny(strategy="dsgd", attack="gaussian", attack_noise_std=50.0,
                                    byzantine_count=2, num_server_rounds=1, final_merge=False))
    dec = run_experiment(dec_cfg)
    last = dec.records[-1]
    assert last["malicious_updates"] == 2
    assert 0.0 <= last["honest_accuracy"] <= 1.0
    # the crafted models reached the malicious nodes' rows (and their ring neighbours')
    norms = np.linalg.norm(dec.strategy.x, axis=1)
    bad = Adversary.from_config(dec_cfg).malicious
    assert norms[bad].min() > 100 * norms.min()
    clean = run_experiment(parse_run_config(tiny(num_server_rounds=1)))
    assert "malicious_updates" not in clean.records[-1]


def test_targeted_label_flip_reports_its_success():
    cfg = tiny(attack="label-flip", label_flip_classes="1:7", byzantine_count=4,
               num_server_rounds=3, lr=0.3)
    res = run_experiment(parse_run_config(cfg))
    rec = res.records[-1]
    assert 0.0 <= rec["attack_success"] <= 1.0
    # by definition: the global model's share of class-1 test digits labelled 7
    data = worker.load_federation(parse_run_config(cfg))
    model = worker.skeleton(parse_run_config(cfg), data)
    ones = data.test_y == 1
    expected = evaluate(model, res.final_state, data.test_x[ones],
                        np.full(int(ones.sum()), 7))["accuracy"]
    assert rec["attack_success"] == pytest.approx(expected)
    assert "attack_success" not in run_experiment(parse_run_config(
        tiny(attack="label-flip", byzantine_count=4, num_server_rounds=1))).records[-1]


@pytest.mark.parametrize("strategy", ["centered-clipping", "monna"])
def test_an_attacked_run_resumes_exactly(tmp_path, strategy):
    """The malicious set and every attack's draws are seeded per (run, round), and the
    defences' own state (centered clipping's centre, MoNNA's momenta) is declared."""
    over = {"strategy": strategy, "num-server-rounds": 6, "attack": "sybil",
            "byzantine-count": 4, "final-merge": False}
    ref = run_experiment(parse_run_config(config(tmp_path, "ref", **over)))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_run_config(config(tmp_path, "crash", **over)),
                       extra_trackers=[Crash(after=3)])
    run_dir = tmp_path / "crash"
    run_experiment(parse_run_config(config(tmp_path, "crash", **over,
                                           **{"resume-from": str(run_dir)})))
    assert metrics(run_dir) == metrics(ref.run_dir)
    assert sum(r.get("malicious_updates", 0) for r in metrics(run_dir)) > 0


# --- a different crafted model per neighbour (attack-per-neighbour) ----------------------------

# rows = nodes 0..3 (node 3 malicious): all sent 0, honest half steps = HONEST, node 3's row
# already crafted (its one model for everyone)
SENT = np.zeros((4, 3))
TRAINED = np.vstack([HONEST, [[-50.0, -50.0, -50.0]]])


def test_per_neighbour_alie_reads_each_receivers_view():
    adv = adversary("alie", per_neighbour=True)
    # receiver 0 hears 1 and 3: view {0, 1, 3}, honest rows 0 and 1: mu = (2, 2, 2),
    # sample std = (sqrt 2, 0, sqrt 2); n = 3, f = 1: s = 1, z = Phi^-1(2/3)
    z = alie_z(3, 1)
    to0 = adv.neighbour_views(1, 0, np.array([1, 3]), SENT, TRAINED)
    assert set(to0) == {1}  # position of sender 3; the honest sender 1 is left as it is
    np.testing.assert_allclose(to0[1], [2 - z * np.sqrt(2), 2.0, 2 - z * np.sqrt(2)])
    # receiver 2 hears only 3: its view's one honest update is its own, (2, 2, 2)
    to2 = adv.neighbour_views(1, 2, np.array([3]), SENT, TRAINED)
    np.testing.assert_allclose(to2[0], [2.0, 2.0, 2.0])
    # relative to what the malicious sender held before its step
    moved = adv.neighbour_views(1, 2, np.array([3]), SENT + 10.0, TRAINED + 10.0)
    np.testing.assert_allclose(moved[0], [12.0, 12.0, 12.0])
    assert adv.neighbour_views(1, 0, np.array([1, 2]), SENT, TRAINED) == {}  # all honest
    assert adversary("alie").neighbour_views(1, 0, np.array([1, 3]), SENT, TRAINED) == {}


def test_per_neighbour_gaussian_draws_one_model_per_edge():
    adv = adversary("gaussian", noise_std=2.0, per_neighbour=True)
    sent, trained = np.zeros((4, 2000)), np.ones((4, 2000))
    to0 = adv.neighbour_views(5, 0, np.array([3]), sent, trained)[0]
    to1 = adv.neighbour_views(5, 1, np.array([3]), sent, trained)[0]
    assert to0.std() == pytest.approx(2.0, rel=0.05) and not np.allclose(to0, to1)
    np.testing.assert_array_equal(to0, adv.neighbour_views(5, 0, np.array([3]), sent,
                                                           trained)[0])  # seeded per edge
    assert not np.allclose(to0, adv.neighbour_views(6, 0, np.array([3]), sent, trained)[0])


def test_per_neighbour_config_checks():
    with pytest.raises(ConfigError, match="attack-per-neighbour"):  # nothing per receiver
        parse_run_config(tiny(strategy="dsgd", attack="sign-flip", byzantine_count=1,
                              attack_per_neighbour=True))
    with pytest.raises(ConfigError, match="attack-per-neighbour"):  # no neighbours
        parse_run_config(tiny(attack="alie", byzantine_count=1, attack_per_neighbour=True))
    with pytest.raises(ConfigError, match="attack-per-neighbour"):  # mixes slots, not nodes
        parse_run_config(tiny(strategy="teleportation", attack="alie", byzantine_count=1,
                              attack_per_neighbour=True))


@pytest.mark.parametrize("strategy", ["dsgd", "monna"])
def test_two_neighbours_receive_different_models_and_honest_ones_the_same(strategy):
    cfg = parse_run_config(tiny(strategy=strategy, attack="gaussian", byzantine_count=2,
                                attack_per_neighbour=True, num_server_rounds=2,
                                topology="ring"))
    res = run_experiment(cfg)
    s, bad = res.strategy, Adversary.from_config(cfg).malicious
    j = int(bad[0])
    left, right = (j - 1) % 10, (j + 1) % 10  # the ring: j sends to both
    rows = s.x + 1.0
    to_left = s.peer_rows(left, np.array([j]), rows)[0]
    to_right = s.peer_rows(right, np.array([j]), rows)[0]
    assert not np.allclose(to_left, to_right)
    assert np.linalg.norm(to_left - rows[j]) > 10  # a fresh N(0, 1) draw over the model
    honest = int(np.setdiff1d(np.arange(10), bad)[0])
    for receiver in ((honest - 1) % 10, (honest + 1) % 10):
        np.testing.assert_array_equal(s.peer_rows(receiver, np.array([honest]), rows)[0],
                                      rows[honest])
    # the run differs from one where every neighbour gets the same crafted model
    same = run_experiment(parse_run_config(tiny(strategy=strategy, attack="gaussian",
                                                byzantine_count=2, num_server_rounds=2,
                                                topology="ring")))
    assert not np.allclose(res.strategy.x, same.strategy.x)


def test_dsgd_mixes_the_models_each_node_received():
    """mix_received = sum_j W_ij y_{j->i}: by hand on a ring of 4, node 3 crafting."""

    def views(rnd, receiver, senders, sent, trained):
        return {int(p): np.full(2, 100.0 + receiver) for p in np.flatnonzero(senders == 3)}

    s = DSGD(DSGDParams(topology="ring"), Services(num_nodes=4, seed=0, peer_views=views))
    s.x = np.zeros((4, 2), np.float32)
    rows = np.arange(8, dtype=np.float32).reshape(4, 2)
    w = s.topology.matrix(0).toarray()
    expected = w @ rows
    for i in (0, 2):  # node 3's ring neighbours get 100 + i instead of rows[3]
        expected[i] += w[i, 3] * (100.0 + i - rows[3])
    np.testing.assert_allclose(s.mix_received(s.topology, rows, 0), expected, rtol=1e-6)


# --- attacks with a codec: the crafted model is encoded like any other update -----------------

TOPK_EF = Codec("topk", ratio=0.5, error_feedback=True)


def test_a_crafted_model_is_encoded_with_the_clients_own_error_feedback():
    sent = {"w": np.zeros(4, np.float32)}
    crafted = {"w": np.array([4.0, -3.0, 2.0, 1.0], np.float32)}
    # the malicious client's residual before the round, (0, 0, 0, 5), rides on its message;
    # its honest update left residual (9, 9, 9, 9) and a client rule's state "rule.c"
    delivered = with_records(RecordDict({"config": ConfigRecord({})}), {
        CLIENT_STATE_KEY: to_record({"codec.w": np.array([0, 0, 0, 5], np.float32)})})
    reply = RecordDict({
        CODEC_PAYLOAD_KEY: to_record(TOPK_EF.encode({"w": np.ones(4, np.float32)}, None)),
        "metrics": MetricRecord({"num-examples": 1.0}),
        CLIENT_STATE_KEY: to_record({"codec.w": np.full(4, 9.0, np.float32),
                                     "rule.c": np.ones(2, np.float32)})})
    out = with_model(reply, crafted, sent, TOPK_EF, delivered, 0, 1, 3)
    # p = crafted + e = (4, -3, 2, 6): top-2 keeps 6 and 4; the residual is the rest
    np.testing.assert_allclose(model_of(out, sent, TOPK_EF)["w"], [4.0, 0.0, 0.0, 6.0])
    kept = from_record(out[CLIENT_STATE_KEY])
    np.testing.assert_allclose(kept["codec.w"], [0.0, -3.0, 2.0, 0.0])
    np.testing.assert_array_equal(kept["rule.c"], [1.0, 1.0])  # not the codec's: untouched
    assert record_nbytes(out[CODEC_PAYLOAD_KEY]) == record_nbytes(reply[CODEC_PAYLOAD_KEY])
    assert "arrays" not in out and out["metrics"] is reply["metrics"]
    # without a codec the model is replaced as it is
    plain = with_model(RecordDict({"arrays": to_record(sent)}), crafted, sent, None,
                       delivered, 0, 1, 3)
    np.testing.assert_array_equal(model_of(plain, sent, None)["w"], crafted["w"])


def test_attacks_run_with_a_codec_and_leave_honest_clients_alone(tmp_path):
    common = dict(byzantine_count=2, num_server_rounds=2, codec="topk", codec_ratio=0.25,
                  error_feedback=True)
    clean = run_experiment(parse_run_config(tiny(**{**common, "byzantine_count": 0})))
    flipped = run_experiment(parse_run_config(tiny(attack="sign-flip", sign_flip_scale=10.0,
                                                   **common)))
    for a, b in zip(clean.records[1:], flipped.records[1:], strict=True):
        assert b["malicious_updates"] == 2
        assert b["cum_bytes_up"] == a["cum_bytes_up"]  # every reply encoded, same size
    assert flipped.records[-1]["test_accuracy"] < clean.records[-1]["test_accuracy"]

    # after round 1 (everyone was sent the same model): the honest clients' residuals are
    # those of the clean run; a malicious one's is its own: its crafted update, -10 x its
    # decoded top-k update, has k nonzeros, so top-k sends it whole and leaves residual 0
    def residuals(**over) -> dict[str, np.ndarray]:
        cfg = tiny(**{**common, "num_server_rounds": 1, "tracking": True,
                      "checkpoint_every": 1, "output_dir": str(tmp_path), **over})
        res = run_experiment(parse_run_config(cfg))
        doc = checkpoint.load(res.run_dir)
        return {vid: s["codec.1.weight"] for vid, s in doc["client_states"].items()}

    before = residuals(byzantine_count=0, run_name="clean")
    after = residuals(attack="sign-flip", sign_flip_scale=10.0, run_name="attacked")
    bad = {str(v) for v in Adversary.from_config(parse_run_config(tiny(
        attack="sign-flip", **common))).malicious}
    for vid, r in after.items():
        if vid in bad:
            assert np.abs(before[vid]).max() > 0 and np.abs(r).max() == 0
        else:
            np.testing.assert_array_equal(r, before[vid])
    # a codec, an attack and a decentralized defence: ALIE crafted from decoded updates
    dec = run_experiment(parse_run_config(tiny(strategy="monna", attack="alie",
                                               topology="complete", **common)))
    assert np.isfinite(dec.strategy.x).all() and "malicious_accepted" in dec.records[-1]
