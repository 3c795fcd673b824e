"""The x86_64 kernel's KASLR offset from a CPU's CR3, without VMCOREINFO or symbols.

Linux x86_64 maps its image in the 1 GiB window at ``__START_KERNEL_map``
(``0xffffffff80000000``, ``arch/x86/include/asm/page_64_types.h``), with 2 MiB pages
of ``level2_kernel_pgt``; ``cleanup_highmap()`` (``arch/x86/mm/init_64.c``) clears
every entry below ``_text`` and past ``_end``. So the first present entry of that
window is the 2 MiB page holding ``_text``, and (``arch/x86/kernel/vmlinux.lds.S``,
``__START_KERNEL = __START_KERNEL_map + CONFIG_PHYSICAL_START``, 16 MiB on distribution
kernels)::

    KERNELOFFSET = _text - 0xffffffff81000000   (what VMCOREINFO calls KERNELOFFSET)
    phys_base    = phys(_text) - (_text - __START_KERNEL_map)

QEMU's ``QEMUCPUState`` note (``dump/dump.c``) records each vCPU's CR3 and CR4.
CR3 bits 0-11 are the PCID, bit 12 selects the user copy of the page tables under
page-table isolation (``PTI_USER_PGTABLE_BIT``, ``arch/x86/entry/calling.h``), bit 63
is "no flush"; all are cleared to get the kernel's top-level table. CR4.LA57 (bit 12)
selects 5-level paging.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdumptool.dump import DumpReader
from kdumptool.errors import KdumpToolError

START_KERNEL_MAP = 0xFFFFFFFF80000000
#: ``__START_KERNEL`` without randomisation (CONFIG_PHYSICAL_START = 16 MiB).
DEFAULT_TEXT = 0xFFFFFFFF81000000
_CR3_TABLE = 0x000F_FFFF_FFFF_E000  # bits 13-51: bit 12 is PTI's user copy
_ADDR = 0x000F_FFFF_FFFF_F000
_PRESENT, _PSE = 1, 0x80
_CR4_LA57 = 1 << 12


@dataclass(frozen=True)
class KernelImage:
    """Where a CPU's page tables put the kernel image."""

    cr3: int
    levels: int  # 4 or 5
    text: int  # virtual address of the first mapped 2 MiB page of the image (_text)
    text_phys: int

    @property
    def kaslr_offset(self) -> int:
        """How far the kernel text was moved from its link address (``KERNELOFFSET``)."""
        return self.text - DEFAULT_TEXT

    @property
    def phys_base(self) -> int:
        """``phys_base``: where the kernel image's first byte lies in physical memory, relative
        to where it was linked.
        """
        return (self.text_phys - (self.text - START_KERNEL_MAP)) % (1 << 64)


def _table(reader: DumpReader, paddr: int) -> np.ndarray:
    raw = reader.read(paddr & _ADDR, 4096)
    return np.frombuffer(raw, dtype="<u8")


def kernel_image_from_cr3(reader: DumpReader, cr3: int, cr4: int = 0) -> KernelImage | None:
    """The kernel image mapping of the page tables at ``cr3``, or None if they do not map one.

    Reads at most three page-table pages (four with 5-level paging); never raises for
    what the dump holds.
    """
    levels = 5 if cr4 & _CR4_LA57 else 4
    try:
        table = cr3 & _CR3_TABLE
        # top-level index 511 for the last 512 GiB (5-level: the last 256 TiB first)
        for _ in range(levels - 3):
            entry = int(_table(reader, table)[511])
            if not entry & _PRESENT or entry & _PSE:
                return None
            table = entry & _ADDR
        pud = int(_table(reader, table)[510])  # the 1 GiB at __START_KERNEL_map
        if not pud & _PRESENT or pud & _PSE:
            return None
        pmd = _table(reader, pud & _ADDR)
    except KdumpToolError:
        return None
    present = np.flatnonzero(pmd & _PRESENT)
    if not len(present):
        return None
    i = int(present[0])
    entry = int(pmd[i])
    text = START_KERNEL_MAP + (i << 21)
    if entry & _PSE:
        phys = entry & _ADDR & ~((1 << 21) - 1)
    else:  # a 4 KiB page table: its first present entry
        try:
            pte = _table(reader, entry & _ADDR)
        except KdumpToolError:
            return None
        first = np.flatnonzero(pte & _PRESENT)
        if not len(first):
            return None
        text += int(first[0]) << 12
        phys = int(pte[int(first[0])]) & _ADDR
    return KernelImage(cr3=cr3, levels=levels, text=text, text_phys=phys)
