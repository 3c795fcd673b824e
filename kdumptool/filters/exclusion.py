"""The pages a dump level excludes, for a whole dump, computed in one sweep over mem_map.

The sweep reads every ``struct page`` array (found by :mod:`kdumptool.filters.mem_map`,
through the page tables of :mod:`kdumptool.vtop`), classifies it
(:mod:`kdumptool.filters.page_classes`) and keeps one bit per page: 1/32768 of the
dump's size (32 MiB for 1 TiB of RAM), the only state that grows with the dump. Counts
per class are of the pages the source holds, as makedumpfile's report counts them.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from kdumptool.dump import DumpReader
from kdumptool.errors import KdumpToolError, OutputError, PageNotPresentError
from kdumptool.filters.mem_map import MemMapError, find_mem_map
from kdumptool.filters.page_classes import CLASS_NAMES, KEEP, PageClassifier
from kdumptool.parallel import ChunkRunner, default_workers
from kdumptool.vtop import translator_for

#: Excluded-page bits kept in memory up to this size (32 MiB: a 1 TiB machine of 4 KiB
#: pages); a larger machine's bits go to a temporary file, so memory stays flat (the role
#: of makedumpfile's cyclic mode).
IN_MEMORY_BYTES = 32 << 20


class BitStore:
    """A bitmap of ``nbytes`` bytes, all clear at first, that ORs in and reads back byte
    ranges: a NumPy array when small, else a sparse temporary file (deleted on close)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self._file: BinaryIO | None = None
        if nbytes <= IN_MEMORY_BYTES:
            self._mem: np.ndarray | None = np.zeros(nbytes, dtype=np.uint8)
        else:
            self._mem = None
            try:
                self._file = tempfile.TemporaryFile(prefix="kdumptool-excluded-")
                self._file.truncate(nbytes)
            except OSError as exc:
                raise OutputError(f"{tempfile.gettempdir()}: cannot make a temporary file for the "
                                  f"excluded-page bits ({nbytes} bytes): {exc.strerror}") from None

    def read(self, b0: int, b1: int) -> np.ndarray:
        """The bytes ``[b0, b1)`` of the bitmap (zeros where never written)."""
        if self._mem is not None:
            return self._mem[b0:b1]
        assert self._file is not None
        raw = os.pread(self._file.fileno(), b1 - b0, b0)
        return np.frombuffer(raw.ljust(b1 - b0, b"\0"), dtype=np.uint8)

    def or_bytes(self, b0: int, packed: np.ndarray) -> None:
        """OR ``packed`` into the bitmap from byte ``b0`` on.

        :raises OutputError: the temporary file cannot be written
        """
        if self._mem is not None:
            self._mem[b0:b0 + len(packed)] |= packed
        elif packed.any():
            assert self._file is not None
            merged = self.read(b0, b0 + len(packed)) | packed
            try:
                os.pwrite(self._file.fileno(), merged.tobytes(), b0)
            except OSError as exc:  # not the output's fault: no retry at another level
                raise OutputError(f"{tempfile.gettempdir()}: cannot keep the excluded-page bits "
                                  f"({self.nbytes} bytes) in a temporary file: {exc.strerror}") from None

    def close(self) -> None:
        """Delete the temporary file, if there is one."""
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(frozen=True)
class _SweepPart:
    """The sweep of one chunk of ``struct page``: what it excludes and counts, and the
    excluded range it leaves running into the next chunk."""

    excluded: np.ndarray  # packed bits, LSB first
    counts: dict[str, int]
    spill_end: int
    spill_cls: int
    unreadable: int
    warnings: list[str]


