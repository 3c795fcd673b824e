"""Writer of ELF core files, laid out as ``makedumpfile -E`` does.

Spec: SPEC.md "ELF core files"; upstream makedumpfile ``makedumpfile.c``
(``write_elf_header``, ``write_elf_pages_cyclic``, ``PFN_EXCLUDED`` = 256) and
``IMPLEMENTATION`` ("The ELF format").

Layout: ELF header, program headers (one ``PT_NOTE``, then the ``PT_LOAD``\\ s),
the notes, then each segment's data in order (not page aligned). Segments
follow the source's memory regions (its ``PT_LOAD``\\ s, or the runs of RAM of a
kdump file). Within a region, a run of 256 or more excluded pages ends the
current segment and a new one starts at the next kept page; shorter runs are
written as data (with the page contents, or zeros where the source has none);
excluded pages at the end of a segment become ``p_memsz > p_filesz``. Zero
pages are excluded when the dump level has bit 1. More than 65534 program
headers use ``PN_XNUM`` with the real count in section header 0.

Under a size limit (``-L``, a :class:`~kdumptool.transport.sink.LimitedSink`), the
headers and notes must fit (else :class:`~kdumptool.transport.sink.LimitReached`);
segment data is then written in file order while whole pages fit, and the file
ends there with ``e_flags`` bit 0 (``DUMP_ELF_INCOMPLETE``) set: the program
headers still describe every segment, so the pages past the end read as lost,
as in an ELF dump makedumpfile cut at its ``-L`` limit.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import construct as cs
import numpy as np

from kdumptool.dump import DumpReader
from kdumptool.formats.elf import (
    DUMP_ELF_INCOMPLETE,
    ELFCLASS32,
    ELFCLASS64,
    ELFDATA2LSB,
    ELFDATA2MSB,
    ELFMAG,
    ET_CORE,
    MACHINE_CODES,
    PN_XNUM,
    PT_LOAD,
    PT_NOTE,
    ElfReader,
    build_notes,
    elf_structs,
)
from kdumptool.formats.kdump_writer import notes_for_output
from kdumptool.metadata import OutputMeta
from kdumptool.pipeline import Selection, zero_rows
from kdumptool.schema import numpy_dtype
from kdumptool.transport.sink import ByteSink, LimitedSink

#: A run of at least this many excluded pages splits a PT_LOAD (makedumpfile PFN_EXCLUDED).
PFN_EXCLUDED = 256
PF_RWX = 7


@dataclass(slots=True)
class Region:
    """Physical pages ``[start, end)`` that the source maps with one virtual base (or none)."""

    start: int
    end: int
    vaddr: int | None  # virtual address of ``start``, when known
    tail_bytes: int = 0  # bytes of a partial page after ``end`` (counted in p_memsz)


@dataclass(slots=True)
class OutSegment:
    start: int  # first pfn
    file_pages: int
    mem_pages: int
    vaddr: int
    tail_bytes: int = 0


def source_regions(reader: DumpReader) -> Iterator[Region]:
    """The source's memory regions, in order: its PT_LOADs (ELF), or runs of RAM (other
    formats). Made one at a time: a fragmented map may have millions."""
    ps = reader.page_size
    reader = getattr(reader, "inner", reader)  # a wrapper (zero-fill) keeps the source's regions
    if isinstance(reader, ElfReader):
        for seg in reader.segments:
            start, end = seg.paddr // ps, (seg.paddr + seg.memsz) // ps
            if end > start:
                yield Region(start, end, seg.vaddr + (start * ps - seg.paddr),
                             seg.paddr + seg.memsz - end * ps)
        return
    run: Region | None = None
    for start, count in reader.ram_windows(1 << 20):
        ram, _ = reader.bitmaps(start, count)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], ram.astype(np.int8), [0]))))
        for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True):
            a, b = a + start, b + start
            if run is not None and run.end == a:
                run.end = b  # the run continues from the previous window
                continue
            if run is not None:
                yield run
            run = Region(a, b, None)
    if run is not None:
        yield run


def _keep_mask(selection: Selection, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keep, have)``: pages to keep (present, and not zero when level bit 1 is set), and
    pages the source has data for."""
    have = selection.reader.bitmaps(start, count)[1]
    keep = selection.masks(start, count)[1]
    if not selection.exclude_zero and selection.reader.strict and not selection.reader.info.incomplete:
        return keep, have
    # zero pages, or pages a tolerant reader or an incomplete dump cannot deliver (lost: the
    # bitmaps still say dumped), are known only from the data:
    # a strict reader's bitmaps say which pages have data, so only its kept pages are read
    # (from the first to the last; at -d 31 most of a large machine is never read)
    lo, hi = 0, count
    if selection.reader.strict:
        idx = np.flatnonzero(keep)
        if not idx.size:
            return keep, have
        lo, hi = int(idx[0]), int(idx[-1]) + 1
    batch = selection.reader.read_batch(start + lo, hi - lo)
    keep, have = keep.copy(), have.copy()
    keep[lo:hi] &= batch.present
    have[lo:hi] = batch.present
    if selection.exclude_zero:
        keep[lo + np.flatnonzero(batch.present)[zero_rows(batch.data)]] = False
    return keep, have


