"""Central differential privacy through Flower's own DP wrappers, around any centralized
strategy (a built-in, a plug-in, or one of Flower's).

``dp`` picks the wrapper (McMahan et al., "Learning Differentially Private Recurrent
Language Models", ICLR 2018; adaptive clipping: Andrew et al., NeurIPS 2021):

- ``server-fixed`` / ``server-adaptive``: the server clips every update to the clipping
  norm, then adds Gaussian noise of std ``noise-multiplier x norm / sampled clients``;
- ``client-fixed`` / ``client-adaptive``: every client clips its own update
  (:mod:`flowerbed.clients.dp_clipping`, Flower's client mods' rule, per virtual client),
  the server adds the noise; adaptive clipping moves the norm by
  exp(-lr (noisy clipped fraction - ``dp-target-quantile``)) a round.

Flower 1.41's adaptive rule counts the *clipped* updates where Andrew et al. count the
unclipped ones (b = 1[norm <= C], C <- C exp(-lr (mean b - target))): with every update
clipped, Flower's norm shrinks where the paper's grows. The wrapper is run as Flower ships
it; a test pins the behaviour.

Privacy spent: after every noisy release of a fixed-clipping run, ``dp_epsilon`` (at
``dp-delta``) from opacus' RDP accountant, composing one subsampled Gaussian mechanism a
round with the wrapper's noise multiplier and sampling rate q = sampled clients / clients.
The accountant assumes Poisson sampling of the clients where the strategies sample a fixed
number without replacement: the usual approximation (McMahan et al. 2018 account the
same way), said in the summary. Adaptive clipping also spends budget on the noisy count,
which this accountant does not model: adaptive runs report no epsilon.

The wrappers are Flower's, unchanged; :func:`wrap_dp` gives the wrapped object the
platform's contract by delegating to the inner strategy (its evaluated model, its extra
metrics), and reports the current clipping norm per round (``dp_clipping_norm``). The
wrapper runs Flower's own round loop, so the inner strategy's own loop extras
(``on-too-few = "retry"``, resume) do not apply; decentralized strategies, which run their
own rounds, cannot be wrapped.
"""

from __future__ import annotations

import math
from typing import Any

from flwr.serverapp import strategy as flower

from flowerbed.core.errors import ConfigError
from flowerbed.core.params import Key, non_negative, one_of, positive, unit_interval
from flowerbed.core.state import scratch_fields
from flowerbed.strategies.contract import PlatformStrategy, Primary, primary_of

WRAPPERS = {
    "server-fixed": flower.DifferentialPrivacyServerSideFixedClipping,
    "client-fixed": flower.DifferentialPrivacyClientSideFixedClipping,
    "server-adaptive": flower.DifferentialPrivacyServerSideAdaptiveClipping,
    "client-adaptive": flower.DifferentialPrivacyClientSideAdaptiveClipping,
}

KEYS: tuple[Key, ...] = (
    Key("dp", "none", "central DP through Flower's wrappers: none, server-fixed, client-fixed, "
        "server-adaptive, client-adaptive", one_of("none", *WRAPPERS)),
    Key("dp-noise-multiplier", 1.0, "dp: Gaussian noise std / (clipping norm / sampled "
        "clients)", non_negative),
    Key("dp-clipping-norm", 1.0, "dp: clipping norm of a client's update (adaptive: the "
        "initial one)", positive),
    Key("dp-sampled-clients", 0, "dp: clients sampled per round, for the noise scale "
        "(0 = fraction-train x num-clients)", non_negative),
    Key("dp-target-quantile", 0.5, "dp adaptive: quantile of update norms to clip at",
        unit_interval),
    Key("dp-clip-norm-lr", 0.2, "dp adaptive: learning rate of the clipping norm", positive),
    Key("dp-delta", 1e-5, "dp: the delta at which the privacy spent (epsilon) is reported",
        unit_interval),
)
ACCOUNTANT = "opacus RDP, subsampled Gaussian (Poisson sampling assumed)"


