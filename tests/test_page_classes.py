"""makedumpfile's page-class rules on hand-made struct page arrays, one kernel generation each.

The real 6.1 dump (test_filter.py) proves the rules against makedumpfile's own output; these
check the branches the corpus kernel does not reach: 6.6 (PG_hugetlb), 6.9 (hugetlb page
type), 6.10 (slab page type), 6.16 (unaccepted memory), 7.1 (compound_info), and the 2.6
PG_buddy form, each chosen by the VMCOREINFO keys that kernel generation exports.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from corpus import corpus_text
from kdumptool.filters.page_classes import (
    CACHE,
    CACHE_PRIVATE,
    FREE,
    HWPOISON,
    KEEP,
    OFFLINE,
    USER,
    PageClassifier,
)
from kdumptool.vmcoreinfo import VmcoreInfo

BASE = corpus_text("x86_64-kdump-320m/vmcoreinfo.txt")  # a real 6.1 VMCOREINFO
PG_LRU, PG_PRIVATE, PG_SLAB, PG_HWPOISON, HEAD = 1 << 4, 1 << 13, 1 << 9, 1 << 23, 1 << 16
BUDDY, OFFLINE_V = -129, -257


def vmci(extra: str = "", drop: tuple[str, ...] = ()) -> VmcoreInfo:
    lines = [ln for ln in BASE.splitlines() if not ln.startswith(drop)] if drop else BASE.splitlines()
    return VmcoreInfo.parse(("\n".join(lines) + "\n" + extra).encode())


def pages(n: int) -> np.ndarray:
    return np.zeros((n, 64), dtype=np.uint8)


def put(raw: np.ndarray, i: int, *, flags: int = 0, head: int = 0, dtor: int = 0, order: int = 0,
        mapping: int = 0, private: int = 0, mapcount: int = -1) -> None:
    raw[i, 0:8] = np.frombuffer(struct.pack("<Q", flags), np.uint8)
    raw[i, 8:16] = np.frombuffer(struct.pack("<Q", head), np.uint8)
    raw[i, 16] = dtor
    raw[i, 17] = order
    raw[i, 24:32] = np.frombuffer(struct.pack("<Q", mapping), np.uint8)
    raw[i, 40:48] = np.frombuffer(struct.pack("<Q", private), np.uint8)
    raw[i, 48:52] = np.frombuffer(struct.pack("<i", mapcount), np.uint8)


def classify(v: VmcoreInfo, raw: np.ndarray, level: int = 31, start: int = 0) -> np.ndarray:
    cls, _, _ = PageClassifier(v, level).classify(raw, start, np.ones(len(raw), bool))
    return cls


def test_linux_6_1_rules() -> None:
    raw = pages(16)
    put(raw, 0, mapcount=BUDDY, private=2)  # free, order 2: pages 0-3
    put(raw, 4, flags=PG_LRU)  # page cache
    put(raw, 5, flags=PG_LRU | PG_PRIVATE)  # private page cache
    put(raw, 6, mapping=0xFFFF888000001001)  # anon
    put(raw, 8, flags=HEAD | PG_LRU, mapping=0xFFFF888000002000)  # cache folio, order 1
    put(raw, 9, head=8 | 1, order=1)  # its tail; the order lives here
    put(raw, 10, flags=PG_HWPOISON)
    put(raw, 11, mapcount=OFFLINE_V)
    put(raw, 12, flags=HEAD)  # hugetlb head: dtor == HUGETLB_PAGE_DTOR (2) on the next page
    put(raw, 13, head=12 | 1, dtor=2, order=1)
    put(raw, 14, flags=PG_SLAB, mapcount=BUDDY)  # slab is never buddy
    put(raw, 15, flags=PG_SLAB, mapping=0xFFFF888000003001)  # slab is never anon (1.7.9+)
    cls = classify(vmci(), raw)
    assert cls.tolist() == [FREE] * 4 + [CACHE, CACHE_PRIVATE, USER, KEEP, CACHE, CACHE,
                                         HWPOISON, OFFLINE, USER, USER, KEEP, KEEP]
    # level 2 alone: private cache, anon, hugetlb and free stay; hwpoison/offline always go
    cls2 = classify(vmci(), raw, level=2)
    assert cls2.tolist() == [KEEP] * 4 + [CACHE, KEEP, KEEP, KEEP, CACHE, CACHE, HWPOISON,
                                          OFFLINE, KEEP, KEEP, KEEP, KEEP]


def test_buddy_order_beyond_free_area_is_kept_with_a_warning() -> None:
    raw = pages(4)
    put(raw, 0, mapcount=BUDDY, private=11)  # LENGTH(zone.free_area) = 11
    c = PageClassifier(vmci(), 16)
    cls, _, _ = c.classify(raw, 0, np.ones(4, bool))
    assert cls[0] == KEEP and "invalid free page order" in c.warnings[0]


def test_range_running_past_the_chunk_spills() -> None:
    raw = pages(4)
    put(raw, 2, mapcount=BUDDY, private=3)  # 8 pages from pfn 0x1002... must be aligned? no: buddy
    cls, spill, spill_cls = PageClassifier(vmci(), 16).classify(raw, 0x1000, np.ones(4, bool))
    assert cls[2:].tolist() == [FREE, FREE] and (spill, spill_cls) == (0x100A, FREE)


def test_linux_6_6_pg_hugetlb() -> None:
    raw = pages(4)
    put(raw, 0, flags=HEAD)
    put(raw, 1, flags=(1 << 20) | 1, head=1)  # PG_hugetlb=20 set, order 1 in the low byte
    v = vmci("NUMBER(PG_hugetlb)=20\n", drop=("NUMBER(HUGETLB_PAGE_DTOR)",))
    assert classify(v, raw, level=8).tolist() == [USER, USER, KEEP, KEEP]


def test_linux_6_9_hugetlb_page_type() -> None:
    raw = pages(4)
    put(raw, 0, flags=HEAD, mapcount=-1025)  # PAGE_HUGETLB_MAPCOUNT_VALUE
    put(raw, 1, flags=1, head=1)  # order 1
    v = vmci("NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)=-1025\n", drop=("NUMBER(HUGETLB_PAGE_DTOR)",))
    assert classify(v, raw, level=8).tolist() == [USER, USER, KEEP, KEEP]


def test_linux_6_10_slab_page_type() -> None:
    raw = pages(3)
    put(raw, 0, mapcount=-1001, mapping=0xFFFF888000003001)  # a slab page by type, anon bit
    put(raw, 1, mapcount=-1001)
    put(raw, 2, mapping=0xFFFF888000004001)
    v = vmci("NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)=-1001\nNUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-1001\n",
             drop=("NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)",))
    # slab by type: never anon, never offline (even though the offline value is the same here)
    assert classify(v, raw).tolist() == [KEEP, KEEP, USER]


def test_linux_6_16_unaccepted_memory() -> None:
    raw = pages(2048)
    put(raw, 1024, mapcount=-4097)
    v = vmci("NUMBER(PAGE_UNACCEPTED_MAPCOUNT_VALUE)=-4097\n")
    cls = classify(v, raw, level=16)
    assert (cls[1024:] == FREE).all() and (cls[:1024] == KEEP).all()  # 1 << (11 - 1) pages


def test_linux_7_1_compound_info_marks_tails() -> None:
    raw = pages(2)
    put(raw, 0, flags=PG_LRU)
    put(raw, 1, flags=PG_LRU, head=1)  # a tail: skipped even though it looks like cache
    v = vmci("OFFSET(page.compound_info)=8\n", drop=("OFFSET(page.compound_head)",))
    assert classify(v, raw, level=2).tolist() == [CACHE, KEEP]


def test_linux_2_6_pg_buddy() -> None:
    raw = pages(2)
    put(raw, 0, flags=1 << 19, private=1)
    v = vmci("NUMBER(PG_buddy)=19\n", drop=("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)",))
    assert classify(v, raw, level=16).tolist() == [FREE, FREE]


def test_free_pages_without_a_buddy_rule_are_refused() -> None:
    from kdumptool.errors import PageClassError

    v = vmci(drop=("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)",))
    with pytest.raises(PageClassError):
        PageClassifier(v, 16)
    PageClassifier(v, 8)  # other levels still work
