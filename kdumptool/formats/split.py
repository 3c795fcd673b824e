"""Split sets (``makedumpfile --split``): read as one dump, written, and reassembled.

Spec: SPEC.md 3.10 "Split files"; upstream makedumpfile ``makedumpfile.c``
(``get_num_dumpable_cyclic_withsplit``, ``calculate_end_pfn_by_splitblock``,
``setup_splitting``, ``writeout_multiple_dumpfiles``, ``store_splitting_info``,
``check_splitting_info``, ``reassemble_kdump_header``, ``reassemble_kdump_pages``),
libkdumpfile ``kdump_open_fdset``, crash ``diskdump.c`` (``dumpfile_is_split``).

Every part is a complete kdump-compressed file with ``split = 1`` and its PFN
range ``[start_pfn_64, end_pfn_64)``; all parts carry the same, global,
bitmaps, and each part's descriptors cover only its own range. A set is valid
when the ranges tile ``[0, max_mapnr)`` without overlap.

* :class:`SplitSetReader` reads a set as one dump.
* :func:`split_ranges` chooses the parts' PFN ranges as makedumpfile does (whole split
  blocks, each part taking blocks until it holds its share of the dumpable pages);
  :func:`write_split` writes the parts with the one kdump writer.
* :func:`reassemble` merges a set into one file as ``makedumpfile --reassemble`` does:
  headers, notes and bitmaps of the first part, descriptors of every part in PFN order
  with their data copied as stored (never recompressed), one shared zero page.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from kdumptool.codecs import CODEC_FLAG_MASK, Codec
from kdumptool.dump import DumpReader, PageBatch, pfn_range_text
from kdumptool.errors import CorruptDumpError, KdumpToolError, UsageError
from kdumptool.formats.kdump import DUMP_DH_COMPRESSED_INCOMPLETE, PAGE_DESC_SIZE, KdumpReader
from kdumptool.metadata import OutputMeta
from kdumptool.pipeline import Selection
from kdumptool.transport.sink import ByteSink

#: makedumpfile's split block when ``--splitblock-size`` is not given (``DEFAULT_SPLITBLOCK_SIZE``)
DEFAULT_SPLITBLOCK_SIZE = 1 << 30


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
            raise CorruptDumpError(f"split set is missing the part for PFNs {pfn_range_text(lo, hi)}",
                                   path=first.info.path, offset=first.info.page_size)
        self.info = dataclasses.replace(first.info, split=None, notes=list(first.info.notes),
                                        details=dict(first.info.details))
        self.info.details["parts"] = [p.info.path for p in parts]
        self.info.incomplete = any(p.info.incomplete for p in parts) or bool(self.gaps)

    def _overlapping(self, start: int, count: int) -> list[KdumpReader]:
        return [p for p in self.parts if p.part[0] < start + count and p.part[1] > start]

    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """RAM bits from the first part (every part holds the whole first bitmap), present bits
        OR-ed from the parts whose PFN range overlaps the window.
        """
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
        """The pages of the window, each from the part whose PFN range holds it."""
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
        """Close every part."""
        for p in self.parts:
            p.close()


# --- writing a set ---------------------------------------------------------------------------


def _block_counts(selection: Selection, per_block: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first block, kept pages of each block from there on)`` for runs of consecutive split
    blocks, in order; a block that is not listed holds no kept page. Only the windows that may
    hold data are read (a dump that claims a huge address space, or a segment of terabytes
    with no data, is counted in time proportional to its data), and a block that two windows
    share is listed once."""
    pending: tuple[int, np.ndarray] | None = None
    for start, count in selection.reader.data_windows():
        idx = np.flatnonzero(selection.masks(start, count)[1])
        if not idx.size:
            continue
        blocks = (idx + start) // per_block
        first = int(blocks[0])
        counts = np.bincount(blocks - first).astype(np.int64)
        if pending is not None and first == pending[0] + len(pending[1]) - 1:
            pending[1][-1] += counts[0]  # the block goes on from the previous window
            first, counts = first + 1, counts[1:]
            if not counts.size:
                continue
        if pending is not None:
            yield pending
        pending = (first, counts)
    if pending is not None:
        yield pending


