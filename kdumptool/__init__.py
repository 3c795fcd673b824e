"""kdumptool: convert, filter, validate and repair Linux kernel crash dumps.

The package reads and writes the formats described in ``SPEC.md``: ELF core
files (``/proc/vmcore``, ``makedumpfile -E``, QEMU ``dump-guest-memory``),
makedumpfile's kdump-compressed format and its flattened stream.

Typical use::

    from kdumptool import open_dump
    with open_dump("vmcore") as dump:
        print(dump.info.release, dump.read(0x1000, 16))
"""

from __future__ import annotations

from typing import Any

__all__ = ["open_dump"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``open_dump`` is imported on first use: ``kdumptool --help`` does not load NumPy."""
    if name == "open_dump":
        from kdumptool.open import open_dump

        return open_dump
    raise AttributeError(f"module 'kdumptool' has no attribute {name!r}")
