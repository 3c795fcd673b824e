"""Translate kernel-image virtual addresses (text, data, bss) without page tables.

The kernel image is mapped at a fixed distance from its physical load address:

* x86_64: ``paddr = vaddr - __START_KERNEL_map + phys_base`` with
  ``__START_KERNEL_map = 0xffffffff80000000`` (Linux ``arch/x86/include/asm/page_64_types.h``)
  and ``NUMBER(phys_base)`` from VMCOREINFO (Linux ``arch/x86/kernel/machine_kexec_64.c``
  ``arch_crash_save_vmcoreinfo``; makedumpfile ``arch/x86_64.c`` ``get_phys_base_x86_64``);
* aarch64: ``paddr = vaddr - kimage_voffset`` with ``NUMBER(kimage_voffset)``
  (Linux ``arch/arm64/kernel/crash_core.c``; makedumpfile ``arch/arm64.c``).

Symbols such as ``init_uts_ns`` (``SYMBOL(init_uts_ns)``) live in the image, so
this is enough to read ``struct new_utsname`` from a dump.
"""

from __future__ import annotations

from kdumptool.errors import AddressError
from kdumptool.vmcoreinfo import VmcoreInfo, VmcoreInfoKeyError

START_KERNEL_MAP_X86_64 = 0xFFFFFFFF80000000
MASK64 = (1 << 64) - 1


def kernel_image_to_phys(vmcoreinfo: VmcoreInfo, machine: str, vaddr: int,
                         phys_base: int | None = None) -> int:
    """Physical address of a kernel-image virtual address.

    :param phys_base: x86_64 fallback when VMCOREINFO lacks ``NUMBER(phys_base)``
    :raises VmcoreInfoKeyError: a needed key is missing
    :raises AddressError: the machine is not supported or the address is not in the image
    """
    if machine == "x86_64":
        if vmcoreinfo.has("NUMBER(phys_base)"):
            base = vmcoreinfo.number("phys_base")
        elif phys_base is not None:
            base = phys_base
        else:
            raise VmcoreInfoKeyError("NUMBER(phys_base)")
        if vaddr < START_KERNEL_MAP_X86_64:
            raise AddressError(f"{vaddr:#x} is not a kernel-image address")
        return (vaddr - START_KERNEL_MAP_X86_64 + base) & MASK64
    if machine == "aarch64":
        return (vaddr - vmcoreinfo.number("kimage_voffset")) & MASK64
    raise AddressError(f"kernel-image translation is not implemented for {machine or 'this machine'}")