def split_ranges(selection: Selection, parts: int,
                 splitblock_size: int = DEFAULT_SPLITBLOCK_SIZE) -> list[tuple[int, int]]:
    """The PFN ranges of the ``parts`` files of a split set, chosen as makedumpfile chooses them.

    The PFNs are cut into blocks of ``splitblock_size`` bytes. Each part but the last takes
    whole blocks, in order, until it holds at least its share (the dumpable pages divided by
    ``parts``, rounded down) of the dumpable pages (``calculate_end_pfn_by_splitblock``); the
    last part takes the rest. A set with fewer dumpable pages than parts, or blocks too large
    to share out, has empty parts, as makedumpfile's has.

    :param selection: the pages the set will hold (two metadata passes; no page is read)
    :param splitblock_size: bytes per block, a multiple of the page size (``--splitblock-size``)
    :raises UsageError: fewer than 2 parts, or a block size that is not a multiple of the page size
    """
    ps = selection.reader.page_size
    max_pfn = selection.reader.max_pfn
    if parts < 2:
        raise UsageError("a split set needs at least 2 output files")
    if splitblock_size <= 0 or splitblock_size % ps:
        raise UsageError(f"the split block size ({splitblock_size} bytes) must be a positive "
                         f"multiple of the page size ({ps} bytes)")
    per_block = splitblock_size // ps
    # (makedumpfile's table leaves a short last block at 0: it records a block's count once the
    # block is full. That cannot move a boundary: taking the last block and running out of blocks
    # both end at max_mapnr. Its pages do count in the total.)
    total = sum(int(c.sum()) for _, c in _block_counts(selection, per_block))
    share = total // parts
    bounds: list[int] = []
    if share == 0:  # the block loop never runs: every part but the last ends where it starts
        bounds = [0] * (parts - 1)
    else:
        need = share  # a block that completes a share holds pages: unlisted blocks never do
        for block, counts in _block_counts(selection, per_block):
            pos = 0
            while len(bounds) < parts - 1 and pos < len(counts):
                cum = np.cumsum(counts[pos:])
                j = int(np.searchsorted(cum, need))  # the first block that completes the share
                if j == len(cum):
                    need -= int(cum[-1])
                    break
                pos += j + 1
                bounds.append(min((block + pos) * per_block, max_pfn))
                need = share
            if len(bounds) == parts - 1:
                break
        bounds += [max_pfn] * (parts - 1 - len(bounds))  # the blocks ran out
    edges = [0, *bounds, max_pfn]
    return list(zip(edges[:-1], edges[1:], strict=True))


def write_split(selection: Selection, sinks: list[ByteSink], meta: OutputMeta, codec: Codec | None,
                ranges: list[tuple[int, int]], *, threads: int | None = None) -> list[dict[str, int]]:
    """Write one part of a split set into each sink (``ranges`` from :func:`split_ranges`).

    :return: the writer's counts for each part
    """
    from kdumptool.formats.kdump_writer import write_kdump

    # the ERASEINFO text goes into the first part only: reassembling concatenates the parts'
    return [write_kdump(selection, sink, meta if i == 0 else dataclasses.replace(meta, eraseinfo=b""),
                        codec, threads=threads, part=span)
            for i, (sink, span) in enumerate(zip(sinks, ranges, strict=True))]


# --- reassembling a set ----------------------------------------------------------------------

_SPLIT_FIELDS = ("split", "start_pfn", "end_pfn", "start_pfn_64", "end_pfn_64",
                 "offset_eraseinfo", "size_eraseinfo")
_COPY_CHUNK = 1 << 20  # bytes per step when copying or comparing metadata


def _sub_bytes(part: KdumpReader, **override: int) -> bytes:
    """The part's sub-header, built again with some fields replaced."""
    assert part.sub is not None
    sub = dict(part.sub)
    sub.pop("_io", None)
    sub.update(override)
    return bytes(part.structs.KdumpSubHeader.build(sub))


def _first_difference(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.frombuffer(a[:n], np.uint8) != np.frombuffer(b[:n], np.uint8))
    return int(diff[0]) if diff.size else n


