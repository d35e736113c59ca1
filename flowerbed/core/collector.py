"""Python's cyclic garbage collector, set for rounds that create thousands of records.

A round builds and drops tens of thousands of small containers (one Flower message and
a few records per virtual client, vmap's closures). With CPython's default thresholds
(700, 10, 10) a full collection runs about once a round and walks every live object,
some 400,000 once torch, flwr, ray and datasets are imported: on W1 (1,000 clients,
in-process) that was 0.1 to 0.3 s of a 0.2 s round, more than the compression or the
client-state bookkeeping it was blamed on. So, once a process is set up, its live objects
are moved out of the collector's sight (``gc.freeze``: they are not scanned again; they
are still freed by reference counting) and collections run less often. Garbage cycles
are still collected; only objects that were alive at the freeze and later become part of
a cycle stay in memory (one process-wide freeze: a sweep of many runs in one process
does not accumulate them).
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

THRESHOLDS = (100_000, 50, 100)  # young-generation allocations; collections per older one
_done = False


def settle() -> None:
    """Collect once, freeze what is alive, raise the thresholds (once per process)."""
    global _done
    if _done:
        return
    _done = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    log.debug("garbage collector: live objects frozen, thresholds %s", THRESHOLDS)


__all__ = ["THRESHOLDS", "settle"]
