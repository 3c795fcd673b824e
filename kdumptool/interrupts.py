"""Interrupts that are never lost.

The command line turns SIGINT and SIGTERM into :class:`KeyboardInterrupt`, which unwinds
through the atomic-output cleanup. Python delivers it wherever the main thread happens to
be; when that is a weak-reference callback or a ``__del__`` (an import lock's callback
during a lazy import, say), CPython prints "Exception ignored in ..." and carries on, and a
run that was asked to stop would finish and publish its output. So the handler also records
the signal, and the long loops (every window of pages, every chunk of a parallel job) and
the atomic rename of an output call :func:`check`, which raises it again.

The library never installs the handler: a program that embeds kdumptool keeps its own.
"""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["check", "install"]

_pending = 0  # the signal received, 0 if none


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = signum
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGTERM, and SIGINT unless it was inherited ignored (a background job's), by
    raising :class:`KeyboardInterrupt` and remembering it for :func:`check`."""
    signal.signal(signal.SIGTERM, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_signal)


def check() -> None:
    """Raise :class:`KeyboardInterrupt` if a signal handled by :func:`install` arrived (its
    first raise may have been swallowed where Python ignores exceptions)."""
    if _pending:
        raise KeyboardInterrupt
