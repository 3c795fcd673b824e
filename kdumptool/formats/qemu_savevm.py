"""QEMU savevm / migration streams (magic ``QEVM``, version 3), plain or in libvirt's wrapper.

Spec: SPEC.md "QEMU savevm / migration streams". Upstream QEMU (7.2 and later):

* ``migration/savevm.c``: ``QEMU_VM_FILE_MAGIC``, ``QEMU_VM_FILE_VERSION``, the section types
  ``QEMU_VM_EOF`` .. ``QEMU_VM_COMMAND`` and ``QEMU_VM_SECTION_FOOTER``;
  ``save_section_header`` / ``save_section_footer``; ``vmstate_configuration`` (machine type
  and its subsections); ``qemu_savevm_state_complete_precopy*`` (iterative sections end with
  ``SECTION_END`` before the device sections are sent as ``SECTION_FULL``, then ``EOF`` and
  the JSON description);
* ``migration/ram.c``: ``RAM_SAVE_FLAG_*``; ``ram_save_setup`` (the ``MEM_SIZE`` record and the
  RAM block list); ``save_page_header`` (``u64 offset | flags``, then the block name unless
  ``CONTINUE``); ``ram_load_precopy`` (how each record is read back; a later copy of a page
  replaces an earlier one);
* ``hw/i386/pc_piix.c`` / ``pc_q35.c`` (``pc_init1`` / ``pc_q35_init``: how ``pc.ram`` is split
  below and above 4 GiB) and ``hw/i386/pc.c`` (``pc_memory_init``: the part above is mapped at
  4 GiB); crash ``qemu-load.c`` and volatility3 ``layers/qemu.py`` read the same records.

The reader walks the stream once at open and keeps, for every page of the guest's main RAM
block, the file offset of its latest data (or the fill byte of a zero page) in NumPy arrays;
page data is read per window with ``pread``. Device sections are skipped with the sizes of the
trailing JSON description, each confirmed by the section footer that follows it (without a
description, by searching for that footer); see :mod:`kdumptool.formats.qemu_vmstate`.
"""

from __future__ import annotations

import functools
import io
import re
import struct
import zlib
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import construct as cs
import numpy as np

from kdumptool.dump import DumpInfo, DumpReader, Note, PageBatch, Utsname
from kdumptool.errors import (
    CorruptDumpError,
    CorruptPageError,
    DumpError,
    KdumpToolError,
    TruncatedDumpError,
    UnknownFormatError,
)
from kdumptool.formats import libvirt_save, qemu_vmstate
from kdumptool.formats.notes import parse_notes, vmcoreinfo_from_notes
from kdumptool.schema import ints, parse_at
from kdumptool.transport.source import ByteSource, read_exact

MAGIC = b"QEVM"
FILE_VERSION = 3
FILE_VERSION_COMPAT = 2  # the pre-2008 format, refused by QEMU itself

# section types (savevm.c)
EOF, START, PART, END, FULL, SUBSECTION, VMDESCRIPTION, CONFIGURATION, COMMAND = range(9)
FOOTER = 0x7E
SECTION_NAMES = {EOF: "EOF", START: "SECTION_START", PART: "SECTION_PART", END: "SECTION_END",
                 FULL: "SECTION_FULL", CONFIGURATION: "CONFIGURATION", COMMAND: "COMMAND"}

# RAM record flags (ram.c), in the bits of the offset below the target page size
F_FULL, F_ZERO, F_MEM_SIZE, F_PAGE, F_EOS, F_CONTINUE = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
F_XBZRLE, F_HOOK, F_COMPRESS_PAGE, F_MULTIFD_FLUSH = 0x40, 0x80, 0x100, 0x200
_KINDS = (F_ZERO, F_PAGE, F_COMPRESS_PAGE, F_XBZRLE)

#: how a page's latest copy is stored (the ``kind`` array of the index)
K_RAW, K_FILL, K_ZLIB, K_XBZRLE = 0, 1, 2, 3

#: x86 target page size (``TARGET_PAGE_BITS`` 12), unless the configuration says otherwise
DEFAULT_PAGE_BITS = 12
MAX_MACHINE_NAME = 256
MAX_BLOCKS = 4096
MAX_CAPABILITIES = 256
#: device sections larger than this are not skipped (the largest real ones are far smaller)
MAX_DEVICE_SECTION = 64 << 20
#: the legacy VGA window: MMIO in guest-physical space, although pc.ram has bytes there
VGA_HOLE = (0xA0000, 0xC0000)
FOUR_GIB = 1 << 32
#: largest main RAM block accepted (64 TiB, as the ELF reader's highest PFN)
MAX_RAM = 1 << 46
#: RAM block names that are never the guest's main RAM (ROMs, video memory, option ROMs)
_NOT_MAIN_RAM = re.compile(r"(^/rom@|/|^pc\.bios$|^pc\.rom$|^isa-bios$|\.rom$|vram$)")