def plan_segments(selection: Selection, regions: Iterable[Region], page_size: int) -> list[OutSegment]:
    """makedumpfile's segment rule applied to each region (see the module docstring).

    One addition: a gap that holds a page the source has no data for always splits the
    segment, so that a page missing from the source never turns into a page of zeros.
    """
    window = selection.reader.window_pages
    data = list(selection.reader.data_windows(window))  # no page has data outside these
    data_ends = [w + c for w, c in data]
    cached: tuple[int, np.ndarray, np.ndarray] | None = None  # one window's masks, for many regions
    segments: list[OutSegment] = []
    for reg in regions:
        seg_start = reg.start
        last_kept = reg.start - 1  # excluded run so far counts from the region start
        file_end = reg.start
        missing = 0  # pages without source data seen so far in this region
        missing_at_last = 0
        pos = reg.start
        for wstart, wcount in data[bisect.bisect_right(data_ends, reg.start):]:
            if wstart >= reg.end:
                break
            start, end = max(wstart, reg.start), min(wstart + wcount, reg.end)
            if start >= end:
                continue
            missing += start - pos  # skipped pages have no data
            pos = end
            if cached is None or cached[0] != wstart:
                cached = (wstart, *_keep_mask(selection, wstart, wcount))
            keep, have = cached[1][start - wstart:end - wstart], cached[2][start - wstart:end - wstart]
            missing_before = missing + np.cumsum(~have) - (~have)  # exclusive prefix counts
            idx = np.flatnonzero(keep)
            missing += int((~have).sum())
            if not idx.size:
                continue
            kept = idx + start
            gaps = np.diff(np.concatenate(([last_kept], kept))) - 1
            holes = np.diff(np.concatenate(([missing_at_last], missing_before[idx])))
            for k in np.flatnonzero((gaps >= PFN_EXCLUDED) | (holes > 0)).tolist():
                pfn = int(kept[k])
                if k:
                    file_end = int(kept[k - 1]) + 1
                segments.append(_segment(seg_start, file_end, pfn, reg, page_size))
                seg_start = pfn
                file_end = pfn
            file_end = int(kept[-1]) + 1
            last_kept = int(kept[-1])
            missing_at_last = int(missing_before[idx[-1]])
        segments.append(_segment(seg_start, file_end, reg.end, reg, page_size))
    return segments


def _segment(start: int, file_end: int, end: int, reg: Region, page_size: int) -> OutSegment:
    vaddr = 0 if reg.vaddr is None else (reg.vaddr + (start - reg.start) * page_size) % (1 << 64)
    tail = reg.tail_bytes if end == reg.end else 0
    return OutSegment(start, max(0, file_end - start), end - start, vaddr, tail)


def _program_headers(phdr: cs.Struct, endian: str, note: tuple[int, int], segments: list[OutSegment],
                     offsets: list[int], page_size: int, word_size: int) -> bytes:
    """The program header table: the ``PT_NOTE`` at ``note`` (offset, size), then one ``PT_LOAD``
    per segment; built as one array of the schema's dtype (a table may hold millions)."""
    table = np.zeros(1 + len(segments), dtype=numpy_dtype(phdr, endian))
    table["p_type"][0] = PT_NOTE
    table["p_offset"][0], table["p_filesz"][0] = note
    table["p_memsz"][0] = note[1]
    loads = table[1:]
    loads["p_type"] = PT_LOAD
    loads["p_flags"] = PF_RWX
    loads["p_offset"] = offsets
    mask, n = (1 << (8 * word_size)) - 1, len(segments)

    def column(values: Iterable[int]) -> np.ndarray:  # no list of a million ints on the way
        return np.fromiter(values, dtype=np.uint64, count=n)

    loads["p_vaddr"] = column(seg.vaddr & mask for seg in segments)
    loads["p_paddr"] = column(seg.start * page_size for seg in segments)
    loads["p_filesz"] = column(seg.file_pages * page_size for seg in segments)
    loads["p_memsz"] = column(seg.mem_pages * page_size + seg.tail_bytes for seg in segments)
    return table.tobytes()


def _read_groups(segments: list[OutSegment], offsets: list[int], window: int,
                 page_size: int) -> Iterator[tuple[int, np.ndarray, int]]:
    """The segments' file pages in runs that one ``read_batch`` serves: ``(first pfn, rows,
    file offset)``, where ``rows`` are the pages' indexes from ``first`` (within one window)
    and their data is contiguous in the file from the offset on. Many short segments (a
    fragmented memory map) then cost one read per window, not one per segment."""
    first = pos = end = -1
    pieces: list[np.ndarray] = []
    size = 0
    for seg, off in zip(segments, offsets, strict=True):
        for start in range(seg.start, seg.start + seg.file_pages, window):
            count = min(window, seg.start + seg.file_pages - start)
            at = off + (start - seg.start) * page_size
            if pieces and start >= end and start + count <= first + window and at == pos + size * page_size:
                pieces.append(np.arange(start - first, start - first + count))
            else:
                if pieces:
                    yield first, np.concatenate(pieces), pos
                first, pos, size, pieces = start, at, 0, [np.arange(count)]
            size += count
            end = start + count
    if pieces:
        yield first, np.concatenate(pieces), pos


