"""aarch64 address translation: 4K/16K/64K granules, 39- to 52-bit kernel VAs, page-table walks.

Spec: Arm ARM D8 (VMSAv8-64 translation: levels, table/block/page descriptors, 52-bit
output with FEAT_LPA for the 64K granule); Linux ``arch/arm64/include/asm/pgtable-hwdef.h``
(``ARM64_HW_PGTABLE_LEVELS``, ``*_SHIFT``), ``arch/arm64/kernel/crash_core.c`` (VMCOREINFO
``NUMBER(VA_BITS)``, ``NUMBER(kimage_voffset)``, ``NUMBER(PHYS_OFFSET)``,
``NUMBER(TCR_EL1_T1SZ)`` 5.12+, ``KERNELPACMASK``); makedumpfile ``arch/arm64.c``
(``get_versiondep_info_arm64``, ``vaddr_to_paddr_arm64``).

The kernel's VA size is ``64 - TCR_EL1_T1SZ`` when that key exists, else ``VA_BITS``; the
granule is ``PAGESIZE``. The number of levels is ``ceil((va_bits - page_shift) /
(page_shift - 3))``, as the kernel computes it; ``swapper_pg_dir`` is found through
``kimage_voffset`` (a kernel-image address).
"""

from __future__ import annotations

from collections.abc import Callable

from kdumptool.errors import PagingError
from kdumptool.vmcoreinfo import VmcoreInfo, VmcoreInfoKeyError
from kdumptool.vtop.walker import Level, PagingForm, PteDecoder, Walker

MASK64 = (1 << 64) - 1


def paging_form(page_shift: int, va_bits: int) -> PagingForm:
    """The walk for a granule (page_shift 12, 14 or 16) and kernel VA size."""
    if page_shift not in (12, 14, 16):
        raise PagingError(f"aarch64 has no {1 << page_shift}-byte granule")
    if not 36 <= va_bits <= 52:
        raise PagingError(f"aarch64 VA_BITS {va_bits} is out of range (36-52)")
    per_level = page_shift - 3
    levels_n = -(-(va_bits - page_shift) // per_level)
    levels = []
    for i in range(levels_n):
        shift = page_shift + per_level * (levels_n - 1 - i)
        bits = min(per_level, va_bits - shift)
        levels.append(Level(f"L{4 - levels_n + i}", shift, bits))
    return PagingForm(f"aarch64 {1 << page_shift >> 10}K granule, {va_bits}-bit VA, "
                      f"{levels_n} levels", tuple(levels), page_shift)


def decoder(page_shift: int, pa_bits: int = 48) -> PteDecoder:
    """Descriptor rules: bit 0 valid; bits [1:0] = 0b01 is a block above the last level."""
    mask = ((1 << 48) - 1) & ~((1 << page_shift) - 1)

    def address(entry: int, depth: int) -> int:
        addr = entry & mask
        if pa_bits == 52 and page_shift == 16:  # FEAT_LPA: PA[51:48] in bits [15:12]
            addr |= ((entry >> 12) & 0xF) << 48
        return addr

    return PteDecoder(present=lambda e, d: bool(e & 1), leaf=lambda e, d: (e & 3) == 1,
                      address=address)


class Aarch64Translator:
    """Kernel virtual to physical addresses for an aarch64 dump (same interface as x86_64's)."""

    def __init__(self, vmcoreinfo: VmcoreInfo, read_phys: Callable[[int, int], bytes],
                 *, phys_base: int | None = None) -> None:
        v = self.vmcoreinfo = vmcoreinfo
        page_size = v.page_size or 4096
        page_shift = page_size.bit_length() - 1
        if v.has("NUMBER(TCR_EL1_T1SZ)"):
            va_bits = 64 - v.number("TCR_EL1_T1SZ")
        elif v.has("NUMBER(VA_BITS)"):
            va_bits = v.number("VA_BITS")
        else:
            raise VmcoreInfoKeyError("NUMBER(VA_BITS)")
        self.va_bits = va_bits
        self.form = paging_form(page_shift, va_bits)
        pa_bits = 52 if va_bits == 52 and page_shift == 16 else 48
        root = self.image_to_phys(v.symbol("swapper_pg_dir"))
        self.walker = Walker(self.form, decoder(page_shift, pa_bits), root, read_phys)

    def _voffset(self) -> int:
        text = self.vmcoreinfo.require("NUMBER(kimage_voffset)")
        try:
            return int(text, 16) if text.lower().startswith("0x") else int(text)
        except ValueError:
            raise PagingError(f"VMCOREINFO NUMBER(kimage_voffset)={text[:40]!r} is not a number") from None

    def in_image(self, vaddr: int) -> bool:
        """True if ``vaddr`` lies in the kernel image (128 MiB from ``_stext``)."""
        v = self.vmcoreinfo
        return v.has("SYMBOL(_stext)") and v.symbol("_stext") <= vaddr < v.symbol("_stext") + (128 << 20)

    def image_to_phys(self, vaddr: int) -> int:
        """The physical address of a kernel-image address: ``vaddr - kimage_voffset``.

        :raises VmcoreInfoKeyError: ``NUMBER(kimage_voffset)`` is missing
        """
        return (vaddr - self._voffset()) & MASK64

    def translate(self, vaddr: int) -> int:
        """The physical address of ``vaddr``, through the page tables.

        :raises TranslationError: an entry on the way is not present
        """
        return self.walker.translate(vaddr)

    def ranges(self, vaddr: int, size: int) -> list[tuple[int, int]]:
        """Physical ``(paddr, length)`` pieces of ``[vaddr, vaddr + size)``, merged where
        contiguous.

        :raises TranslationError: a page of the range does not translate
        """
        return self.walker.ranges(vaddr, size)

    def is_kernel_address(self, vaddr: int) -> bool:
        """True if ``vaddr`` lies in the kernel half of the address space (TTBR1)."""
        return vaddr >= (MASK64 << self.va_bits) & MASK64