# --- schemas (all big-endian: QEMUFile's qemu_put_be*) ----------------------------------------

@functools.cache
def schemas() -> dict[str, cs.Construct]:
    """Every structure of the stream, declared once."""
    i = ints(">")
    name = cs.PascalString(i.u8, "latin-1")
    return {
        "file_header": cs.Struct("magic" / cs.Bytes(4), "version" / i.u32),
        "configuration": cs.Struct("len" / i.u32),  # then the machine type, len bytes
        "subsection": cs.Struct("name" / name, "version_id" / i.u32),
        "section_start": cs.Struct("section_id" / i.u32, "idstr" / name, "instance_id" / i.u32,
                                   "version_id" / i.u32),  # START and FULL
        "section_part": cs.Struct("section_id" / i.u32),  # PART and END
        "footer": cs.Struct("section_id" / i.u32),
        "command": cs.Struct("cmd" / i.u16, "len" / i.u16),  # then len bytes
        "ram_block": cs.Struct("idstr" / name, "used_length" / i.u64),
        "ram_record": cs.Struct("offset_flags" / i.u64),  # then the block name unless CONTINUE
        "compressed": cs.Struct("len" / i.u32),  # then a zlib stream (COMPRESS_PAGE)
        "xbzrle": cs.Struct("encoding" / i.u8, "len" / i.u16),  # then the encoded delta
    }


_U64 = struct.Struct(">Q")


def probe(head: bytes) -> bool:
    """True if ``head`` starts a QEMU migration stream or a libvirt save image."""
    return head[:4] == MAGIC or libvirt_save.probe(head)


# --- a sequential cursor over the file ---------------------------------------------------------

class _Cut(Exception):
    """The file ends inside a structure (turned into TruncatedDumpError by the reader)."""

    def __init__(self, offset: int, need: int, what: str) -> None:
        super().__init__(what)
        self.offset, self.need, self.what = offset, need, what


class _Cursor:
    """Reads the stream front to back through a buffer of a few MiB."""

    CHUNK = 4 << 20

    def __init__(self, source: ByteSource, pos: int) -> None:
        self.src = source
        self.end = source.size
        self.buf = b""
        self.base = pos  # file offset of buf[0]
        self.i = 0

    @property
    def pos(self) -> int:
        return self.base + self.i

    def seek(self, pos: int) -> None:
        if self.base <= pos <= self.base + len(self.buf):
            self.i = pos - self.base
        else:
            self.buf, self.base, self.i = b"", pos, 0

    def ensure(self, n: int) -> bool:
        """Make ``n`` bytes at the position available; False if the file ends first."""
        if self.i + n <= len(self.buf):
            return True
        rest = self.buf[self.i:]
        self.base += self.i
        self.buf = rest + self.src.pread(self.base + len(rest), max(self.CHUNK, n - len(rest)))
        self.i = 0
        return len(self.buf) >= n

    def peek(self, n: int) -> bytes:
        self.ensure(n)
        return self.buf[self.i:self.i + n]

    def take(self, n: int, what: str) -> bytes:
        if not self.ensure(n):
            raise _Cut(self.pos, n, what)
        out = self.buf[self.i:self.i + n]
        self.i += n
        return out

    def skip(self, n: int, what: str) -> None:
        if self.pos + n > self.end:
            raise _Cut(self.pos, n, what)
        self.seek(self.pos + n)

    def parse(self, name: str, what: str, max_size: int) -> cs.Container:
        """Parse a (variable-size) schema at the position and move past it."""
        data = self.peek(max_size)
        stream = io.BytesIO(data)
        try:
            value = schemas()[name].parse_stream(stream)
        except cs.ConstructError:
            if len(data) < max_size:
                raise _Cut(self.pos + len(data), max_size, what) from None
            raise CorruptDumpError(f"cannot parse the {what}", path=self.src.name,
                                   offset=self.pos) from None
        self.i += stream.tell()
        return value

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "big")


# --- what the walk finds -----------------------------------------------------------------------

