"""Progress and cancellation for long work, through one callback shared by the GUI and the CLI.

>>> def report(update: ProgressUpdate) -> bool:
...     print(f"{update.fraction:.0%} {update.rate:.0f} {update.unit}/s")
...     return not cancel_requested          # returning False cancels the work
>>> ticker = Ticker(total=512, callback=report, unit="units")
>>> ticker.advance(64)                       # raises Cancelled when the callback returned False
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from .errors import Cancelled


@dataclass(frozen=True)
class ProgressUpdate:
    done: int
    total: int
    rate: float  # items per second since the start
    unit: str = "items"
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


ProgressCallback = Callable[[ProgressUpdate], "bool | None"]


class Ticker:
    """Counts finished items, reports them, and turns a ``False`` from the callback into :class:`Cancelled`."""

    def __init__(self, total: int, callback: ProgressCallback | None = None, unit: str = "items",
                 message: str = "") -> None:
        self.total, self.callback, self.unit, self.message = total, callback, unit, message
        self.done = 0
        self.start = time.perf_counter()

    def advance(self, count: int = 1, message: str | None = None) -> None:
        self.done += count
        if message is not None:
            self.message = message
        self.report()

    def report(self) -> None:
        if self.callback is None:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        update = ProgressUpdate(self.done, self.total, self.done / elapsed, self.unit, self.message)
        if self.callback(update) is False:
            raise Cancelled(f"Stopped at {self.done} of {self.total} {self.unit}, as asked.")


class TextProgressBar:
    """A progress callback that draws a bar on stderr (the CLI's)."""

    def __init__(self, label: str = "", stream: TextIO | None = None, width: int = 30) -> None:
        self.label, self.stream, self.width = label, stream or sys.stderr, width
        self._last = -1.0

    def __call__(self, update: ProgressUpdate) -> bool:
        now = time.perf_counter()
        if update.done < update.total and now - self._last < 0.1:
            return True
        self._last = now
        filled = int(self.width * update.fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        text = f"\r{self.label} [{bar}] {update.done}/{update.total} {update.unit} {update.rate:.1f}/s {update.message}"
        self.stream.write(text[:160])
        if update.done >= update.total:
            self.stream.write("\n")
        self.stream.flush()
        return True
