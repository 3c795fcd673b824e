"""kdump-compressed dumps (makedumpfile's default output) and old diskdump files: schemas and reader.

Spec: SPEC.md "kdump-compressed"; upstream makedumpfile ``diskdump_mod.h``
(``struct disk_dump_header``, ``struct kdump_sub_header``, ``struct page_desc``,
``DUMP_DH_*``), ``IMPLEMENTATION`` ("The file structure", "The incomplete
DUMPFILE"), ``makedumpfile.c`` (``write_kdump_header``,
``write_kdump_pages_and_bitmap_cyclic``); libkdumpfile ``src/kdumpfile/diskdump.c``
(``kdump_sub_header_32pack``/``32pad``/``64``, ``read_sub_hdr_*``, ``read_bitmap``);
QEMU ``dump/dump.c`` (``create_header32``/``64``).

File layout, in blocks of ``block_size`` bytes::

    0                                   disk_dump_header
    1                                   kdump_sub_header (+ ELF notes, v4+)
    1 + sub_hdr_size                    1st bitmap (RAM), then 2nd bitmap (dumpable)
    1 + sub_hdr_size + bitmap_blocks    page_desc[number of set bits of the 2nd bitmap]
                                        page data (not block aligned)

The header's byte order and word size are the crashed machine's. Neither is
recorded, so the reader tries layouts (as libkdumpfile ``open_common`` does),
guided by ``utsname.machine``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import construct as cs
import numpy as np

from kdumptool.codecs import CODEC_FLAG_MASK, CODECS, PageDecodeError, codec_for_flags
from kdumptool.dump import DumpInfo, DumpReader, Note, PageBatch, Utsname, pfn_range_text
from kdumptool.errors import (
    CorruptDumpError,
    CorruptPageError,
    TruncatedDumpError,
    UnknownFormatError,
)
from kdumptool.formats.elf import MAX_NOTES, parse_notes, vmcoreinfo_from_notes
from kdumptool.schema import ints, numpy_dtype, parse_at, strip_c_string
from kdumptool.transport.source import ByteSource, may_hold_data, read_exact
from kdumptool.vmcoreinfo import MAX_VMCOREINFO, VmcoreInfo

KDUMP_SIGNATURE = b"KDUMP   "
DISKDUMP_SIGNATURE = b"DISKDUMP"
#: The header version makedumpfile writes (and kdumptool writes).
KDUMP_HEADER_VERSION = 6

# disk_dump_header.status bits (diskdump_mod.h)
DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8
DUMP_DH_EXCLUDED_VMEMMAP = 0x10
DUMP_DH_COMPRESSED_ZSTD = 0x20
KNOWN_STATUS = 0x3F

UTS_LEN = 65
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
#: machines whose dumps use the 32-bit header layouts
MACHINES_32 = {"i386", "i486", "i586", "i686", "x86", "arm", "armv7l", "armv6l", "ppc", "mips",
               "s390", "sparc"}
MACHINES_32_PACKED = {"i386", "i486", "i586", "i686", "x86"}  # i386 aligns u64 to 4 bytes
MACHINES_64 = {"x86_64", "aarch64", "ppc64", "ppc64le", "s390x", "riscv64", "loongarch64",
               "mips64", "sparc64", "ia64", "alpha"}
MIN_BLOCK_SIZE = 1024
MAX_BLOCK_SIZE = 1 << 18
PAGE_DESC_SIZE = 24

# Offset of the utsname "machine" field, the same in every layout.
_MACHINE_OFFSET = 8 + 4 + 4 * UTS_LEN


@dataclass(frozen=True)
class KdumpStructs:
    """The structures of one layout and byte order (declared once, in :func:`kdump_structs`)."""

    layout: str
    endian: str
    DiskDumpHeader: cs.Struct
    KdumpSubHeader: cs.Struct
    PageDesc: cs.Struct
    page_desc_dtype: np.dtype


@functools.cache
def kdump_structs(layout: str, endian: str) -> KdumpStructs:
    """Structures for ``layout`` ("64", "32pack" = i386, "32pad" = arm and others) and ``endian``."""
    i = ints(endian)
    w = 8 if layout == "64" else 4
    ulong = i.word(w)
    slong = i.word(w, signed=True)
    header = cs.Struct(
        "signature" / cs.Bytes(8),  # "KDUMP   " or "DISKDUMP"
        "header_version" / i.s32,  # makedumpfile writes 6
        "utsname" / cs.Struct(*(name / cs.Bytes(UTS_LEN) for name in UTS_FIELDS)),
        "pad" / cs.Bytes(6 if w == 8 else 2),  # alignment of struct timeval
        "timestamp" / cs.Struct("tv_sec" / slong, "tv_usec" / slong),
        "status" / i.u32,  # DUMP_DH_* bits
        "block_size" / i.s32,  # = page size
        "sub_hdr_size" / i.s32,  # in blocks
        "bitmap_blocks" / i.u32,  # both bitmaps, in blocks
        "max_mapnr" / i.u32,  # truncated to 32 bits; v6+: see max_mapnr_64
        "total_ram_blocks" / i.u32,
        "device_blocks" / i.u32,
        "written_blocks" / i.u32,
        "current_cpu" / i.u32,
        "nr_cpus" / i.s32,
        # tasks[nr_cpus] follows in the old diskdump format; makedumpfile writes none
    )
    off_t = i.s64  # off_t is 64-bit in makedumpfile's builds (_FILE_OFFSET_BITS=64)

    def pad(n: int) -> list[cs.Construct]:
        return ["_pad" / cs.Padding(n)] if layout == "32pad" else []

    sub = cs.Struct(
        "phys_base" / ulong,  # v0+
        "dump_level" / i.s32,  # v1+
        "split" / i.s32,  # v2+
        "start_pfn" / ulong,  # v2+ (obsolete: 32-bit on 32-bit machines)
        "end_pfn" / ulong,  # v2+
        *pad(4),
        "offset_vmcoreinfo" / off_t,  # v3+
        "size_vmcoreinfo" / ulong,  # v3+
        *pad(4 if layout == "32pad" else 0),
        "offset_note" / off_t,  # v4+
        "size_note" / ulong,  # v4+
        *pad(4 if layout == "32pad" else 0),
        "offset_eraseinfo" / off_t,  # v5+
        "size_eraseinfo" / ulong,  # v5+
        *pad(4 if layout == "32pad" else 0),
        "start_pfn_64" / i.u64,  # v6+
        "end_pfn_64" / i.u64,  # v6+
        "max_mapnr_64" / i.u64,  # v6+
    )
    desc = cs.Struct(
        "offset" / i.s64,  # file offset of the page's data
        "size" / i.u32,  # stored size
        "flags" / i.u32,  # DUMP_DH_COMPRESSED_* of the page
        "page_flags" / i.u64,  # page->flags; makedumpfile writes 0
    )
    return KdumpStructs(layout, endian, header, sub, desc, numpy_dtype(desc, endian))


def probe(head: bytes) -> bool:
    """True if ``head`` starts a kdump-compressed or diskdump file."""
    return head[:8] in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE)


def _plausible(h: cs.Container) -> bool:
    bs = h.block_size
    return (
        0 <= h.header_version <= 64
        and MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE and bs & (bs - 1) == 0
        and h.sub_hdr_size >= 0 and h.bitmap_blocks > 0
        and 8 * h.bitmap_blocks * bs >= h.max_mapnr
    )


def detect_layout(head: bytes, *, path: str | None = None) -> tuple[KdumpStructs, cs.Container]:
    """Find the layout and byte order under which the header makes sense.

    :raises CorruptDumpError: none does (names the block_size field)
    """
    machine = strip_c_string(head[_MACHINE_OFFSET:_MACHINE_OFFSET + UTS_LEN])
    if machine in MACHINES_64:
        order = [("64", "<"), ("64", ">")]
    elif machine in MACHINES_32:
        kind = "32pack" if machine in MACHINES_32_PACKED else "32pad"
        order = [(kind, "<"), (kind, ">")]
    else:  # unknown machine: the order libkdumpfile tries (32-bit first)
        order = [("32pad", "<"), ("32pad", ">"), ("64", "<"), ("64", ">")]
    # the machine's layouts first, then every other (a header may lie about its machine)
    order += [(lay, e) for lay, e in [("32pad", "<"), ("32pad", ">"), ("64", "<"), ("64", ">"),
                                       ("32pack", "<"), ("32pack", ">")] if (lay, e) not in order]
    for layout, endian in order:
        s = kdump_structs(layout, endian)
        hdr = parse_at(s.DiskDumpHeader, head, path=path, offset=0, what="disk_dump_header")
        if _plausible(hdr):
            return s, hdr
    s = kdump_structs(*order[0])
    hdr = parse_at(s.DiskDumpHeader, head, path=path, offset=0, what="disk_dump_header")
    off = s.DiskDumpHeader.sizeof() - 36
    raise CorruptDumpError(
        "disk_dump_header is invalid: block_size must be a power of two from 1 KiB to 256 KiB "
        "and the bitmaps must cover max_mapnr", path=path, offset=off,
        expected="block_size = page size (e.g. 4096)", got=hdr.block_size,
    )


class KdumpReader(DumpReader):
    """Reader of kdump-compressed files (``KDUMP   ``) and old diskdump files (``DISKDUMP``)."""

    #: 2nd-bitmap bits per entry of the rank index
    RANK_CHUNK = 1 << 18
    #: PFNs per step of the metadata passes that work on bitmap bytes (128 KiB of bitmap)
    COUNT_CHUNK = 1 << 20

    def __init__(self, source: ByteSource, *, strict: bool = True, transport: str = "plain") -> None:
        super().__init__(source, strict=strict)
        path = self.path = source.name
        head = read_exact(source, 0, 512, "disk_dump_header")
        if not probe(head):
            raise UnknownFormatError("not a kdump-compressed file", path=path, offset=0,
                                     expected=KDUMP_SIGNATURE, got=head[:8])
        self.rebuilt: str | None = None
        self.damaged_signature: bytes | None = None  # set by kdump_recover.recover_signature
        #: descriptor index -> (offset, size, flags, page_flags) found by scanning page data
        self.desc_patches: dict[int, tuple[int, int, int, int]] = {}
        try:
            self.structs, hdr = detect_layout(head, path=path)
        except CorruptDumpError:
            if strict:
                raise
            from kdumptool.formats.kdump_recover import rebuild_block_size

            found = rebuild_block_size(source, head)  # tolerant: repair can use it
            if found is None:
                raise
            self.structs, hdr, self.rebuilt = found
        self.header = hdr
        s = self.structs
        self.is_diskdump = hdr.signature == DISKDUMP_SIGNATURE
        bs = self.block_size = hdr.block_size
        version = hdr.header_version
        self.sub = None
        if not self.is_diskdump and hdr.sub_hdr_size > 0:
            raw = read_exact(source, bs, s.KdumpSubHeader.sizeof(), "kdump_sub_header")
            self.sub = s.KdumpSubHeader.parse(raw)
        sub = self.sub
        max_mapnr = hdr.max_mapnr
        if sub is not None and version >= 6 and sub.max_mapnr_64:
            max_mapnr = sub.max_mapnr_64
        # bitmaps
        self.bitmap_offset = bs * (1 + hdr.sub_hdr_size)
        total_bitmap = hdr.bitmap_blocks * bs
        half = total_bitmap // 2
        self.two_bitmaps = max_mapnr <= half * 8
        self.bitmap_len = half if self.two_bitmaps else total_bitmap
        self.bitmap2_offset = self.bitmap_offset + (half if self.two_bitmaps else 0)
        max_mapnr = min(max_mapnr, self.bitmap_len * 8)
        # the bitmaps of the declared PFNs must be in the file; reading tolerantly, only the
        # PFNs whose bits the file holds exist (so a file cannot make us scan more than it has)
        need = -(-max_mapnr // 8)
        have = max(0, min(source.size - self.bitmap2_offset, source.size - self.bitmap_offset, need))
        if have < need:
            if strict:
                raise TruncatedDumpError(
                    "the bitmaps run past the end of the file", path=path, offset=source.size,
                    expected=f"file size >= {self.bitmap2_offset + need:#x} "
                             f"({max_mapnr:#x} PFNs, bitmap_blocks {hdr.bitmap_blocks})",
                    got=f"{source.size:#x}")
            max_mapnr = have * 8
        self.desc_offset = bs * (1 + hdr.sub_hdr_size + hdr.bitmap_blocks)
        if self.desc_offset > source.size and strict:
            raise TruncatedDumpError("file ends before the page descriptor table", path=path,
                                     offset=source.size, expected=f">= {self.desc_offset:#x} bytes",
                                     got=f"{source.size:#x} bytes")
        split = self._split_range(max_mapnr)  # a split part: descriptors only for [start, end)
        self.part = split or (0, max_mapnr)
        self._max_mapnr = max_mapnr
        self._build_rank_index()
        self.desc_end = self.desc_offset + PAGE_DESC_SIZE * self.num_descs
        self.data_offset = self.desc_end
        self.notes, self.vmcoreinfo, self.eraseinfo = self._read_notes()
        if self.strict:
            self._check_tail()
        self.info = self._describe(transport, split)

    def _split_range(self, max_mapnr: int) -> tuple[int, int] | None:
        """``[start, end)`` of a split part (``kdump_sub_header.split``), else None."""
        sub, version = self.sub, self.header.header_version
        if sub is None or version < 2 or not sub.split:
            return None
        if version >= 6:
            start, end = sub.start_pfn_64, sub.end_pfn_64
        else:
            start, end = sub.start_pfn, sub.end_pfn
        if not start <= end <= max_mapnr:
            raise CorruptDumpError("split part's PFN range is invalid", path=self.path,
                                   offset=self.block_size, expected=f"start <= end <= {max_mapnr:#x}",
                                   got=pfn_range_text(start, end))
        return start, end

    def _describe(self, transport: str, split: tuple[int, int] | None) -> DumpInfo:
        hdr, s, sub, version = self.header, self.structs, self.sub, self.header.header_version
        codecs = {c.name for c in CODECS.values() if hdr.status & c.flag}
        uts = Utsname(*(strip_c_string(getattr(hdr.utsname, f)) for f in UTS_FIELDS))
        info = DumpInfo(
            format="diskdump" if self.is_diskdump else "kdump", path=self.path, endian=s.endian,
            word_size=8 if s.layout == "64" else 4, machine=uts.machine, page_size=self.block_size,
            max_pfn=self._max_mapnr, transport=transport, notes=self.notes,
            vmcoreinfo=self.vmcoreinfo, utsname=uts,
            timestamp=(hdr.timestamp.tv_sec, hdr.timestamp.tv_usec),
            nr_cpus=hdr.nr_cpus if hdr.nr_cpus > 0 else None,
            phys_base=sub.phys_base if sub is not None else None,
            dump_level=sub.dump_level if sub is not None and version >= 1 else None,
            codecs=codecs, incomplete=bool(hdr.status & DUMP_DH_COMPRESSED_INCOMPLETE),
            header_version=version, split=split,
        )
        info.details.update(layout=s.layout, status=hdr.status, two_bitmaps=self.two_bitmaps,
                            descriptors=self.num_descs, eraseinfo=len(self.eraseinfo or b""))
        return info

    # --- metadata ------------------------------------------------------------
    def _bitmap_base(self, which: int) -> int:
        return self.bitmap_offset if which == 1 else self.bitmap2_offset

    def _bitmap_bytes(self, which: int, start_byte: int, nbytes: int) -> np.ndarray:
        base = self._bitmap_base(which)
        raw = self.source.pread(base + start_byte, nbytes)
        if len(raw) < nbytes:
            if self.strict:
                raise TruncatedDumpError(f"file ends inside the {'1st' if which == 1 else '2nd'} "
                                         "bitmap", path=self.path, offset=base + start_byte + len(raw),
                                         expected=f"{nbytes} bytes", got=f"{len(raw)} bytes")
            raw = raw.ljust(nbytes, b"\0")
        return np.frombuffer(raw, dtype=np.uint8)

    def _bits(self, which: int, start: int, count: int) -> np.ndarray:
        """Bits ``[start, start + count)`` of a bitmap as bools (LSB-first bit order)."""
        end = min(start + count, self._max_mapnr)
        out = np.zeros(count, dtype=bool)
        if start >= end:
            return out
        b0, b1 = start // 8, -(-end // 8)
        bits = np.unpackbits(self._bitmap_bytes(which, b0, b1 - b0), bitorder="little")
        out[:end - start] = bits[start - b0 * 8:end - b0 * 8].astype(bool)
        return out

    def _count(self, which: int, start: int, end: int) -> int:
        """Set bits of a bitmap in PFNs ``[start, end)``, counted on the bytes (no unpacking)."""
        end = min(end, self._max_mapnr)
        if end <= start:
            return 0
        head = min(-start % 8, end - start)
        n = int(self._bits(which, start, head).sum()) if head else 0
        start += head
        full = (end - start) // 8
        if full and may_hold_data(self.source, self._bitmap_base(which) + start // 8, full):
            n += int(np.bitwise_count(self._bitmap_bytes(which, start // 8, full)).sum())
        if start + full * 8 < end:
            n += int(self._bits(which, start + full * 8, end - start - full * 8).sum())
        return n

    def _count_present(self, start: int, end: int) -> int:
        lo, hi = self.part
        return self._count(2 if self.two_bitmaps else 1, max(start, lo), min(end, hi))

    def count_pages(self) -> tuple[int, int]:
        ram = present = 0
        step = self.COUNT_CHUNK
        for start in range(0, self._max_mapnr, step):
            ram += self._count(1, start, start + step)
            present += self._count_present(start, start + step)
        return ram, present

    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        ram = self._bits(1, start, count)
        present = self._bits(2, start, count) if self.two_bitmaps else ram.copy()
        lo, hi = self.part
        present[: max(0, min(lo - start, count))] = False
        if hi - start < count:
            present[max(0, hi - start):] = False
        return ram, present

    def data_windows(self, window: int | None = None) -> Iterator[tuple[int, int]]:
        """Only the windows whose 2nd-bitmap bits are not all clear."""
        lo, hi = self.part
        return self.declared_windows(lo, hi, window)

    def declared_windows(self, lo: int, hi: int, window: int | None = None) -> Iterator[tuple[int, int]]:
        """The windows overlapping PFNs ``[lo, hi)`` whose 2nd-bitmap bits are not all clear
        (the 2nd bitmap is global, also in a split part)."""
        window = window or self.window_pages
        which = 2 if self.two_bitmaps else 1
        step = max(window, self.COUNT_CHUNK // window * window)
        for big in range(lo // window * window, min(self.max_pfn, hi, self._max_mapnr), step):
            n = min(step, self._max_mapnr - big)
            if not may_hold_data(self.source, self._bitmap_base(which) + big // 8, -(-n // 8)):
                continue  # a hole: no bit set
            raw = self._bitmap_bytes(which, big // 8, -(-n // 8))
            per = window // 8  # windows are multiples of 8 pages: whole bytes
            full = np.zeros(-(-len(raw) // per) * per, dtype=np.uint8)
            full[:len(raw)] = raw
            for k in np.flatnonzero(full.reshape(-1, per).any(axis=1)).tolist():
                start = big + k * window
                if start < hi and start + window > lo:
                    yield start, min(window, self.max_pfn - start)

    def _build_rank_index(self) -> None:
        """Counts of set 2nd-bitmap bits before each chunk (within the split part)."""
        counts = [0]
        total = 0
        for start in range(0, self._max_mapnr, self.RANK_CHUNK):
            total += self._count_present(start, start + self.RANK_CHUNK)
            counts.append(total)
        self._rank_base = np.array(counts, dtype=np.int64)
        self._last_rank = (-1, 0)  # (pfn, rank) of the last call
        self.num_descs = total

    def rank(self, pfn: int) -> int:
        """Index in the descriptor table of the first present page at or after ``pfn``."""
        chunk = min(pfn // self.RANK_CHUNK, len(self._rank_base) - 1)
        start, base = chunk * self.RANK_CHUNK, int(self._rank_base[chunk])
        last_pfn, last_rank = self._last_rank
        if start <= last_pfn <= pfn:  # reading in order: count on from the last answer
            start, base = last_pfn, last_rank
        base += self._count_present(start, pfn)
        self._last_rank = (pfn, base)
        return base

    def _read_blob(self, offset: int, size: int, what: str, limit: int) -> bytes | None:
        if size == 0 or offset == 0:
            return None
        if size > limit or offset < 0:
            if self.strict:
                raise CorruptDumpError(f"{what} size or offset is implausible", path=self.path,
                                       offset=self.block_size, expected=f"size <= {limit:#x}",
                                       got=f"size {size:#x} at {offset:#x}")
            return None
        if offset + size > self.source.size:
            if self.strict:
                raise TruncatedDumpError(f"{what} lies beyond the end of the file", path=self.path,
                                         offset=offset, expected=f"{size:#x} bytes",
                                         got=f"file size {self.source.size:#x}")
            return None
        return self.source.pread(offset, size)

    def _read_notes(self) -> tuple[list[Note], VmcoreInfo | None, bytes | None]:
        sub, version = self.sub, self.header.header_version
        if sub is None:
            return [], None, None
        notes: list[Note] = []
        vmcoreinfo = None
        if version >= 4:
            blob = self._read_blob(sub.offset_note, sub.size_note, "ELF note area", MAX_NOTES)
            if blob is not None:
                notes = parse_notes(blob, self.structs.endian, base=sub.offset_note, path=self.path,
                                    strict=self.strict)
                vmcoreinfo = vmcoreinfo_from_notes(notes)
        if vmcoreinfo is None and version >= 3:
            raw = self._read_blob(sub.offset_vmcoreinfo, sub.size_vmcoreinfo, "VMCOREINFO",
                                  MAX_VMCOREINFO)
            if raw is not None:
                vmcoreinfo = VmcoreInfo.parse(raw)
        eraseinfo = None
        if version >= 5:
            eraseinfo = self._read_blob(sub.offset_eraseinfo, sub.size_eraseinfo, "ERASEINFO",
                                        MAX_NOTES)
        return notes, vmcoreinfo, eraseinfo

    def _check_tail(self) -> None:
        """Strict mode: the descriptor table and the last page's data must be in the file."""
        if self.desc_end > self.source.size:
            raise TruncatedDumpError(
                "file ends inside the page descriptor table", path=self.path,
                offset=self.source.size, expected=f"table end {self.desc_end:#x}",
                got=f"file size {self.source.size:#x}")
        if self.num_descs == 0 or self.header.status & DUMP_DH_COMPRESSED_INCOMPLETE:
            return
        self._check_table_start()
        tail = min(self.num_descs, 4096)  # the zero page lies first, so look at several
        descs = self._descs(self.num_descs - tail, tail)
        end = int((descs["offset"].astype(np.int64) + descs["size"]).max())
        if end > self.source.size:
            raise TruncatedDumpError(
                "file is truncated: page data ends past the end of the file",
                path=self.path, offset=self.source.size, expected=f"file size >= {end:#x}",
                got=f"{self.source.size:#x}")

    def _check_table_start(self) -> None:
        """The page data of a whole (unsplit) file starts right after the descriptor table.

        makedumpfile and QEMU both write it so (the shared zero page or the first page comes
        first). Data that starts later means the 2nd bitmap has lost set bits, so every
        descriptor would be matched to the wrong page; earlier means it has extra bits.
        """
        if self.sub is not None and self.header.header_version >= 2 and self.sub.split:
            return  # a part reserves room for the whole set's descriptors
        head = self._descs(0, min(self.num_descs, 4096))
        offs = head["offset"].astype(np.int64)
        offs = offs[offs > 0]
        if not offs.size:
            return
        first_data = int(offs.min())
        # makedumpfile writes the shared zero page at dump level 1 even if no page uses it
        if first_data not in (self.desc_end, self.desc_end + self.block_size):
            raise CorruptDumpError(
                "the 2nd bitmap does not match the page descriptor table: page data should "
                "start right after the table", path=self.path, offset=self.bitmap2_offset,
                expected=f"data at {self.desc_end:#x} ({self.num_descs} descriptors)",
                got=f"data at {first_data:#x} "
                    f"({(first_data - self.desc_offset) / PAGE_DESC_SIZE:.0f} descriptors)")

    def _descs(self, first: int, count: int) -> np.ndarray:
        """Descriptors ``[first, first + count)``; those beyond the end of the file read as zero."""
        dtype = self.structs.page_desc_dtype
        raw = self.source.pread(self.desc_offset + first * PAGE_DESC_SIZE, count * PAGE_DESC_SIZE)
        whole = len(raw) // PAGE_DESC_SIZE
        out = np.zeros(count, dtype=dtype)
        out[:whole] = np.frombuffer(raw, dtype=dtype, count=whole)
        for index, desc in self.desc_patches.items():  # descriptors recovered by repair
            if first <= index < first + count:
                out[index - first] = desc
        return out

    # --- data ----------------------------------------------------------------
    def read_batch(self, start: int, count: int) -> PageBatch:
        ps = self.block_size
        ram, present = self.bitmaps(start, count)
        idx = np.flatnonzero(present)
        lost = np.zeros(count, dtype=bool)
        corrupt: dict[int, str] = {}
        if idx.size == 0:
            return PageBatch(start, count, ram, present, np.empty((0, ps), np.uint8), lost, corrupt)
        first = self.rank(start)
        descs = self._descs(first, idx.size)
        offs = descs["offset"].astype(np.int64)
        sizes = descs["size"].astype(np.int64)
        flags = descs["flags"].astype(np.int64)
        desc_pos = self.desc_offset + (first + np.arange(idx.size)) * PAGE_DESC_SIZE
        # classify every descriptor at once
        is_lost = offs == 0
        beyond = desc_pos + PAGE_DESC_SIZE > self.source.size
        is_lost |= beyond
        codec_bits = flags & CODEC_FLAG_MASK
        bad_flags = ((flags & ~CODEC_FLAG_MASK) != 0) | ((codec_bits & (codec_bits - 1)) != 0)
        bad_size = (sizes == 0) | (sizes > ps) | ((codec_bits == 0) & (sizes != ps))
        bad_off = (offs < self.data_offset) & ~is_lost
        cut = (offs + sizes > self.source.size) & ~is_lost & ~bad_off & ~bad_size
        problems = {
            "descriptor flags": bad_flags & ~is_lost,
            "descriptor size": bad_size & ~is_lost & ~bad_flags,
            "descriptor offset": bad_off & ~bad_size & ~bad_flags,
        }
        for what, mask in problems.items():
            for j in np.flatnonzero(mask):
                msg = (f"page_desc[{first + j}] has invalid {what.split()[1]}: offset "
                       f"{int(offs[j]):#x}, size {int(sizes[j]):#x}, flags {int(flags[j]):#x}")
                if self.strict:
                    raise CorruptPageError(msg, pfn=start + int(idx[j]), path=self.path,
                                           offset=int(desc_pos[j]))
                corrupt[start + int(idx[j])] = msg
        if self.strict and cut.any():  # (a truncated file is refused at open)
            j = int(np.flatnonzero(cut)[0])
            raise CorruptPageError(
                f"page_desc[{first + j}] points past the end of the file: offset "
                f"{int(offs[j]):#x}, size {int(sizes[j]):#x}, file size {self.source.size:#x}",
                pfn=start + int(idx[j]), path=self.path, offset=int(desc_pos[j]))
        if self.strict and is_lost.any() and not self.info_incomplete_ok():
            j = int(np.flatnonzero(is_lost)[0])
            raise CorruptPageError(
                f"page_desc[{first + j}] is empty (a lost page) in a dump not marked incomplete",
                pfn=start + int(idx[j]), path=self.path, offset=int(desc_pos[j]))
        is_lost |= cut
        bad = np.zeros(idx.size, dtype=bool)
        for mask in problems.values():
            bad |= mask
        ok = ~is_lost & ~bad
        lost[idx[is_lost]] = True
        data = np.empty((int(ok.sum()), ps), dtype=np.uint8)
        row = 0
        cache: dict[tuple[int, int, int], bytes] = {}  # pages stored once (the zero page)
        for j, (off, size, fl) in enumerate(zip(offs.tolist(), sizes.tolist(), flags.tolist(), strict=True)):
            if not ok[j]:
                continue
            pfn = start + int(idx[j])
            page = cache.get((off, size, fl))  # the flags too: the same bytes decode otherwise
            if page is None:
                page = self._decode(pfn, off, size, fl, corrupt)
                if page is None:
                    ok[j] = False
                    continue
                cache[(off, size, fl)] = page
            data[row] = np.frombuffer(page, np.uint8)
            row += 1
        data = data[:row]
        present = np.zeros(count, dtype=bool)
        present[idx[ok]] = True
        return PageBatch(start, count, ram, present, data, lost, corrupt)

    def info_incomplete_ok(self) -> bool:
        """Lost pages are expected in a dump whose header says it is incomplete."""
        return bool(self.header.status & DUMP_DH_COMPRESSED_INCOMPLETE)

    def _decode(self, pfn: int, off: int, size: int, flags: int,
                corrupt: dict[int, str]) -> bytes | None:
        raw = self.source.pread(off, size)
        codec = codec_for_flags(flags)
        if len(raw) != size or (codec is None and size != self.block_size):
            msg = f"short read of page data ({len(raw)} of {size} bytes)"
            if self.strict:
                raise CorruptPageError(msg, pfn=pfn, path=self.path, offset=off)
            corrupt[pfn] = msg
            return None
        if codec is None:
            return raw
        try:
            return codec.decompress(raw, self.block_size)
        except PageDecodeError as exc:
            if self.strict:
                raise CorruptPageError(str(exc), pfn=pfn, path=self.path, offset=off) from None
            corrupt[pfn] = str(exc)
            return None
