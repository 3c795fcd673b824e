"""A progress line for long runs: pages done, percentage, rate and time left.

Shown on standard error only when it is a terminal and ``-q`` is not given (a script or a
log file gets nothing), redrawn at most a few times a second, and only once a run has
lasted long enough to need it; cleared when the run ends. The bar is measured in pages of
the input that hold data, the work the writers do.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_duration", "progress_for"]

#: No line before a run has lasted this long (a short run would only flicker); the
#: environment variable ``KDUMPTOOL_PROGRESS_DELAY`` (seconds) changes it.
DELAY = 0.5
#: Redraw at most this often.
INTERVAL = 0.2


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Counts pages done out of ``total`` and draws one line on ``stream``.

    :param total: pages expected (0 when unknown: no percentage, no time left)
    :param page_size: bytes per page (for the rate)
    :param label: what is being done, e.g. the output file's name
    :param clock: time source (tests pass their own)
    """

    def __init__(self, total: int, page_size: int, label: str, *, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = max(0, total)
        self.page_size = page_size
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.done = 0
        self.start = clock()
        self._last_draw = 0.0
        self._drawn = False
        try:
            self.delay = float(os.environ.get("KDUMPTOOL_PROGRESS_DELAY", DELAY))
        except ValueError:
            self.delay = DELAY

    def advance(self, pages: int) -> None:
        """Count ``pages`` more as done; redraw at most every :data:`INTERVAL` seconds, and only
        once :attr:`delay` has passed.
        """
        self.done += pages
        now = self.clock()
        if now - self.start >= self.delay and now - self._last_draw >= INTERVAL:
            self._draw(now)

    def line(self, now: float) -> str:
        """The text of the line at time ``now``."""
        elapsed = max(now - self.start, 1e-9)
        rate = self.done * self.page_size / elapsed / (1 << 20)
        parts = [self.label]
        if self.total:
            frac = min(1.0, self.done / self.total)
            width = 20
            fill = int(frac * width)
            parts.append(f"[{'#' * fill}{'.' * (width - fill)}] {frac * 100:5.1f}%")
        parts.append(f"{self.done}{f'/{self.total}' if self.total else ''} pages")
        parts.append(f"{rate:.0f} MiB/s")
        if self.total and self.done:
            left = elapsed * (self.total - min(self.done, self.total)) / self.done
            parts.append(f"ETA {format_duration(left)}")
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        cols = shutil.get_terminal_size((80, 24)).columns
        text = self.line(now)[:max(10, cols - 1)]
        self.stream.write("\r" + text + "\033[K")
        self.stream.flush()
        self._last_draw = now
        self._drawn = True

    def close(self) -> None:
        """Erase the line (the command prints its own summary after)."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False


def progress_for(total: Callable[[], int], page_size: int, label: str, *, quiet: bool,
                 stream: TextIO | None = None) -> Progress | None:
    """A :class:`Progress` when the user can see it (``stream`` is a terminal, not ``quiet``).

    :param total: counts the pages to do (called only when the line will be shown)
    """
    stream = stream if stream is not None else sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return Progress(total(), page_size, label, stream=stream) if tty and not quiet else None
