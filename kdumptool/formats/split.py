"""Split sets: several kdump-compressed files (``makedumpfile --split``) read as one dump.

Spec: SPEC.md "kdump-compressed" (split files); upstream makedumpfile
``makedumpfile.c`` (``writeout_multiple_dumpfiles``, ``reassemble_dumpfile``),
libkdumpfile ``kdump_open_fdset``, crash ``diskdump.c`` (``dumpfile_is_split``).

Every part is a complete kdump-compressed file with ``split = 1`` and its PFN
range ``[start_pfn_64, end_pfn_64)``; all parts carry the same, global,
bitmaps, and each part's descriptors cover only its own range. A set is valid
when the ranges tile ``[0, max_mapnr)`` without overlap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from kdumptool.dump import DumpReader, PageBatch
from kdumptool.errors import CorruptDumpError, KdumpToolError
from kdumptool.formats.kdump import KdumpReader


class SplitSetReader(DumpReader):
    """The parts of a split dump, as one reader.

    :param parts: opened parts, in any order
    :param strict: refuse a set with a missing part; otherwise its pages read as lost
    :raises CorruptDumpError: parts that do not belong together
    """

    def __init__(self, parts: list[DumpReader], *, strict: bool = True) -> None:
        if not parts:
            raise KdumpToolError("a split set needs at least one part")
        for p in parts:
            if not isinstance(p, KdumpReader) or p.info.split is None:
                raise CorruptDumpError("not a part of a split kdump set (split flag not set)",
                                       path=p.info.path, offset=p.info.page_size)
        parts = sorted(parts, key=lambda p: p.part)
        first = parts[0]
        super().__init__(first.source, strict=strict)
        self.parts: list[KdumpReader] = parts  # type: ignore[assignment]
        for p in parts[1:]:
            if (p.info.max_pfn, p.info.page_size) != (first.info.max_pfn, first.info.page_size):
                raise CorruptDumpError(
                    "split parts describe different dumps", path=p.info.path, offset=0,
                    expected=f"max_mapnr {first.info.max_pfn:#x}, block size {first.info.page_size}",
                    got=f"max_mapnr {p.info.max_pfn:#x}, block size {p.info.page_size}")
        self.gaps: list[tuple[int, int]] = []
        pos = 0
        for p in parts:
            lo, hi = p.part
            if lo < pos:
                raise CorruptDumpError("split parts overlap", path=p.info.path, offset=p.info.page_size,
                                       expected=f"start_pfn >= {pos:#x}", got=f"{lo:#x}")
            if lo > pos:
                self.gaps.append((pos, lo))
            pos = hi
        if pos < first.info.max_pfn:
            self.gaps.append((pos, first.info.max_pfn))
        if self.gaps and strict:
            lo, hi = self.gaps[0]
            raise CorruptDumpError(f"split set is missing the part for pfn {lo:#x}-{hi:#x}",
                                   path=first.info.path, offset=first.info.page_size)
        self.info = dataclasses.replace(first.info, split=None, notes=list(first.info.notes),
                                        details=dict(first.info.details))
        self.info.details["parts"] = [p.info.path for p in parts]
        self.info.incomplete = any(p.info.incomplete for p in parts) or bool(self.gaps)

    def _overlapping(self, start: int, count: int) -> list[KdumpReader]:
        return [p for p in self.parts if p.part[0] < start + count and p.part[1] > start]

    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        ram, present = self.parts[0]._bits(1, start, count), np.zeros(count, dtype=bool)
        for p in self._overlapping(start, count):
            present |= p.bitmaps(start, count)[1]
        return ram, present

    def data_windows(self, window: int | None = None) -> Iterator[tuple[int, int]]:
        """The parts' data windows, and those of pages declared in ranges no part covers
        (they are lost), in PFN order without repeats."""
        window = window or self.window_pages
        found: set[int] = set()
        for p in self.parts:
            found.update(s for s, _ in p.data_windows(window))
        for lo, hi in self.gaps:
            found.update(s for s, _ in self.parts[0].declared_windows(lo, hi, window))
        for s in sorted(found):
            yield s, min(window, self.max_pfn - s)

    def read_batch(self, start: int, count: int) -> PageBatch:
        ps = self.page_size
        ram = self.parts[0]._bits(1, start, count)
        present = np.zeros(count, dtype=bool)
        lost = np.zeros(count, dtype=bool)
        corrupt: dict[int, str] = {}
        batches = [p.read_batch(start, count) for p in self._overlapping(start, count)]
        for b in batches:  # the parts' ranges do not overlap
            present |= b.present
            lost |= b.lost
            corrupt.update(b.corrupt)
        data = np.empty((int(present.sum()), ps), dtype=np.uint8)
        row = np.cumsum(present) - 1
        for b in batches:
            data[row[b.present]] = b.data
        for lo, hi in self.gaps:  # pages of a missing part are lost
            a, z = max(lo, start), min(hi, start + count)
            if a < z:
                declared = self.parts[0]._bits(2, a, z - a)
                lost[a - start:z - start] |= declared
        return PageBatch(start, count, ram, present, data, lost, corrupt)

    def close(self) -> None:
        for p in self.parts:
            p.close()
