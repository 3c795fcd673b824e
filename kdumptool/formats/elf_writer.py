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

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import construct as cs
import numpy as np

from kdumptool.dump import DumpReader, Note
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
    ElfStructs,
    elf_structs,
)
from kdumptool.formats.elf_plan import SegmentPlan, plan_segments, source_regions
from kdumptool.formats.kdump_writer import notes_for_output
from kdumptool.formats.notes import build_notes
from kdumptool.metadata import ERASEINFO_NOTE, OutputMeta
from kdumptool.parallel import CHUNK_WINDOWS, ChunkRunner, default_workers
from kdumptool.pipeline import Selection
from kdumptool.schema import numpy_dtype
from kdumptool.transport.sink import ByteSink, LimitedSink

PF_RWX = 7


def _program_headers(phdr: cs.Struct, endian: str, note: tuple[int, int], plan: SegmentPlan,
                     offsets: np.ndarray, page_size: int, word_size: int) -> memoryview:
    """The program header table: the ``PT_NOTE`` at ``note`` (offset, size), then one ``PT_LOAD``
    per segment; built as one array of the schema's dtype (a table may hold millions), whose
    bytes are written as they are (no copy)."""
    table = np.zeros(1 + len(plan), dtype=numpy_dtype(phdr, endian))
    table["p_type"][0] = PT_NOTE
    table["p_offset"][0], table["p_filesz"][0] = note
    table["p_memsz"][0] = note[1]
    loads = table[1:]
    loads["p_type"] = PT_LOAD
    loads["p_flags"] = PF_RWX
    loads["p_offset"] = offsets
    loads["p_vaddr"] = plan.vaddr & np.uint64((1 << (8 * word_size)) - 1)
    loads["p_paddr"] = (plan.start * page_size).astype(np.uint64)
    loads["p_filesz"] = (plan.file_pages * page_size).astype(np.uint64)
    loads["p_memsz"] = (plan.mem_pages * page_size + plan.tail_bytes).astype(np.uint64)
    return table.view(np.uint8).data


def _read_groups(plan: SegmentPlan, offsets: np.ndarray, window: int,
                 page_size: int) -> Iterator[tuple[int, np.ndarray, int]]:
    """The segments' file pages in runs that one ``read_batch`` serves: ``(first pfn, rows,
    file offset)``, where ``rows`` are the pages' indexes from ``first`` (all within one
    window; in file order, so they may repeat or go back when segments overlap or come out of
    address order) and their data is contiguous in the file from the offset on. Many short
    segments (a fragmented memory map) then cost one read per window, not one per segment."""
    lo = hi = pos = -1
    pieces: list[np.ndarray] = []
    size = 0
    for first, file_pages, off in _segments_with_data(plan, offsets):
        for start in range(first, first + file_pages, window):
            count = min(window, first + file_pages - start)
            at = off + (start - first) * page_size
            if (pieces and at == pos + size * page_size and size + count <= window
                    and max(hi, start + count) - min(lo, start) <= window):
                lo, hi = min(lo, start), max(hi, start + count)
            else:
                if pieces:
                    yield lo, np.concatenate(pieces) - lo, pos
                lo, hi, pos, size, pieces = start, start + count, at, 0, []
            pieces.append(np.arange(start, start + count))
            size += count
    if pieces:
        yield lo, np.concatenate(pieces) - lo, pos