class DPContract(PlatformStrategy):
    """A Flower DP wrapper with the platform's contract; ``self.strategy`` is the inner."""

    strategy: Any
    rdp: Any = None  # opacus' RDPAccountant, for fixed clipping with noise
    sample_rate: float = 0.0
    delta: float = 1e-5

    def aggregate_train(self, server_round: int, replies: Any) -> Any:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None and self.rdp is not None:  # one noisy release
            self.rdp.step(noise_multiplier=self.noise_multiplier,
                                 sample_rate=self.sample_rate)
        return arrays, metrics

    def epsilon(self) -> float | None:
        """The privacy spent so far, at ``delta`` (None: not accounted)."""
        if self.rdp is None:
            return None
        if not self.rdp.history:
            return 0.0
        return float(self.rdp.get_epsilon(self.delta))

    @property
    def params(self) -> Any:  # the inner strategy's, for whoever reads them
        return self.strategy.params

    @property
    def services(self) -> Any:
        return self.strategy.services

    def primary(self) -> Primary:
        return primary_of(self.strategy)

    def evaluation_state(self, state: Any) -> Any:
        return self.strategy.evaluation_state(state)

    def round_metrics(self, server_round: int) -> dict[str, float]:
        out = {**self.strategy.round_metrics(server_round),
               "dp_clipping_norm": float(self.clipping_norm)}
        eps = self.epsilon()
        if eps is not None:
            out["dp_epsilon"] = eps
        return out

    def notes(self) -> dict[str, Any]:
        out = dict(self.strategy.notes())
        if self.rdp is None:
            out["dp"] = ("the privacy spent is not accounted: " + (
                "adaptive clipping's noisy count is not modelled"
                if "Adaptive" in type(self).__name__ else "the noise multiplier is 0"))
        return out

    def privacy(self) -> dict[str, Any]:
        """What summary.json says about the run's privacy."""
        return {"mechanism": type(self).__name__, "noise_multiplier": self.noise_multiplier,
                "accountant": ACCOUNTANT if self.rdp is not None else None,
                "sample_rate": self.sample_rate if self.rdp is not None else None,
                "delta": self.delta if self.rdp is not None else None,
                "epsilon": self.epsilon()}


def sampled_clients(values: Any, num_clients: int) -> int:
    if values.dp_sampled_clients > 0:
        return int(values.dp_sampled_clients)
    fraction = float(getattr(values, "fraction_train", 1.0))
    minimum = int(getattr(values, "min_train_nodes", 1))
    return max(minimum, math.floor(fraction * num_clients), 1)


def check_dp(values: Any, strategy_cls: type) -> None:
    """Reject a DP setting that cannot work with this strategy (before anything starts)."""
    if values.dp == "none":
        return
    if getattr(strategy_cls, "routes_through_server", False):
        raise ConfigError("dp", values.dp, "applies to centralized strategies; "
                          f"{strategy_cls.__name__} is decentralized")
    try:  # Flower's wrappers check their settings when built: build one around a stand-in
        _flower_wrapper(flower.FedAvg(), values, sampled_clients(values, values.num_clients))
    except ValueError as err:
        raise ConfigError("dp-noise-multiplier", values.dp_noise_multiplier,
                          f"Flower's {WRAPPERS[values.dp].__name__} refuses it: {err}"
                          ) from None


def _flower_wrapper(inner: Any, values: Any, sampled: int) -> Any:
    """Flower's wrapper ``values.dp`` around ``inner``, with the platform's contract."""
    base = WRAPPERS[values.dp]
    cls = type(base.__name__, (DPContract, base), {
        "__module__": __name__, "scratch_fields": scratch_fields(type(inner))})
    if values.dp.endswith("fixed"):
        return cls(inner, values.dp_noise_multiplier, values.dp_clipping_norm, sampled)
    return cls(inner, values.dp_noise_multiplier, sampled,
               initial_clipping_norm=values.dp_clipping_norm,
               target_clipped_quantile=values.dp_target_quantile,
               clip_norm_lr=values.dp_clip_norm_lr)


def wrap_dp(inner: Any, values: Any, num_clients: int) -> Any:
    """``inner`` inside the Flower DP wrapper ``values.dp`` names (``inner`` if 'none'); a
    fixed-clipping run with noise also gets its privacy accountant."""
    if values.dp == "none":
        return inner
    n = sampled_clients(values, num_clients)
    wrapped = _flower_wrapper(inner, values, n)
    if values.dp.endswith("fixed") and values.dp_noise_multiplier > 0:
        from opacus.accountants import RDPAccountant

        wrapped.rdp = RDPAccountant()
        wrapped.sample_rate = min(n / num_clients, 1.0)
        wrapped.delta = values.dp_delta
    return wrapped


__all__ = ["KEYS", "WRAPPERS", "check_dp", "sampled_clients", "wrap_dp"]
