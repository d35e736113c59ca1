"""SIGINT and SIGTERM as an exception, so a stopped ``flowerbed run`` can clean up.

Inside ``with stop_signals():`` the first SIGINT or SIGTERM raises :class:`StopRequested`
where the main thread is (reading ``flwr run``'s stream, polling the run's status); later
ones are ignored while the run and its SuperLink are being stopped, which is bounded. The
previous handlers come back at the end.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(KeyboardInterrupt):
    """A SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by it


@contextmanager
def stop_signals() -> Iterator[None]:
    raised = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise StopRequested(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = ["StopRequested", "stop_signals"]
