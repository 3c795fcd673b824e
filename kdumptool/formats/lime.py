"""LiME memory images (Linux Memory Extractor, ``format=lime``): physical RAM ranges, each after
a 32-byte header.

Spec: SPEC.md "LiME memory images". Upstream LiME (504ensicsLabs): ``src/lime.h``
(``lime_mem_range_header``: ``magic``, ``version``, ``s_addr``, ``e_addr``, ``reserved[8]``,
packed; ``LIME_MAGIC`` 0x4C694D45), ``src/main.c`` (``write_lime_header``: version 1, the
``System RAM`` resource's ``start`` and inclusive ``end``; ``write_range``: exactly
``end - start + 1`` bytes follow, a partial last page padded with zeros), ``docs/README.md``
("LiME Memory Range Header Version 1 Specification"). The header is written in the host's
byte order: ``EMiL`` on a little-endian machine, ``LiME`` on a big-endian one. AVML (Microsoft)
writes the same header with magic ``AVML`` and version 2 for snappy-compressed ranges: refused
here by name (not read).

A LiME image says nothing but where RAM lies: no architecture, no page size, no VMCOREINFO,
no CPU state. kdumptool takes 4 KiB pages and 64-bit words; the machine stays unknown until
VMCOREINFO is supplied (``-i``) or found in memory (``vmcoreinfo --scan``, the kernel commands),
as for a QEMU dump made without ``-device vmcoreinfo``. The reader walks the headers once at
open and keeps the ranges (not one entry per page); page data is read per window.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import construct as cs
import numpy as np

from kdumptool.dump import DumpInfo, DumpReader, PageBatch
from kdumptool.errors import CorruptDumpError, TruncatedDumpError, UnknownFormatError
from kdumptool.formats.registry import ReaderEntry
from kdumptool.schema import ints, parse_at
from kdumptool.transport.source import ByteSource

#: ``LIME_MAGIC`` as the bytes a little-endian / big-endian host writes.
MAGICS = {b"EMiL": "<", b"LiME": ">"}
#: AVML's compressed variant (magic ``AVML``, version 2), recognised to be refused by name.
AVML_MAGIC = b"AVML"
VERSION = 1
HEADER_SIZE = 32
PAGE_SIZE = 4096
#: Highest physical address accepted (64 TiB, as for ELF dumps).
MAX_ADDRESS = 1 << 46
#: Ranges accepted in one image (a real one has a few dozen: the ``System RAM`` resources).
MAX_RANGES = 1 << 16


def header_struct(endian: str) -> cs.Struct:
    """``lime_mem_range_header`` (``lime.h``), 32 bytes, in the byte order of the writing host."""
    i = ints(endian)
    return cs.Struct("magic" / i.u32, "version" / i.u32, "s_addr" / i.u64, "e_addr" / i.u64,
                     "reserved" / cs.Bytes(8))


def probe(head: bytes) -> bool:
    """True if ``head`` starts with a LiME range header (either byte order), or AVML's."""
    return len(head) >= 8 and (head[:4] in MAGICS or head[:4] == AVML_MAGIC)


@dataclass(frozen=True)
class Range:
    """One range of the image: physical bytes ``[start, end]`` (inclusive, as LiME writes
    them), stored from file offset ``data``."""

    start: int
    end: int
    data: int
    header: int  # file offset of its header

    @property
    def size(self) -> int:
        """Bytes of the range."""
        return self.end - self.start + 1


def read_ranges(source: ByteSource, *, strict: bool) -> tuple[str, list[Range], str | None]:
    """Walk the headers: ``(byte order, ranges, problem)``; ``problem`` says why the walk
    stopped early (tolerant mode: the ranges before it are kept).

    :raises UnknownFormatError: not LiME, or AVML's compressed variant
    :raises CorruptDumpError: (strict) a header is bad, or ranges overlap or go backwards
    :raises TruncatedDumpError: (strict) the file ends inside a header or a range's data
    """
    path, size = source.name, source.size
    head = source.pread(0, 8)
    if head[:4] == AVML_MAGIC:
        raise UnknownFormatError("AVML's compressed LiME variant (version 2, snappy) is not "
                                 "supported: decompress it with avml-convert first", path=path,
                                 offset=0, expected=b"EMiL", got=head[:4])
    if head[:4] not in MAGICS:
        raise UnknownFormatError("not a LiME image", path=path, offset=0, expected=b"EMiL", got=head[:4])
    endian = MAGICS[head[:4]]
    st = header_struct(endian)
    ranges: list[Range] = []
    pos = 0
    try:
        while pos < size:
            rng = _next_range(source, st, pos, ranges, endian)
            ranges.append(rng)
            pos = rng.data + rng.size
    except CorruptDumpError as exc:  # TruncatedDumpError included
        if strict or not ranges:
            raise
        return endian, ranges, str(exc)
    return endian, ranges, None