def write_elf(selection: Selection, sink: ByteSink, meta: OutputMeta) -> dict[str, int]:
    """Write the selected pages of a dump as an ELF core file.

    :return: counts: ``segments``, ``pages`` written with data, ``lost`` pages, ``cut``: 1 when
        a size limit stopped the writing of pages
    :raises LimitReached: the size limit is too small for the headers and notes
    """
    reader = selection.reader
    ps = meta.page_size
    # ELF32 cannot hold addresses past 4 GiB (i386 PAE): use ELF64 then, as /proc/vmcore does
    elf_class = ELFCLASS64 if meta.word_size == 8 or meta.max_pfn * ps > 1 << 32 else ELFCLASS32
    s = elf_structs(elf_class, meta.endian)
    note_blob = build_notes(notes_for_output(meta), meta.endian)
    segments = plan_segments(selection, source_regions(reader), ps)
    phnum = 1 + len(segments)
    ehsize, phsize, shsize = s.Ehdr.sizeof(), s.Phdr.sizeof(), s.Shdr.sizeof()
    use_xnum = phnum >= PN_XNUM
    phoff = ehsize
    shoff = phoff + phnum * phsize if use_xnum else 0
    note_off = phoff + phnum * phsize + (shsize if use_xnum else 0)
    pos = note_off + len(note_blob)
    offsets = []
    for seg in segments:
        offsets.append(pos if seg.file_pages else 0)
        pos += seg.file_pages * ps
    phdrs = _program_headers(s.Phdr, meta.endian, (note_off, len(note_blob)), segments, offsets, ps,
                             meta.word_size)
    limited = sink if isinstance(sink, LimitedSink) else None
    if limited is not None:  # the ELF header is written last
        limited.reserve([(0, ehsize)])
    sink.pwrite(phoff, phdrs)
    if use_xnum:
        sink.pwrite(shoff, s.Shdr.build({"sh_name": 0, "sh_type": 0, "sh_flags": 0, "sh_addr": 0,
                                         "sh_offset": 0, "sh_size": 0, "sh_link": 0,
                                         "sh_info": phnum, "sh_addralign": 0, "sh_entsize": 0}))
    sink.pwrite(note_off, note_blob)
    stats = {"segments": len(segments), "pages": 0, "lost": 0, "cut": 0}
    window = reader.window_pages
    file_pages = sum(seg.file_pages for seg in segments)
    done = 0
    for first, rows, pos in _read_groups(segments, offsets, window, ps):
        count = len(rows)
        if limited is not None and not limited.fits(pos, count * ps):
            count = limited.fit(count, lambda j, pos=pos, lim=limited: lim.cost(pos, j * ps))
            rows = rows[:count]
            stats["cut"] = 1
        if count:
            batch = reader.read_batch(first, int(rows[-1]) + 1)
            present = batch.present[rows]
            if present.all() and batch.present.all() and count == batch.count:
                out = batch.data  # rows are the whole batch
            else:  # pages between the rows are skipped; pages without data are zeros
                out = np.zeros((count, ps), dtype=np.uint8)
                slot = np.cumsum(batch.present) - 1  # row of data of each present page
                out[present] = batch.data[slot[rows[present]]]
            stats["pages"] += int(present.sum())
            stats["lost"] += int(batch.lost[rows].sum())
            sink.pwrite(pos, np.ascontiguousarray(out).reshape(-1).data)  # no copy to bytes
        done += count
        if stats["cut"]:
            stats["lost"] += file_pages - done  # described by the program headers, not in the file
            break
    if limited is not None:
        limited.release()
    incomplete = meta.incomplete or stats["lost"] > 0 or stats["cut"] > 0
    ident = (ELFMAG + bytes([elf_class, ELFDATA2LSB if meta.endian == "<" else ELFDATA2MSB, 1, 0])
             ).ljust(16, b"\0")
    sink.pwrite(0, s.Ehdr.build({
        "e_ident": ident, "e_type": ET_CORE, "e_machine": MACHINE_CODES.get(meta.machine, 0),
        "e_version": 1, "e_entry": 0, "e_phoff": phoff, "e_shoff": shoff,
        "e_flags": DUMP_ELF_INCOMPLETE if incomplete else 0, "e_ehsize": ehsize,
        "e_phentsize": phsize, "e_phnum": PN_XNUM if use_xnum else phnum,
        "e_shentsize": shsize if use_xnum else 0, "e_shnum": 1 if use_xnum else 0,
        "e_shstrndx": 0}))
    stats["incomplete"] = int(incomplete)
    return stats
