"""Xen ``xl dump-core`` files (the ELF "xc_core" format of Xen 3.0.5 and later).

Spec: SPEC.md §13.1. Upstream Xen ``docs/misc/dump-core-format.txt``,
``tools/libs/guest/xg_core.h`` (section and note names, descriptor structures),
``tools/libs/guest/xg_core.c`` (the layout comment and ``xc_domain_dumpcore_via_callback``:
what is written where), ``xg_core_x86.h`` / ``xg_core_arm.h`` (``e_machine``),
``xen/include/public/elfnote.h`` (note types); libkdumpfile ``src/kdumpfile/elfdump.c``
(``make_xen_pfn_map_auto/nonauto``) and ``notes.c`` (32- and 64-bit ``XEN_VERSION``
descriptors); crash ``xendump.c``.

An ``ET_CORE`` ELF file with no program headers; its sections say everything:
``.note.Xen`` (notes named ``Xen``: DUMPCORE_NONE, _HEADER, _XEN_VERSION, _FORMAT_VERSION),
``.xen_prstatus`` (one ``vcpu_guest_context`` per vCPU), ``.xen_shared_info``,
``.xen_pages`` (``nr_pages`` pages back to back) and ``.xen_pfn`` (``u64 pfn[nr_pages]``,
HVM and other auto-translated guests) or ``.xen_p2m`` (``{u64 pfn; u64 gmfn}[nr_pages]``, PV
guests), entry *k* naming the frame of page *k*. Entries of all ones are unused slots. Pages
are indexed by the guest's frame number (pseudo-physical for PV); a PFN listed twice keeps
its last page.

The legacy non-ELF dump-core header (``xch_magic`` ``0xF00FEBED``/``0xF00FEBEE`` at offset 0,
Xen before 3.0.5) is recognised and refused with a clear error.
"""

from __future__ import annotations

import functools
from typing import Any

import construct as cs
import numpy as np

from kdumptool.dump import DumpInfo, Note
from kdumptool.errors import CorruptDumpError, KdumpToolError, TruncatedDumpError, UnknownFormatError
from kdumptool.formats.elf import (
    ELFCLASS32,
    ELFCLASS64,
    ELFDATA2LSB,
    ELFDATA2MSB,
    ELFMAG,
    ET_CORE,
    MACHINES,
    elf_structs,
)
from kdumptool.formats.notes import (
    XC_CORE_MAGIC,
    XC_CORE_MAGIC_HVM,
    XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION,
    XEN_ELFNOTE_DUMPCORE_HEADER,
    XEN_ELFNOTE_DUMPCORE_NONE,
    XEN_ELFNOTE_DUMPCORE_XEN_VERSION,
    parse_notes,
    xen_dumpcore_header_struct,
)
from kdumptool.formats.pfn_index import MAX_PFN, PfnIndexReader, last_wins
from kdumptool.formats.registry import ReaderEntry
from kdumptool.formats.xen_vcpu import context_layout, prstatus_notes
from kdumptool.schema import ints, parse_at, strip_c_string
from kdumptool.transport.source import ByteSource, read_exact

SHT_NOTE = 7
SEC_NOTE, SEC_PRSTATUS, SEC_SHARED_INFO = ".note.Xen", ".xen_prstatus", ".xen_shared_info"
SEC_PAGES, SEC_P2M, SEC_PFN = ".xen_pages", ".xen_p2m", ".xen_pfn"
#: ``XC_CORE_INVALID_PFN``: an unused slot of ``.xen_pfn`` / ``.xen_p2m``.
INVALID_PFN = (1 << 64) - 1
#: Bounds for structures loaded whole.
MAX_SECTIONS = 1 << 12
MAX_STRTAB = 1 << 20
MAX_NOTE_SECTION = 1 << 20
MAX_VCPUS = 1 << 14
#: ``XEN_VERSION`` descriptor sizes: 32-bit dumping tool (``virt_start`` is 4 bytes and
#: ``uint64_t`` is 4-aligned) and 64-bit tool.
XEN_VERSION_SIZE_32, XEN_VERSION_SIZE_64 = 1276, 1280
#: Where ``pagesize`` sits: after ``virt_start`` of 4 or 8 bytes.
_PAGESIZE_AT_32, _PAGESIZE_AT_64 = 1268, 1272
#: Legacy (pre-ELF) dump-core header: the magic as the first u32.
LEGACY_MAGICS = (XC_CORE_MAGIC, XC_CORE_MAGIC_HVM)


