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
guided by ``utsname.machine``: the structures and that trial are in
:mod:`kdumptool.formats.kdump_layout` (re-exported here); tolerant readings of damaged
headers in :mod:`kdumptool.formats.kdump_recover`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from kdumptool.codecs import CODEC_FLAG_MASK, CODECS
from kdumptool.dump import DumpInfo, DumpReader, Note, PageBatch, Utsname, pfn_range_text
from kdumptool.errors import (
    CorruptDumpError,
    CorruptPageError,
    TruncatedDumpError,
    UnknownFormatError,
)
from kdumptool.formats.kdump_layout import (  # re-exported: the names of this format
    DISKDUMP_SIGNATURE,
    DUMP_DH_COMPRESSED_INCOMPLETE,
    DUMP_DH_COMPRESSED_LZO,
    DUMP_DH_COMPRESSED_SNAPPY,
    DUMP_DH_COMPRESSED_ZLIB,
    DUMP_DH_COMPRESSED_ZSTD,
    DUMP_DH_EXCLUDED_VMEMMAP,
    KDUMP_HEADER_VERSION,
    KDUMP_SIGNATURE,
    KNOWN_STATUS,
    MACHINES_32,
    MACHINES_32_PACKED,
    MACHINES_64,
    MAX_BLOCK_SIZE,
    MIN_BLOCK_SIZE,
    PAGE_DESC_SIZE,
    UTS_FIELDS,
    UTS_LEN,
    KdumpStructs,
    detect_layout,
    kdump_structs,
    probe,
    rebuild_block_size,
)
from kdumptool.formats.kdump_pages import decode_all, decode_each, decode_one, window_bytes
from kdumptool.formats.notes import MAX_NOTES, parse_notes, vmcoreinfo_from_notes
from kdumptool.schema import strip_c_string
from kdumptool.transport.source import ByteSource, may_hold_data, read_exact
from kdumptool.vmcoreinfo import MAX_VMCOREINFO, VmcoreInfo

__all__ = [
    "KDUMP_SIGNATURE",
    "DISKDUMP_SIGNATURE",
    "KDUMP_HEADER_VERSION",
    "DUMP_DH_COMPRESSED_ZLIB",
    "DUMP_DH_COMPRESSED_LZO",
    "DUMP_DH_COMPRESSED_SNAPPY",
    "DUMP_DH_COMPRESSED_INCOMPLETE",
    "DUMP_DH_EXCLUDED_VMEMMAP",
    "DUMP_DH_COMPRESSED_ZSTD",
    "KNOWN_STATUS",
    "UTS_LEN",
    "UTS_FIELDS",
    "MACHINES_32",
    "MACHINES_32_PACKED",
    "MACHINES_64",
    "MIN_BLOCK_SIZE",
    "MAX_BLOCK_SIZE",
    "PAGE_DESC_SIZE",
    "KdumpStructs",
    "kdump_structs",
    "probe",
    "detect_layout",
    "KdumpReader",
]

