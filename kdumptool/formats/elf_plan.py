"""Where the segments of an ELF core file go: makedumpfile's ``-E`` segment rule.

Spec: SPEC.md "ELF core files"; upstream makedumpfile ``makedumpfile.c``
(``write_elf_pages_cyclic``, ``PFN_EXCLUDED`` = 256). The source's memory regions (its
``PT_LOAD``\\ s, or the runs of RAM of another format) are cut into the output's segments:
within a region, a run of 256 or more excluded pages ends the current segment and a new one
starts at the next kept page; excluded pages at the end of a segment become
``p_memsz > p_filesz``. :mod:`kdumptool.formats.elf_writer` writes the plan.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Self

import numpy as np

from kdumptool.dump import DumpReader
from kdumptool.formats.elf import ElfReader
from kdumptool.parallel import ChunkRunner, chunked_windows, default_workers
from kdumptool.pipeline import Selection, zero_rows

#: A run of at least this many excluded pages splits a PT_LOAD (makedumpfile PFN_EXCLUDED).
PFN_EXCLUDED = 256


@dataclass(slots=True)
class Region:
    """Physical pages ``[start, end)`` that the source maps with one virtual base (or none)."""

    start: int
    end: int
    vaddr: int | None  # virtual address of ``start``, when known
    tail_bytes: int = 0  # bytes of a partial page after ``end`` (counted in p_memsz)


@dataclass(slots=True)
class OutSegment:
    """One output ``PT_LOAD``: ``file_pages`` with data from PFN ``start``, ``mem_pages`` of
    memory (and ``tail_bytes`` of a partial page), at virtual address ``vaddr``."""

    start: int  # first pfn
    file_pages: int
    mem_pages: int
    vaddr: int
    tail_bytes: int = 0


class _Columns:
    """Records held as equal-length array columns (the dataclass fields)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(getattr(self, self.__slots__[0]))

    def take(self, rows: np.ndarray) -> Self:
        return type(self)(*(getattr(self, f)[rows] for f in self.__slots__))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            np.array_equal(getattr(self, f), getattr(other, f)) for f in self.__slots__)


@dataclass(slots=True, eq=False)
class SegmentPlan(_Columns):
    """The output's PT_LOADs as columns (a fragmented map gives millions: no object each)."""

    start: np.ndarray  # first pfn (int64)
    file_pages: np.ndarray  # pages with data in the file (int64)
    mem_pages: np.ndarray  # pages of memory, ``p_memsz`` without the tail (int64)
    vaddr: np.ndarray  # virtual address of ``start`` (uint64)
    tail_bytes: np.ndarray  # bytes of a partial page after the last (int64)

    @classmethod
    def of(cls, segments: list[OutSegment]) -> SegmentPlan:
        """The columns of a list of segments."""
        cols = ([getattr(seg, f) for seg in segments] for f in ("start", "file_pages", "mem_pages"))
        start, file_pages, mem_pages = (np.array(c, dtype=np.int64) for c in cols)
        return cls(start, file_pages, mem_pages, np.array([seg.vaddr for seg in segments], dtype=np.uint64),
                   np.array([seg.tail_bytes for seg in segments], dtype=np.int64))


@dataclass(slots=True, eq=False)
class RegionColumns(_Columns):
    """The source's regions as columns (see :class:`Region`); ``has_vaddr`` False: none known."""

    start: np.ndarray
    end: np.ndarray
    vaddr: np.ndarray  # uint64
    has_vaddr: np.ndarray
    tail_bytes: np.ndarray

    @classmethod
    def of(cls, regions: Iterable[Region]) -> RegionColumns:
        """The columns of regions as they come (an iterator of millions is fine)."""
        start, end, vaddr, has, tail = array("q"), array("q"), array("Q"), array("b"), array("q")
        for reg in regions:  # into arrays as they come: not a million Region objects
            start.append(reg.start)
            end.append(reg.end)
            vaddr.append(0 if reg.vaddr is None else reg.vaddr % (1 << 64))
            has.append(reg.vaddr is not None)
            tail.append(reg.tail_bytes)
        return cls(np.frombuffer(start, dtype=np.int64), np.frombuffer(end, dtype=np.int64),
                   np.frombuffer(vaddr, dtype=np.uint64), np.frombuffer(has, dtype=np.int8).astype(bool),
                   np.frombuffer(tail, dtype=np.int64))

    def regions(self) -> list[Region]:
        """The regions as objects again."""
        return [Region(a, b, v if h else None, t) for a, b, v, h, t in zip(
            self.start.tolist(), self.end.tolist(), self.vaddr.tolist(), self.has_vaddr.tolist(),
            self.tail_bytes.tolist(), strict=True)]


