"""Find a VMCOREINFO blob in a dump's memory, for dumps that lack the note or carry a wrong one.

The kernel keeps its VMCOREINFO text in a zeroed page (``vmcoreinfo_data``, Linux
``kernel/crash_core.c`` ``crash_save_vmcoreinfo_init``), which begins with
``OSRELEASE=``; a second copy sits inside the ELF note ``vmcoreinfo_note``. The
scan tests the start of every page in one vectorised comparison per window, and
accepts a candidate only if it also has ``PAGESIZE=`` and a ``SYMBOL(`` line
(the same test as Stephen Brennan's ``findvmcoreinfo.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdumptool.dump import DumpReader
from kdumptool.vmcoreinfo import VmcoreInfo

MAGIC = b"OSRELEASE="


@dataclass(frozen=True)
class Found:
    """A VMCOREINFO note found in memory: its text and the physical address of the note."""

    paddr: int
    vmcoreinfo: VmcoreInfo


def scan_vmcoreinfo(reader: DumpReader, *, first_only: bool = False) -> list[Found]:
    """Every page-aligned VMCOREINFO text in the dump's memory."""
    magic = np.frombuffer(MAGIC, dtype=np.uint8)
    found: list[Found] = []
    for batch in reader.iter_batches():
        if not len(batch.data):
            continue
        hits = np.flatnonzero((batch.data[:, :len(MAGIC)] == magic).all(axis=1))
        pfns = batch.pfns()
        for row in hits.tolist():
            text = batch.data[row].tobytes().split(b"\0", 1)[0]
            if b"\nPAGESIZE=" in text and b"\nSYMBOL(" in text:
                found.append(Found(int(pfns[row]) * reader.page_size, VmcoreInfo.parse(text)))
                if first_only:
                    return found
    return found
