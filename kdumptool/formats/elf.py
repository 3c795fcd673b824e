"""ELF core files: /proc/vmcore, ``makedumpfile -E`` and QEMU ``dump-guest-memory``.

Spec: SPEC.md "ELF core files"; upstream Linux ``include/uapi/linux/elf.h``
(``Elf{32,64}_Ehdr``, ``Elf{32,64}_Phdr``, ``Elf{32,64}_Shdr``, ``Elf{32,64}_Nhdr``),
System V gABI (``PN_XNUM``), makedumpfile ``elf_info.c`` and ``IMPLEMENTATION``,
QEMU ``dump/dump.c`` (``dump_begin``, ``write_elf_section``), libkdumpfile
``src/kdumpfile/elfdump.c``.

Physical memory is described by ``PT_LOAD`` segments (``p_paddr``); bytes between
``p_filesz`` and ``p_memsz`` are RAM without data (excluded pages). When segments
overlap (the kernel-text ``PT_LOAD`` of /proc/vmcore maps RAM a second time),
the first segment in program-header order provides a page.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import construct as cs
import numpy as np

from kdumptool.dump import DumpInfo, DumpReader, Note, PageBatch, Utsname
from kdumptool.errors import CorruptDumpError, TruncatedDumpError, UnknownFormatError
from kdumptool.formats.notes import MAX_NOTES, count_cpus, nhdr_struct, parse_notes, vmcoreinfo_from_notes
from kdumptool.formats.registry import ReaderEntry
from kdumptool.schema import ints, numpy_dtype, parse_at
from kdumptool.transport.source import ByteSource, mapped, read_exact, read_into

ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_CORE = 4
PT_LOAD, PT_NOTE = 1, 4
PN_XNUM = 0xFFFF
#: e_flags bit makedumpfile sets on an incomplete ELF dump (``DUMP_ELF_INCOMPLETE``).
DUMP_ELF_INCOMPLETE = 0x1

#: e_machine -> the name ``uname -m`` gives.
MACHINES = {
    3: "i386", 8: "mips", 20: "ppc", 21: "ppc64", 22: "s390x", 40: "arm", 62: "x86_64",
    183: "aarch64", 243: "riscv64", 258: "loongarch64", 2: "sparc64", 43: "sparc64", 50: "ia64",
}
MACHINE_CODES = {name: code for code, name in MACHINES.items() if code not in (2,)}

#: Upper bound for the program header table (PN_XNUM counts are 32-bit).
MAX_PHNUM = 1 << 24
#: Highest PFN an ELF dump may describe (64 TiB of 4 KiB pages; real machines are smaller).
MAX_PFN = 1 << 34


@dataclass(frozen=True)
class ElfStructs:
    """The ELF structures for one class and byte order (declared once, below)."""

    Ehdr: cs.Struct
    Phdr: cs.Struct
    Shdr: cs.Struct
    Nhdr: cs.Struct


@functools.cache
def elf_structs(elf_class: int, endian: str) -> ElfStructs:
    """ELF structures for ``elf_class`` (1 = ELF32, 2 = ELF64) and ``endian``."""
    i = ints(endian)
    w = 8 if elf_class == ELFCLASS64 else 4
    addr = i.word(w)
    ehdr = cs.Struct(
        "e_ident" / cs.Bytes(16),
        "e_type" / i.u16,
        "e_machine" / i.u16,
        "e_version" / i.u32,
        "e_entry" / addr,
        "e_phoff" / addr,
        "e_shoff" / addr,
        "e_flags" / i.u32,
        "e_ehsize" / i.u16,
        "e_phentsize" / i.u16,
        "e_phnum" / i.u16,
        "e_shentsize" / i.u16,
        "e_shnum" / i.u16,
        "e_shstrndx" / i.u16,
    )
    if elf_class == ELFCLASS64:
        phdr = cs.Struct(
            "p_type" / i.u32, "p_flags" / i.u32, "p_offset" / addr, "p_vaddr" / addr,
            "p_paddr" / addr, "p_filesz" / addr, "p_memsz" / addr, "p_align" / addr,
        )
    else:  # p_flags moves after p_memsz in ELF32
        phdr = cs.Struct(
            "p_type" / i.u32, "p_offset" / addr, "p_vaddr" / addr, "p_paddr" / addr,
            "p_filesz" / addr, "p_memsz" / addr, "p_flags" / i.u32, "p_align" / addr,
        )
    shdr = cs.Struct(
        "sh_name" / i.u32, "sh_type" / i.u32, "sh_flags" / addr, "sh_addr" / addr,
        "sh_offset" / addr, "sh_size" / addr, "sh_link" / i.u32, "sh_info" / i.u32,
        "sh_addralign" / addr, "sh_entsize" / addr,
    )
    return ElfStructs(ehdr, phdr, shdr, nhdr_struct(endian))


def probe(head: bytes) -> bool:
    """True if ``head`` starts an ELF core file."""
    if len(head) < 20 or head[:4] != ELFMAG or head[4] not in (1, 2) or head[5] not in (1, 2):
        return False
    endian = "<" if head[5] == ELFDATA2LSB else ">"
    return int.from_bytes(head[16:18], "little" if endian == "<" else "big") == ET_CORE


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD."""

    index: int  # program header index
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int