def _segments_with_data(plan: SegmentPlan, offsets: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """``(first pfn, file pages, file offset)`` of each segment with data, in file order; Python
    ints made a slice at a time."""
    step = 1 << 16
    for lo in range(0, len(plan), step):
        cols = (plan.start[lo:lo + step], plan.file_pages[lo:lo + step], offsets[lo:lo + step])
        with_data = cols[1] > 0
        yield from zip(*(c[with_data].tolist() for c in cols), strict=True)


def distinct_file_pages(plan: SegmentPlan) -> int:
    """Pages with data in the file, each PFN counted once: what a reader of the file counts
    (``info``'s "in file"), where PT_LOADs that map the same pages (the kernel image's, as in
    ``/proc/vmcore``) hold some of them twice."""
    has = plan.file_pages > 0
    order = np.argsort(plan.start[has], kind="stable")
    a = plan.start[has][order]
    b = a + plan.file_pages[has][order]
    reach = np.maximum.accumulate(np.concatenate(([-1], b)))[:-1]  # end of the union so far
    return int(np.maximum(0, b - np.maximum(a, reach)).sum())


def _group_data(reader: DumpReader, first: int, rows: np.ndarray, ps: int) -> tuple[int, int, memoryview]:
    """The file data of one group of :func:`_read_groups`: ``(pages with data, lost pages,
    bytes)``; pages between the rows are skipped, pages without data are zeros."""
    count = len(rows)
    batch = reader.read_batch(first, int(rows.max()) + 1)
    present = batch.present[rows]
    if batch.present.all() and count == batch.count and (np.diff(rows) == 1).all():
        out = batch.data  # rows are the whole batch, in order
    else:
        out = np.zeros((count, ps), dtype=np.uint8)
        slot = np.cumsum(batch.present) - 1  # row of data of each present page
        out[present] = batch.data[slot[rows[present]]]
    return int(present.sum()), int(batch.lost[rows].sum()), np.ascontiguousarray(out).reshape(-1).data


def _write_groups(reader: DumpReader, fd: int, ps: int, groups: list[_Group],
                  write: object) -> tuple[int, int]:
    """Write groups of pages straight to their offsets in the output file (a worker's task)."""
    pages = lost = 0
    for first, rows, pos in groups:
        n, m, out = _group_data(reader, first, rows, ps)
        pages += n
        lost += m
        view = out.cast("B")
        while len(view):
            k = os.pwrite(fd, view, pos)
            view, pos = view[k:], pos + k
    return pages, lost


_Group = tuple[int, np.ndarray, int]


def _batched(items: Iterator[_Group], n: int) -> Iterator[list[_Group]]:
    batch: list[_Group] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class _ElfGeometry:
    """Where everything of one output file lies: headers, notes and each segment's data."""

    s: ElfStructs
    elf_class: int
    note_blob: bytes
    segments: SegmentPlan
    offsets: np.ndarray  # file offset of each segment's data (0: none)
    phnum: int
    use_xnum: bool  # more program headers than e_phnum holds: the count in section header 0
    phoff: int
    shoff: int
    note_off: int

    @classmethod
    def of(cls, selection: Selection, meta: OutputMeta, threads: int | None) -> _ElfGeometry:
        """Plan the segments of the selected pages and place them after the headers and notes."""
        ps = meta.page_size
        # ELF32 cannot hold addresses past 4 GiB (i386 PAE): use ELF64 then, as /proc/vmcore does
        elf_class = ELFCLASS64 if meta.word_size == 8 or meta.max_pfn * ps > 1 << 32 else ELFCLASS32
        s = elf_structs(elf_class, meta.endian)
        notes = notes_for_output(meta)
        if meta.eraseinfo:  # the record of erased data: one note, as write_elf_eraseinfo adds it
            notes.append(Note(ERASEINFO_NOTE, 0, meta.eraseinfo))
        note_blob = build_notes(notes, meta.endian)
        segments = plan_segments(selection, source_regions(selection.reader), ps, threads)
        phnum = 1 + len(segments)
        use_xnum = phnum >= PN_XNUM
        phoff = s.Ehdr.sizeof()
        shoff = phoff + phnum * s.Phdr.sizeof() if use_xnum else 0
        note_off = phoff + phnum * s.Phdr.sizeof() + (s.Shdr.sizeof() if use_xnum else 0)
        data_bytes = segments.file_pages * ps  # each segment's data follows the notes, in order
        data_at = note_off + len(note_blob) + np.cumsum(data_bytes) - data_bytes
        offsets = np.where(segments.file_pages > 0, data_at, 0)
        return cls(s, elf_class, note_blob, segments, offsets, phnum, use_xnum, phoff, shoff,
                   note_off)


def _write_tables(geo: _ElfGeometry, sink: ByteSink, meta: OutputMeta) -> None:
    """The program headers, section header 0 (with ``PN_XNUM``) and the notes."""
    s = geo.s
    sink.pwrite(geo.phoff, _program_headers(s.Phdr, meta.endian, (geo.note_off, len(geo.note_blob)),
                                            geo.segments, geo.offsets, meta.page_size,
                                            meta.word_size))
    if geo.use_xnum:
        sink.pwrite(geo.shoff, s.Shdr.build({"sh_name": 0, "sh_type": 0, "sh_flags": 0, "sh_addr": 0,
                                             "sh_offset": 0, "sh_size": 0, "sh_link": 0,
                                             "sh_info": geo.phnum, "sh_addralign": 0,
                                             "sh_entsize": 0}))
    sink.pwrite(geo.note_off, geo.note_blob)


def _write_data(geo: _ElfGeometry, reader: DumpReader, sink: ByteSink, ps: int,
                threads: int | None, stats: dict[str, int]) -> None:
    """The segments' data: into a plain file by worker processes at the final offsets, else
    in file order here (under a size limit: while whole pages fit). Counts go to ``stats``."""
    limited = sink if isinstance(sink, LimitedSink) else None
    groups = _read_groups(geo.segments, geo.offsets, reader.window_pages, ps)
    fd = getattr(sink, "fd", None)
    if limited is None and fd is not None:  # a plain file: workers write at the final offsets
        tasks = _batched(groups, CHUNK_WINDOWS)
        runner = ChunkRunner(partial(_write_groups, reader, fd, ps), tasks, threads or default_workers(),
                             None, 0)
        for (pages, lost), _, _ in runner.results():
            stats["pages"] += pages
            stats["lost"] += lost
        return
    done = 0
    for first, rows, pos in groups:
        count = len(rows)
        if limited is not None and not limited.fits(pos, count * ps):
            count = limited.fit(count, lambda j, pos=pos, lim=limited: lim.cost(pos, j * ps))
            rows = rows[:count]
            stats["cut"] = 1
        if count:
            pages, lost, out = _group_data(reader, first, rows, ps)
            stats["pages"] += pages
            stats["lost"] += lost
            sink.pwrite(pos, out)
        done += count
        if stats["cut"]:
            stats["lost"] += stats["copies"] - done  # described by the program headers, not in the file
            break


def _write_ehdr(geo: _ElfGeometry, sink: ByteSink, meta: OutputMeta, incomplete: bool) -> None:
    """The ELF header, written last."""
    s = geo.s
    ident = (ELFMAG + bytes([geo.elf_class, ELFDATA2LSB if meta.endian == "<" else ELFDATA2MSB, 1, 0])
             ).ljust(16, b"\0")
    sink.pwrite(0, s.Ehdr.build({
        "e_ident": ident, "e_type": ET_CORE, "e_machine": MACHINE_CODES.get(meta.machine, 0),
        "e_version": 1, "e_entry": 0, "e_phoff": geo.phoff, "e_shoff": geo.shoff,
        "e_flags": DUMP_ELF_INCOMPLETE if incomplete else 0, "e_ehsize": s.Ehdr.sizeof(),
        "e_phentsize": s.Phdr.sizeof(), "e_phnum": PN_XNUM if geo.use_xnum else geo.phnum,
        "e_shentsize": s.Shdr.sizeof() if geo.use_xnum else 0, "e_shnum": 1 if geo.use_xnum else 0,
        "e_shstrndx": 0}))


def write_elf(selection: Selection, sink: ByteSink, meta: OutputMeta,
              *, threads: int | None = None) -> dict[str, int]:
    """Write the selected pages of a dump as an ELF core file.

    The pages are read for the planning (zero pages) and written on ``threads`` worker
    processes (default: all cores; :mod:`kdumptool.parallel`): into a plain file each worker
    writes its pages at their final offsets.

    :return: counts: ``segments``, ``pages`` written with data (a page in two PT_LOADs
        counts twice), ``in_file`` pages of the file counted once per PFN, ``copies`` pages
        of the file counted once per PT_LOAD, ``lost`` pages, ``cut``: 1 when a size limit
        stopped the writing of pages
    :raises LimitReached: the size limit is too small for the headers and notes
    """
    geo = _ElfGeometry.of(selection, meta, threads)
    limited = sink if isinstance(sink, LimitedSink) else None
    if limited is not None:  # the ELF header is written last
        limited.reserve([(0, geo.s.Ehdr.sizeof())])
    _write_tables(geo, sink, meta)
    stats = {"segments": len(geo.segments), "pages": 0, "in_file": distinct_file_pages(geo.segments),
             "copies": int(geo.segments.file_pages.sum()), "lost": 0, "cut": 0}
    _write_data(geo, selection.reader, sink, meta.page_size, threads, stats)
    if limited is not None:
        limited.release()
    incomplete = meta.incomplete or stats["lost"] > 0 or stats["cut"] > 0
    _write_ehdr(geo, sink, meta, incomplete)
    stats["incomplete"] = int(incomplete)
    return stats