@dataclass
class RamBlock:
    """One RAMBlock of the ``MEM_SIZE`` record."""

    name: str
    used_length: int
    extra: list[int] = field(default_factory=list)  # postcopy page size / ignore-shared address
    pages: int = 0  # PAGE / COMPRESS_PAGE / XBZRLE records
    zero: int = 0  # ZERO records


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


def _machine_family(mt: str | None) -> tuple[str, tuple[int, int] | None]:
    """``("pc" | "q35" | "isapc" | "", version)`` of a QEMU machine type name."""
    if mt is None:
        return "", None
    m = re.search(r"-(\d+)\.(\d+)$", mt)
    version = (int(m.group(1)), int(m.group(2))) if m else None
    if mt == "q35" or mt.startswith("pc-q35-"):
        return "q35", version
    if mt == "isapc":
        return "isapc", None
    if mt == "pc" or mt.startswith("pc-i440fx-") or re.fullmatch(r"pc-\d+\.\d+", mt):
        return "pc", version
    return "", version


def ram_split(machine_type: str | None, ram_size: int) -> tuple[int, int]:
    """``(below_4g, above_4g)`` bytes of the main RAM block, by QEMU's rules for the machine
    type with the default ``max-ram-below-4g`` (``pc_init1`` / ``pc_q35_init``).

    pc (i440fx): RAM of 3.5 GiB or more is split at 3 GiB (at 3.5 GiB before machine type
    2.1, which had no ``gigabyte_align``); q35: RAM of 2.75 GiB or more is split at 2 GiB
    (2.75 GiB before 2.1); isapc never splits.

    :raises UnknownFormatError: not an x86 pc / q35 machine type
    """
    family, version = _machine_family(machine_type)
    aligned = version is None or version >= (2, 1)
    if family == "q35":
        lowmem = 0x80000000 if ram_size >= 0xB0000000 and aligned else 0xB0000000
    elif family == "pc":
        lowmem = 0xC0000000 if ram_size >= 0xE0000000 and aligned else 0xE0000000
    elif family == "isapc":
        return ram_size, 0
    else:
        raise UnknownFormatError(
            f"QEMU machine type {machine_type!r}: kdumptool knows where the RAM of x86 'pc' and "
            "'q35' machines lies in guest-physical memory, not of this one",
            expected="pc-i440fx-*, pc-q35-*, pc, q35, isapc", got=machine_type)
    below = lowmem if ram_size >= lowmem else ram_size
    return below, ram_size - below


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
        self.blocks: dict[bytes, RamBlock] = {}
        self.sections: list[Section] = []
        self.counts: Counter[str] = Counter()
        self.ram_sid: int | None = None
        self.ram_done = False
        self.footers: bool | None = None
        self.complete = False
        self.problem: str | None = None
        self.trailing = 0
        self._main: bytes | None = None
        self._last_block: RamBlock | None = None
        self._dev_data: dict[tuple[str, int], bytes] = {}
        self._idx, self._loc = array("q"), array("q")
        self._kind, self._clen = array("B"), array("I")
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
    def page_size_(self) -> int:
        """The target page size (``configuration/target-page-bits``, 4 KiB by default)."""
        return 1 << self.page_bits

    def _walk_guarded(self, pos: int) -> None:
        cur = _Cursor(self.source, pos)
        try:
            self._walk(cur)
        except _Cut as cut:
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

    def _walk(self, cur: _Cursor) -> None:
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
                    self._ram_records(cur, setup=True)
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
                self._ram_records(cur, setup=False)
                if t == END:
                    self.ram_done = True
            else:
                raise self._corrupt("bad section type", at, "0 (EOF), 1-4 (section), 7, 8", t)
            self._footer(cur, sid)

    def _after_eof(self, cur: _Cursor) -> None:
        """What follows EOF must be the JSON description (or nothing); a description cut short
        means a truncated file."""
        if self.vmdesc is not None and self.vmdesc.marker_offset == cur.pos:
            return
        head = cur.peek(5)
        self.trailing = self.source.size - cur.pos
        if head[:1] == bytes([VMDESCRIPTION]):
            need = 5 + (int.from_bytes(head[1:5], "big") if len(head) == 5 else 0)
            if len(head) < 5 or cur.pos + need > self.source.size:
                raise _Cut(cur.pos, need, "device description (JSON) after EOF")

    def _footer(self, cur: _Cursor, sid: int) -> None:
        at = cur.pos
        head = cur.peek(5)
        if self.footers is None:  # machine types before 2.4 wrote none
            self.footers = head[:1] == bytes([FOOTER])
        if not self.footers:
            return
        if len(head) < 5:
            raise _Cut(at, 5, "section footer")
        if head[0] != FOOTER or int.from_bytes(head[1:5], "big") != sid:
            raise self._corrupt("section footer missing or naming another section", at,
                                f"0x7e + section id {sid}", head)
        cur.skip(5, "section footer")

    def _configuration(self, cur: _Cursor, at: int) -> None:
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

    # --- RAM -------------------------------------------------------------------------------------

    def _block_list(self, cur: _Cursor, total: int, at: int) -> None:
        if self.blocks:
            raise self._corrupt("a second RAM block list", at, "one MEM_SIZE record", "another")
        ps = self.page_size_
        remaining = total
        while remaining > 0:
            b_at = cur.pos
            b = cur.parse("ram_block", "RAM block list", 1 + 255 + 8)
            name = b.idstr.encode("latin-1")
            if not name or b.used_length > remaining or b.used_length % ps or name in self.blocks:
                raise self._corrupt("RAM block does not fit the MEM_SIZE total", b_at,
                                    f"a new named block of whole pages, <= {remaining:#x} bytes",
                                    f"{b.idstr!r} of {b.used_length:#x} bytes")
            if len(self.blocks) >= MAX_BLOCKS:
                raise self._corrupt("too many RAM blocks", b_at, f"<= {MAX_BLOCKS}", "more")
            block = RamBlock(b.idstr, b.used_length)
            self.blocks[name] = block
            remaining -= b.used_length
            # per-block u64 fields of some capabilities (postcopy page size, ignore-shared
            # address): a block name never has length 0, and EOS / MULTIFD_FLUSH end the list
            while len(block.extra) < 2:
                nxt = cur.peek(8)
                if len(nxt) < 8 or nxt[0] != 0:
                    break
                value = int.from_bytes(nxt, "big")
                if remaining == 0 and value in (F_EOS, F_MULTIFD_FLUSH):
                    break
                block.extra.append(value)
                cur.skip(8, "RAM block field")
        self._main = self._choose_main(at)

    def _choose_main(self, at: int) -> bytes:
        if b"pc.ram" in self.blocks:
            return b"pc.ram"
        cands = [n for n, b in self.blocks.items() if not _NOT_MAIN_RAM.search(b.name)]
        if len(cands) != 1:
            raise UnknownFormatError(
                "cannot tell which RAM block is the guest's memory (no 'pc.ram'; several "
                "memory backends, e.g. NUMA nodes, are not supported)", path=self.path, offset=at,
                expected="'pc.ram' or one memory backend", got=[b.name for b in self.blocks.values()])
        return cands[0]

    def _ram_records(self, cur: _Cursor, *, setup: bool) -> None:
        """Index the records of one RAM section up to its EOS record."""
        ps = self.page_size_
        mask, shift = ps - 1, self.page_bits
        blocks = self.blocks
        idx, loc, kinds, clens = self._idx, self._loc, self._kind, self._clen
        main = blocks.get(self._main) if self._main else None
        last = self._last_block  # kept across sections, as QEMU's loader does
        room = 8 + 1 + 255 + 4
        end = cur.end
        while True:
            if cur.i + room > len(cur.buf):
                cur.ensure(room)
            buf, i = cur.buf, cur.i
            at = cur.base + i
            if i + 8 > len(buf):
                raise _Cut(at, 8, "RAM record")
            v = _U64.unpack_from(buf, i)[0]
            i += 8
            flags = v & mask
            offset = v ^ flags
            if flags & F_MEM_SIZE:
                cur.i = i
                if not setup or flags != F_MEM_SIZE:
                    raise self._corrupt("MEM_SIZE record outside the RAM setup", at,
                                        "page records", f"flags {flags:#x}")
                self._block_list(cur, offset, at)
                main = blocks[self._main] if self._main else None
                continue
            if flags == F_EOS:
                cur.i = i
                self._last_block = last
                return
            if flags == F_MULTIFD_FLUSH:
                cur.i = i
                continue
            kind = flags & ~F_CONTINUE
            if kind not in _KINDS:
                cur.i = i
                if kind & F_HOOK:
                    raise UnknownFormatError("RDMA hook records are not supported", path=self.path,
                                             offset=at, got=f"flags {flags:#x}")
                raise self._corrupt("bad RAM record flags", at,
                                    "one of ZERO, PAGE, COMPRESS_PAGE, XBZRLE (+CONTINUE), EOS",
                                    f"{flags:#x}")
            if flags & F_CONTINUE:
                if last is None:
                    raise self._corrupt("CONTINUE record with no block before it", at,
                                        "a record naming its RAM block", f"flags {flags:#x}")
                block = last
            else:
                if i + 1 > len(buf):
                    raise _Cut(at + 8, 1, "RAM record block name")
                n = buf[i]
                name = buf[i + 1:i + 1 + n]
                if len(name) < n:
                    raise _Cut(at + 9, n, "RAM record block name")
                i += 1 + n
                got = blocks.get(name)
                if got is None:
                    raise self._corrupt("RAM record names an unknown block", at + 8,
                                        [b.name for b in blocks.values()][:8], name)
                block = last = got
            if offset >= block.used_length:
                raise self._corrupt("RAM record offset lies beyond its block", at,
                                    f"< {block.used_length:#x} ({block.name})", f"{offset:#x}")
            data_at = cur.base + i
            if kind == F_PAGE:
                if data_at + ps > end:
                    raise _Cut(data_at, ps, "page data")
                code, value, clen = K_RAW, data_at, 0
                i += ps
            elif kind == F_ZERO:
                if i + 1 > len(buf):
                    raise _Cut(data_at, 1, "zero page fill byte")
                code, value, clen = K_FILL, buf[i], 0
                i += 1
            elif kind == F_COMPRESS_PAGE:
                if i + 4 > len(buf):
                    raise _Cut(data_at, 4, "compressed page length")
                clen = int.from_bytes(buf[i:i + 4], "big")
                if not 0 < clen <= 2 * ps:
                    raise self._corrupt("implausible compressed page length", data_at,
                                        f"1..{2 * ps}", clen)
                if data_at + 4 + clen > end:
                    raise _Cut(data_at + 4, clen, "compressed page")
                code, value = K_ZLIB, data_at + 4
                i += 4 + clen
            else:  # XBZRLE: a delta against the previous copy of the page
                if i + 3 > len(buf):
                    raise _Cut(data_at, 3, "XBZRLE header")
                clen = int.from_bytes(buf[i + 1:i + 3], "big")
                if buf[i] != 1 or data_at + 3 + clen > end:
                    raise self._corrupt("bad XBZRLE record", data_at, "encoding 1", buf[i])
                if self.strict:
                    raise UnknownFormatError("XBZRLE-encoded pages are not supported",
                                             path=self.path, offset=at, got=block.name)
                code, value = K_XBZRLE, data_at
                i += 3 + clen
            if block is main:
                idx.append(offset >> shift)
                loc.append(value)
                kinds.append(code)
                clens.append(clen)
            if code == K_FILL:
                block.zero += 1
            else:
                block.pages += 1
            cur.seek(cur.base + i)

    # --- device sections -------------------------------------------------------------------

    def _device(self, cur: _Cursor, at: int, h: cs.Container) -> None:
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

    def _ends_at(self, cur: _Cursor, size: int, h: cs.Container) -> bool:
        """Does what follows ``size`` content bytes look like the end of this section?"""
        after = cur.peek(size + 5)[size:]
        if self.footers is False:
            return len(after) == 0 or after[0] in (EOF, FULL, COMMAND, PART, END)
        return len(after) == 5 and after[0] == FOOTER and int.from_bytes(after[1:], "big") == h.section_id

    def _search_footer(self, cur: _Cursor, sid: int, at: int, idstr: str) -> int:
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
                raise _Cut(cur.pos + len(data), 5, f"{idstr!r} state (no section footer found)")
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
        if cmos is not None and _machine_family(self.machine_type or "pc")[0] != "isapc":
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
        k = np.frombuffer(self._idx, dtype=np.int64)
        order = np.argsort(k, kind="stable")
        ks = k[order]
        last = np.ones(len(ks), dtype=bool)
        last[:-1] = ks[1:] != ks[:-1]  # the latest copy of each page wins
        sel = order[last]
        page = k[sel]
        pfn = np.where(page < self._below_pages, page, page - self._below_pages + self._high)
        lo, hi = VGA_HOLE[0] // self.page_size_, VGA_HOLE[1] // self.page_size_
        keep = ~((pfn >= lo) & (pfn < hi))
        self._records = len(k)
        self._pfn = pfn[keep]
        self._loc_a = np.frombuffer(self._loc, dtype=np.int64)[sel][keep]
        self._kind_a = np.frombuffer(self._kind, dtype=np.uint8)[sel][keep]
        self._clen_a = np.frombuffer(self._clen, dtype=np.uint32)[sel][keep]
        del self._idx, self._loc, self._kind, self._clen
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
