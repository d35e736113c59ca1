"""Round deadlines and over-selection on the virtual clock: stragglers as a consequence.

With device profiles set, a synchronous round's replies arrive at each client's simulated
finish time f_k (:meth:`flowerbed.simulation.clock.Clock.client_seconds`: its download with
its share of the server link, its local steps at its speed, its upload). Two server rules
decide which replies count; the others are discarded as late, exactly like the ``late``
fault (the strategy sees an ERROR_LATE reply):

- ``round-deadline-s`` D > 0: a reply with f_k > D is late; the round lasts D if any sent
  client's reply is missing at D (late, dropped, failed), else until its last reply.
- ``over-selection`` s > 0 (Bonawitz et al., "Towards Federated Learning at Scale", SysML
  2019, sec. 2.2: select 130 % of the target, keep the first reports): of the n clients a
  round is sent to, the server keeps the first m = ceil(n / (1 + s)) replies by f_k (ties:
  by client id) and the round closes when the m-th arrives. The strategy's sample is the
  over-selected one: for m kept clients per round set ``fraction-train`` to (1 + s) times
  the target share.

Both together: the first m replies that arrive by D. The round's duration replaces the
clock's round formula for that round (retried attempts add up). Upload sizes are the
replies' real sizes. Not modelled: federated evaluation traffic in a timed round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from flowerbed.core.params import Config, Key, non_negative
from flowerbed.simulation.clock import Clock

KEYS: tuple[Key, ...] = (
    Key("round-deadline-s", 0.0, "virtual time: a synchronous round's deadline, seconds; "
        "replies finishing later are discarded as late (0 = none)", non_negative),
    Key("over-selection", 0.0, "virtual time: keep the first n / (1 + s) replies of the n "
        "clients sent (Bonawitz et al. 2019; 0 = off)", non_negative),
)


def enabled(cfg: Config) -> bool:
    return cfg.round_deadline_s > 0 or cfg.over_selection > 0


class Deadline:
    """Which of a round's replies are late, and how long the round lasted."""

    def __init__(self, clock: Clock, deadline_s: float, over_selection: float,
                 steps: Callable[[int], int]) -> None:
        self.clock = clock
        self.deadline = deadline_s if deadline_s > 0 else math.inf
        self.over_selection = over_selection
        self.steps = steps  # local steps of client k in a round
        self.seconds: dict[int, float] = {}  # round -> simulated duration so far

    def kept(self, n_sent: int) -> int:
        """m: replies kept of n sent."""
        if self.over_selection <= 0:
            return n_sent
        return max(1, math.ceil(n_sent / (1.0 + self.over_selection) - 1e-9))

    def finish_times(self, nodes: Sequence[int], down: Sequence[int], up: Sequence[int],
                     n_sent: int) -> list[float]:
        """f_k of every replying client (``down``/``up``: its bytes each way)."""
        return [self.clock.client_seconds(k, d, u, self.steps(k), n_sent, len(nodes))
                for k, d, u in zip(nodes, down, up, strict=True)]

    def late(self, server_round: int, nodes: Sequence[int], down: Sequence[int],
             up: Sequence[int], n_sent: int) -> set[int]:
        """Positions (into ``nodes``: the clients whose usable replies came back) that are
        late; records the round's duration. ``n_sent``: training messages of the round."""
        finish = self.finish_times(nodes, down, up, n_sent)
        order = sorted(range(len(nodes)), key=lambda i: (finish[i], nodes[i]))
        in_time = [i for i in order if finish[i] <= self.deadline]
        m = self.kept(n_sent)
        keep = in_time[:m]
        if len(keep) == m and m < n_sent:
            seconds = finish[keep[-1]]  # the m-th reply closes the round
        elif len(keep) < n_sent and math.isfinite(self.deadline):
            seconds = self.deadline  # someone is missing: the server waits out D
        else:
            seconds = max((finish[i] for i in keep), default=0.0)
        self.seconds[server_round] = self.seconds.get(server_round, 0.0) + seconds
        return set(range(len(nodes))) - set(keep)


__all__ = ["KEYS", "Deadline", "enabled"]