def _next_range(source: ByteSource, st: cs.Struct, pos: int, ranges: list[Range], endian: str) -> Range:
    """The range whose header is at ``pos``, checked against the ones before it."""
    path = source.name
    raw = source.pread(pos, HEADER_SIZE)
    if len(raw) < HEADER_SIZE:
        raise TruncatedDumpError("file ends inside a LiME range header", path=path, offset=pos,
                                 expected=f"{HEADER_SIZE} bytes", got=f"{len(raw)} bytes")
    h = parse_at(st, raw, path=path, offset=pos, what="LiME range header")
    magic = raw[:4]
    if MAGICS.get(magic) != endian:
        raise CorruptDumpError("bad LiME range header magic", path=path, offset=pos,
                               expected=[m for m, e in MAGICS.items() if e == endian][0], got=magic)
    if h.version != VERSION:
        raise CorruptDumpError("unsupported LiME header version", path=path, offset=pos + 4,
                               expected=VERSION, got=h.version)
    if not h.s_addr <= h.e_addr < MAX_ADDRESS:
        raise CorruptDumpError("implausible LiME range", path=path, offset=pos + 8,
                               expected=f"s_addr <= e_addr < {MAX_ADDRESS:#x}",
                               got=f"{h.s_addr:#x}-{h.e_addr:#x}")
    if ranges and h.s_addr <= ranges[-1].end:
        raise CorruptDumpError("LiME ranges overlap or are out of order", path=path, offset=pos + 8,
                               expected=f"s_addr > {ranges[-1].end:#x}", got=f"{h.s_addr:#x}")
    if len(ranges) >= MAX_RANGES:
        raise CorruptDumpError("too many LiME ranges", path=path, offset=pos,
                               expected=f"<= {MAX_RANGES}", got="more")
    rng = Range(h.s_addr, h.e_addr, pos + HEADER_SIZE, pos)
    if rng.data + rng.size > source.size:
        raise TruncatedDumpError("file ends inside a LiME range's data", path=path,
                                 offset=source.size, expected=f"{rng.size} bytes from {rng.data:#x}",
                                 got=f"{source.size - rng.data} bytes")
    return rng


class LimeReader(DumpReader):
    """Reader of LiME images: each page is RAM where a range covers any of its bytes; bytes of
    a page outside every range read as zeros."""

    def __init__(self, source: ByteSource, *, strict: bool = True, transport: str = "plain") -> None:
        super().__init__(source, strict=strict)
        endian, self.ranges, problem = read_ranges(source, strict=strict)
        ps = PAGE_SIZE
        # per range: first PFN, PFNs touched, physical and file offsets of the first byte
        self._first = np.array([r.start // ps for r in self.ranges], dtype=np.int64)
        self._last = np.array([r.end // ps for r in self.ranges], dtype=np.int64)
        max_pfn = int(self._last[-1]) + 1 if self.ranges else 0
        self.info = DumpInfo(
            format="lime", path=source.name, endian=endian, word_size=8, machine="",
            page_size=ps, max_pfn=max_pfn, transport=transport, header_version=VERSION,
            incomplete=problem is not None,
            details={"ranges": [f"{r.start:#x}-{r.end:#x} at {r.data:#x}" for r in self.ranges[:256]],
                     "range_count": len(self.ranges)},
        )
        if problem is not None:
            self.info.details["problem"] = problem

    def _overlapping(self, start: int, count: int) -> list[int]:
        lo = int(np.searchsorted(self._last, start, side="left"))
        hi = int(np.searchsorted(self._first, start + count, side="left"))
        return list(range(lo, hi))

    def ram_ranges(self) -> list[tuple[int, int]]:
        """``[first, last + 1)`` PFN ranges the LiME ranges touch (sorted, as the file)."""
        return [(int(a), int(b) + 1) for a, b in zip(self._first, self._last, strict=True)]

    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """RAM and present bits of the window: the pages the ranges touch (every byte of a
        range is in the file, or the reader would have stopped before it)."""
        ram = np.zeros(count, dtype=bool)
        for k in self._overlapping(start, count):
            lo, hi = max(int(self._first[k]), start), min(int(self._last[k]) + 1, start + count)
            ram[lo - start:hi - start] = True
        return ram, ram.copy()

    def data_windows(self, window: int | None = None) -> Iterator[tuple[int, int]]:
        """The windows the ranges touch, in order."""
        window = window or self.window_pages
        done = -1
        for a, b in self.ram_ranges():
            for w in range(max(a // window, done + 1), (b - 1) // window + 1):
                yield w * window, min(window, self.max_pfn - w * window)
                done = w

    def read_batch(self, start: int, count: int) -> PageBatch:
        """The pages of the window: the bytes of each range copied to their physical place
        (one ``pread`` per range and window), zeros elsewhere in a page the ranges touch."""
        ps = PAGE_SIZE
        ram, present = self.bitmaps(start, count)
        row = np.cumsum(present) - 1  # row of each present page in ``data``
        data = np.zeros((int(present.sum()), ps), dtype=np.uint8)
        flat = data.reshape(-1)
        base = start * ps
        for k in self._overlapping(start, count):
            r = self.ranges[k]
            lo, hi = max(r.start, base), min(r.end + 1, base + count * ps)
            raw = self.source.pread(r.data + (lo - r.start), hi - lo)
            # the pages a range touches are consecutive rows: one copy per range
            at = int(row[lo // ps - start]) * ps + lo % ps
            flat[at:at + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        return PageBatch(start, count, ram, present, data, np.zeros(count, dtype=bool))


#: This format in the registry (:mod:`kdumptool.formats`).
ENTRY = ReaderEntry("lime", probe, LimeReader, "LiME 'EMiL'", order=80)