def source_regions(reader: DumpReader) -> RegionColumns:
    """The source's memory regions, in order: its PT_LOADs (ELF, from the reader's arrays), or
    runs of RAM (other formats, gathered one at a time): a fragmented map may have millions."""
    ps = reader.page_size
    reader = getattr(reader, "inner", reader)  # a wrapper (zero-fill) keeps the source's regions
    if not isinstance(reader, ElfReader):
        return RegionColumns.of(_ram_runs(reader))
    t = reader.segments  # (the reader has checked p_paddr + p_memsz <= 2**52: int64 holds them)
    paddr, top = t.paddr.astype(np.int64), (t.paddr + t.memsz).astype(np.int64)
    start, end = paddr // ps, top // ps
    some = end > start  # whole pages: makedumpfile drops partial ones
    # the virtual address of the first whole page (uint64 wraps as the address space does)
    vaddr = t.vaddr - (paddr % ps).astype(np.uint64)
    return RegionColumns(start[some], end[some], vaddr[some], np.ones(int(some.sum()), dtype=bool),
                         (top - end * ps)[some])


def _ram_runs(reader: DumpReader) -> Iterator[Region]:
    """Runs of RAM pages, from the bitmaps, one window at a time."""
    run: Region | None = None
    for start, count in reader.ram_windows(1 << 20):
        ram, _ = reader.bitmaps(start, count)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], ram.astype(np.int8), [0]))))
        for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True):
            a, b = a + start, b + start
            if run is not None and run.end == a:
                run.end = b  # the run continues from the previous window
                continue
            if run is not None:
                yield run
            run = Region(a, b, None)
    if run is not None:
        yield run


