"""Find the kernel's ``struct page`` array (mem_map) for every PFN, from VMCOREINFO.

Spec: Linux ``include/linux/mmzone.h`` (``struct mem_section``, ``SECTION_MARKED_PRESENT``,
``SECTION_MAP_MASK``, ``sparse_decode_mem_map``: the stored map pointer is the section's
mem_map minus ``section_start_pfn * sizeof(struct page)``), ``kernel/crash_core.c``
(``SYMBOL(mem_section)``, ``LENGTH(mem_section)``, ``SIZE(mem_section)``,
``OFFSET(mem_section.section_mem_map)``, ``NUMBER(SECTION_SIZE_BITS)``,
``NUMBER(MAX_PHYSMEM_BITS)``, ``SYMBOL(mem_map)``); makedumpfile ``makedumpfile.c``
(``get_mem_type``, ``is_sparsemem_extreme``, ``get_mm_sparsemem``, ``validate_mem_section``,
``get_mm_flatmem``), whose choices are followed here:

* SPARSEMEM (``SYMBOL(mem_section)`` with ``SIZE(mem_section)`` and the
  ``section_mem_map`` offset): SPARSEMEM_EXTREME when ``LENGTH(mem_section)`` equals the
  number of roots (``NR_MEM_SECTIONS / (PAGE_SIZE / SIZE(mem_section))``) or is absent;
  the symbol is tried first as the root array, then as a pointer to it (kernels 4.15+
  built with ``-x vmlinux`` semantics);
* FLATMEM (``SYMBOL(mem_map)``): one array for every PFN;
* DISCONTIGMEM (``node_data``/``pgdat_list`` with ``pglist_data.node_mem_map``) is not
  implemented (no supported 64-bit kernel since 5.14 uses it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from kdumptool.errors import KdumpToolError, MemMapError
from kdumptool.vmcoreinfo import VmcoreInfo

SECTION_MARKED_PRESENT = 1 << 0
SECTION_MAP_LAST_BIT = 1 << 5  # makedumpfile uses the 4.13+ value for every kernel
SECTION_MAP_MASK = ~(SECTION_MAP_LAST_BIT - 1) & ((1 << 64) - 1)


@dataclass(frozen=True)
class MemMapRange:
    """``struct page`` of PFNs ``[pfn_start, pfn_end)`` starts at virtual ``mem_map``."""

    pfn_start: int
    pfn_end: int
    mem_map: int


def memory_model(vmci: VmcoreInfo) -> str:
    """``"sparsemem"``, ``"sparsemem_extreme"``, ``"flatmem"`` or ``"discontigmem"``.

    :raises MemMapError: VMCOREINFO lacks what any model needs
    """
    for key in ("SIZE(page)", "OFFSET(page.flags)", "OFFSET(page._refcount)", "OFFSET(page.mapping)"):
        if not vmci.has(key) and not (key == "OFFSET(page._refcount)" and vmci.has("OFFSET(page._count)")):
            raise MemMapError(f"VMCOREINFO has no {key}: struct page cannot be decoded")
    if vmci.has("OFFSET(pglist_data.node_mem_map)") and (vmci.has("SYMBOL(node_data)")
                                                         or vmci.has("SYMBOL(pgdat_list)")):
        return "discontigmem"
    if (vmci.has("SYMBOL(mem_section)") and vmci.has("SIZE(mem_section)")
            and vmci.has("OFFSET(mem_section.section_mem_map)")):
        return "sparsemem_extreme" if _is_extreme(vmci) else "sparsemem"
    if vmci.has("SYMBOL(mem_map)"):
        return "flatmem"
    raise MemMapError("VMCOREINFO describes no memory model (no SYMBOL(mem_section) or SYMBOL(mem_map))")


def _page_shift(vmci: VmcoreInfo) -> int:
    return (vmci.page_size or 4096).bit_length() - 1


def _is_extreme(vmci: VmcoreInfo) -> bool:
    if not vmci.has("LENGTH(mem_section)"):
        return True
    bits = vmci.number("MAX_PHYSMEM_BITS") - vmci.number("SECTION_SIZE_BITS")
    if not 0 <= bits <= 40 or vmci.size("mem_section") <= 0:
        raise MemMapError("NUMBER(MAX_PHYSMEM_BITS), NUMBER(SECTION_SIZE_BITS) or SIZE(mem_section) "
                          "is impossible")
    nr_sections = 1 << bits
    per_root = max(1, (vmci.page_size or 4096) // vmci.size("mem_section"))
    return vmci.length("mem_section") == -(-nr_sections // per_root)


def find_mem_map(vmci: VmcoreInfo, max_pfn: int, read_virt: Callable[[int, int], bytes],
                 is_kernel_address: Callable[[int], bool]) -> list[MemMapRange]:
    """Every PFN range that has a ``struct page`` array, in PFN order.

    :param read_virt: reads kernel virtual memory
    :raises MemMapError: the model is unsupported or mem_section does not validate
    """
    model = memory_model(vmci)
    if model == "flatmem":
        (mem_map,) = struct.unpack("<Q", read_virt(vmci.symbol("mem_map"), 8))
        if not mem_map:
            raise MemMapError("mem_map pointer is NULL")
        return [MemMapRange(0, max_pfn, mem_map)]
    if model == "discontigmem":
        raise MemMapError("DISCONTIGMEM kernels are not supported yet")
    return _sparsemem(vmci, max_pfn, read_virt, is_kernel_address, model == "sparsemem_extreme")


def _sparsemem(vmci: VmcoreInfo, max_pfn: int, read_virt: Callable[[int, int], bytes],
               is_kva: Callable[[int], bool], extreme: bool) -> list[MemMapRange]:
    pfn_shift = vmci.number("SECTION_SIZE_BITS") - _page_shift(vmci)
    if not 0 <= pfn_shift <= 40:
        raise MemMapError(f"NUMBER(SECTION_SIZE_BITS)={vmci.number('SECTION_SIZE_BITS')} is impossible "
                          f"with {vmci.page_size}-byte pages")
    per_section = 1 << pfn_shift
    num_section = -(-max_pfn // per_section)
    sec_size = vmci.size("mem_section")
    map_off = vmci.offset("mem_section.section_mem_map")
    size_page = vmci.size("page")
    if sec_size <= 0 or size_page <= 0:
        raise MemMapError("SIZE(mem_section) and SIZE(page) must be positive")
    per_root = max(1, (vmci.page_size or 4096) // sec_size) if extreme else 1
    nr_roots = -(-num_section // per_root)
    symbol = vmci.symbol("mem_section")

    def sections(base: int) -> list[MemMapRange] | None:
        roots: list[int] = []
        if extreme:
            raw = read_virt(base, 8 * nr_roots)
            roots = list(struct.unpack(f"<{nr_roots}Q", raw))
        out: list[MemMapRange] = []
        valid = False
        for nr in range(num_section):
            if extreme:
                root = roots[nr // per_root]
                if root == 0:
                    continue
                addr = root + (nr % per_root) * sec_size
            else:
                addr = base + nr * sec_size
            if not is_kva(addr):
                continue
            (coded,) = struct.unpack("<Q", read_virt(addr + map_off, 8))
            if not coded & SECTION_MARKED_PRESENT:
                continue
            mem_map = ((coded & SECTION_MAP_MASK) + (nr << pfn_shift) * size_page) & ((1 << 64) - 1)
            if not is_kva(mem_map):
                return None
            valid = True
            start = nr << pfn_shift
            out.append(MemMapRange(start, min(start + per_section, max_pfn), mem_map))
        return out if valid else None

    try:
        found = sections(symbol)
    except KdumpToolError:
        found = None
    if found is None and extreme:
        (pointer,) = struct.unpack("<Q", read_virt(symbol, 8))
        found = sections(pointer)
    if found is None:
        raise MemMapError("mem_section does not validate (no section with a kernel mem_map)")
    return found