def _ehdr_field(elf_class: int, name: str) -> int:
    """File offset of an ELF header field."""
    at64 = {"e_shoff": 0x28, "e_shentsize": 0x3A, "e_shnum": 0x3C, "e_shstrndx": 0x3E}
    at32 = {"e_shoff": 0x20, "e_shentsize": 0x2E, "e_shnum": 0x30, "e_shstrndx": 0x32}
    return (at64 if elf_class == ELFCLASS64 else at32)[name]


def probe_legacy(head: bytes) -> bool:
    """True if ``head`` starts with the legacy (non-ELF) dump-core header's magic."""
    return len(head) >= 24 and (int.from_bytes(head[:4], "little") in LEGACY_MAGICS
                                or int.from_bytes(head[:4], "big") in LEGACY_MAGICS)


def probe(head: bytes) -> bool:
    """True for an ELF ``ET_CORE`` file with sections and no program headers whose section
    table (when it lies in ``head``) names Xen dump-core sections; also true for the legacy
    header, which the reader refuses by name.

    A normal vmcore always has program headers, so ``e_phnum == 0`` with sections is enough
    when the section table lies beyond ``head``; the reader checks the names.
    """
    if probe_legacy(head):
        return True
    if len(head) < 52 or head[:4] != ELFMAG or head[4] not in (ELFCLASS32, ELFCLASS64) \
            or head[5] not in (ELFDATA2LSB, ELFDATA2MSB):
        return False
    s = elf_structs(head[4], "<" if head[5] == ELFDATA2LSB else ">")
    if len(head) < s.Ehdr.sizeof():
        return False
    eh = s.Ehdr.parse(head[:s.Ehdr.sizeof()])
    if eh.e_type != ET_CORE or eh.e_phnum != 0 or eh.e_shnum == 0:
        return False
    size = s.Shdr.sizeof()
    end = eh.e_shoff + eh.e_shnum * size
    if eh.e_shentsize != size or end > len(head) or eh.e_shstrndx >= eh.e_shnum:
        return True
    shdrs = [s.Shdr.parse(head[eh.e_shoff + k * size:eh.e_shoff + (k + 1) * size])
             for k in range(eh.e_shnum)]
    for sh in shdrs:  # the note section usually lies in the head (xg_core.c writes it next)
        if sh.sh_type == SHT_NOTE and sh.sh_offset + 16 <= len(head):
            if head[sh.sh_offset + 12:sh.sh_offset + 16] == b"Xen\0":
                return True
    strtab = shdrs[eh.e_shstrndx]
    if strtab.sh_offset + strtab.sh_size <= len(head):
        names = head[strtab.sh_offset:strtab.sh_offset + strtab.sh_size]
        return SEC_PAGES.encode() in names or SEC_NOTE.encode() in names
    return True  # the names lie beyond the head (xg_core.c writes them last): let the reader see


@functools.cache
def _p2m_dtype(endian: str) -> np.dtype:
    return np.dtype([("pfn", f"{endian}u8"), ("gmfn", f"{endian}u8")])


def parse_xen_version(desc: bytes, endian: str) -> dict[str, Any] | None:
    """The ``XEN_ELFNOTE_DUMPCORE_XEN_VERSION`` descriptor as a dict, None if too short.

    Its size tells the dumping tool's word size (1276: 32-bit, 1280: 64-bit); a 64-bit tool
    dumping a 32-bit PV guest moves ``pagesize`` 4 bytes earlier (``elfnote_dump_xen_version``),
    so a ``pagesize`` that is not a power of two is looked for there.
    """
    if len(desc) < XEN_VERSION_SIZE_32:
        return None
    i = ints(endian)
    u64 = i.u64.parse
    out: dict[str, Any] = {
        "major": u64(desc[0:8]), "minor": u64(desc[8:16]),
        "extra": strip_c_string(desc[16:32]),
        "compiler": strip_c_string(desc[32:96]), "compile_by": strip_c_string(desc[96:112]),
        "compile_domain": strip_c_string(desc[112:144]),
        "compile_date": strip_c_string(desc[144:176]),
        "capabilities": strip_c_string(desc[176:1200]),
        "changeset": strip_c_string(desc[1200:1264]),
    }
    candidates = [_PAGESIZE_AT_32] if len(desc) < XEN_VERSION_SIZE_64 else [_PAGESIZE_AT_64,
                                                                             _PAGESIZE_AT_32]
    out["pagesize"] = None
    for at in candidates:
        value = u64(desc[at:at + 8])
        if value and value & (value - 1) == 0:
            out["pagesize"] = value
            break
    return out