class SegmentTable(Sequence[Segment]):
    """The PT_LOADs, held as arrays (a file may declare millions); items are :class:`Segment`\\ s
    made when asked for, so memory stays at the size of the program header table."""

    FIELDS = ("p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz")

    def __init__(self, index: np.ndarray, phdrs: np.ndarray) -> None:
        """The program headers ``phdrs[index]`` (a column at a time: no copy of whole rows)."""
        self.index = index.astype(np.int64)
        self.offset, self.vaddr, self.paddr, self.filesz, self.memsz = (
            phdrs[f][index].astype(np.uint64, copy=False) for f in self.FIELDS)

    def __len__(self) -> int:
        return len(self.index)

    @overload
    def __getitem__(self, k: int) -> Segment: ...
    @overload
    def __getitem__(self, k: slice) -> list[Segment]: ...

    def __getitem__(self, k: int | slice) -> Segment | list[Segment]:
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        return Segment(int(self.index[k]), int(self.offset[k]), int(self.vaddr[k]), int(self.paddr[k]),
                       int(self.filesz[k]), int(self.memsz[k]))

    def __iter__(self) -> Iterator[Segment]:
        step = 1 << 16  # Python objects for one slice at a time
        for lo in range(0, len(self), step):
            cols = (a[lo:lo + step].tolist() for a in (self.index, self.offset, self.vaddr, self.paddr,
                                                        self.filesz, self.memsz))
            yield from (Segment(*seg) for seg in zip(*cols, strict=True))


