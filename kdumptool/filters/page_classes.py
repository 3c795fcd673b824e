"""Decide, from ``struct page``, which pages dump levels 2, 4, 8 and 16 exclude.

The rules are makedumpfile 1.7's (``makedumpfile.c`` ``__exclude_unnecessary_pages``,
``page_is_buddy_v2/v3``, ``is_cache_page``, ``isHugetlb``, ``isSlab``, ``isOffline``,
``init_compound_offset``; ``makedumpfile.h`` ``isLRU``, ``isPrivate``, ``isCompoundHead``,
``isAnon``, ``isUnaccepted``, ``isHWPOISON``), as of 1.7.9+ (they give 1.7.2's results on
kernels 1.7.2 knows), applied in the same order to each page that lies in RAM:

1. a compound *tail* page (``compound_head & 1``; ``page.compound_info`` on 7.1+) is
   skipped: its head decides for it;
2. level 16 — free: ``page_is_buddy``: not slab and ``_mapcount ==
   NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)`` (2.6.38+), else ``PG_buddy`` in flags (2.6.17–2.6.37);
   ``1 << private`` pages from there are excluded (an order not below
   ``LENGTH(zone.free_area)`` is reported and the page kept); also unaccepted memory
   (``_mapcount == NUMBER(PAGE_UNACCEPTED_MAPCOUNT_VALUE)``, 6.16+), ``1 << (MAX_ORDER)`` pages;
3. level 2 — cache without private data: ``is_cache_page`` (``PG_lru``, or ``PG_swapcache``
   with ``PG_swapbacked`` — or without it before 4.10) and not ``PG_private`` and not anon;
4. level 4 — cache, private or not: ``is_cache_page`` and not anon;
5. level 8 — user data: anon (``mapping & PAGE_MAPPING_ANON`` and not slab) or a hugetlb
   head;
6. always: ``PG_hwpoison``; logically offline pages (not slab and ``_mapcount ==
   NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)``, 5.0+).

Slab: ``_mapcount == NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)`` (page type, 6.10+) or ``PG_slab``.
Compound order and hugetlb come from the page after the head, by kernel generation, chosen
by which keys VMCOREINFO has: ``NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)`` (6.9+: order in the low
byte of the next page's flags, hugetlb when the head's ``_mapcount`` is that value);
``NUMBER(PG_hugetlb)`` (6.6+: order likewise, hugetlb when that bit is in the next page's
flags); ``OFFSET(folio._folio_order)``/``_folio_dtor`` (6.3+, relative to the next page);
``OFFSET(page.compound_order)``/``compound_dtor`` (a byte since 4.16); hugetlb then means
``dtor == NUMBER(HUGETLB_PAGE_DTOR)`` (or ``SYMBOL(free_huge_page)`` before 4.4). An order
that is not aligned with the PFN is ignored. For levels 2–8 a compound head excludes
``1 << order`` pages; pages inside an excluded range are not examined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdumptool.errors import PageClassError
from kdumptool.filters.levels import (
    DL_EXCLUDE_CACHE,
    DL_EXCLUDE_CACHE_PRI,
    DL_EXCLUDE_FREE,
    DL_EXCLUDE_USER_DATA,
)
from kdumptool.vmcoreinfo import VmcoreInfo

PAGE_MAPPING_ANON = 1
# class codes in the result array
KEEP, CACHE, CACHE_PRIVATE, USER, FREE, HWPOISON, OFFLINE = range(7)
CLASS_NAMES = {CACHE: "cache", CACHE_PRIVATE: "cache_private", USER: "user", FREE: "free",
               HWPOISON: "hwpoison", OFFLINE: "offline"}


def _test_bit(flags: np.ndarray, nr: int) -> np.ndarray:
    """makedumpfile's ``test_bit``: an ``int`` mask ``1 << (nr & 31)`` (sign-extended)."""
    mask = np.uint64((1 << (nr & 31)) if (nr & 31) != 31 else 0xFFFFFFFF80000000)
    return (flags & mask) != 0


def _bit(flags: np.ndarray, nr: int) -> np.ndarray:
    return (flags & np.uint64(1 << nr)) != 0


