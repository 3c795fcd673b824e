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
from typing import BinaryIO

import numpy as np

from kdumptool.dump import DumpReader
from kdumptool.errors import KdumpToolError, OutputError, PageNotPresentError
from kdumptool.filters.mem_map import MemMapError, find_mem_map
from kdumptool.filters.page_classes import CLASS_NAMES, KEEP, PageClassifier
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


class PageClassExclusion:
    """Which pages of ``reader`` the mem_map classes of ``level`` exclude.

    :param reader: the source dump (needs VMCOREINFO)
    :param level: dump level; only bits 2, 4, 8, 16 are used here
    :raises KdumpToolError: VMCOREINFO or the page tables do not allow it
    """

    CHUNK = 1 << 15  # struct pages read per step (2 MiB of 64-byte struct page)

    def __init__(self, reader: DumpReader, level: int) -> None:
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
        self._sweep()

    def _sweep(self) -> None:
        size_page = self.classifier.layout.size
        spill_end, spill_cls = 0, KEEP
        for rng in self.ranges:
            for start in range(rng.pfn_start, rng.pfn_end, self.CHUNK):
                count = min(self.CHUNK, rng.pfn_end - start)
                ram, present = self.reader.bitmaps(start, count)
                cls = np.full(count, KEEP, dtype=np.uint8)
                lo = 0
                if spill_end > start:  # a range excluded in the previous chunk continues here
                    lo = min(spill_end - start, count)
                    cls[:lo] = spill_cls
                if lo < count:
                    vaddr = rng.mem_map + (start + lo - rng.pfn_start) * size_page
                    try:
                        raw = np.frombuffer(self.read_virt(vaddr, (count - lo) * size_page),
                                            dtype=np.uint8).reshape(count - lo, size_page)
                    except (PageNotPresentError, KdumpToolError):
                        self.unreadable += count - lo
                        spill_end, spill_cls = start, KEEP
                    else:
                        part, spill_end, spill_cls = self.classifier.classify(raw, start + lo, ram[lo:])
                        cls[lo:] = part
                self._store(start, cls != KEEP)
                for code, name in CLASS_NAMES.items():
                    self.counts[name] += int(((cls == code) & present).sum())

    def _store(self, start: int, excluded: np.ndarray) -> None:
        # chunks start on multiples of 8 PFNs (sections are), so bytes never straddle
        self._bits.or_bytes(start // 8, np.packbits(excluded, bitorder="little"))

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
