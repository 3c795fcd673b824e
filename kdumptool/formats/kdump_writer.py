"""Writer of kdump-compressed files, header version 6, as makedumpfile 1.7 writes them.

Spec: SPEC.md "kdump-compressed"; upstream makedumpfile ``makedumpfile.c``
(``write_kdump_header``, ``write_kdump_bitmap*``,
``write_kdump_pages_and_bitmap_cyclic``) and ``diskdump_mod.h``.

Layout: header (block 0); sub-header at block 1 with every note of the source
right after it (``offset_note = block_size + sizeof(kdump_sub_header)``,
``offset_vmcoreinfo`` pointing at the VMCOREINFO descriptor inside those notes);
1st bitmap (RAM) and 2nd bitmap (pages in the file), each rounded up to whole
blocks; the ``page_desc`` table; the page data. Zero pages share one raw zero
page written first (as makedumpfile does at dump level 1 and QEMU always); a page
is stored compressed only when that is smaller than a page.

The writer makes two passes over the source: the first writes the bitmaps and
counts the pages (metadata only), which fixes where the data starts; the second
writes descriptors and data. Pages the source declares but cannot deliver
(lost in an incomplete or truncated dump, tolerant mode) get an all-zero
descriptor and the output is marked incomplete (``DUMP_DH_COMPRESSED_INCOMPLETE``).

With ``part=(lo, hi)`` the file is one part of a split set (``makedumpfile --split``,
SPEC.md 3.10): the same headers, notes and global bitmaps as the whole file, ``split = 1``
and the PFN range in the sub-header, the descriptors of the part's own pages only, and the
page data placed after room for every descriptor of the whole dump, as
``write_kdump_pages_and_bitmap_cyclic`` / ``write_kdump_pages_cyclic`` place it.

Under a size limit (``-L``, a :class:`~kdumptool.transport.sink.LimitedSink`), the
headers, bitmaps and the whole descriptor table must fit (else
:class:`~kdumptool.transport.sink.LimitReached`); pages are then stored in PFN order
while they fit, and every later page keeps an all-zero descriptor (lost) in a file
marked incomplete, as makedumpfile leaves a dump cut by ``-L``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from kdumptool.codecs import Codec
from kdumptool.dump import UTS_FIELDS, UTS_LEN, Note, PageBatch
from kdumptool.formats.kdump import (
    DUMP_DH_COMPRESSED_INCOMPLETE,
    KDUMP_HEADER_VERSION,
    KDUMP_SIGNATURE,
    MACHINES_32_PACKED,
    PAGE_DESC_SIZE,
    KdumpReader,
    KdumpStructs,
    kdump_structs,
)
from kdumptool.formats.notes import build_notes
from kdumptool.metadata import OutputMeta
from kdumptool.parallel import ChunkRunner, chunked_windows, default_workers
from kdumptool.pipeline import Selection, zero_rows
from kdumptool.transport.sink import ByteSink, LimitedSink


def notes_for_output(meta: OutputMeta) -> list[Note]:
    """The source's notes, with VMCOREINFO added (or replaced, with ``-i``) from ``meta``."""
    notes = list(meta.notes)
    if meta.vmcoreinfo is None:
        return notes
    for i, note in enumerate(notes):
        if note.name == b"VMCOREINFO":
            if note.desc.split(b"\0", 1)[0] != meta.vmcoreinfo.raw:  # replaced with -i
                notes[i] = Note(b"VMCOREINFO", note.type, meta.vmcoreinfo.raw)
            return notes
    notes.append(Note(b"VMCOREINFO", 0, meta.vmcoreinfo.raw))
    return notes


def _vmcoreinfo_desc_span(notes: list[Note], blob_offset: int) -> tuple[int, int]:
    """File offset and size of the VMCOREINFO descriptor inside the serialised notes."""
    pos = blob_offset
    for note in notes:
        name_len = (len(note.name) + 1 + 3) & ~3
        desc_pos = pos + 12 + name_len
        if note.name == b"VMCOREINFO":
            return desc_pos, len(note.desc)
        pos = desc_pos + ((len(note.desc) + 3) & ~3)
    return 0, 0


