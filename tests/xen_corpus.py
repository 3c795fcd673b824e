"""Real guest memory for the Xen tests: pages of the x86_64 QEMU corpus dump.

No public Xen guest image exists to test with, so the Xen builders are filled with the pages
of a real Debian 6.1 guest (``x86_64-qemu-256m/qemu-elf.vmcore``, read with kdumptool's ELF
reader): the first 16 MiB and the 32 MiB where that boot's kernel image lies (its
``Linux version`` banner and ``init_uts_ns`` are at PFNs 0xb000-0xcfff).
"""

from __future__ import annotations

import functools

from corpus import need_corpus_file
from kdumptool.open import open_dump

QEMU_ELF = "x86_64-qemu-256m/qemu-elf.vmcore"
VMCOREINFO = "x86_64-qemu-256m/vmcoreinfo.txt"
RANGES = ((0, 0x1000), (0xB000, 0xD000))
RELEASE = "6.1.0-56-amd64"


@functools.cache
def corpus_pages() -> dict[int, bytes]:
    """pfn -> page of the guest, over :data:`RANGES` (pages the dump has)."""
    out: dict[int, bytes] = {}
    with open_dump(str(need_corpus_file(QEMU_ELF))) as reader:
        for start, end in RANGES:
            for first in range(start, end, 2048):
                batch = reader.read_batch(first, min(2048, end - first))
                for pfn, row in zip(batch.pfns().tolist(), batch.data, strict=True):
                    out[pfn] = row.tobytes()
    return out