def _keep_mask(selection: Selection, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keep, have)``: pages to keep (present, and not zero when level bit 1 is set), and
    pages the source has data for."""
    have = selection.reader.bitmaps(start, count)[1]
    keep = selection.masks(start, count)[1]
    if not selection.exclude_zero and selection.reader.strict and not selection.reader.info.incomplete:
        return keep, have
    # zero pages, or pages a tolerant reader or an incomplete dump cannot deliver (lost: the
    # bitmaps still say dumped), are known only from the data:
    # a strict reader's bitmaps say which pages have data, so only its kept pages are read
    # (from the first to the last; at -d 31 most of a large machine is never read)
    lo, hi = 0, count
    if selection.reader.strict:
        idx = np.flatnonzero(keep)
        if not idx.size:
            return keep, have
        lo, hi = int(idx[0]), int(idx[-1]) + 1
    batch = selection.reader.read_batch(start + lo, hi - lo)
    keep, have = keep.copy(), have.copy()
    keep[lo:hi] &= batch.present
    have[lo:hi] = batch.present
    if selection.exclude_zero:
        keep[lo + np.flatnonzero(batch.present)[zero_rows(batch.data)]] = False
    return keep, have


def _chunk_masks(selection: Selection, windows: list[tuple[int, int]],
                 write: object) -> list[tuple[int, int, bytes, bytes]]:
    """:func:`_keep_mask` of each window of a chunk, packed (2 bits a page)."""
    out = []
    for w, c in windows:
        keep, have = _keep_mask(selection, w, c)
        out.append((w, c, np.packbits(keep).tobytes(), np.packbits(have).tobytes()))
    return out


class _MaskCache:
    """The ``(keep, have)`` masks of every data window, found on every core before the
    planning (they need the pages' data when zero pages are excluded): 2 bits a page."""

    def __init__(self, selection: Selection, workers: int | None = None) -> None:
        self.selection = selection
        self.masks: dict[int, tuple[int, bytes, bytes]] = {}
        reader = selection.reader
        if not selection.exclude_zero and reader.strict and not reader.info.incomplete:
            return  # metadata alone: nothing to read
        chunks = chunked_windows(reader.data_windows(reader.window_pages), reader.window_pages)
        runner = ChunkRunner(partial(_chunk_masks, selection), chunks, workers or default_workers(),
                             None, 0)
        for result, _, _ in runner.results():
            for w, c, keep, have in result:
                self.masks[w] = (c, keep, have)

    def get(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self.masks.get(start)
        if hit is None or hit[0] != count:
            return _keep_mask(self.selection, start, count)
        bits = [np.unpackbits(np.frombuffer(b, np.uint8), count=count).astype(bool) for b in hit[1:]]
        return bits[0], bits[1]


def plan_segments(selection: Selection, regions: RegionColumns | Iterable[Region],
                  page_size: int, workers: int | None = None) -> SegmentPlan:
    """makedumpfile's segment rule applied to each region (see the module docstring).

    Regions that do not overlap (every kdump file, and most ELF files) are planned a window at
    a time for all of them at once (:func:`_plan_in_order`, in address order, the segments then
    put back in the regions' order); overlapping ones one region at a time
    (:func:`plan_each_region`), with the same result.
    """
    cols = regions if isinstance(regions, RegionColumns) else RegionColumns.of(regions)
    order = np.argsort(cols.start, kind="stable")
    masks = _MaskCache(selection, workers)
    if not (cols.start[order][1:] >= cols.end[order][:-1]).all():  # overlapping regions
        return plan_each_region(selection, cols.regions(), page_size, masks)
    # the rule looks at one region at a time: plan them sorted, then put the segments back in
    # the source's order of regions (a no-op when they came sorted)
    plan, region_of = _plan_in_order(selection, cols.take(order), page_size, masks)
    return plan.take(np.argsort(order[region_of], kind="stable"))


def plan_each_region(selection: Selection, regions: list[Region], page_size: int,
                     masks: _MaskCache | None = None) -> SegmentPlan:
    """The segment rule, one region after the other.

    One addition: a gap that holds a page the source has no data for always splits the
    segment, so that a page missing from the source never turns into a page of zeros.
    """
    window = selection.reader.window_pages
    data = list(selection.reader.data_windows(window))  # no page has data outside these
    data_ends = [w + c for w, c in data]
    cached: tuple[int, np.ndarray, np.ndarray] | None = None  # one window's masks, for many regions
    segments: list[OutSegment] = []
    for reg in regions:
        seg_start = reg.start
        last_kept = reg.start - 1  # excluded run so far counts from the region start
        file_end = reg.start
        missing = 0  # pages without source data seen so far in this region
        missing_at_last = 0
        pos = reg.start
        for wstart, wcount in data[bisect.bisect_right(data_ends, reg.start):]:
            if wstart >= reg.end:
                break
            start, end = max(wstart, reg.start), min(wstart + wcount, reg.end)
            if start >= end:
                continue
            missing += start - pos  # skipped pages have no data
            pos = end
            if cached is None or cached[0] != wstart:
                cached = (wstart, *(masks.get(wstart, wcount) if masks is not None
                                    else _keep_mask(selection, wstart, wcount)))
            keep, have = cached[1][start - wstart:end - wstart], cached[2][start - wstart:end - wstart]
            missing_before = missing + np.cumsum(~have) - (~have)  # exclusive prefix counts
            idx = np.flatnonzero(keep)
            missing += int((~have).sum())
            if not idx.size:
                continue
            kept = idx + start
            gaps = np.diff(np.concatenate(([last_kept], kept))) - 1
            holes = np.diff(np.concatenate(([missing_at_last], missing_before[idx])))
            for k in np.flatnonzero((gaps >= PFN_EXCLUDED) | (holes > 0)).tolist():
                pfn = int(kept[k])
                if k:
                    file_end = int(kept[k - 1]) + 1
                segments.append(_segment(seg_start, file_end, pfn, reg, page_size))
                seg_start = pfn
                file_end = pfn
            file_end = int(kept[-1]) + 1
            last_kept = int(kept[-1])
            missing_at_last = int(missing_before[idx[-1]])
        segments.append(_segment(seg_start, file_end, reg.end, reg, page_size))
    return SegmentPlan.of(segments)


def _plan_in_order(selection: Selection, regions: RegionColumns, page_size: int,
                   masks: _MaskCache | None = None) -> tuple[SegmentPlan, np.ndarray]:
    """The segment rule for regions in address order, without overlaps: one pass over the data
    windows, each window's kept pages tested against the rule for all regions at once.
    Returns the segments and the region of each.

    With ``N(p)`` the number of pages before ``p`` that have no data (every page outside the
    data windows counts), a kept page ``q`` whose previous kept page in its region is ``p``
    (``region start - 1`` for the first) starts a new segment when ``q - p - 1 >= 256`` or
    ``N(q) - N(p + 1) > 0``; the segment before it holds file data up to ``p + 1``.
    """
    starts, ends = regions.start, regions.end
    n = len(starts)
    last_kept = starts - 1  # per region: its last kept page so far
    after_last = np.zeros(n, dtype=np.int64)  # per region: N(last_kept + 1)
    split_pfn: list[np.ndarray] = []
    split_fe: list[np.ndarray] = []  # where the file data of the segment before the split ends
    split_reg: list[np.ndarray] = []
    done_to, nodata_to = 0, 0  # N(done_to): pages before done_to without data
    r_next = 0  # first region whose start's N is not known yet
    for w, c in selection.reader.data_windows(selection.reader.window_pages):
        first = int(np.searchsorted(ends, w, side="right"))  # the first region ending after w
        if first == n or starts[first] >= w + c:
            continue  # no region here: as for a page between windows, nothing is read
        keep, have = masks.get(w, c) if masks is not None else _keep_mask(selection, w, c)
        nodata_w = nodata_to + (w - done_to)  # the pages since the last window have no data
        cum = nodata_w + np.concatenate(([0], np.cumsum(~have)))  # cum[i] = N(w + i)
        r_end = int(np.searchsorted(starts, w + c, side="left"))
        if r_end > r_next:  # regions starting before this window's end: N(start) is known now
            rs = starts[r_next:r_end]
            after_last[r_next:r_end] = np.where(
                rs < w, nodata_to + (rs - done_to), cum[np.clip(rs - w, 0, c)])
            r_next = r_end
        done_to, nodata_to = w + c, int(cum[c])
        kept = w + np.flatnonzero(keep)
        ri = np.searchsorted(starts, kept, side="right") - 1
        inside = (ri >= 0) & (kept < ends[np.maximum(ri, 0)])
        kept, ri = kept[inside], ri[inside]
        if not kept.size:
            continue
        same = np.zeros(kept.size, dtype=bool)
        same[1:] = ri[1:] == ri[:-1]
        prev = np.where(same, np.concatenate(([0], kept[:-1])), last_kept[ri])
        prev_after = np.where(same, cum[np.clip(prev + 1 - w, 0, c)], after_last[ri])
        split = (kept - prev - 1 >= PFN_EXCLUDED) | (cum[kept - w] - prev_after > 0)
        if split.any():
            split_pfn.append(kept[split])
            split_fe.append(prev[split] + 1)
            split_reg.append(ri[split])
        last = np.concatenate((ri[1:] != ri[:-1], [True]))  # each region's last kept page here
        last_kept[ri[last]] = kept[last]
        after_last[ri[last]] = cum[kept[last] + 1 - w]
    sp_pfn = np.concatenate(split_pfn) if split_pfn else np.zeros(0, dtype=np.int64)
    sp_fe = np.concatenate(split_fe) if split_fe else np.zeros(0, dtype=np.int64)
    sp_reg = np.concatenate(split_reg) if split_reg else np.zeros(0, dtype=np.int64)
    # segments: each region's start, then its splits (all already in address order)
    seg_reg = np.concatenate((np.arange(n), sp_reg))
    seg_start = np.concatenate((starts, sp_pfn))
    order = np.lexsort((seg_start, seg_reg))
    seg_reg, seg_start = seg_reg[order], seg_start[order]
    opened_by_split = np.concatenate((np.full(n, -1, dtype=np.int64), sp_fe))[order]
    more = np.concatenate((seg_reg[1:] == seg_reg[:-1], [False]))  # the region goes on
    seg_end = np.where(more, np.concatenate((seg_start[1:], [0])), ends[seg_reg])
    file_end = np.where(more, np.concatenate((opened_by_split[1:], [0])), last_kept[seg_reg] + 1)
    # as _segment does, for all segments at once (uint64 wraps like the % 2**64 there)
    vaddr = regions.vaddr[seg_reg] + ((seg_start - starts[seg_reg]) * page_size).astype(np.uint64)
    return SegmentPlan(seg_start, np.maximum(0, file_end - seg_start), seg_end - seg_start,
                       np.where(regions.has_vaddr[seg_reg], vaddr, np.uint64(0)),
                       np.where(seg_end == ends[seg_reg], regions.tail_bytes[seg_reg], 0)), seg_reg


def _segment(start: int, file_end: int, end: int, reg: Region, page_size: int) -> OutSegment:
    vaddr = 0 if reg.vaddr is None else (reg.vaddr + (start - reg.start) * page_size) % (1 << 64)
    tail = reg.tail_bytes if end == reg.end else 0
    return OutSegment(start, max(0, file_end - start), end - start, vaddr, tail)