class PageClassExclusion:
    """Which pages of ``reader`` the mem_map classes of ``level`` exclude.

    The sweep reads ``mem_map`` in chunks of :data:`CHUNK` ``struct page``; with several
    workers the chunks are classified on every core (:mod:`kdumptool.parallel`), each as if
    no excluded range ran into it from the chunk before. The parent takes them in order
    and classifies again, itself, a chunk that such a range does run into (a compound page
    across a 128 MiB boundary: only gigantic pages, as the buddy allocator aligns the
    others), so the result is the one sweep in order would give.

    :param reader: the source dump (needs VMCOREINFO)
    :param level: dump level; only bits 2, 4, 8, 16 are used here
    :param workers: processes for the sweep (default: all cores)
    :raises KdumpToolError: VMCOREINFO or the page tables do not allow it
    """

    CHUNK = 1 << 15  # struct pages read per step (2 MiB of 64-byte struct page)

    def __init__(self, reader: DumpReader, level: int, workers: int | None = None) -> None:
        self.reader = reader
        vmci = reader.info.vmcoreinfo
        xlat = translator_for(reader)
        self.classifier = PageClassifier(vmci, level)  # type: ignore[arg-type]

        def read_virt(vaddr: int, size: int) -> bytes:
            return b"".join(reader.read(p, n) for p, n in xlat.ranges(vaddr, size))

        self.read_virt = read_virt
        self.ranges = find_mem_map(vmci, reader.max_pfn, read_virt,  # type: ignore[arg-type]
                                   xlat.is_kernel_address)
        self._bits = BitStore(-(-reader.max_pfn // 8))  # 1 = excluded (LSB-first like the dump)
        self.counts: Counter[str] = Counter()
        self.unreadable = 0  # struct pages that could not be read: those pages are kept
        self.reswept = 0  # chunks the parent classified again (a range ran into them)
        self._sweep(workers or default_workers())

    def _sweep(self, workers: int) -> None:
        jobs = [(k, start) for k, rng in enumerate(self.ranges)
                for start in range(rng.pfn_start, rng.pfn_end, self.CHUNK)]
        spill_end, spill_cls = 0, KEEP
        runner = ChunkRunner(self._part_alone, jobs, workers if len(jobs) >= 2 else 1, None, 0)
        for (k, start), (part, _, _) in zip(jobs, runner.results(), strict=True):
            if spill_end > start:  # a range excluded in the previous chunk continues here
                part = self._part(k, start, spill_end, spill_cls)
                self.reswept += 1
            self._store(start, part.excluded)
            self.counts.update(part.counts)
            self.unreadable += part.unreadable
            self.classifier.warnings.extend(part.warnings)
            spill_end, spill_cls = part.spill_end, part.spill_cls

    def _part_alone(self, job: tuple[int, int], write: object) -> _SweepPart:
        """A chunk classified as if nothing ran into it (a task of the parallel sweep)."""
        return self._part(job[0], job[1], 0, KEEP)

    def _part(self, k: int, start: int, spill_end: int, spill_cls: int) -> _SweepPart:
        """Classify the chunk of range ``k`` from PFN ``start``, with the excluded range
        ``[.., spill_end)`` of class ``spill_cls`` running into it."""
        rng = self.ranges[k]
        size_page = self.classifier.layout.size
        count = min(self.CHUNK, rng.pfn_end - start)
        ram, present = self.reader.bitmaps(start, count)
        cls = np.full(count, KEEP, dtype=np.uint8)
        lo, unreadable, noted = 0, 0, len(self.classifier.warnings)
        if spill_end > start:
            lo = min(spill_end - start, count)
            cls[:lo] = spill_cls
        if lo < count:
            vaddr = rng.mem_map + (start + lo - rng.pfn_start) * size_page
            try:
                raw = np.frombuffer(self.read_virt(vaddr, (count - lo) * size_page),
                                    dtype=np.uint8).reshape(count - lo, size_page)
            except (PageNotPresentError, KdumpToolError):
                unreadable = count - lo
                spill_end, spill_cls = start, KEEP
            else:
                part, spill_end, spill_cls = self.classifier.classify(raw, start + lo, ram[lo:])
                cls[lo:] = part
        counts = {name: int(((cls == code) & present).sum()) for code, name in CLASS_NAMES.items()}
        warnings = self.classifier.warnings[noted:]
        del self.classifier.warnings[noted:]
        return _SweepPart(np.packbits(cls != KEEP, bitorder="little"), counts, spill_end, spill_cls,
                          unreadable, warnings)

    def _store(self, start: int, packed: np.ndarray) -> None:
        # chunks start on multiples of 8 PFNs (sections are), so bytes never straddle
        self._bits.or_bytes(start // 8, packed)

    def excluded(self, start: int, count: int) -> np.ndarray:
        """Bool per PFN of the window: True where the level excludes the page."""
        end = min(start + count, self.reader.max_pfn)
        out = np.zeros(count, dtype=bool)
        if start >= end:
            return out
        b0, b1 = start // 8, -(-end // 8)
        bits = np.unpackbits(self._bits.read(b0, b1), bitorder="little").astype(bool)
        out[:end - start] = bits[start - b0 * 8:end - b0 * 8]
        return out

    @property
    def warnings(self) -> list[str]:
        """What the classifier reported and kept going (makedumpfile prints the same), e.g. an
        invalid free page order.
        """
        return self.classifier.warnings


__all__ = ["PageClassExclusion", "MemMapError"]
