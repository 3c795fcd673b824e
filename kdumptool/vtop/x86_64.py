"""x86_64 address translation: 4- and 5-level paging, kernel image, page-table walks.

Spec: Intel SDM vol. 3 ch. 4.5 (4-level and 5-level paging); Linux
``arch/x86/include/asm/pgtable_64_types.h`` (``PGDIR_SHIFT`` 39 or 48, ``P4D_SHIFT`` 39,
``PUD_SHIFT`` 30, ``PMD_SHIFT`` 21), ``arch/x86/include/asm/pgtable_types.h``
(``_PAGE_PRESENT`` bit 0, ``_PAGE_PSE`` bit 7), ``page_64_types.h`` (``__START_KERNEL_map``);
VMCOREINFO ``NUMBER(pgtable_l5_enabled)`` (Linux 4.17+, ``arch_crash_save_vmcoreinfo``),
``NUMBER(sme_mask)`` (4.14+), ``SYMBOL(init_top_pgt)`` (4.13+; ``init_level4_pgt`` before).
makedumpfile ``arch/x86_64.c`` (``vtop4_x86_64``) translates the same way.

Which method applies is chosen by VMCOREINFO keys, not by kernel version: kernel-image
addresses through ``phys_base`` (:mod:`kdumptool.vtop.kernel_image`), everything else
through the page tables rooted at ``init_top_pgt``.
"""

from __future__ import annotations

from collections.abc import Callable

from kdumptool.vmcoreinfo import VmcoreInfo, VmcoreInfoKeyError
from kdumptool.vtop.kernel_image import START_KERNEL_MAP_X86_64, kernel_image_to_phys
from kdumptool.vtop.walker import Level, PagingForm, PteDecoder, Walker

# canonical addresses (Intel SDM vol. 1 3.3.7.1): bits 63-47 (5-level: 63-56) equal
FOUR_LEVEL = PagingForm("x86_64 4-level", (
    Level("pgd", 39, 9), Level("pud", 30, 9), Level("pmd", 21, 9), Level("pte", 12, 9)),
    sign_extended=True)
FIVE_LEVEL = PagingForm("x86_64 5-level", (
    Level("pgd", 48, 9), Level("p4d", 39, 9), Level("pud", 30, 9), Level("pmd", 21, 9),
    Level("pte", 12, 9)), sign_extended=True)

_PRESENT = 1 << 0
_PSE = 1 << 7
_ADDR_MASK = ((1 << 52) - 1) & ~0xFFF


def decoder(sme_mask: int = 0) -> PteDecoder:
    """Entry rules; ``sme_mask`` (AMD memory encryption bit) is not part of addresses."""
    mask = _ADDR_MASK & ~sme_mask

    def leaf(entry: int, depth: int) -> bool:
        return bool(entry & _PSE) and depth > 0  # 1 GiB at pud, 2 MiB at pmd; never at pgd

    return PteDecoder(present=lambda e, d: bool(e & _PRESENT), leaf=leaf,
                      address=lambda e, d: e & mask)


class X86_64Translator:
    """Kernel virtual to physical addresses for an x86_64 dump.

    :param vmcoreinfo: needs ``SYMBOL(init_top_pgt)`` (or ``init_level4_pgt``) and
        ``NUMBER(phys_base)`` (or ``phys_base``)
    :param read_phys: reads physical memory of the dump
    :param frame_map: see :class:`~kdumptool.vtop.walker.Walker` (Xen PV dump-core)
    """

    def __init__(self, vmcoreinfo: VmcoreInfo, read_phys: Callable[[int, int], bytes],
                 *, phys_base: int | None = None,
                 frame_map: Callable[[int], int] | None = None) -> None:
        self.vmcoreinfo = vmcoreinfo
        self.phys_base = phys_base
        five = vmcoreinfo.has("NUMBER(pgtable_l5_enabled)") and vmcoreinfo.number("pgtable_l5_enabled")
        self.form = FIVE_LEVEL if five else FOUR_LEVEL
        sme = vmcoreinfo.number("sme_mask") if vmcoreinfo.has("NUMBER(sme_mask)") else 0
        for name in ("init_top_pgt", "init_level4_pgt"):
            if vmcoreinfo.has(f"SYMBOL({name})"):
                top = vmcoreinfo.symbol(name)
                break
        else:
            raise VmcoreInfoKeyError("SYMBOL(init_top_pgt)")
        self.image_size = (vmcoreinfo.number("KERNEL_IMAGE_SIZE")
                           if vmcoreinfo.has("NUMBER(KERNEL_IMAGE_SIZE)") else 1 << 30)
        root = self.image_to_phys(top)
        self.walker = Walker(self.form, decoder(sme), root, read_phys, frame_map=frame_map)

    def in_image(self, vaddr: int) -> bool:
        """True if ``vaddr`` lies in the kernel image mapping (from ``__START_KERNEL_map``)."""
        return START_KERNEL_MAP_X86_64 <= vaddr < START_KERNEL_MAP_X86_64 + self.image_size

    def image_to_phys(self, vaddr: int) -> int:
        """The physical address of a kernel-image address: ``vaddr - __START_KERNEL_map +
        phys_base``.
        """
        return kernel_image_to_phys(self.vmcoreinfo, "x86_64", vaddr, self.phys_base)

    def translate(self, vaddr: int) -> int:
        """Physical address of ``vaddr``. :raises TranslationError: not mapped."""
        if self.in_image(vaddr):
            return self.image_to_phys(vaddr)
        return self.walker.translate(vaddr)

    def ranges(self, vaddr: int, size: int) -> list[tuple[int, int]]:
        """Physical pieces of a virtual range."""
        if self.in_image(vaddr) and self.in_image(vaddr + size - 1):
            return [(self.image_to_phys(vaddr), size)]
        return self.walker.ranges(vaddr, size)

    @staticmethod
    def is_kernel_address(vaddr: int) -> bool:
        """In the upper (kernel) half of the canonical address space."""
        return vaddr >= 0xFF00000000000000