class ElfReader(DumpReader):
    """Reader of ELF core files (ELF32 or ELF64, either byte order)."""

    def __init__(self, source: ByteSource, *, strict: bool = True, transport: str = "plain") -> None:
        super().__init__(source, strict=strict)
        path = source.name
        ident = read_exact(source, 0, 16, "ELF identification")
        if ident[:4] != ELFMAG:
            raise UnknownFormatError("not an ELF file", path=path, offset=0, expected=ELFMAG,
                                     got=ident[:4])
        if ident[4] not in (ELFCLASS32, ELFCLASS64) or ident[5] not in (ELFDATA2LSB, ELFDATA2MSB):
            raise CorruptDumpError("bad ELF class or data encoding", path=path, offset=4,
                                   expected="class 1/2, data 1/2", got=f"{ident[4]}/{ident[5]}")
        self.elf_class = ident[4]
        self.endian = "<" if ident[5] == ELFDATA2LSB else ">"
        s = elf_structs(self.elf_class, self.endian)
        self.structs = s
        eh = parse_at(s.Ehdr, source.pread(0, s.Ehdr.sizeof()), path=path, offset=0,
                      what="ELF header")
        self.ehdr = eh
        if eh.e_type != ET_CORE:
            raise UnknownFormatError("ELF file is not a core dump", path=path, offset=16,
                                     expected=f"e_type {ET_CORE} (ET_CORE)", got=eh.e_type)
        phnum = eh.e_phnum
        if phnum == PN_XNUM:
            phnum = self._xnum_count()
        if eh.e_phentsize != s.Phdr.sizeof():
            raise CorruptDumpError("unexpected program header size", path=path,
                                   offset=0x36 if self.elf_class == 2 else 0x2A,
                                   expected=s.Phdr.sizeof(), got=eh.e_phentsize)
        #: e_phnum read 0 and the count was rebuilt from the table (tolerant mode only)
        self.rebuilt_phnum = self._count_table() if phnum == 0 and eh.e_phnum == 0 and not strict else 0
        phnum = phnum or self.rebuilt_phnum
        if phnum == 0:
            raise CorruptDumpError("ELF core file has no program headers", path=path,
                                   offset=0x38 if self.elf_class == 2 else 0x2C,
                                   expected="e_phnum > 0", got=0)
        if phnum > MAX_PHNUM:
            raise CorruptDumpError("too many program headers", path=path, offset=eh.e_phoff,
                                   expected=f"<= {MAX_PHNUM}", got=phnum)
        table = read_exact(source, eh.e_phoff, phnum * eh.e_phentsize, "program header table")
        # the table is parsed as one array (the schema's dtype): a file may hold millions
        self.phdrs = np.frombuffer(table, dtype=numpy_dtype(s.Phdr, self.endian))
        self.notes: list[Note] = []
        self.note_segments: list[tuple[int, int]] = []
        types = self.phdrs["p_type"]
        for k in np.flatnonzero(types == PT_NOTE).tolist():
            self._load_notes(k, self.phdr(k))
        loads = np.flatnonzero(types == PT_LOAD)
        self.segments = SegmentTable(loads, self.phdrs)
        self.vmcoreinfo = vmcoreinfo_from_notes(self.notes)
        page_size = 4096
        if self.vmcoreinfo is not None and self.vmcoreinfo.page_size:
            ps = self.vmcoreinfo.page_size
            if ps & (ps - 1) == 0 and 1 << 10 <= ps <= 1 << 18:  # as kdump's block_size
                page_size = ps
        self._index_segments(page_size)
        machine = MACHINES.get(eh.e_machine, f"e_machine {eh.e_machine}")
        self.info = DumpInfo(
            format=f"elf{32 if self.elf_class == 1 else 64}", path=path, endian=self.endian,
            word_size=4 if self.elf_class == 1 else 8, machine=machine, page_size=page_size,
            max_pfn=self._max_pfn, transport=transport, notes=self.notes,
            vmcoreinfo=self.vmcoreinfo, nr_cpus=count_cpus(self.notes),
            incomplete=bool(eh.e_flags & DUMP_ELF_INCOMPLETE),
        )
        if self.vmcoreinfo is not None:
            ct = self.vmcoreinfo.crash_time
            self.info.timestamp = (ct, 0) if ct is not None else None
            self.info.utsname = Utsname(sysname="Linux", release=self.vmcoreinfo.osrelease or "",
                                        machine=machine) if self.vmcoreinfo.osrelease else None
            if self.vmcoreinfo.has("NUMBER(phys_base)"):
                self.info.phys_base = self.vmcoreinfo.number("phys_base") % (1 << 64)  # printed signed
        self.info.details["segments"] = len(self.segments)
        self.info.details["qemu"] = any(n.name == b"QEMU" for n in self.notes)
        self.info.details["truncated_segments"] = self._truncated
        self.info.details["implausible_filesz"] = self._implausible

    def phdr(self, index: int) -> cs.Container:
        """Program header ``index`` as the schema's container (Python ints)."""
        row = self.phdrs[index]
        return cs.Container({name: int(row[name]) for name in self.phdrs.dtype.names})

    def _xnum_count(self) -> int:
        """With e_phnum == PN_XNUM the real count is section header 0's sh_info."""
        eh, s = self.ehdr, self.structs
        if eh.e_shoff == 0:
            raise CorruptDumpError("e_phnum is PN_XNUM but there is no section header",
                                   path=self.source.name, offset=0x28 if self.elf_class == 2 else 0x20,
                                   expected="e_shoff != 0", got=0)
        sh0 = parse_at(s.Shdr, read_exact(self.source, eh.e_shoff, s.Shdr.sizeof(),
                                          "section header 0"),
                       path=self.source.name, offset=eh.e_shoff, what="section header 0")
        return sh0.sh_info

    def _count_table(self) -> int:
        """How many program headers lie at ``e_phoff`` when ``e_phnum`` was lost (reads 0).

        Entries are taken up to the first that cannot be one: the table opens with a PT_NOTE
        whose notes lie in the file, then PT_LOADs with ``p_filesz <= p_memsz`` whose data
        starts in the file; it ends where the first segment's data begins (every writer puts
        the data after the headers). 0 if the first entry is no PT_NOTE.
        """
        eh, s = self.ehdr, self.structs
        ent, size = s.Phdr.sizeof(), self.source.size
        dtype = numpy_dtype(s.Phdr, self.endian)
        count, data_start = 0, size
        while count < MAX_PHNUM:
            at = eh.e_phoff + count * ent
            n = min(4096, MAX_PHNUM - count, max(0, (min(size, data_start) - at) // ent))
            if not n:
                return count
            rows = np.frombuffer(self.source.pread(at, n * ent), dtype=dtype, count=n)
            off, fsz = rows["p_offset"].astype(np.uint64), rows["p_filesz"].astype(np.uint64)
            ends = at + ent * np.arange(1, n + 1, dtype=np.uint64)  # table end with each entry
            # data of a segment with bytes in the file starts after the table, in the file
            starts = np.minimum.accumulate(np.where(fsz > 0, off, np.uint64(size)))
            ok = (ends <= np.minimum(starts, np.uint64(data_start))) & (off <= np.uint64(size))
            ok &= (rows["p_type"] == PT_LOAD) & (fsz <= rows["p_memsz"].astype(np.uint64))
            if count == 0:  # the notes first, wholly in the file
                ok[0] = bool(rows["p_type"][0] == PT_NOTE and 0 < fsz[0] <= MAX_NOTES
                             and ends[0] <= off[0] and off[0] + fsz[0] <= size)
            bad = np.flatnonzero(~ok)
            if bad.size:
                return count + int(bad[0])
            count += n
            data_start = min(data_start, int(starts[-1]))
        return count

    def _load_notes(self, index: int, ph: cs.Container) -> None:
        size = ph.p_filesz
        if size > MAX_NOTES:
            raise CorruptDumpError("PT_NOTE segment is implausibly large", path=self.source.name,
                                   offset=ph.p_offset, expected=f"<= {MAX_NOTES}", got=size)
        if ph.p_offset + size > self.source.size:
            if self.strict:
                raise TruncatedDumpError(
                    f"PT_NOTE (program header {index}) runs past the end of the file",
                    path=self.source.name, offset=ph.p_offset,
                    expected=f"{size} bytes", got=f"file size {self.source.size:#x}")
            size = max(0, self.source.size - ph.p_offset)
        blob = self.source.pread(ph.p_offset, size)
        self.note_segments.append((ph.p_offset, len(blob)))
        self.notes.extend(parse_notes(blob, self.endian, base=ph.p_offset, path=self.source.name,
                                      strict=self.strict))

    def _index_segments(self, page_size: int) -> None:
        """Arrays of segment bounds in page units, for vectorised window queries."""
        ps = page_size
        t = self.segments
        size = np.uint64(min(self.source.size, (1 << 64) - 1))  # (a flattened file may claim 2**63)
        # (uint64 arithmetic arranged so that nothing wraps: the fields are the file's)
        in_file = size - np.minimum(t.offset, size)  # bytes of the file from p_offset on
        truncated = (t.offset > size) | (t.filesz > in_file)
        self._truncated: list[int] = t.index[truncated].tolist()
        self._implausible: list[int] = []
        if self._truncated and self.strict and not (
                self.ehdr.e_flags & DUMP_ELF_INCOMPLETE and self.out_of_file()[0] == "truncated"):
            self._raise_out_of_file()  # (a file marked incomplete may end early: lost pages)
        limit = np.uint64(MAX_PFN * ps)
        impossible = (t.paddr > limit) | (t.memsz > limit - np.minimum(t.paddr, limit))
        impossible |= t.filesz > np.minimum(t.memsz, limit) + np.uint64(ps)
        if impossible.any():
            seg = t[int(np.flatnonzero(impossible)[0])]
            raise CorruptDumpError(
                f"PT_LOAD (program header {seg.index}) describes impossible memory",
                path=self.source.name, offset=self.field_offset(seg, "p_paddr"),
                expected=f"p_paddr + p_memsz <= {MAX_PFN * ps:#x} and p_filesz <= p_memsz",
                got=f"p_paddr {seg.paddr:#x}, p_memsz {seg.memsz:#x}, p_filesz {seg.filesz:#x}")
        # now p_paddr + p_memsz <= 2**52 and p_filesz <= p_memsz + ps: int64 holds them.
        # Data past the end of the file reads as lost pages; but far more of it than the file
        # could ever have held means p_filesz is nonsense, not a cut: keep what is in the file
        # (fsck reports the segment)
        far = np.uint64(min(self.source.size + max(16 * self.source.size, 1 << 30), (1 << 64) - 1))
        implausible = (t.offset > far) | (t.filesz > far - np.minimum(t.offset, far))
        self._implausible = t.index[implausible].tolist()
        fsz = np.where(implausible, np.minimum(t.filesz, in_file), t.filesz).astype(np.int64)
        paddr, memsz = t.paddr.astype(np.int64), t.memsz.astype(np.int64)
        self._seg_start = paddr // ps
        self._seg_fstart = -(-paddr // ps)  # first page wholly inside the segment
        # a page is present when its data lies wholly in the file
        self._seg_fend = (paddr + fsz) // ps
        # pages whose data is really in the file (a truncated file has fewer)
        # (only its minimum with the end above matters: in_file capped, nothing wraps)
        in_file_end = ((t.paddr + np.minimum(in_file, np.uint64(1 << 60))) // np.uint64(ps)).astype(np.int64)
        self._seg_fend_eff = np.minimum(self._seg_fend, in_file_end)
        self._seg_mend = (paddr + memsz) // ps  # makedumpfile drops a partial last page
        self._seg_off = np.minimum(t.offset, min(self.source.size, (1 << 63) - 1)).astype(np.int64)
        self._seg_paddr = paddr
        self._order = np.argsort(self._seg_start, kind="stable")  # for _overlapping
        self._by_start = self._seg_start[self._order]
        self._reach = np.maximum.accumulate(self._seg_mend[self._order]) if len(t) else self._by_start
        self._max_pfn = int(self._seg_mend.max()) if len(self.segments) else 0

    def out_of_file(self) -> tuple[str, list[Segment]]:
        """Why segment data lies past the end of the file: ``("truncated", segs)``,
        ``("bad-offset", segs)`` or ``("", [])``.

        A file cut short has a segment that straddles (or starts exactly at) its end; when
        every other segment fits, a segment that starts beyond the end has a bad p_offset.
        """
        size = self.source.size
        t = self.segments
        bad_mask = np.isin(t.index, self._truncated) & ~np.isin(t.index, self._implausible)
        if not bad_mask.any():
            return "", []
        bad = [t[int(k)] for k in np.flatnonzero(bad_mask)]
        return ("truncated" if any(seg.offset <= size for seg in bad) else "bad-offset"), bad

    def field_offset(self, seg: Segment, field: str) -> int:
        """File offset of a program header field (``p_offset``, ``p_filesz``, ``p_paddr``)."""
        at = {"p_offset": (8, 4), "p_paddr": (0x18, 0x0C), "p_filesz": (0x20, 0x10)}[field]
        return self.ehdr.e_phoff + seg.index * self.ehdr.e_phentsize + at[self.elf_class == ELFCLASS32]

    def _raise_out_of_file(self) -> None:
        size = self.source.size
        kind, bad = self.out_of_file()
        seg = bad[0]
        if kind == "truncated":
            seg = next(s for s in bad if s.offset <= size)
            raise TruncatedDumpError(
                f"file is truncated: PT_LOAD (program header {seg.index}, paddr {seg.paddr:#x}) "
                "ends past the end of the file", path=self.source.name, offset=size,
                expected=f"file size >= {seg.offset + seg.filesz:#x}", got=f"{size:#x}")
        raise CorruptDumpError(
            f"PT_LOAD (program header {seg.index}, paddr {seg.paddr:#x}) p_offset points past "
            "the end of the file", path=self.source.name, offset=self.field_offset(seg, "p_offset"),
            expected=f"p_offset + p_filesz <= {size:#x}", got=f"p_offset {seg.offset:#x}")

    def lost_mask(self, start: int, count: int) -> np.ndarray:
        """Pages the headers declare with data that the file does not hold (metadata only)."""
        end = start + count
        _, declared = self.bitmaps(start, count)
        ks = self._overlapping(start, end)
        available = _covered(count, self._seg_fstart[ks] - start, self._seg_fend_eff[ks] - start)
        return declared & ~available

    def ram_ranges(self) -> list[tuple[int, int]]:
        """``[start, end)`` PFN ranges of the PT_LOADs' memory (``p_memsz``), sorted."""
        return sorted((int(a), int(b)) for a, b in zip(self._seg_start, self._seg_mend, strict=True) if b > a)

    def count_pages(self) -> tuple[int, int]:
        """RAM and present pages by interval arithmetic over the segments (no scan)."""
        def union(starts: np.ndarray, ends: np.ndarray) -> int:
            keep = ends > starts
            order = np.argsort(starts[keep], kind="stable")
            a, b = starts[keep][order], ends[keep][order]
            reach = np.maximum.accumulate(np.concatenate(([-1], b)))[:-1]  # end of the union so far
            return int(np.maximum(0, b - np.maximum(a, reach)).sum())

        return (union(self._seg_start, self._seg_mend), union(self._seg_fstart, self._seg_fend))

    def data_windows(self, window: int | None = None) -> Iterator[tuple[int, int]]:
        """Windows that overlap some segment's file data (the rest has no page to read)."""
        window = window or self.window_pages
        spans = sorted((int(a), int(b)) for a, b in zip(self._seg_fstart, self._seg_fend, strict=True)
                       if b > a)
        pos = 0
        for a, b in spans:
            start = max(pos, a - a % window)
            while start < b:
                count = min(window, self.max_pfn - start)
                if count <= 0:
                    return
                yield start, count
                start += window
            pos = max(pos, start)

    def _overlapping(self, start: int, end: int) -> np.ndarray:
        """Indexes (ascending) of the segments whose memory overlaps pages ``[start, end)``.

        Segments sorted by start: those starting before ``end`` are a prefix; those before
        the first whose running maximum end passes ``start`` end before it. Only the rest is
        scanned (all of it for well-formed files), not every segment per window.
        """
        if len(self._order) <= 256:  # few segments: one comparison is cheaper than two searches
            return np.flatnonzero((self._seg_start < end) & (self._seg_mend > start))
        hi = int(np.searchsorted(self._by_start, end, side="left"))
        lo = int(np.searchsorted(self._reach, start, side="right"))
        cand = self._order[lo:hi]
        return np.sort(cand[self._seg_mend[cand] > start])

    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """RAM (inside a PT_LOAD's ``p_memsz``) and present (inside its ``p_filesz``) bits of
        the window.
        """
        end = start + count
        ks = self._overlapping(start, end)
        return (_covered(count, self._seg_start[ks] - start, self._seg_mend[ks] - start),
                _covered(count, self._seg_fstart[ks] - start, self._seg_fend[ks] - start))

    def _owner(self, start: int, count: int) -> np.ndarray:
        """Index of the segment providing each page's data (-1: none). First segment wins."""
        end = start + count
        ks = self._overlapping(start, end)
        if len(ks) > 16:  # many (overlapping) segments: no loop over them
            return _first_cover(count, self._seg_fstart[ks] - start, self._seg_fend[ks] - start, ks)
        owner = np.full(count, -1, dtype=np.int64)
        for k in ks[::-1]:
            _fill(owner, int(self._seg_fstart[k]) - start, int(self._seg_fend[k]) - start, k)
        return owner

    def read_batch(self, start: int, count: int) -> PageBatch:
        """The pages of the window, read from their PT_LOADs (the first segment holding a page
        wins); memory beyond ``p_filesz`` is zero, data past the end of the file is lost.

        :raises TruncatedDumpError: (strict) the file ends inside a segment's data
        """
        ps = self.page_size
        ram, _ = self.bitmaps(start, count)
        owner = self._owner(start, count)
        lost = np.zeros(count, dtype=bool)
        size = self.source.size
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(owner)) + 1, [count]))
        runs = []  # (first page, pages, file offset, pages whose data is in the file)
        for i, j in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            k = int(owner[i])  # one pread per run of pages from the same segment
            if k < 0:
                continue
            off = int(self._seg_off[k]) + (start + i) * ps - int(self._seg_paddr[k])
            whole = min(j - i, max(0, size - off) // ps)
            if whole < j - i:  # data beyond the end of a truncated file: lost pages
                lost[i + whole:j] = True
            if whole:
                runs.append((i, whole, off))
        present = (owner >= 0) & ~lost
        if len(runs) == 1:  # every page from one stretch of the file: used in place if mapped
            view = mapped(self.source, runs[0][2], runs[0][1] * ps)
            if view is not None:
                data = np.frombuffer(view, dtype=np.uint8).reshape(-1, ps)
                return PageBatch(start, count, ram, present, data, lost)
        data = np.empty((int(present.sum()), ps), dtype=np.uint8)
        row = np.cumsum(present) - 1
        flat = memoryview(data.reshape(-1))
        for i, whole, off in runs:
            r = int(row[i])
            got = read_into(self.source, off, flat[r * ps:(r + whole) * ps])
            if got < whole * ps:  # the file shrank while being read
                raise TruncatedDumpError("file ends inside a segment", path=self.info.path, offset=off + got,
                                         expected=f"{whole * ps} bytes", got=f"{got} bytes")
        return PageBatch(start, count, ram, present, data, lost)


def _covered(count: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Which of ``count`` pages some range ``[lo[i], hi[i])`` covers (bounds clamped)."""
    if len(lo) <= 16:  # a few ranges (the usual case): slices
        out = np.zeros(count, dtype=bool)
        for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
            _fill(out, a, b, True)
        return out
    lo, hi = np.clip(lo, 0, count), np.clip(hi, 0, count)
    keep = lo < hi
    edges = np.zeros(count + 1, dtype=np.int64)
    np.add.at(edges, lo[keep], 1)
    np.add.at(edges, hi[keep], -1)
    return np.cumsum(edges[:-1]) > 0


def _first_cover(count: int, lo: np.ndarray, hi: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """For each of ``count`` pages, the least ``ks[i]`` whose range ``[lo[i], hi[i])`` covers
    it (-1: none). Each range is two power-of-two blocks; the blocks' minima are pushed down
    one level at a time, so the work is ``len(ks) + count * log(count)`` without a loop over
    the ranges."""
    lo, hi = np.clip(lo, 0, count), np.clip(hi, 0, count)
    keep = lo < hi
    lo, hi, ks = lo[keep], hi[keep], ks[keep].astype(np.int64)
    none = np.iinfo(np.int64).max
    levels = max(1, count.bit_length())
    table = np.full((levels, count), none, dtype=np.int64)  # table[j][i]: least k over [i, i + 2**j)
    span = hi - lo
    level = np.zeros(len(span), dtype=np.int64)
    while (grow := (span >> (level + 1)) > 0).any():  # level = floor(log2(span)), exactly
        level += grow
    np.minimum.at(table, (level, lo), ks)
    np.minimum.at(table, (level, hi - (1 << level)), ks)
    for j in range(levels - 1, 0, -1):
        half = 1 << (j - 1)
        np.minimum(table[j - 1], table[j], out=table[j - 1])
        np.minimum(table[j - 1][half:], table[j][:count - half], out=table[j - 1][half:])
    first = table[0]
    first[first == none] = -1
    return first


def _fill(arr: np.ndarray, lo: int, hi: int, value: object) -> None:
    """``arr[lo:hi] = value`` with both bounds clamped into the array."""
    lo, hi = max(lo, 0), min(hi, len(arr))
    if lo < hi:
        arr[lo:hi] = value


def lost_pages(r: ElfReader) -> int:
    """Pages of PT_LOADs that end past the end of a truncated file (0 when none does)."""
    if not r.info.details.get("truncated_segments"):
        return 0
    return sum(int(b.lost.sum()) for b in r.iter_batches())


#: This format in the registry (:mod:`kdumptool.formats`): repaired as ELF.
ENTRY = ReaderEntry("elf", probe, ElfReader, "ELF core", order=30,
                    lost_pages=lost_pages, repair_as="elf", writer="elf")  # type: ignore[arg-type]