def check_split_set(parts: list[KdumpReader]) -> list[KdumpReader]:
    """The parts sorted by PFN range, after checking that they are one whole set.

    Like ``store_splitting_info`` / ``check_splitting_info``: every part is a split
    kdump-compressed file with the same main header; also the same sub-header (but for the
    range and ERASEINFO), notes and bitmaps; the ranges tile ``[0, max_mapnr)``.

    :raises CorruptDumpError: naming the file that does not fit, and where
    """
    for p in parts:
        if not isinstance(p, KdumpReader) or p.is_diskdump or p.info.split is None:
            raise CorruptDumpError("not a part of a split kdump set (split flag not set)",
                                   path=p.info.path, offset=p.info.page_size)
    first = parts[0]
    hsize = first.structs.DiskDumpHeader.sizeof()
    head = first.source.pread(0, hsize)
    sub0 = _sub_bytes(first, **dict.fromkeys(_SPLIT_FIELDS, 0))
    notes0 = first.source.pread(first.sub.offset_note, first.sub.size_note) if first.sub else b""
    for p in parts[1:]:
        theirs = p.source.pread(0, hsize)
        if theirs != head:
            off = _first_difference(head, theirs)
            raise CorruptDumpError(f"main header differs from that of {first.info.path}: not a part of "
                                   "the same dump", path=p.info.path, offset=off,
                                   expected=head[off:off + 8].hex(), got=theirs[off:off + 8].hex())
        sub = _sub_bytes(p, **dict.fromkeys(_SPLIT_FIELDS, 0))
        notes = p.source.pread(p.sub.offset_note, p.sub.size_note) if p.sub else b""
        if p.structs != first.structs or sub != sub0 or notes != notes0:
            off = (p.block_size + _first_difference(sub0, sub) if sub != sub0 or p.sub is None
                   else p.sub.offset_note + _first_difference(notes0, notes))
            raise CorruptDumpError(f"sub-header or notes differ from those of {first.info.path}: not a "
                                   "part of the same dump", path=p.info.path, offset=off)
        size = first.header.bitmap_blocks * first.block_size
        for pos in range(0, size, _COPY_CHUNK):
            n = min(_COPY_CHUNK, size - pos)
            a = first.source.pread(first.bitmap_offset + pos, n)
            b = p.source.pread(p.bitmap_offset + pos, n)
            if a != b:
                raise CorruptDumpError(f"bitmaps differ from those of {first.info.path}: not a part of "
                                       "the same dump", path=p.info.path,
                                       offset=p.bitmap_offset + pos + _first_difference(a, b))
    ordered = sorted(parts, key=lambda p: p.part)
    pos = 0
    max_pfn = first.info.max_pfn
    for p in ordered:
        lo, hi = p.part
        if lo != pos:
            what = "overlaps the part before it" if lo < pos else \
                f"leaves PFNs {pfn_range_text(pos, lo)} without a part (a part is missing)"
            raise CorruptDumpError(f"split part's PFN range {pfn_range_text(lo, hi)} {what}",
                                   path=p.info.path, offset=p.block_size, expected=f"start_pfn {pos:#x}",
                                   got=f"{lo:#x}")
        pos = hi
    if pos != max_pfn:
        last = ordered[-1]
        raise CorruptDumpError(f"PFNs {pfn_range_text(pos, max_pfn)} have no part (a part is missing)",
                               path=last.info.path, offset=last.block_size,
                               expected=f"end_pfn {max_pfn:#x}", got=f"{pos:#x}")
    return ordered


def reassemble(parts: list[KdumpReader], sink: ByteSink) -> dict[str, int]:
    """Merge the parts of a split set into one kdump-compressed file, as
    ``makedumpfile --reassemble`` does: the result is the file an unsplit run would have
    written. Streaming: memory does not grow with the dump.

    :return: counts: ``pages`` (descriptors), ``zero`` (pages sharing the zero page),
        ``lost`` (all-zero descriptors, kept so; the output is then marked incomplete),
        ``incomplete`` (1 if the output is marked so)
    :raises CorruptDumpError: the parts are not one set (:func:`check_split_set`), or a
        descriptor of a part is invalid
    """
    merge = _Reassembly(check_split_set(parts), sink)
    merge.copy_bitmaps()
    for p in merge.parts:
        merge.copy_part(p)
    return merge.finish()