def _fit_prefix(limited: LimitedSink, n: int, stored: np.ndarray, sizes: np.ndarray, data_pos: int,
                desc_pos: int) -> int:
    """How many of a window's ``n`` kept pages fit: their data (``sizes`` of the pages at
    slots ``stored``, at ``data_pos``) and their descriptors (at ``desc_pos``)."""
    per_slot = np.zeros(n + 1, dtype=np.int64)
    per_slot[stored + 1] = sizes
    data_before = np.cumsum(per_slot)  # data bytes of the first j pages, j = 0..n

    def cost(j: int) -> int:
        return (limited.cost(data_pos, int(data_before[j]))
                + limited.cost(desc_pos, j * PAGE_DESC_SIZE))

    return limited.fit(n, cost)


@dataclass
class _Encoding:
    """What every window of a write needs to encode its pages (forked workers inherit it)."""

    selection: Selection
    codec: Codec | None
    page_size: int
    dtype: np.dtype
    share_zero: bool  # level 1: zero pages point at the one stored zero page
    zero_desc: np.ndarray  # that page's descriptor (absolute offset)
    zero_chunk: bytes  # a zero page as stored when each is stored (the codec's form, or raw)
    part: tuple[int, int] | None


@dataclass
class _Encoded:
    """One window's kept pages, encoded: descriptors whose offsets count from the window's
    first stored byte, and the bytes to store."""

    n: int  # kept pages (descriptors)
    have: np.ndarray  # bool per kept page: the source has its data
    slots: np.ndarray  # indexes (among the kept) of the pages with data
    zero: np.ndarray  # bool per slot: points at the shared zero page
    stored: np.ndarray  # indexes (among the kept) of the pages stored in ``chunks``
    chunks: list[bytes]
    sizes: np.ndarray
    descs: np.ndarray


def _encode_window(enc: _Encoding, batch: PageBatch, keep: np.ndarray) -> _Encoded:
    """Zero pages found at once; every other kept page compressed, stored compressed only
    when that is smaller than a page."""
    bs, codec = enc.page_size, enc.codec
    idx = np.flatnonzero(keep)
    have = batch.present[idx]
    rows = np.cumsum(batch.present)[idx[have]] - 1  # rows of batch.data (no copy of the pages)
    data = batch.data
    zero = zero_rows(data)[rows]  # never compressed: shared, or stored as one known chunk
    kept = batch.stored  # rows already stored with this codec: their streams are copied
    todo_rows = rows[~zero].tolist()
    todo = [data[r].tobytes() for r in todo_rows if r not in kept]
    chunks = todo
    if codec is not None:
        chunks = [c if len(c) < bs else r
                  for r, c in zip(todo, codec.compress_many(todo, 1), strict=True)]
    if kept:
        fresh = iter(chunks)
        chunks = [kept[r] if r in kept else next(fresh) for r in todo_rows]
    slots = np.flatnonzero(have)
    descs = np.zeros(idx.size, dtype=enc.dtype)  # all-zero descriptor = lost page
    if enc.share_zero:
        descs[slots[zero]] = enc.zero_desc
        stored = slots[~zero]
    else:  # each zero page stored, as makedumpfile does, from the one chunk computed once
        if zero.any():
            nonzero = iter(chunks)
            chunks = [enc.zero_chunk if z else next(nonzero) for z in zero.tolist()]
        zero = np.zeros(len(slots), dtype=bool)
        stored = slots
    sizes = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
    if chunks:
        descs["offset"][stored] = np.cumsum(sizes) - sizes
        descs["size"][stored] = sizes
        descs["flags"][stored] = np.where(sizes < bs, codec.flag if codec else 0, 0)
    return _Encoded(idx.size, have, slots, zero, stored, chunks, sizes, descs)


class _Count:
    """Stands in for the progress line in a chunk: counts what the chunk advanced."""

    def __init__(self) -> None:
        self.done = 0

    def advance(self, n: int) -> None:
        self.done += n