@dataclass
class PageLayout:
    """Where the fields makedumpfile reads lie in ``struct page`` (from VMCOREINFO)."""

    size: int
    flags: int
    mapping: int
    mapcount: int | None
    private: int | None
    compound_head: int | None
    compound_order: int | None
    compound_dtor: int | None

    @classmethod
    def from_vmcoreinfo(cls, v: VmcoreInfo) -> PageLayout:
        """The ``struct page`` layout VMCOREINFO describes (``SIZE(page)``, ``OFFSET(page.*)``; the
        ``folio`` offsets of Linux 6.3+ for the compound order and destructor).

        :raises VmcoreInfoKeyError: ``SIZE(page)``, ``OFFSET(page.flags)`` or
            ``OFFSET(page.mapping)`` is missing
        """
        def off(name: str) -> int | None:
            return v.offset(f"page.{name}") if v.has(f"OFFSET(page.{name})") else None

        size = v.size("page")
        order, dtor = off("compound_order"), off("compound_dtor")
        if v.has("OFFSET(folio._folio_order)"):  # 6.3+: fields of the folio's second page
            order = v.offset("folio._folio_order") - size
        if v.has("OFFSET(folio._folio_dtor)"):
            dtor = v.offset("folio._folio_dtor") - size
        head = off("compound_head")
        if head is None:
            head = off("compound_info")  # 7.1+
        return cls(size, v.offset("page.flags"), v.offset("page.mapping"),
                   off("_mapcount"), off("private"), head, order, dtor)

    def field(self, raw: np.ndarray, offset: int, dtype: str) -> np.ndarray:
        """One field of every ``struct page`` in ``raw`` (uint8[n, size])."""
        width = np.dtype(dtype).itemsize
        return np.ascontiguousarray(raw[:, offset:offset + width]).view(dtype).ravel()


@dataclass(frozen=True)
class _PageFields:
    """The ``struct page`` fields the rules read, one array element per page."""

    flags: np.ndarray
    mapping: np.ndarray
    mapcount: np.ndarray
    private: np.ndarray
    compound_head: np.ndarray

    @classmethod
    def read(cls, lay: PageLayout, raw: np.ndarray) -> _PageFields:
        n = raw.shape[0]
        return cls(
            lay.field(raw, lay.flags, "<u8"),
            lay.field(raw, lay.mapping, "<u8"),
            lay.field(raw, lay.mapcount, "<i4") if lay.mapcount is not None else np.zeros(n, np.int32),
            lay.field(raw, lay.private, "<u8") if lay.private is not None else np.zeros(n, np.uint64),
            (lay.field(raw, lay.compound_head, "<u8") if lay.compound_head is not None
             else np.zeros(n, np.uint64)),
        )


def _spread(cls: np.ndarray, nr: np.ndarray, pfn_start: int) -> tuple[np.ndarray, int, int]:
    """A page that excludes a range decides for the pages inside it; a range running past
    the end of ``cls`` is returned as ``(spill_end, spill_class)``."""
    n = len(cls)
    spill, spill_cls = pfn_start, KEEP
    covered_to = -1
    for i in np.flatnonzero((cls != KEEP) & (nr > 1)).tolist():
        if i < covered_to:
            continue
        end = i + int(nr[i])
        cls[i + 1:min(end, n)] = cls[i]
        covered_to = end
        if end > n:
            spill, spill_cls = pfn_start + end, int(cls[i])
    return cls, spill, spill_cls