class Remap:
    """A 2nd bitmap rebuilt over some of its bytes, and the descriptor of each page it declares
    there (repair's answer to a zeroed part of the 2nd bitmap: ``kdumptool.repair.bitmap2``).

    Ranks (the index of a present page in PFN order) and descriptor indexes are equal before
    the rebuilt bytes; inside, ``index`` lists the descriptor of each present page (-1: the page
    was dumped but which descriptor is its cannot be told: it reads as lost); after them they
    differ by ``shift``.

    :param first_byte: first byte of the 2nd bitmap replaced by ``bits``
    :param first_rank: rank of the first present page of the replaced bytes
    """

    def __init__(self, first_byte: int, bits: np.ndarray, first_rank: int, index: np.ndarray,
                 shift: int) -> None:
        self.first_byte, self.bits = first_byte, bits
        self.first_rank, self.index, self.shift = first_rank, index.astype(np.int64), shift

    def overlaps(self, start_byte: int, nbytes: int) -> bool:
        """Whether bytes ``[start_byte, start_byte + nbytes)`` of the 2nd bitmap are rebuilt ones."""
        return start_byte < self.first_byte + len(self.bits) and self.first_byte < start_byte + nbytes

    def overlay(self, start_byte: int, raw: np.ndarray) -> np.ndarray:
        """2nd-bitmap bytes read from the file, the rebuilt ones put in."""
        end = self.first_byte + len(self.bits)
        lo, hi = max(start_byte, self.first_byte), min(start_byte + len(raw), end)
        if lo >= hi:
            return raw
        out = raw.copy()
        out[lo - start_byte:hi - start_byte] = self.bits[lo - self.first_byte:hi - self.first_byte]
        return out

    def descs(self, reader: KdumpReader, first: int, count: int) -> np.ndarray:
        """The descriptors of present pages ``[first, first + count)`` (ranks), read from the table."""
        ranks = np.arange(first, first + count, dtype=np.int64)
        inside = ranks - self.first_rank
        within = (inside >= 0) & (inside < len(self.index))
        idx = np.where(inside < 0, ranks, ranks + self.shift)
        idx[within] = self.index[inside[within]]
        out = np.zeros(count, dtype=reader.structs.page_desc_dtype)
        have = np.flatnonzero(idx >= 0)
        if not have.size:
            return out
        breaks = np.flatnonzero(np.diff(idx[have]) != 1) + 1  # one read per run of the table
        for lo, hi in zip(np.concatenate(([0], breaks)).tolist(),
                          np.concatenate((breaks, [have.size])).tolist(), strict=True):
            out[have[lo:hi]] = reader._table(int(idx[have[lo]]), hi - lo)
        return out


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
        #: a 2nd bitmap rebuilt by repair, and the descriptor of each page it declares
        self.remap: Remap | None = None
        try:
            self.structs, hdr = detect_layout(head, path=path)
        except CorruptDumpError:
            if strict:
                raise
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
        if which == 2 and self.remap is not None:
            return self.remap.overlay(start_byte, np.frombuffer(raw, dtype=np.uint8))
        return np.frombuffer(raw, dtype=np.uint8)

    def _holds(self, which: int, start_byte: int, nbytes: int) -> bool:
        """False only when those bitmap bytes are a hole of the file (all clear, not stored)."""
        if which == 2 and self.remap is not None and self.remap.overlaps(start_byte, nbytes):
            return True
        return may_hold_data(self.source, self._bitmap_base(which) + start_byte, nbytes)

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
        if full and self._holds(which, start // 8, full):
            n += int(np.bitwise_count(self._bitmap_bytes(which, start // 8, full)).sum())
        if start + full * 8 < end:
            n += int(self._bits(which, start + full * 8, end - start - full * 8).sum())
        return n

    def _count_present(self, start: int, end: int) -> int:
        lo, hi = self.part
        return self._count(2 if self.two_bitmaps else 1, max(start, lo), min(end, hi))

    def count_pages(self) -> tuple[int, int]:
        """``(RAM pages, present pages)``, counted in the bitmaps chunk by chunk."""
        ram = present = 0
        step = self.COUNT_CHUNK
        for start in range(0, self._max_mapnr, step):
            ram += self._count(1, start, start + step)
            present += self._count_present(start, start + step)
        return ram, present

    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """RAM (1st bitmap) and present (2nd bitmap, or the 1st for a dump with one) bits of
        the window; a split part's present bits only inside its PFN range.
        """
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
            if not self._holds(which, big // 8, -(-n // 8)):
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
        """The descriptors of present pages ``[first, first + count)`` (in PFN order), as the
        table holds them, rebuilt ones applied; those beyond the end of the file read as zero."""
        out = self.remap.descs(self, first, count) if self.remap is not None else self._table(first, count)
        for index, desc in self.desc_patches.items():  # descriptors recovered by repair
            if first <= index < first + count:
                out[index - first] = desc
        return out

    def _table(self, first: int, count: int) -> np.ndarray:
        """Entries ``[first, first + count)`` of the descriptor table as stored (zeros past the end)."""
        dtype = self.structs.page_desc_dtype
        raw = self.source.pread(self.desc_offset + first * PAGE_DESC_SIZE, count * PAGE_DESC_SIZE)
        whole = len(raw) // PAGE_DESC_SIZE
        out = np.zeros(count, dtype=dtype)
        out[:whole] = np.frombuffer(raw, dtype=dtype, count=whole)
        return out

    # --- data ----------------------------------------------------------------
    def read_batch(self, start: int, count: int, *, keep_stored: int = 0) -> PageBatch:
        """See :meth:`DumpReader.read_batch`.

        :param keep_stored: a codec flag: the streams of the pages stored with that codec
            are also in the batch's ``stored`` (a writer with the same codec copies them as
            they are); they are decoded all the same, so damage is found as always
        """
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
        blob, base = window_bytes(self.source, self.block_size, offs[ok], sizes[ok])
        stored: dict[int, bytes] = {}
        if blob is not None and decode_all(blob, base, offs[ok], sizes[ok], flags[ok], data, ps,
                                           keep_stored, stored):
            row = len(data)  # every page decoded at once: nothing is damaged
        else:  # (what the bulk pass kept undecoded is decoded now)
            stored.clear()
            row = decode_each(self, start, idx, (offs, sizes, flags), ok, (blob, base), data, corrupt)
        data = data[:row]
        present = np.zeros(count, dtype=bool)
        present[idx[ok]] = True
        return PageBatch(start, count, ram, present, data, lost, corrupt, stored)

    def _decode(self, pfn: int, off: int, size: int, flags: int, corrupt: dict[int, str],
                raw: bytes | memoryview | None = None) -> bytes | memoryview | None:
        """One page's data, decoded (:func:`~kdumptool.formats.kdump_pages.decode_one`)."""
        return decode_one(self, pfn, (off, size, flags), corrupt, raw)

    def info_incomplete_ok(self) -> bool:
        """Lost pages are expected in a dump whose header says it is incomplete."""
        return bool(self.header.status & DUMP_DH_COMPRESSED_INCOMPLETE)
