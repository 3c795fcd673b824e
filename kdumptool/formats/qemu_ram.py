"""The RAM section of a QEMU migration stream: its blocks, its page records, and where the
guest's main RAM block lies in guest-physical memory.

Spec: SPEC.md "QEMU savevm / migration streams". Upstream QEMU (7.2 and later):
``migration/ram.c`` (``ram_save_setup``: the ``MEM_SIZE`` record and the RAM block list;
``save_page_header``: ``u64 offset | flags``, then the block name unless ``CONTINUE``;
``ram_load_precopy``: how each record is read back, a later copy of a page replacing an
earlier one); ``hw/i386/pc_piix.c`` / ``pc_q35.c`` (``pc_init1`` / ``pc_q35_init``: how
``pc.ram`` is split below and above 4 GiB) and ``hw/i386/pc.c`` (``pc_memory_init``: the part
above is mapped at 4 GiB).

:class:`RamIndex` keeps, for every record of the main block, the page index, the file offset of
its data (or the fill byte of a zero page), how it is stored and its compressed length, in
compact arrays; :meth:`RamIndex.latest` keeps the latest copy of each page, by PFN.
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass, field

import numpy as np

from kdumptool.errors import CorruptDumpError, StreamCutError, UnknownFormatError
from kdumptool.formats.qemu_stream import (
    F_COMPRESS_PAGE,
    F_CONTINUE,
    F_EOS,
    F_HOOK,
    F_MEM_SIZE,
    F_MULTIFD_FLUSH,
    F_PAGE,
    F_XBZRLE,
    F_ZERO,
    K_FILL,
    K_RAW,
    K_XBZRLE,
    K_ZLIB,
    U64,
    Cursor,
)

_KINDS = (F_ZERO, F_PAGE, F_COMPRESS_PAGE, F_XBZRLE)
MAX_BLOCKS = 4096
#: the legacy VGA window: MMIO in guest-physical space, although pc.ram has bytes there
VGA_HOLE = (0xA0000, 0xC0000)
FOUR_GIB = 1 << 32
#: largest main RAM block accepted (64 TiB, as the ELF reader's highest PFN)
MAX_RAM = 1 << 46
#: RAM block names that are never the guest's main RAM (ROMs, video memory, option ROMs)
_NOT_MAIN_RAM = re.compile(r"(^/rom@|/|^pc\.bios$|^pc\.rom$|^isa-bios$|\.rom$|vram$)")
#: bytes a record header may take: offset | flags, a block name, a compressed length
_ROOM = 8 + 1 + 255 + 4


@dataclass
class RamBlock:
    """One RAMBlock of the ``MEM_SIZE`` record."""

    name: str
    used_length: int
    extra: list[int] = field(default_factory=list)  # postcopy page size / ignore-shared address
    pages: int = 0  # PAGE / COMPRESS_PAGE / XBZRLE records
    zero: int = 0  # ZERO records


@dataclass(frozen=True)
class PageLocations:
    """Where the latest copy of each page of the main block is, sorted by PFN."""

    pfn: np.ndarray  # int64
    loc: np.ndarray  # int64: file offset of the data, or the fill byte (K_FILL)
    kind: np.ndarray  # uint8: K_RAW, K_FILL, K_ZLIB, K_XBZRLE
    clen: np.ndarray  # uint32: compressed length (K_ZLIB, K_XBZRLE)
    records: int  # page records of the main block, copies included


def machine_family(mt: str | None) -> tuple[str, tuple[int, int] | None]:
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
    family, version = machine_family(machine_type)
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


class RamIndex:
    """The RAM section's block list and page records, indexed as the stream is walked.

    :param path: the file, for error messages
    :param strict: refuse XBZRLE records (else they are indexed, and read back as corrupt)
    """

    def __init__(self, path: str, *, strict: bool) -> None:
        self.path, self.strict = path, strict
        self.blocks: dict[bytes, RamBlock] = {}
        self.main: bytes | None = None  # the key of the guest's main RAM block
        self.last: RamBlock | None = None  # kept across sections, as QEMU's loader does
        self._idx, self._loc = array("q"), array("q")
        self._kind, self._clen = array("B"), array("I")

    def _corrupt(self, message: str, offset: int, expected: object, got: object) -> CorruptDumpError:
        return CorruptDumpError(message, path=self.path, offset=offset, expected=expected, got=got)

    def read_section(self, cur: Cursor, *, setup: bool, page_bits: int) -> None:
        """Index the records of one RAM section up to its EOS record.

        :param setup: the section's ``SECTION_START`` (the only place for ``MEM_SIZE``)
        :raises StreamCutError: the file ends inside a record
        :raises CorruptDumpError: a record that cannot be (bad flags, unknown block, offset
            beyond its block, implausible lengths)
        :raises UnknownFormatError: RDMA hook records, or (strict) XBZRLE pages
        """
        ps = 1 << page_bits
        mask = ps - 1
        main = self.blocks.get(self.main) if self.main else None
        idx, loc, kinds, clens = self._idx, self._loc, self._kind, self._clen
        while True:
            if cur.i + _ROOM > len(cur.buf):
                cur.ensure(_ROOM)
            buf, i = cur.buf, cur.i
            at = cur.base + i
            if i + 8 > len(buf):
                raise StreamCutError(at, 8, "RAM record")
            v = U64.unpack_from(buf, i)[0]
            i += 8
            flags = v & mask
            offset = v ^ flags
            if flags & F_MEM_SIZE or flags in (F_EOS, F_MULTIFD_FLUSH):
                cur.i = i
                if flags & F_MEM_SIZE:
                    if not setup or flags != F_MEM_SIZE:
                        raise self._corrupt("MEM_SIZE record outside the RAM setup", at,
                                            "page records", f"flags {flags:#x}")
                    self._block_list(cur, offset, at, ps)
                    main = self.blocks[self.main] if self.main else None
                elif flags == F_EOS:
                    return
                continue
            block, i = self._record_block(cur, buf, i, at, flags)
            if offset >= block.used_length:
                raise self._corrupt("RAM record offset lies beyond its block", at,
                                    f"< {block.used_length:#x} ({block.name})", f"{offset:#x}")
            code, value, clen, i = self._payload(buf, i, cur.base + i, cur.end, flags & ~F_CONTINUE,
                                                 ps, at, block)
            if block is main:
                idx.append(offset >> page_bits)
                loc.append(value)
                kinds.append(code)
                clens.append(clen)
            if code == K_FILL:
                block.zero += 1
            else:
                block.pages += 1
            cur.seek(cur.base + i)

    def _record_block(self, cur: Cursor, buf: bytes, i: int, at: int, flags: int) -> tuple[RamBlock, int]:
        """The block a page record names (or the last one, for ``CONTINUE``), and the position
        after the name."""
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
            if self.last is None:
                raise self._corrupt("CONTINUE record with no block before it", at,
                                    "a record naming its RAM block", f"flags {flags:#x}")
            return self.last, i
        if i + 1 > len(buf):
            raise StreamCutError(at + 8, 1, "RAM record block name")
        n = buf[i]
        name = buf[i + 1:i + 1 + n]
        if len(name) < n:
            raise StreamCutError(at + 9, n, "RAM record block name")
        got = self.blocks.get(name)
        if got is None:
            raise self._corrupt("RAM record names an unknown block", at + 8,
                                [b.name for b in self.blocks.values()][:8], name)
        self.last = got
        return got, i + 1 + n

    def _payload(self, buf: bytes, i: int, data_at: int, end: int, kind: int, ps: int, at: int,
                 block: RamBlock) -> tuple[int, int, int, int]:
        """``(storage kind, data offset or fill byte, compressed length, next position)`` of
        the page data that follows a record header at ``buf[i]`` (file offset ``data_at``)."""
        if kind == F_PAGE:
            if data_at + ps > end:
                raise StreamCutError(data_at, ps, "page data")
            return K_RAW, data_at, 0, i + ps
        if kind == F_ZERO:
            if i + 1 > len(buf):
                raise StreamCutError(data_at, 1, "zero page fill byte")
            return K_FILL, buf[i], 0, i + 1
        if kind == F_COMPRESS_PAGE:
            if i + 4 > len(buf):
                raise StreamCutError(data_at, 4, "compressed page length")
            clen = int.from_bytes(buf[i:i + 4], "big")
            if not 0 < clen <= 2 * ps:
                raise self._corrupt("implausible compressed page length", data_at, f"1..{2 * ps}", clen)
            if data_at + 4 + clen > end:
                raise StreamCutError(data_at + 4, clen, "compressed page")
            return K_ZLIB, data_at + 4, clen, i + 4 + clen
        # XBZRLE: a delta against the previous copy of the page
        if i + 3 > len(buf):
            raise StreamCutError(data_at, 3, "XBZRLE header")
        clen = int.from_bytes(buf[i + 1:i + 3], "big")
        if buf[i] != 1 or data_at + 3 + clen > end:
            raise self._corrupt("bad XBZRLE record", data_at, "encoding 1", buf[i])
        if self.strict:
            raise UnknownFormatError("XBZRLE-encoded pages are not supported",
                                     path=self.path, offset=at, got=block.name)
        return K_XBZRLE, data_at, clen, i + 3 + clen

    def _block_list(self, cur: Cursor, total: int, at: int, ps: int) -> None:
        """The ``MEM_SIZE`` record's block list: ``total`` bytes of named blocks."""
        if self.blocks:
            raise self._corrupt("a second RAM block list", at, "one MEM_SIZE record", "another")
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
        self.main = self._choose_main(at)

    def _choose_main(self, at: int) -> bytes:
        """``pc.ram``, else the one block that is not a ROM or video memory."""
        if b"pc.ram" in self.blocks:
            return b"pc.ram"
        cands = [n for n, b in self.blocks.items() if not _NOT_MAIN_RAM.search(b.name)]
        if len(cands) != 1:
            raise UnknownFormatError(
                "cannot tell which RAM block is the guest's memory (no 'pc.ram'; several "
                "memory backends, e.g. NUMA nodes, are not supported)", path=self.path, offset=at,
                expected="'pc.ram' or one memory backend", got=[b.name for b in self.blocks.values()])
        return cands[0]

    def latest(self, below_pages: int, high: int, page_size: int) -> PageLocations:
        """The latest copy of each page, by PFN: page indexes below ``below_pages`` map 1:1,
        the rest from PFN ``high`` (4 GiB) on; pages in the VGA window are dropped. The
        record arrays are released."""
        k = np.frombuffer(self._idx, dtype=np.int64)
        order = np.argsort(k, kind="stable")
        ks = k[order]
        last = np.ones(len(ks), dtype=bool)
        last[:-1] = ks[1:] != ks[:-1]  # the latest copy of each page wins
        sel = order[last]
        page = k[sel]
        pfn = np.where(page < below_pages, page, page - below_pages + high)
        lo, hi = VGA_HOLE[0] // page_size, VGA_HOLE[1] // page_size
        keep = ~((pfn >= lo) & (pfn < hi))
        found = PageLocations(
            pfn[keep], np.frombuffer(self._loc, dtype=np.int64)[sel][keep],
            np.frombuffer(self._kind, dtype=np.uint8)[sel][keep],
            np.frombuffer(self._clen, dtype=np.uint32)[sel][keep], len(k))
        self._idx, self._loc = array("q"), array("q")
        self._kind, self._clen = array("B"), array("I")
        return found
