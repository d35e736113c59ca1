"""The threat model: a seeded, fixed set of malicious clients and the attack they mount.

A platform service like participation and faults: strategies never learn who is malicious,
they only receive what the malicious clients send. The set is drawn once per run from the
ADVERSARY stream (``byzantine-count`` clients, or ``round(byzantine-fraction * N)``) and
never changes. What the malicious clients do (``attack``):

- ``sign-flip``: send -s * Delta_i, their honestly trained update reversed (s =
  ``sign-flip-scale``; s = 1 is the plain "bit/sign flipping" of Karimireddy et al. 2021).
- ``gaussian``: send an update drawn from N(0, sigma^2 I) (sigma = ``attack-noise-std``),
  the Gaussian attack of Blanchard et al. (NeurIPS 2017) and Xie et al. (2018).
- ``scale``: send lambda * Delta_i (``attack-scale``), model replacement by boosting
  (Bagdasaryan et al., AISTATS 2020, boost factor n / eta).
- ``label-flip``: data poisoning on the client: the node trains on labels y -> C - 1 - y (or,
  targeted, ``label-flip-classes = "s:t"``: class s relabelled t, Tolpegin et al., ESORICS
  2020) and sends that honestly computed update (a directive to the worker, like the
  faults'). A targeted flip's success is measured: the share of the test examples of
  class s that the honest clients' model predicts as t (``attack_success``).
- ``alie``: "A Little Is Enough" (Baruch et al., NeurIPS 2019): every attacker sends
  mu - z sigma, mu and sigma the coordinate-wise mean and standard deviation of the round's
  honest updates; z = Phi^-1((n - s) / n) with s = floor(n / 2 + 1) - f (n clients whose
  updates arrived this round, f of them malicious), or ``alie-z`` when set. sigma is the
  sample standard deviation (ddof = 1), as in Karimireddy et al.'s implementation
  (epfml/byzantine-robust-optimizer, ``codes/attacks/alittle.py``); that code takes the
  cdf value as (n - f - s) / (n - f), the paper's formula (n - s) / n is used here.
- ``ipm``: inner-product manipulation (Xie, Koyejo, Gupta, UAI 2020): every attacker sends
  -eps * mu (``ipm-epsilon``; small eps defeats median/Krum, large eps the mean).
- ``sybil``: one attacker behind ``sybil-identities`` identities (default: the malicious
  set) sending colluding, near-identical poisoned updates: each identity trains on flipped
  labels, and every identity sends the mean of those updates plus a tiny independent
  perturbation N(0, (rho * rms)^2 I), rho = ``sybil-noise``, rms the mean update's root
  mean square (FoolsGold's label-flipping Sybils, Fung et al., RAID 2020).

Omniscient attacks (ALIE, IPM) read the honest updates of the round, as in their papers.

``attack-per-neighbour`` (decentralized runs): a malicious node sends each neighbour a model
crafted for that neighbour alone (:meth:`Adversary.neighbour_views`). Gaussian: an
independent draw per (sender, receiver) edge. ALIE and IPM: computed on the receiver's view,
the updates of the honest nodes among the receiver and its in-neighbours (n = the
neighbourhood's size, receiver included, f = its malicious senders), so each receiver is
pushed just inside its own neighbourhood's spread (the decentralized ALIE of He,
Karimireddy and Jaggi 2022 is computed the same way). Sign flip, scaling and Sybils craft
from the sender's own update and have nothing per receiver to vary; they are refused with
this key. The strategy must mix through the per-receiver models (``peer_views`` strategies:
D-SGD, MoNNA, ClippedGossip, SybilWall, Bristle). Honest senders' models are never changed.
An "update" is what a client sends minus what it was sent (Delta_i = x_i - x), so the same
attack applies to centralized strategies (x the global model) and decentralized ones (x
the node's own model: a malicious node sends x_i + crafted Delta to its neighbours).
Crafting happens in the virtual grid once all of a round's training replies are in
(:meth:`Adversary.craft`); replies that failed or were dropped are not crafted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from flowerbed.clients.injected import FLIP_LABELS
from flowerbed.core.errors import ConfigError
from flowerbed.core.params import Config, Key, non_negative, one_of, positive
from flowerbed.core.rng import Stream, stream

ATTACKS = ("none", "sign-flip", "gaussian", "scale", "label-flip", "alie", "ipm", "sybil")
DATA_POISONING = frozenset({"label-flip", "sybil"})  # the node trains on flipped labels
UPDATE_ATTACKS = frozenset({"sign-flip", "gaussian", "scale", "alie", "ipm", "sybil"})
PER_NEIGHBOUR = frozenset({"gaussian", "alie", "ipm"})  # crafted per receiver on request

State = Mapping[str, np.ndarray]


def _fraction(v: float) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def _flip_classes(v: str) -> str | None:
    if v == "":
        return None
    src, sep, tgt = v.partition(":")
    if not sep or not src.isdigit() or not tgt.isdigit() or src == tgt:
        return "must be '' or 's:t' with two different class indices, e.g. '1:7'"
    return None


KEYS: tuple[Key, ...] = (
    Key("attack", "none", "what the malicious clients do: " + ", ".join(ATTACKS),
        one_of(*ATTACKS)),
    Key("byzantine-fraction", 0.0, "share of clients that are malicious (a fixed, seeded set)",
        _fraction),
    Key("byzantine-count", 0, "number of malicious clients (instead of byzantine-fraction)",
        non_negative),
    Key("sign-flip-scale", 1.0, "sign-flip: the attackers send -s * (their update)", positive),
    Key("attack-scale", 10.0, "scale: the attackers send lambda * (their update)", positive),
    Key("attack-noise-std", 1.0, "gaussian: std sigma of the attackers' random updates",
        positive),
    Key("alie-z", 0.0, "alie: z of mu - z sigma (0 = Baruch et al.'s z from n and f)",
        non_negative),
    Key("ipm-epsilon", 0.1, "ipm: the attackers send -eps * (mean honest update)", positive),
    Key("label-flip-classes", "", "label-flip, sybil: '' flips every label y -> C-1-y; "
        "'s:t' relabels class s as t only (targeted; attack_success is then reported)",
        _flip_classes),
    Key("sybil-identities", 0, "sybil: identities of the one attacker (0 = the malicious set)",
        non_negative),
    Key("sybil-noise", 0.01, "sybil: relative perturbation rho of each identity's copy",
        non_negative),
    Key("attack-per-neighbour", False, "decentralized: a malicious node crafts a different "
        "model for each neighbour (gaussian: one draw per edge; alie, ipm: from the "
        "receiver's neighbourhood)"),
)


def check_config(cfg: Config) -> None:
    """Cross-key checks of the threat model."""
    if cfg.byzantine_count and cfg.byzantine_fraction:
        raise ConfigError("byzantine-count", cfg.byzantine_count,
                          "set byzantine-count or byzantine-fraction, not both")
    count = malicious_count(cfg)
    if count >= cfg.num_clients:
        key = ("sybil-identities" if cfg.attack == "sybil" and cfg.sybil_identities
               else "byzantine-count" if cfg.byzantine_count else "byzantine-fraction")
        raise ConfigError(key, cfg[key], f"must leave at least one honest client (num-clients "
                          f"= {cfg.num_clients}, malicious = {count})")
    if cfg.label_flip_classes and cfg.attack not in DATA_POISONING:
        raise ConfigError("label-flip-classes", cfg.label_flip_classes,
                          "only attack = 'label-flip' or 'sybil' flips labels")
    if cfg.attack_per_neighbour and cfg.attack not in PER_NEIGHBOUR:
        raise ConfigError("attack-per-neighbour", True, "only " + ", ".join(
            sorted(PER_NEIGHBOUR)) + " craft a model per receiver (the other attacks send "
            "what the node's own update makes, the same to every neighbour)")
    if cfg.attack != "none" and count == 0:
        raise ConfigError("attack", cfg.attack, "needs malicious clients: set "
                          "byzantine-fraction or byzantine-count (or sybil-identities) > 0")


def malicious_count(cfg: Config) -> int:
    """How many clients are malicious under ``cfg``."""
    if cfg.attack == "sybil" and cfg.sybil_identities > 0:
        return int(cfg.sybil_identities)
    if cfg.byzantine_count:
        return int(cfg.byzantine_count)
    return round(cfg.byzantine_fraction * cfg.num_clients)


def malicious_set(seed: int, num_clients: int, count: int) -> np.ndarray:
    """The fixed malicious clients: ``count`` of ``num_clients``, sorted, seeded."""
    rng = stream(seed, Stream.ADVERSARY)
    return np.sort(rng.choice(num_clients, size=min(count, num_clients), replace=False))


# --- the crafted updates (pure functions of flat float64 updates) ------------------------------


def alie_z(n: int, f: int) -> float:
    """Baruch et al. 2019: s = floor(n/2 + 1) - f supporters needed; z = Phi^-1((n - s)/n)."""
    s = math.floor(n / 2 + 1) - f
    p = min(max((n - s) / n, 1e-6), 1 - 1e-6)
    return NormalDist().inv_cdf(p)


def alie(honest: np.ndarray, z: float) -> np.ndarray:
    """mu - z sigma per coordinate of the honest updates (rows)."""
    sigma = honest.std(axis=0, ddof=1) if len(honest) > 1 else np.zeros(honest.shape[1])
    return honest.mean(axis=0) - z * sigma


def ipm(honest: np.ndarray, eps: float) -> np.ndarray:
    """-eps * the mean honest update (Xie et al. 2020)."""
    return -eps * honest.mean(axis=0)


def sign_flip(own: np.ndarray, scale: float) -> np.ndarray:
    return -scale * own


def scaled(own: np.ndarray, factor: float) -> np.ndarray:
    return factor * own


def sybil_copies(own: np.ndarray, rho: float, rng: np.random.Generator) -> np.ndarray:
    """One colluding update (the mean of the identities' own), one near-copy per identity."""
    common = own.mean(axis=0)
    rms = float(np.sqrt(np.mean(common ** 2))) if common.size else 0.0
    return common[None, :] + rng.normal(0.0, rho * rms, size=own.shape)


def _flat(state: State) -> np.ndarray:
    return np.concatenate([np.asarray(v, np.float64).ravel() for v in state.values()])


def _unflat(vec: np.ndarray, like: State) -> dict[str, np.ndarray]:
    out, i = {}, 0
    for k, v in like.items():
        n = int(np.size(v))
        out[k] = vec[i:i + n].reshape(np.shape(v)).astype(np.asarray(v).dtype)
        i += n
    return out


@dataclass(frozen=True)
class Reply:
    """One usable training reply of a round: who sent it, what it was sent, what it sends."""

    node: int
    sent: State
    trained: State


class Adversary:
    """The run's malicious clients and their attack (see the module docstring)."""

    def __init__(self, seed: int, num_clients: int, attack: str = "none", count: int = 0,
                 sign_flip_scale: float = 1.0, attack_scale: float = 10.0,
                 noise_std: float = 1.0, z: float = 0.0, ipm_epsilon: float = 0.1,
                 sybil_noise: float = 0.01, per_neighbour: bool = False) -> None:
        self.seed, self.attack = seed, attack
        self.malicious = (malicious_set(seed, num_clients, count) if attack != "none"
                          else np.zeros(0, np.int64))
        self._set = frozenset(int(v) for v in self.malicious)
        self.sign_flip_scale, self.attack_scale = sign_flip_scale, attack_scale
        self.noise_std, self.z, self.ipm_epsilon = noise_std, z, ipm_epsilon
        self.sybil_noise = sybil_noise
        self.per_neighbour = per_neighbour and attack in PER_NEIGHBOUR

    @classmethod
    def from_config(cls, cfg: Config) -> Adversary:
        return cls(cfg.seed, cfg.num_clients, cfg.attack, malicious_count(cfg),
                   cfg.sign_flip_scale, cfg.attack_scale, cfg.attack_noise_std, cfg.alie_z,
                   cfg.ipm_epsilon, cfg.sybil_noise, cfg.attack_per_neighbour)

    @property
    def active(self) -> bool:
        return self.attack != "none" and bool(self._set)

    def is_malicious(self, node: int) -> bool:
        return node in self._set

    def directive(self, node: int) -> str | None:
        """What the node's training message must tell it (label flipping), or None."""
        if self.attack in DATA_POISONING and node in self._set:
            return FLIP_LABELS
        return None

    def craft(self, server_round: int, replies: Sequence[Reply]
              ) -> dict[int, dict[str, np.ndarray]]:
        """node -> what each malicious node sends instead of its trained model this round.

        ``replies`` are the round's usable training replies, honest and malicious; the
        honest ones are left as they are. Label flipping alone crafts nothing (the poisoned
        update was computed by the node itself).
        """
        if self.attack not in UPDATE_ATTACKS:
            return {}
        bad = [r for r in replies if r.node in self._set]
        if not bad:
            return {}
        honest = [r for r in replies if r.node not in self._set]
        own = np.stack([_flat(r.trained) - _flat(r.sent) for r in bad])
        h = (np.stack([_flat(r.trained) - _flat(r.sent) for r in honest]) if honest
             else np.zeros((0, own.shape[1])))
        rng = stream(self.seed, Stream.ADVERSARY, server_round)
        if self.attack == "sign-flip":
            deltas = sign_flip(own, self.sign_flip_scale)
        elif self.attack == "scale":
            deltas = scaled(own, self.attack_scale)
        elif self.attack == "gaussian":
            deltas = rng.normal(0.0, self.noise_std, size=own.shape)
        elif self.attack == "sybil":
            deltas = sybil_copies(own, self.sybil_noise, rng)
        elif not honest:  # an omniscient attack with nothing to read: its own updates
            deltas = own
        elif self.attack == "alie":
            z = self.z or alie_z(len(replies), len(bad))
            deltas = np.repeat(alie(h, z)[None, :], len(bad), axis=0)
        else:  # ipm
            deltas = np.repeat(ipm(h, self.ipm_epsilon)[None, :], len(bad), axis=0)
        return {r.node: _unflat(_flat(r.sent) + d, r.trained)
                for r, d in zip(bad, deltas, strict=True)}

    def _mask(self, nodes: np.ndarray) -> np.ndarray:
        return np.fromiter((int(v) in self._set for v in nodes), bool, len(nodes))

    def neighbour_views(self, server_round: int, receiver: int, senders: np.ndarray,
                        sent: np.ndarray, trained: np.ndarray) -> dict[int, np.ndarray]:
        """{position in ``senders``: the model that malicious sender crafted for
        ``receiver``} (``attack-per-neighbour``; see the module docstring).

        ``sent``/``trained``: every node's flat model before / after the round's local
        step (rows = node ids; a malicious row of ``trained`` is already crafted, an
        honest one is its honest half step). Honest senders are left out: their model is
        the same for every receiver.
        """
        senders = np.asarray(senders, np.int64)
        bad = np.flatnonzero(self._mask(senders))
        if not self.per_neighbour or not len(bad):
            return {}
        if self.attack == "gaussian":
            out = {}
            for pos in bad:
                rng = stream(self.seed, Stream.ADVERSARY, server_round, int(senders[pos]),
                             receiver)
                out[int(pos)] = (np.asarray(sent[senders[pos]], np.float64)
                                 + rng.normal(0.0, self.noise_std, sent.shape[1]))
            return out
        view = np.concatenate([[receiver], senders])
        honest = view[~self._mask(view)]
        if not len(honest):  # nothing honest to read: the senders' one crafted model
            return {}
        h = np.asarray(trained[honest], np.float64) - np.asarray(sent[honest], np.float64)
        if self.attack == "alie":
            delta = alie(h, self.z or alie_z(len(view), len(bad)))
        else:  # ipm
            delta = ipm(h, self.ipm_epsilon)
        return {int(pos): np.asarray(sent[senders[pos]], np.float64) + delta for pos in bad}


__all__ = ["ATTACKS", "KEYS", "Adversary", "Reply", "alie", "alie_z", "check_config", "ipm",
           "malicious_count", "malicious_set"]