class _Reassembly:
    """The output's geometry (the first part's, with every part's descriptors) and where
    the next page data goes."""

    def __init__(self, parts: list[KdumpReader], sink: ByteSink) -> None:
        self.parts, self.sink = parts, sink
        self.first = first = parts[0]
        self.bs = first.block_size
        assert first.sub is not None
        self.desc_off = first.desc_offset
        self.data_start = self.desc_off + sum(p.num_descs for p in parts) * PAGE_DESC_SIZE
        self.share_zero = bool(first.sub.dump_level & 1)
        self.zero_desc = np.zeros(1, dtype=first.structs.page_desc_dtype)
        self.out_pos = self.data_start
        self.stats = {"pages": sum(p.num_descs for p in parts), "zero": 0, "lost": 0}
        self.checked_zero: list[KdumpReader] = []  # parts whose stored zero page is all zero
        self.rank = 0  # descriptors written

    def copy_bitmaps(self) -> None:
        """The first part's bitmaps, as they are; then the shared zero page, if the level has
        one (at the start of the data in every part too)."""
        first, size = self.first, self.first.header.bitmap_blocks * self.bs
        for pos in range(0, size, _COPY_CHUNK):
            n = min(_COPY_CHUNK, size - pos)
            self.sink.pwrite(first.bitmap_offset + pos, first.source.pread(first.bitmap_offset + pos, n))
        if self.share_zero:
            self.zero_desc["offset"], self.zero_desc["size"] = self.data_start, self.bs
            self.sink.pwrite(self.out_pos, bytes(self.bs))
            self.out_pos += self.bs

    def copy_part(self, p: KdumpReader) -> None:
        """The descriptors and page data of one part, at most 16 MiB of data per step."""
        step = max(1, (16 << 20) // self.bs)
        for first_idx in range(0, p.num_descs, step):
            n = min(step, p.num_descs - first_idx)
            descs, offs, sizes, flags = self._descriptors(p, first_idx, n)
            lost = offs == 0
            zero = (offs == self.data_start) & self.share_zero & (flags == 0) & (sizes == self.bs)
            copy = ~lost & ~zero
            self._check(p, first_idx, offs, sizes, flags, copy)
            if zero.any() and p not in self.checked_zero:  # they become the output's zero page
                self._check_zero_page(p)
            descs[zero] = self.zero_desc
            self.stats["zero"] += int(zero.sum())
            self.stats["lost"] += int(lost.sum())
            idx = np.flatnonzero(copy)
            if idx.size:
                descs["offset"][idx] = self._copy_data(p, offs[idx], sizes[idx])
            self.sink.pwrite(self.desc_off + self.rank * PAGE_DESC_SIZE, descs.tobytes())
            self.rank += n

    def _descriptors(self, p: KdumpReader, first_idx: int,
                     n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``n`` descriptors of part ``p`` from ``first_idx``, and their offsets, sizes, flags."""
        table_pos = p.desc_offset + first_idx * PAGE_DESC_SIZE
        raw = p.source.pread(table_pos, n * PAGE_DESC_SIZE)
        if len(raw) != n * PAGE_DESC_SIZE:  # (the reader checked the table is in the file)
            raise CorruptDumpError("file ends inside the page descriptor table", path=p.info.path,
                                   offset=table_pos + len(raw))
        descs = np.frombuffer(raw, dtype=self.first.structs.page_desc_dtype).copy()
        return (descs, descs["offset"].astype(np.int64), descs["size"].astype(np.int64),
                descs["flags"].astype(np.int64))

    def _check(self, p: KdumpReader, first_idx: int, offs: np.ndarray, sizes: np.ndarray,
               flags: np.ndarray, copy: np.ndarray) -> None:
        """The reader's rules (kdump.py read_batch), so that nothing invalid is copied."""
        bs, data_start, fsize = self.bs, self.data_start, p.source.size
        codec_bits = flags & CODEC_FLAG_MASK
        bad = copy & ((sizes <= 0) | (sizes > bs) | ((codec_bits == 0) & (sizes != bs))
                      | ((flags & ~CODEC_FLAG_MASK) != 0) | ((codec_bits & (codec_bits - 1)) != 0)
                      | (offs < data_start) | (offs + sizes > fsize))
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise CorruptDumpError(
                f"page_desc[{first_idx + j}] is invalid: offset {int(offs[j]):#x}, size "
                f"{int(sizes[j]):#x}, flags {int(flags[j]):#x}", path=p.info.path,
                offset=p.desc_offset + (first_idx + j) * PAGE_DESC_SIZE,
                expected=f"data in [{data_start:#x}, {fsize:#x}), 1..{bs} bytes", got="")

    def _check_zero_page(self, p: KdumpReader) -> None:
        stored = p.source.pread(self.data_start, self.bs)
        if stored != bytes(self.bs):
            raise CorruptDumpError(
                "the shared zero page is not a page of zeros" if len(stored) == self.bs else
                "the file ends inside the shared zero page", path=p.info.path,
                offset=self.data_start, expected=f"{self.bs} zero bytes",
                got=f"{len(stored)} bytes, {len(stored) - stored.count(0)} not zero")
        self.checked_zero.append(p)

    def _copy_data(self, p: KdumpReader, o: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Copy page data of part ``p`` (offsets ``o``, sizes ``z``) to the output's next bytes,
        one read per run of pages whose data follow each other; their new offsets."""
        breaks = np.flatnonzero(o[1:] != o[:-1] + z[:-1]) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [o.size]))
        chunks = []
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            span = int(o[b - 1] + z[b - 1] - o[a])
            data = p.source.pread(int(o[a]), span)
            if len(data) != span:
                raise CorruptDumpError("short read of page data", path=p.info.path,
                                       offset=int(o[a]) + len(data))
            chunks.append(data)
        new_offsets = self.out_pos + np.cumsum(z) - z
        blob = b"".join(chunks)
        self.sink.pwrite(self.out_pos, blob)
        self.out_pos += len(blob)
        return new_offsets

    def finish(self) -> dict[str, int]:
        """ERASEINFO of every part after the data; the first part's headers, unsplit, with its
        notes where they were; the counts."""
        first, bs, stats = self.first, self.bs, self.stats
        s, hdr, sub = first.structs, first.header, first.sub
        assert sub is not None
        erase = b"".join(p.eraseinfo or b"" for p in self.parts)
        fields = dict.fromkeys(_SPLIT_FIELDS[:5], 0)
        if erase:
            self.sink.pwrite(self.out_pos, erase)
            fields.update(offset_eraseinfo=self.out_pos, size_eraseinfo=len(erase))
        status = hdr.status | (DUMP_DH_COMPRESSED_INCOMPLETE if stats["lost"] else 0)
        head = bytearray(first.source.pread(0, s.DiskDumpHeader.sizeof()))
        if status != hdr.status:
            head = bytearray(s.DiskDumpHeader.build({**{k: v for k, v in hdr.items() if k != "_io"},
                                                     "status": status}))
        self.sink.pwrite(0, bytes(head).ljust(bs, b"\0"))
        area = bytearray(bs * hdr.sub_hdr_size)
        sub_raw = _sub_bytes(first, **fields)
        area[:len(sub_raw)] = sub_raw
        for off, n in ((sub.offset_note, sub.size_note), (sub.offset_vmcoreinfo, sub.size_vmcoreinfo)):
            if not n:
                continue
            if not bs <= off <= off + n <= bs * (1 + hdr.sub_hdr_size):
                raise CorruptDumpError(
                    "notes lie outside the sub-header blocks", path=first.info.path, offset=bs,
                    expected=f"within [{bs:#x}, {bs * (1 + hdr.sub_hdr_size):#x})",
                    got=f"{n:#x} bytes at {off:#x}")
            area[off - bs:off - bs + n] = first.source.pread(off, n)
        self.sink.pwrite(bs, bytes(area))
        stats["incomplete"] = int(bool(status & DUMP_DH_COMPRESSED_INCOMPLETE))
        return stats
