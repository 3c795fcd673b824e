"""QEMU savevm / migration streams (magic ``QEVM``, version 3), plain or in libvirt's wrapper.

Spec: SPEC.md "QEMU savevm / migration streams". Upstream QEMU (7.2 and later):

* ``migration/savevm.c``: the section types and ``QEMU_VM_SECTION_FOOTER``;
  ``save_section_header`` / ``save_section_footer``; ``vmstate_configuration`` (machine type
  and its subsections); ``qemu_savevm_state_complete_precopy*`` (iterative sections end with
  ``SECTION_END`` before the device sections are sent as ``SECTION_FULL``, then ``EOF`` and
  the JSON description);
* ``migration/ram.c`` for the RAM section (:mod:`kdumptool.formats.qemu_ram`); crash
  ``qemu-load.c`` and volatility3 ``layers/qemu.py`` read the same records.

The reader walks the stream once at open (:class:`~kdumptool.formats.qemu_stream.Cursor`):
sections, configuration and footers here, the RAM records in
:class:`~kdumptool.formats.qemu_ram.RamIndex`, which keeps, for every page of the guest's main
RAM block, the file offset of its latest data (or the fill byte of a zero page) in NumPy
arrays; page data is read per window with ``pread``. Device sections are skipped with the sizes
of the trailing JSON description, each confirmed by the section footer that follows it (without
a description, by searching for that footer); see :mod:`kdumptool.formats.qemu_vmstate`.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import construct as cs
import numpy as np

from kdumptool.dump import DumpInfo, DumpReader, Note, PageBatch, Utsname
from kdumptool.errors import (
    CorruptDumpError,
    CorruptPageError,
    DumpError,
    KdumpToolError,
    StreamCutError,
    TruncatedDumpError,
    UnknownFormatError,
)
from kdumptool.formats import libvirt_save, qemu_vmstate
from kdumptool.formats.notes import parse_notes, vmcoreinfo_from_notes
from kdumptool.formats.qemu_ram import (
    FOUR_GIB,
    MAX_RAM,
    VGA_HOLE,
    RamBlock,
    RamIndex,
    machine_family,
    ram_split,
)
from kdumptool.formats.qemu_stream import (
    COMMAND,
    CONFIGURATION,
    DEFAULT_PAGE_BITS,
    END,
    EOF,
    FILE_VERSION,
    FILE_VERSION_COMPAT,
    FOOTER,
    FULL,
    K_FILL,
    K_RAW,
    K_XBZRLE,
    K_ZLIB,
    MAGIC,
    MAX_CAPABILITIES,
    MAX_DEVICE_SECTION,
    MAX_MACHINE_NAME,
    PART,
    SECTION_NAMES,
    START,
    SUBSECTION,
    VMDESCRIPTION,
    Cursor,
    schemas,
)
from kdumptool.formats.registry import ReaderEntry
from kdumptool.schema import parse_at
from kdumptool.transport.source import ByteSource, read_exact

__all__ = ["FULL", "QemuSavevmReader", "RamBlock", "Section", "probe", "ram_split"]


def probe(head: bytes) -> bool:
    """True if ``head`` starts a QEMU migration stream or a libvirt save image."""
    return head[:4] == MAGIC or libvirt_save.probe(head)


@dataclass(frozen=True)
class Section:
    """One SECTION_START / SECTION_FULL (device) section."""

    type: int
    section_id: int
    idstr: str
    instance_id: int
    version_id: int
    offset: int  # of the section type byte
    content: int  # offset of the content
    size: int | None  # content bytes (device sections)


class QemuSavevmReader(DumpReader):
    """Reader of QEMU migration streams (``migrate "exec:cat > FILE"``, ``virsh save``)."""

    def __init__(self, source: ByteSource, *, strict: bool = True, transport: str = "plain") -> None:
        super().__init__(source, strict=strict)
        self.path = path = source.name
        self.libvirt: libvirt_save.LibvirtHeader | None = None
        base = 0
        if libvirt_save.probe(source.pread(0, 16)):
            self.libvirt = libvirt_save.parse_header(source)
            base = self.libvirt.stream_offset
        s = schemas()
        hdr = parse_at(s["file_header"], read_exact(source, base, 8, "QEMU stream header"),
                       path=path, offset=base, what="QEMU stream header")
        if hdr.magic != MAGIC:
            raise UnknownFormatError("not a QEMU migration stream", path=path, offset=base,
                                     expected=MAGIC, got=hdr.magic)
        if hdr.version != FILE_VERSION:
            old = " (the obsolete pre-0.10 format)" if hdr.version == FILE_VERSION_COMPAT else ""
            raise UnknownFormatError(f"unsupported QEMU stream version{old}", path=path,
                                     offset=base + 4, expected=FILE_VERSION, got=hdr.version)
        self.base = base
        self.page_bits = DEFAULT_PAGE_BITS
        self.machine_type: str | None = None
        self.capabilities: list[str] = []
        self.ram = RamIndex(path, strict=strict)
        self.sections: list[Section] = []
        self.counts: Counter[str] = Counter()
        self.ram_sid: int | None = None
        self.ram_done = False
        self.footers: bool | None = None
        self.complete = False
        self.problem: str | None = None
        self.trailing = 0
        self._dev_data: dict[tuple[str, int], bytes] = {}
        tail_len = min(source.size - base - 8, qemu_vmstate.MAX_VMDESC)
        tail_off = source.size - tail_len
        self.vmdesc = qemu_vmstate.find_vmdesc(source.pread(tail_off, tail_len), tail_off, source.size)
        self._walk_guarded(base + 8)
        self._build_layout()
        self._build_index()
        self.info = DumpInfo(
            format="qemu-savevm", path=path, endian="<", word_size=8, machine="x86_64",
            page_size=self.page_size_, max_pfn=self._max_pfn, transport=transport,
            header_version=FILE_VERSION, incomplete=self.problem is not None,
        )
        self._device_state()
        self.info.details.update(self._details())

    # --- the walk ------------------------------------------------------------------------------

    @property
    def blocks(self) -> dict[bytes, RamBlock]:
        """The RAM blocks of the ``MEM_SIZE`` record, by name."""
        return self.ram.blocks

    @property
    def _main(self) -> bytes | None:
        return self.ram.main

    @property
    def page_size_(self) -> int:
        """The target page size (``configuration/target-page-bits``, 4 KiB by default)."""
        return 1 << self.page_bits

    def _walk_guarded(self, pos: int) -> None:
        cur = Cursor(self.source, pos)
        try:
            self._walk(cur)
        except StreamCutError as cut:
            err = TruncatedDumpError(
                f"stream ends inside the {cut.what}" + ("" if self.ram_done else
                                                         " (before the end of the RAM section)"),
                path=self.path, offset=cut.offset, expected=f"{cut.need} more bytes",
                got=f"file size {self.source.size:#x}")
            if self.strict or self._main is None:
                raise err from None
            self.problem = str(err)
        except DumpError as err:
            if err.path is None:
                err.path = self.path
            if self.strict or self._main is None:
                raise
            self.problem = str(err)

    def _corrupt(self, message: str, offset: int, expected: object, got: object) -> CorruptDumpError:
        return CorruptDumpError(message, path=self.path, offset=offset, expected=expected, got=got)

    def _walk(self, cur: Cursor) -> None:
        while True:
            at = cur.pos
            t = cur.u8("section type")
            if t == EOF:
                self.eof_offset = at
                self._after_eof(cur)
                self.complete = True
                return
            if t == CONFIGURATION:
                self._configuration(cur, at)
                continue
            if t == COMMAND:
                cmd = cur.parse("command", "command header", 4)
                cur.skip(cmd.len, "command data")
                self.counts["COMMAND"] += 1
                continue
            if t in (START, FULL):
                h = cur.parse("section_start", "section header", 4 + 1 + 255 + 8)
                sid, idstr = h.section_id, h.idstr
                self.counts[SECTION_NAMES[t]] += 1
                if idstr == "ram":
                    if t != START or self.ram_sid is not None:
                        raise self._corrupt("unexpected 'ram' section", at,
                                            "one SECTION_START of 'ram'", SECTION_NAMES[t])
                    self.ram_sid = sid
                    self.sections.append(Section(t, sid, idstr, h.instance_id, h.version_id, at,
                                                 cur.pos, None))
                    self.ram.read_section(cur, setup=True, page_bits=self.page_bits)
                elif t == START:
                    raise UnknownFormatError(
                        f"iterative section {idstr!r} (block or dirty-bitmap migration) is not "
                        "supported", path=self.path, offset=at, expected="'ram'", got=idstr)
                else:
                    self._device(cur, at, h)
            elif t in (PART, END):
                sid = cur.parse("section_part", "section header", 4).section_id
                self.counts[SECTION_NAMES[t]] += 1
                if sid != self.ram_sid:
                    raise self._corrupt(f"{SECTION_NAMES[t]} of a section that was not started",
                                        at + 1, f"section id {self.ram_sid}", sid)
                self.ram.read_section(cur, setup=False, page_bits=self.page_bits)
                if t == END:
                    self.ram_done = True
            else:
                raise self._corrupt("bad section type", at, "0 (EOF), 1-4 (section), 7, 8", t)
            self._footer(cur, sid)

    def _after_eof(self, cur: Cursor) -> None:
        """What follows EOF must be the JSON description (or nothing); a description cut short
        means a truncated file."""
        if self.vmdesc is not None and self.vmdesc.marker_offset == cur.pos:
            return
        head = cur.peek(5)
        self.trailing = self.source.size - cur.pos
        if head[:1] == bytes([VMDESCRIPTION]):
            need = 5 + (int.from_bytes(head[1:5], "big") if len(head) == 5 else 0)
            if len(head) < 5 or cur.pos + need > self.source.size:
                raise StreamCutError(cur.pos, need, "device description (JSON) after EOF")

    def _footer(self, cur: Cursor, sid: int) -> None:
        at = cur.pos
        head = cur.peek(5)
        if self.footers is None:  # machine types before 2.4 wrote none
            self.footers = head[:1] == bytes([FOOTER])
        if not self.footers:
            return
        if len(head) < 5:
            raise StreamCutError(at, 5, "section footer")
        if head[0] != FOOTER or int.from_bytes(head[1:5], "big") != sid:
            raise self._corrupt("section footer missing or naming another section", at,
                                f"0x7e + section id {sid}", head)
        cur.skip(5, "section footer")

    def _configuration(self, cur: Cursor, at: int) -> None:
        n = cur.u32("configuration length")
        if not 0 < n <= MAX_MACHINE_NAME:
            raise self._corrupt("implausible machine type length", at + 1,
                                f"1..{MAX_MACHINE_NAME}", n)
        self.machine_type = cur.take(n, "machine type").decode("latin-1")
        while cur.peek(1) == bytes([SUBSECTION]):
            sub_at = cur.pos
            cur.skip(1, "subsection")
            sub = cur.parse("subsection", "configuration subsection header", 1 + 255 + 4)
            if sub.name == "configuration/target-page-bits":
                bits = cur.u32("target page bits")
                if not 10 <= bits <= 16:
                    raise self._corrupt("implausible target page bits", sub_at, "10..16", bits)
                self.page_bits = bits
            elif sub.name == "configuration/capabilities":
                count = cur.u32("capability count")
                if count > MAX_CAPABILITIES:
                    raise self._corrupt("implausible capability count", sub_at,
                                        f"<= {MAX_CAPABILITIES}", count)
                for _ in range(count):
                    n = cur.u8("capability name length")
                    self.capabilities.append(cur.take(n, "capability name").decode("latin-1"))
            elif sub.name == "configuration/uuid":
                cur.take(16, "VM UUID")
            else:
                raise UnknownFormatError("unknown configuration subsection", path=self.path,
                                         offset=sub_at, expected="target-page-bits, "
                                         "capabilities or uuid", got=sub.name)
        if {"mapped-ram", "x-mapped-ram"} & set(self.capabilities):
            raise UnknownFormatError("QEMU's mapped-ram stream layout is not supported",
                                     path=self.path, offset=at, got=self.capabilities)

    # --- device sections -------------------------------------------------------------------

    def _device(self, cur: Cursor, at: int, h: cs.Container) -> None:
        """Skip (and keep the bytes of the few we decode) one SECTION_FULL."""
        content = cur.pos
        desc = self.vmdesc.find(h.idstr, h.instance_id) if self.vmdesc else None
        size = qemu_vmstate.desc_size(desc) if desc is not None else None
        if size is not None and not (size <= MAX_DEVICE_SECTION and self._ends_at(cur, size, h)):
            size = None
        if size is None:
            size = self._search_footer(cur, h.section_id, at, h.idstr)
        if h.idstr in ("cpu", "vmcoreinfo", "mc146818rtc"):
            self._dev_data[(h.idstr, h.instance_id)] = cur.take(size, f"{h.idstr} state")
        else:
            cur.skip(size, f"{h.idstr} state")
        self.sections.append(Section(FULL, h.section_id, h.idstr, h.instance_id, h.version_id,
                                     at, content, size))

    def _ends_at(self, cur: Cursor, size: int, h: cs.Container) -> bool:
        """Does what follows ``size`` content bytes look like the end of this section?"""
        after = cur.peek(size + 5)[size:]
        if self.footers is False:
            return len(after) == 0 or after[0] in (EOF, FULL, COMMAND, PART, END)
        return len(after) == 5 and after[0] == FOOTER and int.from_bytes(after[1:], "big") == h.section_id

    def _search_footer(self, cur: Cursor, sid: int, at: int, idstr: str) -> int:
        """Content size of a device section without description: up to the first footer of this
        section that is followed by something that can follow a section."""
        if not self.footers:
            raise UnknownFormatError(
                f"cannot find the end of device section {idstr!r}: the stream has neither a "
                "device description nor section footers", path=self.path, offset=at)
        pattern = bytes([FOOTER]) + sid.to_bytes(4, "big")
        want = 1 << 16
        while True:
            data = cur.peek(want)
            pos = data.find(pattern)
            while pos >= 0:
                if self._plausible_next(data, pos + 5, len(data) < want):
                    return pos
                pos = data.find(pattern, pos + 1)
            if len(data) < want:
                raise StreamCutError(cur.pos + len(data), 5, f"{idstr!r} state (no section footer found)")
            if want >= MAX_DEVICE_SECTION:
                raise self._corrupt(f"no section footer for device section {idstr!r}", at,
                                    f"a footer within {MAX_DEVICE_SECTION:#x} bytes", "none")
            want *= 4

    def _plausible_next(self, data: bytes, p: int, at_end: bool) -> bool:
        if p >= len(data):
            return at_end
        t = data[p]
        if t == EOF:
            return p + 1 == len(data) and at_end or data[p + 1:p + 2] == bytes([VMDESCRIPTION])
        if t == COMMAND:
            return True
        if t == FULL:
            n = data[p + 5] if p + 5 < len(data) else 0
            name = data[p + 6:p + 6 + n]
            return n > 0 and len(name) == n and all(0x20 <= c < 0x7F for c in name)
        return False

    # --- layout and index ------------------------------------------------------------------

    def _build_layout(self) -> None:
        if self._main is None:  # a stream cut before the block list has no RAM (strict raised)
            raise TruncatedDumpError("stream ends before its RAM block list", path=self.path,
                                     offset=self.source.size)
        ram = self.blocks[self._main].used_length
        ps = self.page_size_
        if ram > MAX_RAM:
            raise CorruptDumpError("implausible guest RAM size", path=self.path,
                                   offset=self.sections[0].content if self.sections else None,
                                   expected=f"<= {MAX_RAM:#x}", got=f"{ram:#x}")
        below, above = ram_split(self.machine_type or "pc", ram)
        self.split_source = "machine type" if self.machine_type else "assumed pc (no machine type)"
        cmos = self._dev_data.get(("mc146818rtc", 0))
        if cmos is not None and machine_family(self.machine_type or "pc")[0] != "isapc":
            desc = self.vmdesc.find("mc146818rtc", 0) if self.vmdesc else None
            split = qemu_vmstate.cmos_memory_split(cmos, desc)
            if split is not None and sum(split) == ram and split != (below, above):
                below, above = split
                self.split_source = "CMOS (max-ram-below-4g was set)"
            elif split is not None and split == (below, above):
                self.split_source += ", confirmed by the CMOS"
        self.below_4g, self.above_4g = below, above
        self._below_pages = below // ps
        self._high = FOUR_GIB // ps
        lo, hi = VGA_HOLE[0] // ps, VGA_HOLE[1] // ps
        runs = [(0, min(self._below_pages, lo))]
        if self._below_pages > hi:
            runs.append((hi, self._below_pages))
        if above:
            runs.append((self._high, self._high + above // ps))
        self._runs = [(a, b) for a, b in runs if b > a]
        self._max_pfn = self._runs[-1][1] if self._runs else 0

    def _build_index(self) -> None:
        found = self.ram.latest(self._below_pages, self._high, self.page_size_)
        self._records = found.records
        self._pfn, self._loc_a, self._kind_a, self._clen_a = found.pfn, found.loc, found.kind, found.clen
        # pages a cut or damaged stream never delivered are lost, not excluded
        self._missing_lost = self.problem is not None and not self.ram_done

    # --- device state: CPUs, VMCOREINFO ------------------------------------------------------

    def _device_state(self) -> None:
        info = self.info
        notes: list[Note] = []
        cpus = sorted(k[1] for k in self._dev_data if k[0] == "cpu")
        self.cpu_state = "none"
        for index in cpus:
            desc = self.vmdesc.find("cpu", index) if self.vmdesc else None
            cpu = qemu_vmstate.parse_x86_cpu(self._dev_data[("cpu", index)], index, desc)
            if cpu is None:
                if desc is not None and qemu_vmstate.field_layout(desc, ()).get("env.regs", (0, 0))[1] == 4:
                    info.machine, info.word_size = "i386", 4
                self.cpu_state = "not decoded"
                notes = []
                break
            notes += qemu_vmstate.cpu_notes(cpu)
            self.cpu_state = "decoded"
        prstatus = [n for n in notes if n.name == b"CORE"]
        notes = prstatus + [n for n in notes if n.name == b"QEMU"]  # QEMU's order
        info.nr_cpus = len(cpus) or None
        self.vmcoreinfo_source = "none"
        vmci_dev = self._dev_data.get(("vmcoreinfo", 0))
        if vmci_dev is not None:
            desc = self.vmdesc.find("vmcoreinfo", 0) if self.vmdesc else None
            where = qemu_vmstate.vmcoreinfo_location(vmci_dev, desc)
            if where is not None:
                try:
                    blob = self.read(*where)
                except KdumpToolError:
                    blob = b""
                found = [n for n in parse_notes(blob, "<", strict=False) if n.name == b"VMCOREINFO"]
                if found:
                    notes.append(Note(b"VMCOREINFO", 0, found[0].desc))
                    self.vmcoreinfo_source = f"vmcoreinfo device (guest note at {where[0]:#x})"
        info.notes = notes
        vmci = vmcoreinfo_from_notes(notes)
        info.vmcoreinfo = vmci
        if vmci is not None:
            if vmci.osrelease:
                info.utsname = Utsname(sysname="Linux", release=vmci.osrelease, machine=info.machine)
            if vmci.has("NUMBER(phys_base)"):
                info.phys_base = vmci.number("phys_base") % (1 << 64)
            if vmci.crash_time is not None:
                info.timestamp = (vmci.crash_time, 0)

    def _details(self) -> dict[str, Any]:
        main = self.blocks[self._main] if self._main else None
        d: dict[str, Any] = {
            "machine_type": self.machine_type or "unknown",
            "ram_block": main.name if main else "",
            "below_4g": f"{self.below_4g:#x}",
            "above_4g": f"{self.above_4g:#x}",
            "ram_split_from": self.split_source,
            "ram_blocks": [f"{b.name}: {b.used_length:#x} bytes, {b.pages} pages + {b.zero} zero"
                           + (" (mapped)" if n == self._main else " (not mapped)")
                           for n, b in self.blocks.items()],
            "ram_records": self._records,
            "sections": [f"{k} x{v}" for k, v in sorted(self.counts.items())],
            "devices": [f"{s.idstr}#{s.instance_id} v{s.version_id}: {s.size} bytes"
                        for s in self.sections if s.type == FULL][:256],
            "section_footers": bool(self.footers),
            "vmdesc": self.vmdesc is not None,
            "complete": self.complete,
            "cpu_state": self.cpu_state,
            "vmcoreinfo_from": self.vmcoreinfo_source,
        }
        if self.capabilities:
            d["capabilities"] = list(self.capabilities)
        if self.trailing:
            d["trailing_bytes"] = self.trailing
        if self.problem:
            d["problem"] = self.problem
        if self.libvirt is not None:
            lv = self.libvirt
            d["libvirt"] = (f"version {lv.version}, {'partial' if lv.partial else 'complete'}, "
                            f"stream at {lv.stream_offset:#x}, was_running {int(lv.was_running)}")
            if lv.domain_name:
                d["libvirt_domain"] = lv.domain_name
            if lv.partial:
                self.info.incomplete = True
        return d

    # --- page access -------------------------------------------------------------------------

    def count_pages(self) -> tuple[int, int]:
        """``(pages of the mapped RAM runs, pages with a record in the stream)``."""
        return sum(b - a for a, b in self._runs), len(self._pfn)

    def data_windows(self, window: int | None = None) -> Iterator[tuple[int, int]]:
        """Windows holding pages with data (and, for a cut stream, the RAM it never sent)."""
        window = window or self.window_pages
        if not self._missing_lost:
            for w in np.unique(self._pfn // window).tolist():
                yield w * window, min(window, self.max_pfn - w * window)
            return
        pos = 0
        for a, b in self._runs:
            start = max(pos, a - a % window)
            while start < b:
                yield start, min(window, self.max_pfn - start)
                start += window
            pos = max(pos, start)

    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """RAM (the main block's guest-physical runs) and present (a record of the page was
        found) bits of the window.
        """
        ram = np.zeros(count, dtype=bool)
        for a, b in self._runs:
            lo, hi = max(a - start, 0), min(b - start, count)
            if lo < hi:
                ram[lo:hi] = True
        present = np.zeros(count, dtype=bool)
        lo, hi = np.searchsorted(self._pfn, [start, start + count])
        present[self._pfn[lo:hi] - start] = True
        return ram, present

    def read_batch(self, start: int, count: int) -> PageBatch:
        """The pages of the window from their latest record: raw pages read in clusters, zero
        pages filled, compressed pages inflated; XBZRLE and undecodable pages are corrupt.

        :raises CorruptPageError: (strict) a compressed page does not inflate to one page
        """
        ps = self.page_size
        ram, present = self.bitmaps(start, count)
        lo, hi = (int(x) for x in np.searchsorted(self._pfn, [start, start + count]))
        rel = self._pfn[lo:hi] - start
        kind, loc, clen = self._kind_a[lo:hi], self._loc_a[lo:hi], self._clen_a[lo:hi]
        data = np.empty((hi - lo, ps), dtype=np.uint8)
        good = np.ones(hi - lo, dtype=bool)
        corrupt: dict[int, str] = {}
        fill = np.flatnonzero(kind == K_FILL)
        data[fill] = loc[fill].astype(np.uint8)[:, None]
        self._read_raw(data, np.flatnonzero(kind == K_RAW), loc)
        for r in np.flatnonzero(kind >= K_ZLIB).tolist():
            pfn = start + int(rel[r])
            if kind[r] == K_XBZRLE:
                why = "XBZRLE-encoded page (delta against an earlier copy) not supported"
            else:
                raw = self.source.pread(int(loc[r]), int(clen[r]))
                try:
                    page = zlib.decompressobj().decompress(raw, ps + 1)
                except zlib.error as exc:
                    page, why = b"", f"zlib: {exc}"
                else:
                    why = f"decompresses to {len(page)} bytes, not {ps}"
                if len(page) == ps:
                    data[r] = np.frombuffer(page, dtype=np.uint8)
                    continue
            if self.strict:
                raise CorruptPageError(why, pfn=pfn, path=self.path, offset=int(loc[r]))
            good[r] = False
            corrupt[pfn] = why
        if not good.all():
            present[rel[~good]] = False
            data = data[good]
        lost = ram & ~present if self._missing_lost else np.zeros(count, dtype=bool)
        if corrupt:
            lost[[p - start for p in corrupt]] = False
        return PageBatch(start, count, ram, present, data, lost, corrupt)

    def _read_raw(self, data: np.ndarray, rows: np.ndarray, loc: np.ndarray) -> None:
        """Copy raw pages into ``data[rows]``: one pread per cluster of nearby pages, and one
        strided NumPy copy per run of back-to-back ``CONTINUE`` records."""
        if not len(rows):
            return
        ps = self.page_size
        order = np.argsort(loc[rows], kind="stable")
        rows, offs = rows[order], loc[rows][order]
        gaps = np.flatnonzero(np.diff(offs) > (1 << 20)) + 1
        for c_rows, c_offs in zip(np.split(rows, gaps), np.split(offs, gaps), strict=True):
            base = int(c_offs[0])
            blob = np.frombuffer(self.source.pread(base, int(c_offs[-1]) - base + ps), dtype=np.uint8)
            rel = c_offs - base
            stride = ps + 8  # a PAGE | CONTINUE record: 8-byte header, then the page
            breaks = np.flatnonzero(np.diff(rel) != stride) + 1
            for r_rows, r_rel in zip(np.split(c_rows, breaks), np.split(rel, breaks), strict=True):
                first = int(r_rel[0])
                if len(r_rows) == 1:
                    data[r_rows[0]] = blob[first:first + ps]
                else:
                    view = np.lib.stride_tricks.as_strided(
                        blob[first:], shape=(len(r_rows), ps), strides=(stride, 1), writeable=False)
                    data[r_rows] = view


#: This format in the registry (:mod:`kdumptool.formats`).
ENTRY = ReaderEntry("qemu-savevm", probe, QemuSavevmReader, "'QEVM', 'LibvirtQemudSave'", order=50)
