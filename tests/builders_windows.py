"""Builder of Windows complete memory dumps as QEMU's ``win-dmp`` writes them.

Written from QEMU ``include/qemu/win_dump_defs.h`` (``WinDumpHeader64``) and ``dump/win_dump.c``:
an 8 KiB header, the physical memory descriptor at 0x88, the runs' pages after the header.
"""

from __future__ import annotations

import struct
from collections.abc import Callable


def build_win_dmp64(runs: list[tuple[int, int]], page: Callable[[int], bytes], *,
                    header: dict | None = None,
                    nruns: int | None = None, npages: int | None = None) -> bytes:
    """A ``PAGEDU64`` file: ``runs`` = [(BasePage, PageCount)], pages from ``page(pfn)``."""
    h = bytearray(0x2000)
    h[0:8] = b"PAGEDU64"
    v = {"major": 15, "minor": 19041, "dtb": 0x1AD000, "cpus": 2, "bugcheck": 0xDEADDEAD,
         "kdbg": 0xFFFFF80000000000, "dump_type": 1, **(header or {})}
    struct.pack_into("<II", h, 8, v["major"], v["minor"])
    struct.pack_into("<Q", h, 0x10, v["dtb"])
    struct.pack_into("<II", h, 0x30, 0x8664, v["cpus"])
    struct.pack_into("<I", h, 0x38, v["bugcheck"])
    struct.pack_into("<Q", h, 0x80, v["kdbg"])
    struct.pack_into("<IIQ", h, 0x88, len(runs) if nruns is None else nruns, 0,
                     sum(c for _, c in runs) if npages is None else npages)
    for k, (b, c) in enumerate(runs):
        struct.pack_into("<QQ", h, 0x98 + 16 * k, b, c)
    struct.pack_into("<I", h, 0xF98, v["dump_type"])
    body = b"".join(page(b + i) for b, c in runs for i in range(c))
    return bytes(h) + body
