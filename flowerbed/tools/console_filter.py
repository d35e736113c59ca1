"""Which lines of ``flwr run --stream`` reach the console.

flowerbed's own log lines come through Flower's log stream as ``HH:MM:SS flowerbed ...``
(:mod:`flowerbed.run.logging_setup`). By default the console shows those, every error and
every traceback, and nothing else of Flower's or Ray's (the simulated-SuperNodes notice,
FedAvg's fraction_evaluate warning, Ray's FutureWarning, actor shutdown messages); quiet
shows errors and tracebacks only; verbose shows everything. ANSI colour codes are removed
when the console is not a terminal. The full stream is always kept in a file.
"""

from __future__ import annotations

import re
from typing import TextIO

from flowerbed.run.logging_setup import QUIET, VERBOSE

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Ray prefixes what a worker prints with "(ClientAppActor pid=123) "
_WORKER = r"(?:\(\w+ pid=\d+\) )?"
FLOWERBED_LINE = re.compile(rf"^{_WORKER}\d\d:\d\d:\d\d flowerbed (?P<rest>.*)$")
FLOWERBED_ERROR = re.compile(r"^(ERROR|CRITICAL)\b")
FOREIGN_ERROR = re.compile(rf"^{_WORKER}\s*(ERROR|CRITICAL)\b|^flowerbed: error:"
                           r"|^[\w.]*(Error|Exception)\b:")


def strip_ansi(line: str) -> str:
    return ANSI.sub("", line)


class ConsoleFilter:
    """``keep(line)``: whether a stream line goes to the console. Stateful: the lines of a
    traceback (indented frames, up to the exception line) are kept together."""

    def __init__(self, verbosity: int = 0) -> None:
        self.verbosity = verbosity
        self.in_traceback = False

    def keep(self, line: str) -> bool:
        if self.verbosity >= VERBOSE:
            return True
        text = strip_ansi(line).rstrip("\n")
        if text.lstrip().startswith("Traceback (most recent call last)"):
            self.in_traceback = True
            return True
        if self.in_traceback:
            if text.startswith((" ", "\t")) or not text.strip():
                return True
            # the exception line ends the traceback ("ValueError: ...", "During handling")
            if text.startswith(("During handling", "The above exception")):
                return True
            self.in_traceback = False
            if not FLOWERBED_LINE.match(text):
                return True
        m = FLOWERBED_LINE.match(text)
        if m:
            return self.verbosity > QUIET or bool(FLOWERBED_ERROR.match(m.group("rest")))
        return bool(FOREIGN_ERROR.search(text))


class FilteredEcho:
    """A text stream that writes the lines ``ConsoleFilter`` keeps to ``out`` (without
    colour codes unless ``out`` is a terminal)."""

    def __init__(self, out: TextIO, verbosity: int = 0) -> None:
        self.out = out
        self.filter = ConsoleFilter(verbosity)
        try:
            self.colour = bool(out.isatty())
        except (AttributeError, ValueError):
            self.colour = False

    def write(self, line: str) -> int:
        if not self.filter.keep(line):
            return 0
        text = line if self.colour else strip_ansi(line)
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


__all__ = ["ConsoleFilter", "FilteredEcho", "strip_ansi"]
