"""The strategy contract: declared parameters, lent services, declared state, one builder.

Every flowerbed strategy is a Flower message-API strategy (``flwr.serverapp.strategy``) that
also follows this contract, so the platform can build, run and checkpoint any of them,
built-in or plug-in, the same way:

- **Parameters** are declared next to the code: ``Params`` is a frozen dataclass whose fields
  are made with :func:`flowerbed.core.params.param` (default, one-line doc, check); the field
  ``k_active`` is the run-config key ``k-active``. Subclass the base's ``Params`` to add yours.
- **Services** are what the platform lends (:class:`Services`): the run's size and seed, the
  communication ledger, centralized evaluation, and data facts some algorithms need.
- **Construction** is one step: ``cls(params, services)`` (see :func:`build`).
- **State** is declared: ``state_fields`` names the attributes a checkpoint saves; the fields
  of every class in the MRO are saved together (:mod:`flowerbed.core.state`), so a subclass
  adds to its base's state and cannot drop it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from flowerbed.core.arrays import State
from flowerbed.core.codecs import Codec
from flowerbed.core.params import NoParams, build_params
from flowerbed.core.records import filled
from flowerbed.core.state import load_state, state_of

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


class PeerLedger(Protocol):
    """The part of the platform's communication ledger a strategy writes to."""

    def record_many(self, src: np.ndarray, dst: np.ndarray, nbytes: int) -> None: ...


class PeerViews(Protocol):
    """What a malicious sender sends each receiver, when it crafts one model per receiver."""

    def __call__(self, server_round: int, receiver: int, senders: np.ndarray,
                 sent: np.ndarray, trained: np.ndarray) -> dict[int, np.ndarray]: ...


@dataclass(frozen=True)
class Services:
    """What the platform lends a strategy. Pure computation and bookkeeping, no I/O."""

    num_nodes: int
    seed: int
    num_rounds: int = 1
    eval_every: int = 1
    # peer-to-peer messages of decentralized strategies (server traffic is counted by the
    # platform); None: not recorded
    ledger: PeerLedger | None = None
    # centralized evaluation of a model state on the server's held-out test set
    evaluate: Callable[[State], dict[str, float]] | None = None
    # the platform's true participation probabilities: for idealized baselines only
    true_probabilities: np.ndarray | None = None
    # label histogram per node (num_nodes, num_classes): for data-aware grouping (Paris)
    label_counts: np.ndarray | None = None
    # input-space cluster per node and per test example, from the kmeans partitioner
    # (Paris' data-cluster groups; the router's target)
    client_clusters: np.ndarray | None = None
    test_clusters: np.ndarray | None = None
    # the server's held-out test set (x, y): for strategies that combine several models
    test_data: tuple[np.ndarray, np.ndarray] | None = None
    # build_model(seed, num_outputs): the run's architecture, freshly initialised
    build_model: Callable[[int, int], Any] | None = None
    # the run's update codec (flowerbed.core.codecs): what one compressed message costs
    # (decentralized peer messages), and the compressor of CHOCO-SGD
    codec: Codec = field(default_factory=Codec)
    # the threat model's per-receiver models (``attack-per-neighbour``), for decentralized
    # strategies that mix through :meth:`DecentralizedStrategy.peer_rows`: (round, receiver,
    # senders, sent rows, trained rows) -> {position in senders: the model that sender
    # crafted for this receiver}; None when every sender sends one model to all
    peer_views: PeerViews | None = None


@dataclass(frozen=True)
class Primary:
    """The metric a run is judged by: its record key, its name on screen, and the keys of
    metrics shown next to it."""

    metric: str = "test_accuracy"
    label: str = "test accuracy"
    companions: tuple[str, ...] = ()


def primary_of(strategy: Any) -> Primary:
    """The strategy's primary metric; test accuracy for a strategy outside the contract."""
    return strategy.primary() if isinstance(strategy, PlatformStrategy) else Primary()


class PlatformStrategy:
    """Mixin of the contract (see the module docstring); bases set ``params``/``services``."""

    Params: ClassVar[type] = NoParams
    state_fields: ClassVar[tuple[str, ...]] = ()
    # True for decentralized strategies: what they send through the server is simulation
    # plumbing, so the platform does not count it; they record peer messages themselves.
    routes_through_server: ClassVar[bool] = False
    # the metric a run of this strategy is judged by (summary, console, plots, reports), what
    # to call it on screen, and metrics always shown next to it
    primary_metric: ClassVar[str] = "test_accuracy"
    primary_label: ClassVar[str] = "test accuracy"
    companion_metrics: ClassVar[tuple[str, ...]] = ()

    params: Any
    services: Services

    @classmethod
    def check_params(cls, params: Any, num_nodes: int) -> None:
        """Reject parameters that cannot work with ``num_nodes`` nodes (ConfigError), before
        anything starts. Override to add checks; call ``super()``."""
        return None

    @classmethod
    def check_run(cls, values: Mapping[str, Any]) -> None:
        """Reject run-config values (the platform's keys, e.g. ``momentum``) this strategy
        cannot work with (ConfigError naming the key). Override to add checks."""
        return None

    def primary(self) -> Primary:
        """The declared primary metric; override when it depends on the parameters."""
        return Primary(self.primary_metric, self.primary_label, self.companion_metrics)

    def round_metrics(self, server_round: int) -> dict[str, float]:
        """Extra per-round metrics (logged with the platform's)."""
        return {}

    def evaluation_state(self, state: State) -> State:
        """The model the platform evaluates, from the arrays ``start()`` reports.

        Identity by default; a strategy whose arrays hold several models (e.g. experts)
        returns the one the run is judged by.
        """
        return state

    def notes(self) -> dict[str, Any]:
        """Facts about how the run was set up that the summary should carry (e.g. a value
        that was clamped); logged once at the start."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The declared state (``state_fields`` of every class in the MRO), encoded."""
        return state_of(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_state(self, state)

    def after_load(self) -> None:
        """Called after the declared state is restored (re-derive what is not saved)."""
        return None


def build(cls: type, values: Mapping[str, Any], services: Services) -> Any:
    """``cls(params, services)`` with ``params`` read from validated run-config values."""
    return cls(build_params(cls.Params, values), services)


def payload(arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
    """A message's content in Flower's conventions: "arrays" and "config"."""
    if not isinstance(arrays, ArrayRecord) or not isinstance(config, ConfigRecord):
        raise TypeError(f"payload(arrays, config) takes an ArrayRecord and a ConfigRecord, "
                        f"not {type(arrays).__name__} and {type(config).__name__}")
    return filled(RecordDict(), {"arrays": arrays, "config": config})  # checked above


def messages(contents: Iterable[tuple[int, RecordDict]], message_type: str, group_id: str
             ) -> list[Message]:
    """One message per (node, content). Pass one content object for many nodes when they
    all get the same payload: it is then carried once per worker."""
    return [Message(content=content, dst_node_id=int(node), message_type=message_type,
                    group_id=group_id) for node, content in contents]


__all__ = ["PeerLedger", "PeerViews", "PlatformStrategy", "Primary", "Services", "build",
           "messages", "payload", "primary_of"]