class PageClassifier:
    """makedumpfile's page classes for ranges of ``struct page``.

    :param vmcoreinfo: the dump's VMCOREINFO
    :param level: the dump level (only bits 2, 4, 8 and 16 matter here)
    """

    def __init__(self, vmcoreinfo: VmcoreInfo, level: int) -> None:
        v = vmcoreinfo
        self.level = level
        self.layout = PageLayout.from_vmcoreinfo(v)

        def num(name: str) -> int | None:
            return v.number(name) if v.has(f"NUMBER({name})") else None

        self.pg_lru, self.pg_private = num("PG_lru"), num("PG_private")
        self.pg_swapcache, self.pg_swapbacked = num("PG_swapcache"), num("PG_swapbacked")
        self.pg_slab, self.pg_buddy, self.pg_hwpoison = num("PG_slab"), num("PG_buddy"), num("PG_hwpoison")
        self.slab_value = num("PAGE_SLAB_MAPCOUNT_VALUE")  # 6.10+
        self.hugetlb_value = num("PAGE_HUGETLB_MAPCOUNT_VALUE")  # 6.9+
        self.pg_hugetlb = num("PG_hugetlb")  # 6.6+
        self.unaccepted_value = num("PAGE_UNACCEPTED_MAPCOUNT_VALUE")  # 6.16+
        self.head_mask = num("PG_head_mask")
        self.buddy_value = num("PAGE_BUDDY_MAPCOUNT_VALUE")
        self.offline_value = num("PAGE_OFFLINE_MAPCOUNT_VALUE")
        self.hugetlb_dtor = num("HUGETLB_PAGE_DTOR")
        self.free_huge_page = v.symbol("free_huge_page") if v.has("SYMBOL(free_huge_page)") else None
        self.max_order = v.length("zone.free_area") if v.has("LENGTH(zone.free_area)") else None
        lay = self.layout
        # page_is_buddy handler (makedumpfile setup_page_is_buddy)
        self.buddy = None
        if lay.private is not None:
            if self.buddy_value is not None and lay.mapcount is not None:
                self.buddy = "v3"
            elif self.pg_buddy is not None:
                self.buddy = "v2"
        if level & DL_EXCLUDE_FREE and self.buddy is None:
            raise PageClassError("free pages cannot be found: VMCOREINFO has neither "
                                 "NUMBER(PG_buddy) nor NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE) with "
                                 "OFFSET(page.private)/_mapcount (the free-list walk is not implemented)")
        self.warnings: list[str] = []

    def classify(self, raw: np.ndarray, pfn_start: int,
                 in_ram: np.ndarray) -> tuple[np.ndarray, int, int]:
        """Class of each page of ``raw`` (``uint8[n, SIZE(page)]`` for PFNs from ``pfn_start``).

        :param in_ram: pages makedumpfile would look at (``is_in_segs``)
        :return: ``(classes, spill_end, spill_class)``: uint8 class per page (KEEP = not
            excluded), and the PFN up to which the last excluded range runs past the end of
            ``raw`` (``pfn_start`` if none) with its class
        """
        fields = _PageFields.read(self.layout, raw)
        pfns = pfn_start + np.arange(raw.shape[0], dtype=np.int64)
        order, hugetlb = self._compound(raw, fields, pfns)
        cls, nr = self._decide(fields, self._kinds(fields), order, hugetlb, pfns, in_ram)
        return _spread(cls, nr, pfn_start)

    def _compound(self, raw: np.ndarray, f: _PageFields,
                  pfns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Compound order and hugetlb-ness of each head page, read from the page after it."""
        lay, n, flags = self.layout, len(f.flags), f.flags
        head = (flags & np.uint64(self.head_mask)) != 0 if self.head_mask else np.zeros(n, bool)
        head[-1:] = False  # makedumpfile cannot look past its cache: the order stays 0
        order = np.zeros(n, dtype=np.int64)
        dtor = np.zeros(n, dtype=np.int64)
        hugetlb = np.zeros(n, bool)
        heads = np.flatnonzero(head)
        nxt = heads + 1
        if nxt.size and (self.hugetlb_value is not None or self.pg_hugetlb is not None):
            flags_1 = flags[nxt]  # 6.6+: order in the low byte of the next page's flags
            order[heads] = (flags_1 & np.uint64(0xFF)).astype(np.int64)
            if self.hugetlb_value is not None:  # 6.9+
                hugetlb[heads] = f.mapcount[heads] == np.int32(self.hugetlb_value)
            else:
                hugetlb[heads] = _bit(flags_1, self.pg_hugetlb)  # type: ignore[arg-type]
        elif nxt.size:
            if lay.compound_order is not None:
                order[heads] = raw[nxt, lay.compound_order]
            if lay.compound_dtor is not None:
                dtor[heads] = raw[nxt, lay.compound_dtor]
            if self.hugetlb_dtor is not None:
                hugetlb |= head & (dtor == self.hugetlb_dtor)
            if self.free_huge_page is not None:
                hugetlb |= head & (dtor == self.free_huge_page)
        bad = (order >= 64) | ((pfns & ((np.int64(1) << np.minimum(order, 62)) - 1)) != 0)
        order[bad] = 0
        return order, hugetlb

    def _kinds(self, f: _PageFields) -> dict[str, np.ndarray]:
        """Per page: ``anon``, ``cache``, ``private``, ``buddy``, ``hwpoison``, ``offline``."""
        n, flags, mapcount = len(f.flags), f.flags, f.mapcount
        none = np.zeros(n, bool)
        slab = _bit(flags, self.pg_slab) if self.pg_slab is not None else none.copy()
        if self.slab_value is not None:
            slab |= mapcount == np.int32(self.slab_value)
        cache = _test_bit(flags, self.pg_lru) if self.pg_lru is not None else none.copy()
        if self.pg_swapcache is not None:
            swapcache = _test_bit(flags, self.pg_swapcache)
            if self.pg_swapbacked is not None:
                swapcache &= _test_bit(flags, self.pg_swapbacked)
            cache |= swapcache
        if self.buddy == "v2":
            buddy = _bit(flags, self.pg_buddy)  # type: ignore[arg-type]
        elif self.buddy == "v3":
            buddy = ~slab & (mapcount == np.int32(self.buddy_value))
        else:
            buddy = none
        return {
            "anon": ((f.mapping & np.uint64(PAGE_MAPPING_ANON)) != 0) & ~slab,
            "cache": cache,
            "private": _test_bit(flags, self.pg_private) if self.pg_private is not None else none,
            "buddy": buddy,
            "hwpoison": _test_bit(flags, self.pg_hwpoison) if self.pg_hwpoison is not None else none,
            "offline": (~slab & (mapcount == np.int32(self.offline_value))
                        if self.offline_value is not None else none),
        }

    def _decide(self, f: _PageFields, k: dict[str, np.ndarray], order: np.ndarray,
                hugetlb: np.ndarray, pfns: np.ndarray,
                in_ram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The class of each page, by makedumpfile's rules in its order (the first that
        matches decides), and how many pages from it the class covers."""
        n, lvl = len(f.flags), self.level
        cls = np.full(n, KEEP, dtype=np.uint8)
        undecided = in_ram & ((f.compound_head & np.uint64(1)) == 0)

        def take(mask: np.ndarray, code: int) -> None:
            nonlocal undecided
            hit = undecided & mask
            cls[hit] = code
            undecided = undecided & ~hit

        nr = np.ones(n, dtype=np.int64)
        if lvl & DL_EXCLUDE_FREE:
            free = undecided & k["buddy"]
            if self.max_order is not None:
                invalid = free & (f.private >= np.uint64(self.max_order))
                for i in np.flatnonzero(invalid)[:5]:
                    self.warnings.append(f"invalid free page order: pfn {int(pfns[i]):#x}, "
                                         f"order {int(f.private[i])}")
                undecided &= ~invalid  # makedumpfile reports it and keeps the page
                free &= ~invalid
            take(free, FREE)
            nr[free] = np.left_shift(1, np.minimum(f.private[free], 62).astype(np.int64))
            if self.unaccepted_value is not None and self.max_order is not None:  # 6.16+
                unaccepted = undecided & (f.mapcount == np.int32(self.unaccepted_value))
                take(unaccepted, FREE)
                nr[unaccepted] = 1 << (self.max_order - 1)
        anon, cache, private_flag = k["anon"], k["cache"], k["private"]
        if lvl & DL_EXCLUDE_CACHE:
            take(cache & ~private_flag & ~anon, CACHE)
        if lvl & DL_EXCLUDE_CACHE_PRI:
            pri = undecided & cache & ~anon
            take(pri & private_flag, CACHE_PRIVATE)
            take(pri, CACHE)
        if lvl & DL_EXCLUDE_USER_DATA:
            take(anon | hugetlb, USER)
        take(k["hwpoison"], HWPOISON)
        take(k["offline"], OFFLINE)
        compound = (cls != KEEP) & (cls != FREE)
        nr[compound] = np.left_shift(1, order[compound])
        return cls, nr
