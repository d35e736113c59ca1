"""Run a slow start-up step (the SuperLink) in a thread while this one goes on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Background:
    """``fn()`` in a daemon thread; :meth:`wait` joins it and re-raises its exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.error: BaseException | None = None
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True,
                                       name="flowerbed-start")
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as err:  # handed to wait()
            self.error = err

    def wait(self, raise_error: bool = True) -> Any:
        self.thread.join()
        if self.error is not None and raise_error:
            raise self.error
        return self.result


def start_in_background(fn: Callable[[], Any]) -> Background:
    return Background(fn)


__all__ = ["Background", "start_in_background"]
