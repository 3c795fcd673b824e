"""Readers whose pages are listed one by one: a sorted PFN -> file offset index.

Used by formats that describe memory as a list of (PFN, page data) pairs rather than as
ranges: Xen ``xl dump-core`` files (``.xen_pfn`` / ``.xen_p2m`` + ``.xen_pages``) and Xen
migration streams (``PAGE_DATA`` records). The index is two NumPy arrays (8 bytes each per
page), so metadata stays compact; page data is read per window with one ``pread`` per run of
pages stored next to each other in the file.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from kdumptool.dump import DumpReader, PageBatch

#: Offset recorded for a page that is RAM but has no data in the file.
NO_DATA = -1
#: Highest PFN accepted (as the ELF reader: 64 TiB of 4 KiB pages).
MAX_PFN = 1 << 34


def last_wins(pfn: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Sort ``(pfn, off)`` pairs by PFN; of pairs with the same PFN keep the last one given.

    :return: ``(pfns, offsets, dropped)``: unique sorted PFNs, their offsets, and how many
        earlier duplicates were dropped
    """
    order = np.argsort(pfn, kind="stable")
    p, o = pfn[order], off[order]
    keep = np.ones(len(p), dtype=bool)
    keep[:-1] = p[1:] != p[:-1]
    return p[keep], o[keep], int(len(p) - int(keep.sum()))


class PfnIndexReader(DumpReader):
    """Base of readers built on a sorted PFN index (subclasses call :meth:`set_index`).

    ``ram`` = every indexed PFN; ``present`` (2nd bitmap) = indexed PFNs with data; a page
    whose data would lie past the end of the file is reported lost by :meth:`read_batch`.
    """

    _pfn: np.ndarray
    _off: np.ndarray

    def set_index(self, pfn: np.ndarray, off: np.ndarray) -> None:
        """Install the index: sorted unique ``pfn`` (int64) and their file ``off`` (int64,
        :data:`NO_DATA` for RAM without data)."""
        self._pfn = np.ascontiguousarray(pfn, dtype=np.int64)
        self._off = np.ascontiguousarray(off, dtype=np.int64)

    @property
    def index_max_pfn(self) -> int:
        """One past the highest indexed PFN (0 when there is none)."""
        return int(self._pfn[-1]) + 1 if len(self._pfn) else 0

    def _span(self, start: int, count: int) -> tuple[int, int]:
        lo, hi = np.searchsorted(self._pfn, [start, start + count])
        return int(lo), int(hi)

    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """RAM (indexed) and present (indexed with a file offset) bits of the window."""
        ram = np.zeros(count, dtype=bool)
        present = np.zeros(count, dtype=bool)
        lo, hi = self._span(start, count)
        rel = self._pfn[lo:hi] - start
        ram[rel] = True
        present[rel[self._off[lo:hi] >= 0]] = True
        return ram, present

    def count_pages(self) -> tuple[int, int]:
        """``(indexed pages, indexed pages with data in the file)``."""
        return int(len(self._pfn)), int((self._off >= 0).sum())

    def lost_pages(self) -> int:
        """Pages listed with data that lies (partly) past the end of the file."""
        return int(((self._off >= 0) & (self._off + self.page_size > self.source.size)).sum())

    def ram_windows(self, window: int | None = None) -> Iterator[tuple[int, int]]:
        """The windows that hold an indexed page, then the last one."""
        window = window or self.window_pages
        if not self.max_pfn:
            return
        found = np.unique(self._pfn // window).tolist()
        last = (self.max_pfn - 1) // window
        for w in found + ([last] if not found or found[-1] < last else []):
            yield w * window, min(window, self.max_pfn - w * window)

    def data_windows(self, window: int | None = None) -> Iterator[tuple[int, int]]:
        """Only the windows that hold an indexed page with data."""
        window = window or self.window_pages
        with_data = self._pfn[self._off >= 0]
        for w in np.unique(with_data // window).tolist():
            start = int(w) * window
            yield start, min(window, self.max_pfn - start)

    def read_batch(self, start: int, count: int) -> PageBatch:
        """The indexed pages of the window, read at their file offsets; a page past the end of
        the file is lost.
        """
        ps = self.page_size
        ram, _ = self.bitmaps(start, count)
        lo, hi = self._span(start, count)
        rel = self._pfn[lo:hi] - start
        off = self._off[lo:hi]
        has = off >= 0
        beyond = has & (off + ps > self.source.size)
        lost = np.zeros(count, dtype=bool)
        lost[rel[beyond]] = True
        ok = has & ~beyond
        present = np.zeros(count, dtype=bool)
        present[rel[ok]] = True
        offs = off[ok]  # in PFN order, as the rows of data
        data = np.empty((len(offs), ps), dtype=np.uint8)
        if len(offs):
            # one pread per run of pages stored back to back (any PFN gaps between them)
            breaks = np.flatnonzero(np.diff(offs) != ps) + 1
            bounds = np.concatenate(([0], breaks, [len(offs)])).tolist()
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                raw = self.source.pread(int(offs[a]), (b - a) * ps)
                data[a:b] = np.frombuffer(raw, np.uint8, (b - a) * ps).reshape(b - a, ps)
        return PageBatch(start, count, ram, present, data, lost)