@dataclass
class _ChunkResult:
    descs: np.ndarray  # offsets of the stored pages count from the chunk's first byte
    stored: np.ndarray  # bool per descriptor: its page is stored in the chunk
    counts: dict[str, int]
    advanced: int  # pages for the progress line


def _encode_chunk(enc: _Encoding, windows: list[tuple[int, int]],
                  write: Callable[[bytes], None]) -> _ChunkResult:
    """Encode the kept pages of ``windows``; their bytes go to ``write`` in PFN order."""
    selection = enc.selection
    saved, selection.progress = selection.progress, _Count()
    descs: list[np.ndarray] = []
    stored: list[np.ndarray] = []
    counts = {"pages": 0, "zero": 0, "compressed": 0, "lost": 0}
    pos = 0
    try:
        for batch, keep in selection.batches(enc.part, windows):
            e = _encode_window(enc, batch, keep)
            mask = np.zeros(e.n, dtype=bool)
            if e.chunks:
                e.descs["offset"][e.stored] += pos
                blob = b"".join(e.chunks)
                write(blob)
                pos += len(blob)
                mask[e.stored] = True
            descs.append(e.descs)
            stored.append(mask)
            counts["pages"] += int(e.have.sum())
            counts["lost"] += int((~e.have).sum())
            counts["zero"] += int(e.zero.sum())
            counts["compressed"] += int((e.sizes < enc.page_size).sum())
        advanced = selection.progress.done  # type: ignore[union-attr]
    finally:
        selection.progress = saved
    if not descs:
        return _ChunkResult(np.zeros(0, enc.dtype), np.zeros(0, bool), counts, advanced)
    # (concatenate makes the byte order native: the file's order is put back)
    return _ChunkResult(np.concatenate(descs).astype(enc.dtype, copy=False), np.concatenate(stored),
                        counts, advanced)