def xen_version_string(v: dict[str, Any]) -> str:
    """``"4.17.3"`` from a parsed ``XEN_VERSION`` descriptor (``extra`` starts with its dot)."""
    return f"{v['major']}.{v['minor']}{v['extra']}"


class XenCoreReader(PfnIndexReader):
    """Reader of ``xl dump-core`` (xc_core ELF) files."""

    def __init__(self, source: ByteSource, *, strict: bool = True, transport: str = "plain") -> None:
        super().__init__(source, strict=strict)
        path = self.path = source.name
        head = source.pread(0, 64)
        if probe_legacy(head):
            raise UnknownFormatError(
                "unsupported (legacy Xen dump-core format, before Xen 3.0.5: no ELF, no "
                ".note.Xen)", path=path, offset=0, expected="ELF xc_core file",
                got=head[:4])
        ident = read_exact(source, 0, 16, "ELF identification")
        if ident[:4] != ELFMAG or ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise UnknownFormatError("not an ELF file", path=path, offset=0, expected=ELFMAG,
                                     got=ident[:6])
        self.elf_class = ident[4]
        self.endian = endian = "<" if ident[5] == ELFDATA2LSB else ">"
        s = self.structs = elf_structs(self.elf_class, endian)
        eh = self.ehdr = parse_at(s.Ehdr, source.pread(0, s.Ehdr.sizeof()), path=path, offset=0,
                                  what="ELF header")
        if eh.e_type != ET_CORE:
            raise UnknownFormatError("ELF file is not a core dump", path=path, offset=16,
                                     expected=f"e_type {ET_CORE} (ET_CORE)", got=eh.e_type)
        self.sections = self._read_sections()
        names = {name for name, _ in self.sections}
        if SEC_NOTE not in names:
            if SEC_PAGES in names:
                raise UnknownFormatError(
                    "unsupported (legacy Xen dump-core format without .note.Xen)", path=path,
                    offset=0, expected=f"a {SEC_NOTE} section", got=sorted(names))
            # not Xen after all: the generic ELF reader's verdict on such a file
            raise CorruptDumpError(
                "ELF core file has no program headers (and no Xen dump-core sections)",
                path=path, offset=0x38 if self.elf_class == ELFCLASS64 else 0x2C,
                expected="e_phnum > 0, or .note.Xen and .xen_pages sections",
                got=f"e_phnum 0, sections {sorted(n for n in names if n)}")
        self.notes_xen = self._read_notes()
        hdr = self._header()
        self.hvm = hdr.xch_magic == XC_CORE_MAGIC_HVM
        self.nr_vcpus = hdr.xch_nr_vcpus
        page_size = hdr.xch_page_size
        machine = MACHINES.get(eh.e_machine, f"e_machine {eh.e_machine}")
        self.info = DumpInfo(
            format="xen-core", path=path, endian=endian,
            word_size=4 if machine in ("i386", "arm") else 8, machine=machine,
            page_size=page_size, max_pfn=0, transport=transport, nr_cpus=self.nr_vcpus or None,
        )
        self._index(hdr.xch_nr_pages)
        self.info.max_pfn = self.index_max_pfn
        cpu_notes = self._cpu_state()
        self.info.notes = cpu_notes + [Note(b"Xen", n.type, n.desc, n.offset) for n in self.notes_xen]
        self._details()

    # --- structure ------------------------------------------------------------------------
    def section(self, name: str) -> cs.Container | None:
        """The first section header called ``name``."""
        return next((sh for n, sh in self.sections if n == name), None)

    def _shdr_offset(self, sh: cs.Container, field: str) -> int:
        at = {"sh_offset": (0x18, 0x10), "sh_size": (0x20, 0x14)}[field]
        return self.ehdr.e_shoff + sh.index * self.ehdr.e_shentsize + at[self.elf_class == ELFCLASS32]

    def _read_sections(self) -> list[tuple[str, cs.Container]]:
        eh, s, path = self.ehdr, self.structs, self.path
        size = s.Shdr.sizeof()
        if eh.e_shnum == 0 or eh.e_shoff == 0:
            raise UnknownFormatError("ELF core file has neither program nor section headers",
                                     path=path, offset=_ehdr_field(self.elf_class, "e_shnum"),
                                     expected="e_shnum > 0", got=eh.e_shnum)
        if eh.e_shentsize != size:
            raise CorruptDumpError("unexpected section header size", path=path,
                                   offset=_ehdr_field(self.elf_class, "e_shentsize"),
                                   expected=size, got=eh.e_shentsize)
        if eh.e_shnum > MAX_SECTIONS:
            raise CorruptDumpError("too many section headers", path=path,
                                   offset=_ehdr_field(self.elf_class, "e_shnum"),
                                   expected=f"<= {MAX_SECTIONS}", got=eh.e_shnum)
        table = read_exact(self.source, eh.e_shoff, eh.e_shnum * size, "section header table")
        shdrs = []
        for k in range(eh.e_shnum):
            sh = s.Shdr.parse(table[k * size:(k + 1) * size])
            sh.index = k
            shdrs.append(sh)
        if eh.e_shstrndx >= eh.e_shnum:
            raise CorruptDumpError("section name table index out of range", path=path,
                                   offset=_ehdr_field(self.elf_class, "e_shstrndx"),
                                   expected=f"< {eh.e_shnum}", got=eh.e_shstrndx)
        strtab = shdrs[eh.e_shstrndx]
        if strtab.sh_size > MAX_STRTAB:
            raise CorruptDumpError("section name table is implausibly large", path=path,
                                   offset=self._shdr_offset(strtab, "sh_size"),
                                   expected=f"<= {MAX_STRTAB}", got=strtab.sh_size)
        names = read_exact(self.source, strtab.sh_offset, strtab.sh_size,
                           "section name table (.shstrtab, written last)")
        return [(strip_c_string(names[sh.sh_name:]) if sh.sh_name < len(names) else "", sh)
                for sh in shdrs]

    def _section_data(self, sh: cs.Container, name: str, limit: int) -> bytes:
        if sh.sh_size > limit:
            raise CorruptDumpError(f"{name} section is implausibly large", path=self.path,
                                   offset=self._shdr_offset(sh, "sh_size"),
                                   expected=f"<= {limit}", got=sh.sh_size)
        return read_exact(self.source, sh.sh_offset, sh.sh_size, f"{name} section")

    def _read_notes(self) -> list[Note]:
        sh = self.section(SEC_NOTE)
        blob = self._section_data(sh, SEC_NOTE, MAX_NOTE_SECTION)
        return parse_notes(blob, self.endian, base=sh.sh_offset, path=self.path, strict=self.strict)

    def _note(self, type: int) -> Note | None:
        return next((n for n in self.notes_xen if n.name == b"Xen" and n.type == type), None)

    def _header(self) -> cs.Container:
        path = self.path
        note = self._note(XEN_ELFNOTE_DUMPCORE_HEADER)
        if note is None:
            raise CorruptDumpError("no XEN_ELFNOTE_DUMPCORE_HEADER note in .note.Xen", path=path,
                                   offset=self.section(SEC_NOTE).sh_offset,
                                   expected="a 'Xen' note of type 0x2000001",
                                   got=[hex(n.type) for n in self.notes_xen])
        desc_at = note.offset + 16  # "Xen\0" keeps the descriptor at +16
        hdr = parse_at(xen_dumpcore_header_struct(self.endian), note.desc, path=path,
                       offset=desc_at, what="dump-core header note")
        if hdr.xch_magic not in (XC_CORE_MAGIC, XC_CORE_MAGIC_HVM):
            raise CorruptDumpError("bad dump-core header magic", path=path, offset=desc_at,
                                   expected="0xf00febed (PV) or 0xf00febee (HVM)",
                                   got=hdr.xch_magic)
        ps = hdr.xch_page_size
        if ps & (ps - 1) or not 1 << 10 <= ps <= 1 << 18:
            raise CorruptDumpError("bad page size in the dump-core header", path=path,
                                   offset=desc_at + 24, expected="a power of two, 1 KiB-256 KiB",
                                   got=ps)
        if hdr.xch_nr_vcpus > MAX_VCPUS:
            raise CorruptDumpError("implausible vCPU count in the dump-core header", path=path,
                                   offset=desc_at + 8, expected=f"<= {MAX_VCPUS}",
                                   got=hdr.xch_nr_vcpus)
        fmt = self._note(XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION)
        self.format_version = None
        if fmt is not None and len(fmt.desc) >= 8:
            self.format_version = ints(self.endian).u64.parse(fmt.desc[:8])
            if self.format_version >> 32:
                raise UnknownFormatError("unsupported Xen dump-core format major version",
                                         path=path, offset=fmt.offset + 16,
                                         expected="major 0", got=self.format_version >> 32)
        return hdr

    # --- page index -----------------------------------------------------------------------
    def _index(self, nr_pages: int) -> None:
        path, ps, size = self.path, self.info.page_size, self.source.size
        pages = self.section(SEC_PAGES)
        p2m, pfn = self.section(SEC_P2M), self.section(SEC_PFN)
        table = p2m if p2m is not None else pfn
        if pages is None or table is None:
            missing = SEC_PAGES if pages is None else f"{SEC_P2M} or {SEC_PFN}"
            raise CorruptDumpError(f"dump-core file has no {missing} section", path=path,
                                   offset=self.ehdr.e_shoff, expected=missing,
                                   got=sorted(n for n, _ in self.sections if n))
        entry = 16 if table is p2m else 8
        tname = SEC_P2M if table is p2m else SEC_PFN
        self.pfn_table = tname
        if nr_pages * entry > table.sh_size:
            raise CorruptDumpError(f"{tname} is smaller than the header's page count", path=path,
                                   offset=self._shdr_offset(table, "sh_size"),
                                   expected=f">= {nr_pages * entry} bytes", got=table.sh_size)
        if nr_pages * ps > pages.sh_size:
            raise CorruptDumpError(f"{SEC_PAGES} is smaller than the header's page count",
                                   path=path, offset=self._shdr_offset(pages, "sh_size"),
                                   expected=f">= {nr_pages * ps} bytes", got=pages.sh_size)
        if pages.sh_offset % ps:
            raise CorruptDumpError(f"{SEC_PAGES} is not page aligned", path=path,
                                   offset=self._shdr_offset(pages, "sh_offset"),
                                   expected=f"a multiple of {ps}", got=pages.sh_offset)
        # the table must be in the file; pages past the end are lost (strict: an error)
        have = nr_pages
        if table.sh_offset + nr_pages * entry > size:
            if self.strict or table.sh_offset > size:
                raise TruncatedDumpError(
                    f"file is truncated: {tname} ends past the end of the file", path=path,
                    offset=min(size, table.sh_offset + nr_pages * entry),
                    expected=f"file size >= {table.sh_offset + nr_pages * entry:#x}",
                    got=f"{size:#x}")
            have = (size - table.sh_offset) // entry
        if self.strict and pages.sh_offset + nr_pages * ps > size:
            raise TruncatedDumpError(
                f"file is truncated: {SEC_PAGES} ends past the end of the file", path=path,
                offset=size, expected=f"file size >= {pages.sh_offset + nr_pages * ps:#x}",
                got=f"{size:#x}")
        raw = self.source.pread(table.sh_offset, have * entry)
        if entry == 16:
            rows = np.frombuffer(raw, _p2m_dtype(self.endian), have)
            pfns = rows["pfn"].astype(np.uint64)
            self._machine_frames(rows)
        else:
            pfns = np.frombuffer(raw, f"{self.endian}u8", have).astype(np.uint64)
        idx = np.arange(have, dtype=np.int64)
        valid = pfns != np.uint64(INVALID_PFN)
        self.invalid_entries = int(have - int(valid.sum()))
        bad = valid & (pfns >= np.uint64(MAX_PFN))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            if self.strict:
                raise CorruptDumpError(f"{tname} entry {k} names an impossible frame", path=path,
                                       offset=table.sh_offset + k * entry,
                                       expected=f"pfn < {MAX_PFN:#x} or ~0", got=int(pfns[k]))
            valid &= ~bad
        off = pages.sh_offset + idx[valid] * ps
        pfn_sorted, off_sorted, self.duplicates = last_wins(pfns[valid].astype(np.int64), off)
        self.unordered = bool(np.any(np.diff(pfns[valid].astype(np.int64)) < 0))
        self.set_index(pfn_sorted, off_sorted)

    def _machine_frames(self, rows: np.ndarray) -> None:
        """PV guests: their page tables hold machine frames (``gmfn``), which the walker maps
        back to the guest's frames through ``.xen_p2m`` (:attr:`frame_map`)."""
        ok = (rows["pfn"] != INVALID_PFN) & (rows["gmfn"] != INVALID_PFN) & (rows["pfn"] < MAX_PFN)
        gmfns, pfns = rows["gmfn"][ok].astype(np.uint64), rows["pfn"][ok].astype(np.int64)
        order = np.argsort(gmfns, kind="stable")
        self._gmfns, self._gmfn_pfns = gmfns[order], pfns[order]
        self.frame_map = self.machine_to_phys

    def machine_to_phys(self, maddr: int) -> int:
        """The guest physical address of machine address ``maddr`` (PV guests).

        :raises KdumpToolError: the machine frame is not one of the guest's
        """
        ps = self.info.page_size
        mfn = maddr // ps
        k = int(np.searchsorted(self._gmfns, np.uint64(mfn)))
        if k == len(self._gmfns) or int(self._gmfns[k]) != mfn:
            raise KdumpToolError(f"machine frame {mfn:#x}, which is not one of the guest's "
                                 f"({SEC_P2M})")
        return int(self._gmfn_pfns[k]) * ps + maddr % ps

    # --- CPU state, details ---------------------------------------------------------------
    def _cpu_state(self) -> list[Note]:
        self.vcpu_cr3: list[int] = []
        self.cpu_state = "none"
        sh = self.section(SEC_PRSTATUS)
        layout = context_layout(self.info.machine, self.hvm)
        if sh is None or not self.nr_vcpus:
            return []
        if layout is None:
            self.cpu_state = f"not converted (no vcpu_guest_context layout for {self.info.machine})"
            return []
        stride = sh.sh_entsize or sh.sh_size // self.nr_vcpus
        if stride <= 0 or stride * self.nr_vcpus > sh.sh_size:
            if self.strict:
                raise CorruptDumpError(f"{SEC_PRSTATUS} does not hold one context per vCPU",
                                       path=self.path, offset=self._shdr_offset(sh, "sh_size"),
                                       expected=f"{self.nr_vcpus} x {stride} bytes",
                                       got=sh.sh_size)
            self.cpu_state = "damaged"
            return []
        blob = self._section_data(sh, SEC_PRSTATUS, MAX_VCPUS * 8192)
        notes, self.vcpu_cr3 = prstatus_notes(blob, self.nr_vcpus, stride, layout, hvm=self.hvm,
                                              endian=self.endian)
        self.cpu_state = f"{len(notes)} vcpu_guest_context ({layout}) as NT_PRSTATUS"
        return notes

    def _details(self) -> None:
        d = self.info.details
        d["xen_domain"] = "HVM" if self.hvm else "PV"
        d["pfn_space"] = ("guest physical frames (auto-translated, .xen_pfn)" if self.pfn_table == SEC_PFN
                          else "pseudo-physical frames of a PV guest (.xen_p2m maps them to machine "
                               "frames)")
        d["nr_vcpus"] = self.nr_vcpus
        ver = self._note(XEN_ELFNOTE_DUMPCORE_XEN_VERSION)
        parsed = parse_xen_version(ver.desc, self.endian) if ver is not None else None
        if parsed is not None:
            d["xen_version"] = xen_version_string(parsed)
            d["xen_changeset"] = parsed["changeset"]
            d["xen_capabilities"] = parsed["capabilities"]
        if self.format_version is not None:
            d["dumpcore_format"] = f"{self.format_version >> 32}.{self.format_version & 0xFFFFFFFF}"
        d["has_none_note"] = self._note(XEN_ELFNOTE_DUMPCORE_NONE) is not None
        d["shared_info"] = self.section(SEC_SHARED_INFO) is not None
        d["invalid_entries"] = self.invalid_entries
        d["duplicate_pfns"] = self.duplicates
        d["pfns_unordered"] = self.unordered
        d["cpu_state"] = self.cpu_state
        if self.vcpu_cr3:
            d["vcpu_cr3"] = [f"{c:#x}" for c in self.vcpu_cr3]


#: This format in the registry (:mod:`kdumptool.formats`).
ENTRY = ReaderEntry("xen-core", probe, XenCoreReader, "ELF core", order=20,
                    lost_pages=XenCoreReader.lost_pages)  # type: ignore[arg-type]
