"""Windows full-memory crash dumps (``PAGEDU64`` / ``PAGEDUMP``), as QEMU's ``win-dmp`` writes them.

QEMU's ``dump-guest-memory -w`` (``dump/win_dump.c``, ``include/qemu/win_dump_defs.h``)
writes a Windows complete memory dump: a header (``WinDumpHeader64``, 8 KiB; the 32-bit
``WinDumpHeader32`` is 4 KiB), then the pages of each physical memory run back to back, in
the order of the runs. This is not a Linux kernel dump: kdumptool says so (``info``), and
reads its physical memory so that ``convert`` can turn it into ELF or kdump-compressed for
tools that only need physical memory. See SPEC.md §15.

64-bit header fields used (little-endian): ``Signature`` ``"PAGE"`` (0), ``ValidDump``
``"DU64"`` (4), ``MajorVersion``/``MinorVersion`` (8, 12), ``DirectoryTableBase`` (0x10),
``MachineImageType`` (0x30), ``NumberProcessors`` (0x34), ``BugcheckCode`` (0x38),
``KdDebuggerDataBlock`` (0x80), ``PhysicalMemoryBlock`` (0x88: ``NumberOfRuns`` u32, pad,
``NumberOfPages`` u64, then ``{BasePage, PageCount}`` u64 pairs; 704 bytes, so at most 43
runs), ``DumpType`` (0xF98; 1 = full). 32-bit: ``"PAGEDUMP"``, ``DirectoryTableBase`` (0x10),
``PhysicalMemoryBlock`` at 0x64 with u32 fields (700 bytes, at most 86 runs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import construct as cs
import numpy as np

from kdumptool.dump import DumpInfo, DumpReader, PageBatch
from kdumptool.errors import CorruptDumpError, TruncatedDumpError, UnknownFormatError
from kdumptool.formats.pfn_index import MAX_PFN
from kdumptool.formats.registry import ReaderEntry
from kdumptool.schema import parse_at
from kdumptool.transport.source import ByteSource

PAGE_SIZE = 4096
MAGIC64, MAGIC32 = b"PAGEDU64", b"PAGEDUMP"


@dataclass(frozen=True)
class Layout:
    """One header flavour: its size, where the memory descriptor is, its integer width."""

    header_size: int
    block_offset: int
    block_size: int
    word: int
    machine: str


LAYOUTS = {
    MAGIC64: Layout(0x2000, 0x88, 704, 8, "x86_64"),
    MAGIC32: Layout(0x1000, 0x64, 700, 4, "i386"),
}

Header64 = cs.Struct(
    "Signature" / cs.Bytes(4), "ValidDump" / cs.Bytes(4),
    "MajorVersion" / cs.Int32ul, "MinorVersion" / cs.Int32ul,
    "DirectoryTableBase" / cs.Int64ul, "PfnDatabase" / cs.Int64ul,
    "PsLoadedModuleList" / cs.Int64ul, "PsActiveProcessHead" / cs.Int64ul,
    "MachineImageType" / cs.Int32ul, "NumberProcessors" / cs.Int32ul,
    "BugcheckCode" / cs.Int32ul, cs.Padding(4), "BugcheckParameters" / cs.Array(4, cs.Int64ul),
    "VersionUser" / cs.Bytes(32), "KdDebuggerDataBlock" / cs.Int64ul,
)
Header32 = cs.Struct(
    "Signature" / cs.Bytes(4), "ValidDump" / cs.Bytes(4),
    "MajorVersion" / cs.Int32ul, "MinorVersion" / cs.Int32ul,
    "DirectoryTableBase" / cs.Int32ul, "PfnDatabase" / cs.Int32ul,
    "PsLoadedModuleList" / cs.Int32ul, "PsActiveProcessHead" / cs.Int32ul,
    "MachineImageType" / cs.Int32ul, "NumberProcessors" / cs.Int32ul,
    "BugcheckCode" / cs.Int32ul, "BugcheckParameters" / cs.Array(4, cs.Int32ul),
    "VersionUser" / cs.Bytes(32), "PaeEnabled" / cs.Int8ul, cs.Padding(3),
    "KdDebuggerDataBlock" / cs.Int32ul,
)


def memory_descriptor(word: int) -> cs.Struct:
    """``PHYSICAL_MEMORY_DESCRIPTOR{32,64}`` head: run count and page count."""
    if word == 8:
        return cs.Struct("NumberOfRuns" / cs.Int32ul, cs.Padding(4), "NumberOfPages" / cs.Int64ul)
    return cs.Struct("NumberOfRuns" / cs.Int32ul, "NumberOfPages" / cs.Int32ul)


def probe(head: bytes) -> bool:
    """True if ``head`` starts a Windows 64-bit full or bitmap dump (``PAGEDU64``,
    ``DUMP_TYPE`` known).
    """
    return head[:8] in LAYOUTS


class WindowsDumpReader(DumpReader):
    """Physical memory of a Windows complete memory dump (QEMU ``win-dmp``)."""

    def __init__(self, source: ByteSource, *, strict: bool = True, transport: str = "plain") -> None:
        super().__init__(source, strict=strict)
        path = source.name
        head = source.pread(0, 8)
        if not probe(head):
            raise UnknownFormatError("not a Windows crash dump", path=path, offset=0,
                                     expected="PAGEDU64 or PAGEDUMP", got=head)
        lay = LAYOUTS[head]
        raw = source.pread(0, lay.header_size)
        if len(raw) < lay.header_size:
            raise TruncatedDumpError("file ends inside the Windows dump header", path=path,
                                     offset=len(raw), expected=f"{lay.header_size} bytes",
                                     got=f"{len(raw)} bytes")
        hdr = parse_at(Header64 if lay.word == 8 else Header32, raw, path=path, offset=0,
                       what="dump header")
        desc = parse_at(memory_descriptor(lay.word), raw[lay.block_offset:], path=path,
                        offset=lay.block_offset, what="PhysicalMemoryBlock")
        max_runs = (lay.block_size - (16 if lay.word == 8 else 8)) // (2 * lay.word)
        nruns = desc.NumberOfRuns
        if nruns > max_runs:
            raise CorruptDumpError("too many physical memory runs", path=path, offset=lay.block_offset,
                                   expected=f"<= {max_runs}", got=nruns)
        first = lay.block_offset + (16 if lay.word == 8 else 8)
        runs = np.frombuffer(raw, dtype=f"<u{lay.word}", count=2 * nruns, offset=first)
        base = runs[0::2].astype(np.uint64)
        count = runs[1::2].astype(np.uint64)
        if nruns and (int(base.max()) + int(count.max())) > MAX_PFN:  # 64 TiB, as for ELF
            raise CorruptDumpError("a memory run lies past 64 TiB of physical memory", path=path,
                                   offset=first, expected=f"BasePage + PageCount <= {MAX_PFN:#x}",
                                   got=f"{int(base.max()):#x} + {int(count.max()):#x}")
        base, count = base.astype(np.int64), count.astype(np.int64)
        order = np.argsort(base, kind="stable")
        if nruns > 1 and (base[order][1:] < (base + count)[order][:-1]).any():
            raise CorruptDumpError("physical memory runs overlap", path=path, offset=first,
                                   expected="disjoint runs", got="overlapping runs")
        if int(count.sum()) != desc.NumberOfPages:
            raise CorruptDumpError("the runs do not add up to NumberOfPages", path=path,
                                   offset=lay.block_offset + (8 if lay.word == 8 else 4),
                                   expected=int(count.sum()), got=desc.NumberOfPages)
        # file offset of each run's first page: runs are stored in the header's order
        offsets = lay.header_size + np.concatenate(([0], np.cumsum(count)[:-1])) * PAGE_SIZE
        self.base, self.count, self.offsets = base[order], count[order], offsets[order]
        end = lay.header_size + int(count.sum()) * PAGE_SIZE
        if end > source.size and strict:
            raise TruncatedDumpError("file ends inside the memory runs", path=path, offset=source.size,
                                     expected=f"{end} bytes", got=f"{source.size} bytes")
        self.header = hdr
        max_pfn = int((self.base + self.count).max()) if nruns else 0
        version = f"{hdr.MajorVersion}.{hdr.MinorVersion}"
        text = (f"Windows {'x64' if lay.word == 8 else 'x86'} complete memory dump (QEMU win-dmp), "
                f"version {version}, bugcheck {hdr.BugcheckCode:#x}: not a Linux kernel")
        self.info = DumpInfo(
            format="windows-dmp", path=path, endian="<", word_size=lay.word, machine=lay.machine,
            page_size=PAGE_SIZE, max_pfn=max_pfn, transport=transport,
            nr_cpus=hdr.NumberProcessors or None, incomplete=end > source.size,
            details={"os": "Windows", "windows_version": version,
                     "directory_table_base": f"{hdr.DirectoryTableBase:#x}",
                     "kd_debugger_data_block": f"{hdr.KdDebuggerDataBlock:#x}",
                     "bugcheck_code": f"{hdr.BugcheckCode:#x}", "memory_runs": nruns,
                     "identification": [{"source": "Windows dump header", "text": text,
                                         "machine": lay.machine}]},
        )

    def _overlaps(self, start: int, count: int) -> np.ndarray:
        return np.flatnonzero((self.base < start + count) & (self.base + self.count > start))

    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """RAM (inside a physical memory run) and present (wholly in the file) bits of the window."""
        ram = np.zeros(count, dtype=bool)
        present = np.zeros(count, dtype=bool)
        size = self.source.size
        for k in self._overlaps(start, count).tolist():
            lo, hi = max(start, int(self.base[k])), min(start + count, int(self.base[k] + self.count[k]))
            ram[lo - start:hi - start] = True
            # pages wholly in the file
            off = int(self.offsets[k]) + (lo - int(self.base[k])) * PAGE_SIZE
            have = max(0, min(hi - lo, (size - off) // PAGE_SIZE))
            present[lo - start:lo - start + have] = True
        return ram, present

    def read_batch(self, start: int, count: int) -> PageBatch:
        """The pages of the window from their runs; a page past the end of the file is lost.

        :raises TruncatedDumpError: (strict) the file ends inside the memory runs
        """
        ram, present = self.bitmaps(start, count)
        lost = ram & ~present
        if self.strict and lost.any():
            raise TruncatedDumpError("file ends inside the memory runs", path=self.info.path,
                                     offset=self.source.size, expected="the run's pages",
                                     got=f"{int(lost.sum())} pages missing")
        parts = []
        for k in self._overlaps(start, count).tolist():
            lo = max(start, int(self.base[k]))
            hi = min(start + count, int(self.base[k] + self.count[k]))
            n = int(present[lo - start:hi - start].sum())
            if n:
                off = int(self.offsets[k]) + (lo - int(self.base[k])) * PAGE_SIZE
                parts.append(self.source.pread(off, n * PAGE_SIZE))
        blob = b"".join(parts)
        data = np.frombuffer(blob, dtype=np.uint8).reshape(-1, PAGE_SIZE) if blob else \
            np.empty((0, PAGE_SIZE), np.uint8)
        return PageBatch(start, count, ram, present, data, lost)

    def _in_file(self) -> np.ndarray:
        """Pages of each run wholly in the file (the rest of a run is lost)."""
        return np.clip((self.source.size - self.offsets) // PAGE_SIZE, 0, self.count)

    def ram_ranges(self) -> list[tuple[int, int]]:
        """``[start, end)`` PFN ranges of the physical memory runs."""
        return [(b, b + c) for b, c in zip(self.base.tolist(), self.count.tolist(), strict=True)]

    def count_pages(self) -> tuple[int, int]:
        """RAM and present pages from the runs (no scan)."""
        return int(self.count.sum()), int(self._in_file().sum())

    def data_windows(self, window: int | None = None) -> Iterator[tuple[int, int]]:
        """The windows that hold a run's pages in the file (runs are sorted and disjoint)."""
        window = window or self.window_pages
        done = -1
        for b, c in zip(self.base.tolist(), self._in_file().tolist(), strict=True):
            if not c:
                continue
            for w in range(max(b // window, done + 1), (b + c - 1) // window + 1):
                yield w * window, min(window, self.max_pfn - w * window)
                done = w


#: This format in the registry (:mod:`kdumptool.formats`).
ENTRY = ReaderEntry("windows-dmp", probe, WindowsDumpReader, "Windows PAGEDU64", order=70)