def _write_pages(enc: _Encoding, sink: ByteSink, desc_off: int, data_pos: int,
                 workers: int | None, kept: np.ndarray) -> tuple[dict[str, int], int, int]:
    """Pass 2 in chunks of windows on ``workers`` processes (:mod:`kdumptool.parallel`):
    each chunk's data placed after the previous one's, its descriptors fixed up here; a chunk
    holds a bounded number of kept pages (``kept``: per block of ``window_pages`` PFNs, counted
    by pass 1). Returns the counts, the number of descriptors and the end of the page data."""
    reader = enc.selection.reader
    wp = reader.window_pages

    def weight(start: int, count: int) -> int:
        return int(kept[start // wp:-(-(start + count) // wp)].sum())

    chunks = chunked_windows(reader.data_windows(), wp, enc.part, weight=weight)
    runner = ChunkRunner(partial(_encode_chunk, enc), chunks, workers or default_workers(), sink,
                         data_pos, getattr(sink, "tmpdir", None))
    stats = {"pages": 0, "zero": 0, "compressed": 0, "lost": 0, "cut": 0}
    rank = 0
    progress = enc.selection.progress
    end = data_pos
    for result, offset, length in runner.results():
        end = offset + length
        descs = result.descs
        descs["offset"][result.stored] += offset
        sink.pwrite(desc_off + rank * PAGE_DESC_SIZE, descs.tobytes())
        rank += len(descs)
        for key, value in result.counts.items():
            stats[key] += value
        if progress is not None:
            progress.advance(result.advanced)
    return stats, rank, end


def _write_pages_limited(enc: _Encoding, limited: LimitedSink, desc_off: int, data_pos: int,
                         own: int) -> tuple[dict[str, int], int, int]:
    """Pass 2 under a size limit, in one process: pages stored in PFN order while they fit.
    Returns the counts, the number of descriptors and the end of the page data."""
    stats = {"pages": 0, "zero": 0, "compressed": 0, "lost": 0, "cut": 0}
    rank = 0
    for batch, keep in enc.selection.batches(enc.part):
        e = _encode_window(enc, batch, keep)
        n, chunks, stored, sizes, descs, have = e.n, e.chunks, e.stored, e.sizes, e.descs, e.have
        fit = _fit_prefix(limited, n, stored, sizes, data_pos, desc_off + rank * PAGE_DESC_SIZE)
        if fit < n:  # the limit is reached: store the pages before ``fit`` only
            stats["cut"] = 1
            keep_chunk = stored < fit
            chunks = [c for c, k in zip(chunks, keep_chunk.tolist(), strict=True) if k]
            stored, sizes = stored[keep_chunk], sizes[keep_chunk]
            descs[fit:] = 0
            stats["lost"] += n - fit + int((~have[:fit]).sum())
            stats["zero"] += int((e.slots[e.zero] < fit).sum())
            stats["pages"] += int(have[:fit].sum())
            n = fit
        else:
            stats["zero"] += int(e.zero.sum())
            stats["lost"] += int((~have).sum())
            stats["pages"] += int(have.sum())
        if chunks:
            descs["offset"][stored] += data_pos
            stats["compressed"] += int((sizes < enc.page_size).sum())
            limited.pwrite(data_pos, b"".join(chunks))
            data_pos += int(sizes.sum())
        limited.pwrite(desc_off + rank * PAGE_DESC_SIZE, descs[:n].tobytes())
        rank += e.n
        if stats["cut"]:
            stats["lost"] += own - rank  # the pages after this window: all-zero descriptors
            break
    return stats, rank, data_pos


@dataclass(frozen=True)
class _Geometry:
    """Where everything of one output file lies: block size, headers, bitmaps, descriptors."""

    s: KdumpStructs
    bs: int  # block size = page size
    max_pfn: int
    notes: list[Note]
    note_blob: bytes
    sub_size: int  # bytes of the sub-header (the notes follow it)
    sub_hdr_size: int  # blocks of the sub-header and notes
    bitmap_len: int  # bytes of each bitmap, whole blocks
    bm1_off: int
    bm2_off: int
    desc_off: int
    lo: int  # PFN range of this file (a split part) or the whole dump
    hi: int
    split: bool

    @classmethod
    def of(cls, meta: OutputMeta, part: tuple[int, int] | None) -> _Geometry:
        """The geometry of the file written from ``meta`` (``part``: one part of a split set)."""
        layout = "64" if meta.word_size == 8 else ("32pack" if meta.machine in MACHINES_32_PACKED
                                                   else "32pad")
        s = kdump_structs(layout, meta.endian)
        bs, max_pfn = meta.page_size, meta.max_pfn
        notes = notes_for_output(meta)
        note_blob = build_notes(notes, meta.endian)
        sub_size = s.KdumpSubHeader.sizeof()
        sub_hdr_size = -(-(sub_size + len(note_blob)) // bs)
        bitmap_len = -(-max(-(-max_pfn // 8), 1) // bs) * bs
        bm1_off = bs * (1 + sub_hdr_size)
        lo, hi = part if part is not None else (0, max_pfn)
        return cls(s, bs, max_pfn, notes, note_blob, sub_size, sub_hdr_size, bitmap_len, bm1_off,
                   bm1_off + bitmap_len, bm1_off + 2 * bitmap_len, lo, hi, part is not None)

    @property
    def bitmap_blocks(self) -> int:
        """Blocks of both bitmaps (the header's ``bitmap_blocks``)."""
        return 2 * self.bitmap_len // self.bs


def _write_bitmaps(geo: _Geometry, selection: Selection, sink: ByteSink) -> tuple[int, int, np.ndarray]:
    """Pass 1: the bitmaps (metadata only). Returns the number of descriptors of the whole
    dump and of this file (they differ in a split part), and the kept pages per block of the
    reader's ``window_pages`` PFNs (what pass 2 cuts its chunks by)."""
    ndesc = own = 0
    block = selection.reader.window_pages
    per_block = np.zeros(-(-geo.max_pfn // block) + 1, dtype=np.int64)
    for start, count in selection.windows():
        ram, keep = selection.masks(start, count)
        kept = int(np.count_nonzero(keep))
        if kept:  # sums over the window's pieces of blocks
            cuts = np.arange((start // block + 1) * block - start, count, block)
            sums = np.add.reduceat(keep, np.concatenate(([0], cuts)), dtype=np.int64)
            per_block[start // block:start // block + len(sums)] += sums
        if kept or start + count >= geo.max_pfn:  # all-zero bits stay holes (read as zeros)
            sink.pwrite(geo.bm2_off + start // 8, np.packbits(keep, bitorder="little").tobytes())
        sink.pwrite(geo.bm1_off + start // 8, np.packbits(ram, bitorder="little").tobytes())
        ndesc += kept
        own += int(np.count_nonzero(_in_part(keep, start, geo.lo, geo.hi))) if kept else 0
    used = -(-geo.max_pfn // 8)  # the rest of each bitmap's blocks is zero, written explicitly
    for off in (geo.bm1_off, geo.bm2_off):  # so that a file with no page still reaches its table
        sink.pwrite(off + used, bytes(geo.bitmap_len - used))
    return ndesc, own, per_block


def _write_data(geo: _Geometry, selection: Selection, sink: ByteSink, meta: OutputMeta,
                codec: Codec | None, counts: tuple[int, int, np.ndarray], part: tuple[int, int] | None,
                threads: int | None) -> tuple[dict[str, int], int]:
    """Pass 2: descriptors and page data (``counts``: pass 1's, :func:`_write_bitmaps`).
    Returns the counts and the end of the page data."""
    ndesc, own, per_block = counts
    bs, dtype, limited = geo.bs, geo.s.page_desc_dtype, _limited(sink)
    data_pos = geo.desc_off + ndesc * PAGE_DESC_SIZE
    zero_desc = np.zeros(1, dtype=dtype)
    share_zero = bool(meta.dump_level & 1)  # as makedumpfile: one stored zero page at level 1
    if limited is not None and own:  # the table's extent: holes read as lost pages
        sink.pwrite(geo.desc_off + own * PAGE_DESC_SIZE - PAGE_DESC_SIZE, bytes(PAGE_DESC_SIZE))
    if ndesc and share_zero:
        zero_desc["offset"], zero_desc["size"] = data_pos, bs
        sink.pwrite(data_pos, bytes(bs))
        data_pos += bs
    zero_chunk = bytes(bs)
    if codec is not None and len(packed_zero := codec.compress(zero_chunk)) < bs:
        zero_chunk = packed_zero
    enc = _Encoding(selection, codec, bs, dtype, share_zero, zero_desc, zero_chunk, part)
    # pages the source stores with this very codec are copied as they are (not decoded, not
    # compressed again): refiltering -c to -c re-encodes nothing
    selection.keep_stored = codec.flag if codec is not None and isinstance(selection.reader,
                                                                             KdumpReader) else 0
    try:
        if limited is not None:
            stats, rank, data_end = _write_pages_limited(enc, limited, geo.desc_off, data_pos, own)
        else:
            stats, rank, data_end = _write_pages(enc, sink, geo.desc_off, data_pos, threads, per_block)
    finally:
        selection.keep_stored = 0
    assert rank == own or stats["cut"], "the selection changed between the two passes"
    return stats, data_end


def _write_headers(geo: _Geometry, sink: ByteSink, meta: OutputMeta, status: int,
                   erase_off: int) -> None:
    """The last pass: the disk dump header (block 0), the sub-header and the notes (block 1)."""
    s, bs = geo.s, geo.bs
    uts = {f: getattr(meta.utsname, f).encode("latin-1")[:UTS_LEN - 1].ljust(UTS_LEN, b"\0")
           for f in UTS_FIELDS}
    header = s.DiskDumpHeader.build({
        "signature": KDUMP_SIGNATURE, "header_version": KDUMP_HEADER_VERSION, "utsname": uts,
        "pad": bytes(s.DiskDumpHeader.subcons[3].sizeof()),
        "timestamp": {"tv_sec": meta.timestamp[0], "tv_usec": meta.timestamp[1]},
        "status": status, "block_size": bs, "sub_hdr_size": geo.sub_hdr_size,
        "bitmap_blocks": geo.bitmap_blocks, "max_mapnr": min(geo.max_pfn, 0xFFFFFFFF),
        "total_ram_blocks": 0, "device_blocks": 0, "written_blocks": 0, "current_cpu": 0,
        "nr_cpus": meta.nr_cpus,
    })
    note_off = bs + geo.sub_size
    vmci_off, vmci_size = _vmcoreinfo_desc_span(geo.notes, note_off)
    mask = (1 << (8 * meta.word_size)) - 1
    split, lo, hi = geo.split, geo.lo, geo.hi  # start_pfn/end_pfn: cut to 32 bits (makedumpfile's MIN)
    sub = s.KdumpSubHeader.build({
        "phys_base": meta.phys_base & mask, "dump_level": meta.dump_level, "split": int(split),
        "start_pfn": min(lo, 0xFFFFFFFF) if split else 0, "end_pfn": min(hi, 0xFFFFFFFF) if split else 0,
        "offset_vmcoreinfo": vmci_off, "size_vmcoreinfo": vmci_size,
        "offset_note": note_off if geo.note_blob else 0, "size_note": len(geo.note_blob),
        "offset_eraseinfo": erase_off, "size_eraseinfo": len(meta.eraseinfo) if erase_off else 0,
        "start_pfn_64": lo if split else 0, "end_pfn_64": hi if split else 0,
        "max_mapnr_64": geo.max_pfn,
    })
    sink.pwrite(0, header.ljust(bs, b"\0"))
    sink.pwrite(bs, (sub + geo.note_blob).ljust(geo.sub_hdr_size * bs, b"\0"))


def _limited(sink: ByteSink) -> LimitedSink | None:
    return sink if isinstance(sink, LimitedSink) else None


def write_kdump(selection: Selection, sink: ByteSink, meta: OutputMeta, codec: Codec | None,
                *, threads: int | None = None, part: tuple[int, int] | None = None) -> dict[str, int]:
    """Write the selected pages of a dump as a kdump-compressed file.

    :param part: write only the part of a split set for PFNs ``[lo, hi)`` (see the module doc)
    :return: counts: ``pages`` written, ``zero`` pages, ``compressed`` pages, ``lost`` pages,
        ``cut``: 1 when a size limit stopped the writing of pages; ``descriptors``: in this file
    :raises LimitReached: the size limit is too small for the metadata
    """
    geo = _Geometry.of(meta, part)
    limited = _limited(sink)
    if limited is not None:  # the headers are written last
        limited.reserve([(0, geo.bs), (geo.bs, geo.sub_hdr_size * geo.bs)])
    counts = _write_bitmaps(geo, selection, sink)
    stats, data_end = _write_data(geo, selection, sink, meta, codec, counts, part, threads)
    erase_off = _write_eraseinfo(sink, meta.eraseinfo, data_end, bool(stats["cut"]))
    if limited is not None:
        limited.release()
    incomplete = meta.incomplete or stats["lost"] > 0 or stats["cut"] > 0
    status = (codec.flag if codec is not None else 0) | (DUMP_DH_COMPRESSED_INCOMPLETE if incomplete
                                                          else 0)
    _write_headers(geo, sink, meta, status, erase_off)
    stats["incomplete"] = int(incomplete)
    stats["descriptors"] = counts[1]
    return stats


def _write_eraseinfo(sink: ByteSink, text: bytes, pos: int, cut: bool) -> int:
    """Write the ERASEINFO text at ``pos`` (after the page data, as write_kdump_eraseinfo
    places it) and return ``pos``; 0 (nothing written) without text, in a file cut by the
    size limit, or when the text does not fit under it."""
    limited = _limited(sink)
    if not text or cut or (limited is not None and not limited.fits(pos, len(text))):
        return 0
    sink.pwrite(pos, text)
    return pos


def _in_part(keep: np.ndarray, start: int, lo: int, hi: int) -> np.ndarray:
    """``keep`` of the window at ``start`` without the PFNs outside ``[lo, hi)``."""
    if lo <= start and start + len(keep) <= hi:
        return keep
    out = keep.copy()
    out[:max(0, min(lo - start, len(out)))] = False
    out[max(0, hi - start):] = False
    return out
