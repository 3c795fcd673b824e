"""Free pages on the per-CPU free lists, which dump level 16 does not see.

Spec: SPEC.md §19.3 (profile ``free``). A page freed by the kernel goes first to its CPU's
``struct per_cpu_pages`` of its zone (``zone->per_cpu_pageset``, a per-CPU pointer), linked
through ``page->pcp_list`` (the same word as ``page->lru``) on ``lists[pindex]``; only when
that list is drained does it reach the buddy allocator, whose pages makedumpfile's level 16
excludes (``_mapcount == PAGE_BUDDY_MAPCOUNT_VALUE``). A page on a per-CPU list has neither
mark, so ``-d 31`` keeps it, whatever it held (Linux ``mm/page_alloc.c``
``free_unref_page_commit``, ``order_to_pindex``; ``include/linux/mmzone.h``).

``pindex`` gives the order: lists ``0 .. MIGRATE_PCPTYPES * 4 - 1`` hold orders 0-3
(``PAGE_ALLOC_COSTLY_ORDER`` is 3), ``pindex // MIGRATE_PCPTYPES``; the lists after them (with
THP) hold ``pageblock_order`` pages (``PAGE_SHIFT - 3`` with 4 KiB to 64 KiB pages). Every
offset comes from the dump's BTF; lists are walked bounded, with cycle detection.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import numpy as np

from kdumptool.errors import KdumpToolError, KernelDataError
from kdumptool.kernel.session import Kernel
from kdumptool.kernel.structs import Fields, walk_list

#: More pages than a per-CPU list holds (``pcp->high`` is at most a few thousand).
MAX_PCP_PAGES = 1 << 16
MAX_CPUS = 8192
#: ``PAGE_ALLOC_COSTLY_ORDER`` (include/linux/mmzone.h, unchanged since 2.6.23).
COSTLY_ORDER = 3


def page_to_pfn(kernel: Kernel) -> Callable[[int], int | None]:
    """``f(address of a struct page) -> its PFN`` (None outside every mem_map range)."""
    from kdumptool.filters.mem_map import find_mem_map
    from kdumptool.vtop import translator_for

    xlat = translator_for(kernel.reader)
    ranges = sorted(find_mem_map(kernel.vmcoreinfo, kernel.reader.max_pfn, kernel.mem.read,
                                 xlat.is_kernel_address), key=lambda r: r.mem_map)
    starts = [r.mem_map for r in ranges]
    size = kernel.btf.sizeof(kernel.btf.find("page", "struct"))

    def pfn(addr: int) -> int | None:
        i = bisect.bisect_right(starts, addr) - 1
        if i < 0:
            return None
        r = ranges[i]
        k, rem = divmod(addr - r.mem_map, size)
        return r.pfn_start + k if not rem and k < r.pfn_end - r.pfn_start else None

    return pfn


def _ptr(kernel: Kernel, addr: int, what: str) -> int:
    return kernel.mem.u64(addr, what)


def _cpu_offsets(kernel: Kernel) -> list[int]:
    base = kernel.symbol("__per_cpu_offset")
    ncpus = kernel.mem.u32(kernel.symbol("nr_cpu_ids"), "nr_cpu_ids")
    return [_ptr(kernel, base + 8 * cpu, "__per_cpu_offset") for cpu in range(min(ncpus, MAX_CPUS))]


def _zones(kernel: Kernel) -> list[int]:
    """Address of every ``struct zone`` (``node_data[]``, or ``contig_page_data``)."""
    btf = kernel.btf
    nodes: list[int] = []
    arr = kernel.core_symbols.address("node_data")
    if arr is not None:
        vmci = kernel.vmcoreinfo
        count = vmci.length("node_data") if vmci.has("LENGTH(node_data)") else 1
        nodes = [p for p in (_ptr(kernel, arr + 8 * i, "node_data") for i in range(min(count, 1 << 12))) if p]
    else:
        nodes = [kernel.symbol("contig_page_data")]
    zone_size = btf.sizeof(btf.find("zone", "struct"))
    first = btf.offsetof("pglist_data", "node_zones")
    nr = btf.offsetof("pglist_data", "nr_zones")
    out = []
    for node in nodes:
        for z in range(kernel.mem.u32(node + nr, "pglist_data.nr_zones") & 0xFF):
            out.append(node + first + z * zone_size)
    return out


def pcp_free_pages(kernel: Kernel) -> tuple[np.ndarray, list[str]]:
    """PFNs of every page on a per-CPU free list, and notes on what could not be read.

    :raises KdumpToolError: the kernel lacks the structures (BTF members, symbols, mem_map)
    """
    page_pfn = page_to_pfn(kernel)
    btf = kernel.btf
    pcp = Fields(btf, "per_cpu_pages", ("count", "lists"))
    lists = btf.resolve(btf.member("per_cpu_pages", "lists").type)
    if lists.kind != "array" or lists.array is None:
        raise KernelDataError("per_cpu_pages.lists is not an array")
    nlists, head_size = lists.array.nelems, btf.sizeof(btf.find("list_head", "struct"))
    pcptypes = dict(btf.find("migratetype", ("enum", "enum64")).enumerators)["MIGRATE_PCPTYPES"]
    page_shift = kernel.vmcoreinfo.page_size.bit_length() - 1 if kernel.vmcoreinfo.page_size else 12
    link = btf.offsetof("page", "lru")
    zone_pcp = btf.offsetof("zone", "per_cpu_pageset")
    notes: list[str] = []
    pfns: list[np.ndarray] = []
    offsets = _cpu_offsets(kernel)
    for zone in _zones(kernel):
        base = _ptr(kernel, zone + zone_pcp, "zone.per_cpu_pageset")
        if not base:
            continue
        for cpu, off in enumerate(offsets):
            at = (base + off) % (1 << 64)
            for index in range(nlists):
                order = index // pcptypes if index < pcptypes * (COSTLY_ORDER + 1) else page_shift - 3
                head = at + pcp.offset("lists") + index * head_size
                try:
                    for node in walk_list(kernel.mem, head, what=f"cpu {cpu} pcp list {index}",
                                          limit=MAX_PCP_PAGES):
                        pfn = page_pfn(node - link)
                        if pfn is not None:
                            pfns.append(np.arange(pfn, pfn + (1 << order), dtype=np.int64))
                except KdumpToolError as exc:
                    notes.append(f"per-CPU free list of cpu {cpu}, zone at {zone:#x}: {exc}")
    out = np.unique(np.concatenate(pfns)) if pfns else np.zeros(0, dtype=np.int64)
    return out, notes
