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
)


class DPContract(PlatformStrategy):
    """A Flower DP wrapper with the platform's contract; ``self.strategy`` is the inner."""

    strategy: Any

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
        return {**self.strategy.round_metrics(server_round),
                "dp_clipping_norm": float(self.clipping_norm)}

    def notes(self) -> dict[str, Any]:
        return dict(self.strategy.notes())


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


def wrap_dp(inner: Any, values: Any, num_clients: int) -> Any:
    """``inner`` inside the Flower DP wrapper ``values.dp`` names (``inner`` if 'none')."""
    if values.dp == "none":
        return inner
    base = WRAPPERS[values.dp]
    cls = type(base.__name__, (DPContract, base), {
        "__module__": __name__, "scratch_fields": scratch_fields(type(inner))})
    n = sampled_clients(values, num_clients)
    if values.dp.endswith("fixed"):
        return cls(inner, values.dp_noise_multiplier, values.dp_clipping_norm, n)
    return cls(inner, values.dp_noise_multiplier, n,
               initial_clipping_norm=values.dp_clipping_norm,
               target_clipped_quantile=values.dp_target_quantile,
               clip_norm_lr=values.dp_clip_norm_lr)


__all__ = ["KEYS", "WRAPPERS", "check_dp", "sampled_clients", "wrap_dp"]
