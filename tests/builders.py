"""Independent builders of synthetic crash dumps (the test oracle).

Everything here is written with :mod:`struct` / :mod:`zlib` (plus the optional
``lzo`` / ``snappy`` / ``zstandard`` codec modules) and deliberately never imports
``kdumptool``: tests compare kdumptool's readers and writers against files made by this
separate code, and the builders themselves are proven right against peer tools
(libkdumpfile, drgn, makedumpfile) and against real makedumpfile output in
``tests/test_builders.py``.

Formats follow makedumpfile's writers (``write_kdump_header``,
``write_kdump_pages_and_bitmap_cyclic``, ``write_elf_pages_cyclic``,
``write_start_flat_header``); see ``/work/shared/research/formats-and-peers.md`` B1-B4.

Page maps
---------
A *page map* is a mapping ``pfn -> value``.  PFNs absent from the map are holes (not
RAM: clear in the 1st bitmap).  Values:

``bytes``
    RAM page that is dumped with this content (must be exactly one page long).
``ZERO``
    dumped page of zeros (shares the single zero page when ``share_zero_page``).
``None`` or ``EXCLUDED`` / ``Excluded(original)``
    RAM page excluded by filtering: set in the 1st bitmap, clear in the 2nd.  In ELF
    output short excluded runs are still written (makedumpfile keeps runs shorter
    than 256 pages); they are filled with ``original`` or zeros.
``LOST``
    page of an incomplete dump: set in both bitmaps, but its page descriptor is all
    zero and no data is written (ELF: treated as excluded).
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PAGE_SIZE", "EM_386", "EM_ARM", "EM_AARCH64", "EM_S390", "EM_X86_64", "EXCLUDED", "LOST", "ZERO",
    "Excluded", "Marker", "PageMap", "PageValue", "Segment",
    "CODEC_FLAGS", "DUMP_DH_COMPRESSED_INCOMPLETE", "DUMP_DH_EXCLUDED_VMEMMAP",
    "NT_PRSTATUS", "KDUMP_SUB_HEADER_FIELDS", "DISK_DUMP_HEADER_FIELDS",
    "page_for", "noisy_page_for", "pfn_of_page", "make_pages", "ram_runs",
    "vmcoreinfo_text", "parse_vmcoreinfo", "elf_note", "note_blob", "parse_notes",
    "prstatus_x86_64", "compress_page",
    "LAYOUTS", "PT_LOAD", "PT_NOTE", "PN_XNUM",
    "kdump_geometry", "sub_header_offsets", "sub_header_size",
    "pack_disk_dump_header", "pack_kdump_sub_header",
    "unpack_disk_dump_header", "unpack_kdump_sub_header",
    "build_kdump", "build_kdump_split",
    "derive_elf_segments", "build_elf",
    "flatten", "unflatten", "FLAT_HEADER_SIZE",
    "write_to",
]

DEFAULT_PAGE_SIZE = 4096

# ---------------------------------------------------------------------------
# page map values
# ---------------------------------------------------------------------------


class Marker:
    """A named singleton page-map value (``ZERO``, ``LOST``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Excluded:
    """RAM page excluded by filtering (1st bitmap set, 2nd bitmap clear).

    ``original`` is the page's memory content, used only where a format still stores
    excluded pages (short excluded runs inside an ELF ``PT_LOAD``); default zeros.
    """

    original: bytes | None = None


ZERO = Marker("ZERO")
LOST = Marker("LOST")
EXCLUDED = Excluded()

PageValue = bytes | Marker | Excluded | None
PageMap = Mapping[int, PageValue]


def _is_excluded(v: PageValue) -> bool:
    return v is None or isinstance(v, Excluded)


def _dumped_content(v: PageValue, page_size: int) -> bytes | None:
    """Content of a page that is dumped (in the 2nd bitmap), or None for LOST."""
    if v is ZERO:
        return bytes(page_size)
    if v is LOST:
        return None
    if isinstance(v, bytes | bytearray | memoryview):
        b = bytes(v)
        if len(b) != page_size:
            raise ValueError(f"page content is {len(b)} bytes, page size is {page_size}")
        return b
    raise TypeError(f"not a dumped page value: {v!r}")


def _memory_content(v: PageValue, page_size: int) -> bytes:
    """What memory held: content, zeros for ZERO/LOST/excluded-without-original."""
    if isinstance(v, Excluded) and v.original is not None:
        if len(v.original) != page_size:
            raise ValueError("Excluded.original must be one page long")
        return v.original
    if v is None or v is LOST or isinstance(v, Excluded):
        return bytes(page_size)
    return _dumped_content(v, page_size) or bytes(page_size)


def page_for(pfn: int, page_size: int = DEFAULT_PAGE_SIZE) -> bytes:
    """Deterministic page content that names its own PFN.

    The page is a repetition of 16-byte records ``b"PFN%012x" % pfn`` followed by one
    byte holding the record index (mod 256), so any 16-byte aligned slice of a
    misplaced page tells which PFN it came from (see :func:`pfn_of_page`), and pages
    compress well with every codec.
    """
    tag = b"PFN%012x" % pfn
    if len(tag) != 15:
        raise ValueError("pfn too large for page_for")
    n = page_size // 16
    out = bytearray(n * 16)
    for i in range(n):
        out[16 * i:16 * i + 15] = tag
        out[16 * i + 15] = i & 0xFF
    out += bytes(page_size - len(out))
    return bytes(out)


def noisy_page_for(pfn: int, page_size: int = DEFAULT_PAGE_SIZE) -> bytes:
    """Incompressible page content for ``pfn``: a 16-byte ``PFN`` record then noise.

    zlib, lzo and zstd output is larger than a page, so writers must store it raw;
    snappy saves a couple of bytes on the tag's run of zero digits (4094 bytes).
    """
    head = b"PFN%012x" % pfn + b"\xa5"
    rnd = random.Random(0x5EED0000 ^ pfn)
    return head + rnd.randbytes(page_size - len(head))


def pfn_of_page(data: bytes) -> int | None:
    """The PFN a :func:`page_for` / :func:`noisy_page_for` page names, else None."""
    if len(data) >= 15 and data[:3] == b"PFN":
        try:
            return int(data[3:15], 16)
        except ValueError:
            return None
    return None


def make_pages(
    ranges: Iterable[tuple[int, int]] | Iterable[int],
    page_size: int = DEFAULT_PAGE_SIZE,
    *,
    excluded: Iterable[int] = (),
    zero: Iterable[int] = (),
    lost: Iterable[int] = (),
    noisy: Iterable[int] = (),
) -> dict[int, PageValue]:
    """Page map with ``page_for(pfn)`` for every pfn in ``ranges``.

    ``ranges`` holds ``(start_pfn, end_pfn)`` half-open pairs or single pfns; the
    ``excluded`` / ``zero`` / ``lost`` / ``noisy`` pfns (which must be inside ``ranges``)
    get ``EXCLUDED`` / ``ZERO`` / ``LOST`` / :func:`noisy_page_for` instead.
    """
    pages: dict[int, PageValue] = {}
    for r in ranges:
        if isinstance(r, int):
            pages[r] = page_for(r, page_size)
        else:
            for pfn in range(r[0], r[1]):
                pages[pfn] = page_for(pfn, page_size)
    for label, pfns, value in (("excluded", excluded, EXCLUDED), ("zero", zero, ZERO),
                               ("lost", lost, LOST), ("noisy", noisy, None)):
        for pfn in pfns:
            if pfn not in pages:
                raise KeyError(f"{label} pfn {pfn:#x} is not in ranges")
            pages[pfn] = noisy_page_for(pfn, page_size) if value is None else value
    return dict(sorted(pages.items()))


def ram_runs(pages: PageMap) -> list[tuple[int, int]]:
    """Half-open ``(start_pfn, end_pfn)`` runs of consecutive RAM pfns of a page map."""
    runs: list[tuple[int, int]] = []
    for pfn in sorted(pages):
        if runs and runs[-1][1] == pfn:
            runs[-1] = (runs[-1][0], pfn + 1)
        else:
            runs.append((pfn, pfn + 1))
    return runs


# ---------------------------------------------------------------------------
# VMCOREINFO and ELF notes
# ---------------------------------------------------------------------------

_DIRECT_MAP = {62: 0xFFFF888000000000, 183: 0xFFFF000000000000, 3: 0xC0000000, 40: 0xC0000000}
_SWAPPER = {62: 0xFFFFFFFF82A0A000, 183: 0xFFFF800081A2B000, 3: 0xC1A0B000, 40: 0xC0004000}
_STEXT = {62: 0xFFFFFFFF81000000, 183: 0xFFFF800080000000, 3: 0xC1000000, 40: 0xC0008000}


def vmcoreinfo_text(
    osrelease: str = "6.1.0-test",
    page_size: int = DEFAULT_PAGE_SIZE,
    extra: Mapping[str, str | int | None] | None = None,
    *,
    machine: int = 62,
) -> bytes:
    """A minimal VMCOREINFO blob (``KEY=VALUE\\n`` lines).

    Contains what drgn insists on (``OSRELEASE``, ``PAGESIZE``,
    ``SYMBOL(swapper_pg_dir)``) plus ``SYMBOL(_stext)`` (libkdumpfile needs it for
    32-bit Arm), ``KERNELOFFSET=0`` and, for x86_64,
    ``NUMBER(pgtable_l5_enabled)=0`` (libkdumpfile cannot translate even physical
    addresses of an x86_64 Linux dump without it: "Cannot determine 5-level paging"),
    for aarch64 ``NUMBER(VA_BITS)=48`` and ``NUMBER(kimage_voffset)``.  ``extra`` adds or replaces
    keys in order; a value of None deletes the key; int values are written in decimal
    except for ``SYMBOL(...)`` / ``KERNELOFFSET`` keys, which are hex like the kernel's.
    """
    items: dict[str, str | int | None] = {
        "OSRELEASE": osrelease,
        "PAGESIZE": page_size,
        "SYMBOL(swapper_pg_dir)": _SWAPPER.get(machine, _SWAPPER[62]),
        "SYMBOL(_stext)": _STEXT.get(machine, _STEXT[62]),
        "KERNELOFFSET": 0,
    }
    if machine == 62:
        # libkdumpfile's x86_64 address translation refuses to start without it
        items["NUMBER(pgtable_l5_enabled)"] = 0
    elif machine == 183:
        # libkdumpfile's aarch64 translation needs VA_BITS ("Cannot determine VA_BITS")
        items["NUMBER(VA_BITS)"] = 48
        items["NUMBER(kimage_voffset)"] = f"{0xFFFF7FFF80000000:#x}"
    for k, v in (extra or {}).items():
        items[k] = v
    lines = []
    for k, v in items.items():
        if v is None:
            continue
        if isinstance(v, int) and (k.startswith("SYMBOL(") or k in ("KERNELOFFSET",)):
            v = f"{v:x}"
        lines.append(f"{k}={v}\n")
    return "".join(lines).encode()


def parse_vmcoreinfo(blob: bytes) -> dict[str, str]:
    """``KEY=VALUE`` lines of a VMCOREINFO blob as a dict (first ``=`` splits)."""
    out: dict[str, str] = {}
    for line in blob.decode("latin1").split("\n"):
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


NT_PRSTATUS = 1
Note = tuple[bytes, int, bytes]


def _name(name: bytes | str) -> bytes:
    return name.encode() if isinstance(name, str) else bytes(name)


def elf_note(name: bytes, ntype: int, desc: bytes, endian: str = "<") -> bytes:
    """One ELF note: ``Nhdr`` + NUL-terminated name + desc, each padded to 4 bytes."""
    if isinstance(name, str):
        name = name.encode()
    nm = name + b"\0" if name else b""
    out = struct.pack(endian + "III", len(nm), len(desc), ntype)
    out += nm + bytes(-len(nm) % 4) + desc + bytes(-len(desc) % 4)
    return out


def note_blob(
    notes: Sequence[Note], endian: str = "<", vmcoreinfo: bytes | None = None
) -> tuple[bytes, int | None, int]:
    """Concatenate notes (then a ``VMCOREINFO`` note if given), like ``/proc/vmcore``.

    Returns ``(blob, vmcoreinfo_desc_offset_in_blob or None, vmcoreinfo_size)``; when
    ``vmcoreinfo`` is None the first ``VMCOREINFO`` note of ``notes`` is located.
    """
    all_notes = list(notes)
    if vmcoreinfo is not None:
        all_notes.append((b"VMCOREINFO", 0, vmcoreinfo))
    blob = b""
    vi_off: int | None = None
    vi_size = 0
    for name, ntype, desc in all_notes:
        if isinstance(name, str):
            name = name.encode()
        if name == b"VMCOREINFO" and vi_off is None:
            vi_off = len(blob) + 12 + len(name) + 1 + (-(len(name) + 1) % 4)
            vi_size = len(desc)
        blob += elf_note(name, ntype, desc, endian)
    return blob, vi_off, vi_size


def parse_notes(blob: bytes, endian: str = "<") -> list[Note]:
    """Split a note blob into ``(name without NUL, type, desc)`` triples."""
    out: list[Note] = []
    off = 0
    while off + 12 <= len(blob):
        namesz, descsz, ntype = struct.unpack_from(endian + "III", blob, off)
        off += 12
        name = blob[off:off + namesz].rstrip(b"\0")
        off += namesz + (-namesz % 4)
        desc = blob[off:off + descsz]
        off += descsz + (-descsz % 4)
        out.append((name, ntype, desc))
    return out


_X86_64_REGS = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax",
                "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss",
                "fs_base", "gs_base", "ds", "es", "fs", "gs")


def prstatus_x86_64(pid: int, regs: Mapping[str, int] | None = None) -> bytes:
    """x86_64 ``struct elf_prstatus`` (336 bytes): ``pr_pid`` at 32, ``pr_reg`` at 112.

    ``regs`` maps ``user_regs_struct`` names (``rip``, ``rsp``, ``cs``...) to values.
    """
    regs = dict(regs or {})
    unknown = set(regs) - set(_X86_64_REGS)
    if unknown:
        raise KeyError(f"unknown x86_64 registers: {sorted(unknown)}")
    out = bytearray(336)
    struct.pack_into("<i", out, 32, pid)
    struct.pack_into("<27Q", out, 112, *(regs.get(r, 0) & (2**64 - 1) for r in _X86_64_REGS))
    return bytes(out)


# ---------------------------------------------------------------------------
# page codecs
# ---------------------------------------------------------------------------

CODEC_FLAGS = {"raw": 0, "zlib": 0x1, "lzo": 0x2, "snappy": 0x4, "zstd": 0x20}
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8
DUMP_DH_EXCLUDED_VMEMMAP = 0x10


def compress_page(data: bytes, codec: str) -> bytes:
    """Compress one page like makedumpfile (zlib level 1, lzo1x_1, snappy, zstd level 1)."""
    if codec == "zlib":
        return zlib.compress(data, 1)
    if codec == "lzo":
        import lzo  # python-lzo

        return lzo.compress(data, 1, False)
    if codec == "snappy":
        import snappy

        return snappy.compress(data)
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=1).compress(data)
    raise ValueError(f"unknown codec {codec!r}")


# ---------------------------------------------------------------------------
# kdump-compressed
# ---------------------------------------------------------------------------

# (name, kind, first header_version that has it); kinds: ulong, int, off (off_t, 64 bit), u64
KDUMP_SUB_HEADER_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("phys_base", "ulong", 0),
    ("dump_level", "int", 1),
    ("split", "int", 2),
    ("start_pfn", "ulong", 2),
    ("end_pfn", "ulong", 2),
    ("offset_vmcoreinfo", "off", 3),
    ("size_vmcoreinfo", "ulong", 3),
    ("offset_note", "off", 4),
    ("size_note", "ulong", 4),
    ("offset_eraseinfo", "off", 5),
    ("size_eraseinfo", "ulong", 5),
    ("start_pfn_64", "u64", 6),
    ("end_pfn_64", "u64", 6),
    ("max_mapnr_64", "u64", 6),
)

DISK_DUMP_HEADER_FIELDS = (
    "signature", "header_version", "sysname", "nodename", "release", "version", "machine",
    "domainname", "tv_sec", "tv_usec", "status", "block_size", "sub_hdr_size",
    "bitmap_blocks", "max_mapnr", "total_ram_blocks", "device_blocks", "written_blocks",
    "current_cpu", "nr_cpus",
)
_UTS = ("sysname", "nodename", "release", "version", "machine", "domainname")
_LAYOUTS = ("64", "32pack", "32pad")
#: kdump header layouts: 64-bit, 32-bit with 4-byte aligned 64-bit fields (i386),
#: 32-bit with 8-byte aligned 64-bit fields (arm, ppc)
LAYOUTS = _LAYOUTS


def _sub_fields(layout: str) -> list[tuple[str, str, int, int]]:
    """``(name, struct code, offset, version)`` of kdump_sub_header for a layout."""
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}")
    ulong = ("Q", 8, 8) if layout == "64" else ("I", 4, 4)
    align64 = 4 if layout == "32pack" else 8
    kinds = {"ulong": ulong, "int": ("i", 4, 4), "off": ("q", 8, align64),
             "u64": ("Q", 8, align64)}
    out = []
    off = 0
    for name, kind, ver in KDUMP_SUB_HEADER_FIELDS:
        code, size, align = kinds[kind]
        off += -off % align
        out.append((name, code, off, ver))
        off += size
    return out


def sub_header_offsets(layout: str = "64") -> dict[str, int]:
    """Field offsets of ``struct kdump_sub_header`` for a layout."""
    return {name: off for name, _, off, _ in _sub_fields(layout)}


def sub_header_size(layout: str = "64", header_version: int = 6) -> int:
    """``sizeof(struct kdump_sub_header)`` as it was at ``header_version``.

    v6: 104 (64-bit), 80 (32-bit packed, i386), 96 (32-bit padded, arm).
    """
    fields = [f for f in _sub_fields(layout) if f[3] <= header_version]
    end = max(off + struct.calcsize("<" + code) for _, code, off, _ in fields)
    align = 8 if layout == "64" else (4 if layout == "32pack" else
                                       max(8 if code in "qQ" else 4 for _, code, _, _ in fields))
    return end + (-end % align)


def _header_struct(layout: str, endian: str) -> struct.Struct:
    if layout == "64":
        return struct.Struct(endian + "8si65s65s65s65s65s65s6xqqIiiIIIIIIi")  # 464 bytes
    return struct.Struct(endian + "8si65s65s65s65s65s65s2xiiIiiIIIIIIi")  # 452 bytes


def pack_disk_dump_header(values: Mapping[str, Any], layout: str = "64",
                          endian: str = "<") -> bytes:
    """Pack ``struct disk_dump_header`` (464 bytes 64-bit, 452 bytes 32-bit)."""
    st = _header_struct(layout, endian)
    args = []
    for name in DISK_DUMP_HEADER_FIELDS:
        v = values.get(name, b"" if name in _UTS or name == "signature" else 0)
        if isinstance(v, str):
            v = v.encode()
        args.append(v)
    return st.pack(*args)


def unpack_disk_dump_header(data: bytes, layout: str = "64", endian: str = "<") -> dict:
    """Inverse of :func:`pack_disk_dump_header` (strings NUL-stripped, as bytes)."""
    st = _header_struct(layout, endian)
    vals = st.unpack_from(data, 0)
    out = dict(zip(DISK_DUMP_HEADER_FIELDS, vals, strict=True))
    for k in _UTS:
        out[k] = out[k].split(b"\0", 1)[0]
    return out


def pack_kdump_sub_header(values: Mapping[str, int], layout: str = "64", endian: str = "<",
                          header_version: int = 6) -> bytes:
    """Pack ``struct kdump_sub_header`` truncated to ``header_version``'s fields."""
    size = sub_header_size(layout, header_version)
    out = bytearray(size)
    for name, code, off, ver in _sub_fields(layout):
        if ver > header_version:
            continue
        v = int(values.get(name, 0))
        if code in "IQ":
            v &= (1 << (8 * struct.calcsize(code))) - 1
        struct.pack_into(endian + code, out, off, v)
    return bytes(out)


def unpack_kdump_sub_header(data: bytes, layout: str = "64", endian: str = "<",
                            header_version: int = 6) -> dict[str, int]:
    """Inverse of :func:`pack_kdump_sub_header`."""
    return {name: struct.unpack_from(endian + code, data, off)[0]
            for name, code, off, ver in _sub_fields(layout) if ver <= header_version}


def kdump_geometry(max_mapnr: int, block_size: int = DEFAULT_PAGE_SIZE) -> int:
    """``bitmap_blocks`` as makedumpfile computes it (both bitmaps, each block-aligned)."""
    nbytes = (max_mapnr + 7) // 8
    return 2 * ((nbytes + block_size - 1) // block_size)


def _default_machine(layout: str, endian: str) -> str:
    if layout == "64":
        return "x86_64" if endian == "<" else "s390x"
    if layout == "32pack":
        return "i686"
    return "arm" if endian == "<" else "ppc"


def _bitmap(pfns: Iterable[int], nbytes: int) -> bytearray:
    bm = bytearray(nbytes)
    for pfn in pfns:
        if pfn // 8 < nbytes:
            bm[pfn // 8] |= 1 << (pfn % 8)
    return bm


def build_kdump(
    pages: PageMap,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    endian: str = "<",
    layout: str = "64",
    header_version: int = 6,
    signature: bytes = b"KDUMP   ",
    codec: str = "raw",
    page_codecs: Mapping[int, str] | None = None,
    vmcoreinfo: bytes | None = None,
    notes: Sequence[Note] = (),
    sysname: str | bytes = "Linux",
    nodename: str | bytes = "(none)",
    release: str | bytes | None = None,
    version: str | bytes = "#1 SMP PREEMPT_DYNAMIC",
    machine: str | bytes | None = None,
    domainname: str | bytes = "(none)",
    timestamp: int | tuple[int, int] | None = None,
    nr_cpus: int | None = None,
    dump_level: int = 31,
    phys_base: int = 0,
    split: tuple[int, int] | None = None,
    incomplete_after: int | None = None,
    share_zero_page: bool | None = None,
    max_mapnr: int | None = None,
    eraseinfo: bytes | None = None,
    desc_overrides: Mapping[int, Mapping[str, int]] | None = None,
    **overrides: Any,
) -> bytes:
    """Build a kdump-compressed file exactly as makedumpfile lays it out.

    Layout: ``disk_dump_header`` at 0; ``kdump_sub_header`` (truncated to
    ``header_version``'s fields) at ``block_size``; for v4+ the ELF note blob right after
    the sub header (``offset_note = block_size + sizeof(sub header)``, with
    ``offset_vmcoreinfo`` pointing at the VMCOREINFO note's desc inside it), for v3 the
    raw VMCOREINFO text there instead; ``sub_hdr_size`` in blocks; 1st and 2nd bitmap
    (each ``bitmap_blocks * block_size / 2`` bytes) at ``(1 + sub_hdr_size) * block_size``;
    the ``page_desc`` table (24 bytes each, one per 2nd-bitmap pfn of this file); then the
    page data (the shared zero page first when ``share_zero_page``), then ``eraseinfo``.

    A page is stored compressed (``codec``, or ``page_codecs[pfn]``) only when the
    compressed form is smaller than a page, otherwise raw (``flags = 0``).  Header
    ``status`` = codec flag (| 0x8 when ``incomplete_after`` is given).

    ``timestamp`` (seconds or ``(tv_sec, tv_usec)``) defaults to VMCOREINFO's ``CRASHTIME``
    (else 0) with ``tv_usec = 0`` like makedumpfile.  Keep ``tv_usec`` below 4096 in 64-bit
    files: libkdumpfile tries the 32-bit header first, where ``tv_usec`` sits at the
    ``block_size`` offset, so a power of two >= 4096 there makes 0.5.1 and drgn's bundled
    copy misparse the file (max_pfn 0, bogus ERASEINFO, even SIGSEGV).  ``release`` to its
    ``OSRELEASE``; ``machine`` to the layout's usual machine (``x86_64``, ``i686``,
    ``arm``, BE 64-bit ``s390x``); ``nr_cpus`` to the number of ``NT_PRSTATUS`` notes;
    ``share_zero_page`` to ``dump_level & 1``; ``max_mapnr`` to the highest pfn + 1.

    ``split=(start_pfn, end_pfn)`` writes one file of a ``--split`` set: global bitmaps,
    descriptors and data only for 2nd-bitmap pfns in the range (the descriptor table
    area is still sized for every dumpable page, its tail left zero, as makedumpfile does).
    ``incomplete_after=N`` zeroes descriptors ``N..`` and cuts the file after the data of
    descriptor ``N-1``.

    ``overrides`` patch any header field (names in ``DISK_DUMP_HEADER_FIELDS``) or
    sub-header field (``KDUMP_SUB_HEADER_FIELDS``) *after* the layout is computed, so
    they can make the header lie (e.g. ``block_size=1000``).  ``desc_overrides`` patch
    page descriptor fields (``offset``, ``size``, ``flags``, ``page_flags``) by pfn.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}")
    if endian not in "<>":
        raise ValueError("endian must be '<' or '>'")
    bad = set(overrides) - set(DISK_DUMP_HEADER_FIELDS) - {f[0] for f in KDUMP_SUB_HEADER_FIELDS}
    if bad:
        raise TypeError(f"unknown header override(s): {sorted(bad)}")
    if codec not in CODEC_FLAGS:
        raise ValueError(f"unknown codec {codec!r}")
    page_codecs = page_codecs or {}
    desc_overrides = desc_overrides or {}
    bs = page_size
    vmci = parse_vmcoreinfo(vmcoreinfo) if vmcoreinfo else {}

    if max_mapnr is None:
        max_mapnr = max(pages) + 1 if pages else 0
    bitmap_blocks = kdump_geometry(max_mapnr, bs)
    bitmap_len = bitmap_blocks * bs // 2
    if share_zero_page is None:
        share_zero_page = bool(dump_level & 1)
    if nr_cpus is None:
        nr_cpus = sum(1 for n in notes if n[1] == NT_PRSTATUS and _name(n[0]) == b"CORE")
    if timestamp is None:
        timestamp = int(vmci.get("CRASHTIME", "0") or 0)
    tv = timestamp if isinstance(timestamp, tuple) else (timestamp, 0)
    if release is None:
        release = vmci.get("OSRELEASE", "6.1.0-test")
    if machine is None:
        machine = _default_machine(layout, endian)

    # --- sub header and what follows it (notes / vmcoreinfo) ------------------------
    sub: dict[str, int] = {"phys_base": phys_base, "dump_level": dump_level,
                           "max_mapnr_64": max_mapnr}
    if split is not None:
        sub.update(split=1, start_pfn=min(split[0], 2**32 - 1), end_pfn=min(split[1], 2**32 - 1),
                   start_pfn_64=split[0], end_pfn_64=split[1])
    kh_size = sub_header_size(layout, header_version)
    payload_off = bs + kh_size
    payload = b""
    if header_version >= 4:
        blob, vi_off, vi_size = note_blob(notes, endian, vmcoreinfo)
        if blob:
            payload = blob
            sub.update(offset_note=payload_off, size_note=len(blob))
            if vi_off is not None:
                sub.update(offset_vmcoreinfo=payload_off + vi_off, size_vmcoreinfo=vi_size)
    elif header_version == 3 and vmcoreinfo:
        payload = vmcoreinfo
        sub.update(offset_vmcoreinfo=payload_off, size_vmcoreinfo=len(vmcoreinfo))
    sub_hdr_size = -(-(kh_size + len(payload)) // bs)

    # --- bitmaps ---------------------------------------------------------------------
    ram = sorted(pages)
    dumpable = [p for p in ram if not _is_excluded(pages[p])]
    bm1 = _bitmap(ram, bitmap_len)
    bm2 = _bitmap(dumpable, bitmap_len)

    # --- descriptors and data ------------------------------------------------------------
    mine = dumpable if split is None else [p for p in dumpable if split[0] <= p < split[1]]
    desc_off = (1 + sub_hdr_size + bitmap_blocks) * bs
    # makedumpfile sizes the table for *all* dumpable pages even in a --split file
    # (info->num_dumpable is global); the unused tail stays zero
    data_off = desc_off + 24 * len(dumpable)
    data = bytearray()
    zero_page = bytes(bs)
    zero_desc = None
    if share_zero_page:
        zero_desc = (data_off, bs, 0, 0)
        data += zero_page
    descs: list[tuple[int, int, int, int]] = []
    cut = None
    for idx, pfn in enumerate(mine):
        if incomplete_after is not None and idx >= incomplete_after:
            if cut is None:
                cut = data_off + len(data)
            descs.append((0, 0, 0, 0))
            continue
        content = _dumped_content(pages[pfn], bs)
        if content is None:  # LOST
            descs.append((0, 0, 0, 0))
        elif zero_desc is not None and content == zero_page:
            descs.append(zero_desc)
        else:
            c = page_codecs.get(pfn, codec)
            if c not in CODEC_FLAGS:
                raise ValueError(f"unknown codec {c!r} for pfn {pfn:#x}")
            flags, stored = 0, content
            if c != "raw":
                comp = compress_page(content, c)
                if len(comp) < bs:
                    flags, stored = CODEC_FLAGS[c], comp
            descs.append((data_off + len(data), len(stored), flags, 0))
            data += stored
    if cut is None:
        cut = data_off + len(data)
    if incomplete_after is not None:
        data = data[:cut - data_off]

    erase_off = data_off + len(data)
    if eraseinfo is not None and header_version >= 5:
        sub.update(offset_eraseinfo=erase_off, size_eraseinfo=len(eraseinfo))
        data += eraseinfo

    status = CODEC_FLAGS[codec]
    if incomplete_after is not None:
        status |= DUMP_DH_COMPRESSED_INCOMPLETE

    hdr = {
        "signature": signature, "header_version": header_version,
        "sysname": sysname, "nodename": nodename, "release": release, "version": version,
        "machine": machine, "domainname": domainname, "tv_sec": tv[0], "tv_usec": tv[1],
        "status": status, "block_size": bs, "sub_hdr_size": sub_hdr_size,
        "bitmap_blocks": bitmap_blocks, "max_mapnr": min(max_mapnr, 2**32 - 1),
        "nr_cpus": nr_cpus,
    }
    for k, v in overrides.items():
        if k in DISK_DUMP_HEADER_FIELDS:
            hdr[k] = v
        else:
            sub[k] = v

    out = bytearray(data_off)
    h = pack_disk_dump_header(hdr, layout, endian)
    out[0:len(h)] = h
    out[bs:bs + kh_size] = pack_kdump_sub_header(sub, layout, endian, header_version)
    out[payload_off:payload_off + len(payload)] = payload
    b1 = (1 + sub_hdr_size) * bs
    out[b1:b1 + bitmap_len] = bm1
    out[b1 + bitmap_len:b1 + 2 * bitmap_len] = bm2
    pd = struct.Struct(endian + "qIIQ")
    for i, (pfn, d) in enumerate(zip(mine, descs, strict=True)):
        if pfn in desc_overrides:
            dd = dict(zip(("offset", "size", "flags", "page_flags"), d, strict=True))
            dd.update(desc_overrides[pfn])
            d = (dd["offset"], dd["size"], dd["flags"], dd["page_flags"])
        pd.pack_into(out, desc_off + 24 * i, *d)
    out += data
    return bytes(out)


def build_kdump_split(
    pages: PageMap, parts: int | Sequence[int] = 2, **kwargs: Any
) -> list[bytes]:
    """A makedumpfile ``--split`` set: one :func:`build_kdump` file per pfn range.

    ``parts`` is a number of files (ranges cut so each holds about the same number of
    dumped pages) or the sorted inner boundaries.  The first range starts at 0 and the
    last ends at ``max_mapnr`` (like makedumpfile).
    """
    max_mapnr = kwargs.get("max_mapnr")
    if max_mapnr is None:
        max_mapnr = max(pages) + 1 if pages else 0
    if isinstance(parts, int):
        dumpable = [p for p in sorted(pages) if not _is_excluded(pages[p])]
        bounds = [dumpable[len(dumpable) * i // parts] for i in range(1, parts)] if dumpable \
            else [max_mapnr * i // parts for i in range(1, parts)]
    else:
        bounds = list(parts)
    edges = [0, *bounds, max_mapnr]
    return [build_kdump(pages, split=(edges[i], edges[i + 1]),
                        **{**kwargs, "max_mapnr": max_mapnr})
            for i in range(len(edges) - 1)]


# ---------------------------------------------------------------------------
# ELF
# ---------------------------------------------------------------------------

EM_386 = 3
EM_ARM = 40
EM_S390 = 22
EM_X86_64 = 62
EM_AARCH64 = 183
PT_LOAD = 1
PT_NOTE = 4
PN_XNUM = 0xFFFF


@dataclass
class Segment:
    """One ``PT_LOAD``; sizes in bytes.

    ``data`` (``filesz`` bytes) defaults to the page map's memory content.  ``vaddr``
    None = direct-map address of ``paddr``.  ``offset`` None = where the builder puts
    it (0 when ``filesz == 0``, like makedumpfile's split segments); -1 = the current
    data position even when ``filesz == 0`` (makedumpfile's last segment of a run).
    """

    paddr: int
    memsz: int
    filesz: int
    vaddr: int | None = None
    data: bytes | None = None
    offset: int | None = None
    flags: int = 7  # RWX, as /proc/vmcore and makedumpfile
    align: int = 0


def derive_elf_segments(
    pages: PageMap, page_size: int = DEFAULT_PAGE_SIZE, split_run: int = 256
) -> list[Segment]:
    """``PT_LOAD`` segments makedumpfile ``-E`` would write for a page map.

    Each run of consecutive RAM pfns plays the role of one input ``PT_LOAD``.  Inside it,
    a run of ``split_run`` or more excluded pages followed by a dumped page ends the
    current segment (``p_memsz`` covers the excluded run, ``p_filesz`` stops at the last
    dumped page) and starts a new one; shorter excluded runs are written as data;
    trailing excluded pages become ``p_memsz > p_filesz``.  ``LOST`` counts as excluded.
    """
    segs: list[Segment] = []
    for start, end in ram_runs(pages):
        paddr = start * page_size
        memsz = filesz = 0
        nexcl = 0
        for pfn in range(start, end):
            v = pages[pfn]
            if _is_excluded(v) or v is LOST:
                nexcl += 1
                memsz += page_size
                continue
            if nexcl < split_run:
                filesz += page_size * (nexcl + 1)
                memsz += page_size
                nexcl = 0
                continue
            segs.append(Segment(paddr, memsz, filesz, offset=None if filesz else 0))
            paddr += memsz
            memsz = filesz = page_size
            nexcl = 0
        # the last segment of a run keeps the current file offset even when empty
        segs.append(Segment(paddr, memsz, filesz, offset=None if filesz else -1))
    return segs


def build_elf(
    pages: PageMap | None = None,
    *,
    segments: Sequence[Segment | tuple[int, ...]] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    elf_class: int = 64,
    endian: str = "<",
    machine: int = EM_X86_64,
    notes: Sequence[Note] = (),
    vmcoreinfo: bytes | None = None,
    use_pn_xnum: bool = False,
    e_flags: int = 0,
    split_run: int = 256,
    vaddr_base: int | None = None,
    data_align: int = 1,
    **overrides: Any,
) -> bytes:
    """Build an ELF ``ET_CORE`` vmcore like makedumpfile ``-E``.

    Layout: ``Ehdr``; ``PT_NOTE`` then the ``PT_LOAD`` headers; (with PN_XNUM: one
    section header whose ``sh_info`` holds the real phdr count, ``e_phnum = 0xffff``);
    the note blob (4-byte padded notes, ``VMCOREINFO`` last); then each segment's
    ``p_filesz`` bytes back to back (``data_align=1`` like makedumpfile; use 4096 to
    mimic ``/proc/vmcore``).

    Segments come from ``pages`` via :func:`derive_elf_segments` (``split_run`` rule) or
    are given: :class:`Segment` objects, or tuples ``(paddr, memsz_pages, filesz_pages
    [, vaddr])`` whose data is read from ``pages`` (zeros where absent).  ``vaddr_base``
    sets ``p_vaddr = vaddr_base + p_paddr`` (default: the machine's direct map; 0 gives
    ``p_vaddr == p_paddr``).  ``overrides`` patch ``Ehdr`` fields by C name
    (``e_type``, ``e_version``, ``e_phoff``, ``e_shoff``, ``e_ehsize``, ``e_phentsize``,
    ``e_phnum``, ``e_shentsize``, ``e_shnum``, ``e_shstrndx``, ``e_entry``, ``ei_osabi``,
    ``ei_version``, ``ei_class``, ``ei_data``) after layout.
    """
    if elf_class not in (32, 64):
        raise ValueError("elf_class must be 32 or 64")
    known = {"e_type", "e_machine", "e_version", "e_entry", "e_phoff", "e_shoff", "e_ehsize",
             "e_phentsize", "e_phnum", "e_shentsize", "e_shnum", "e_shstrndx", "ei_osabi",
             "ei_version", "ei_class", "ei_data", "ei_abiversion"}
    bad = set(overrides) - known
    if bad:
        raise TypeError(f"unknown Ehdr override(s): {sorted(bad)}")
    pages = pages or {}
    if vaddr_base is None:
        vaddr_base = _DIRECT_MAP.get(machine, 0)
    if segments is None:
        segs = derive_elf_segments(pages, page_size, split_run)
    else:
        segs = []
        for s in segments:
            if isinstance(s, Segment):
                segs.append(s)
            else:
                segs.append(Segment(s[0], s[1] * page_size, s[2] * page_size,
                                    vaddr=s[3] if len(s) > 3 else None))
    is64 = elf_class == 64
    ehsize, phentsize, shentsize = (64, 56, 64) if is64 else (52, 32, 40)
    phnum = 1 + len(segs)
    xnum = use_pn_xnum or phnum >= PN_XNUM
    blob, _, _ = note_blob(notes, endian, vmcoreinfo)
    phoff = ehsize
    shoff = phoff + phentsize * phnum if xnum else 0
    note_off = (shoff + shentsize) if xnum else phoff + phentsize * phnum
    off = note_off + len(blob)

    phdrs = [(PT_NOTE, 0, note_off, 0, 0, len(blob), len(blob), 0)]
    seg_data = []
    for s in segs:
        if s.filesz > s.memsz:
            raise ValueError("segment filesz > memsz")
        if s.data is not None:
            d = s.data
            if len(d) != s.filesz:
                raise ValueError("Segment.data length must equal filesz")
        else:
            d = b"".join(_memory_content(pages[p], page_size) if p in pages
                         else bytes(page_size)
                         for p in range(s.paddr // page_size,
                                        -(-(s.paddr + s.filesz) // page_size)))
            head = s.paddr % page_size
            d = d[head:head + s.filesz]
        if s.filesz:
            off += -off % data_align
        if s.offset is None:
            p_offset = off if s.filesz else 0
        else:
            p_offset = off if s.offset == -1 else s.offset
        vaddr = s.vaddr if s.vaddr is not None else vaddr_base + s.paddr
        phdrs.append((PT_LOAD, s.flags, p_offset, vaddr, s.paddr, s.filesz, s.memsz, s.align))
        if s.filesz:
            seg_data.append((off, d))
            off += s.filesz

    ident = {"ei_class": 2 if is64 else 1, "ei_data": 1 if endian == "<" else 2,
             "ei_version": 1, "ei_osabi": 0, "ei_abiversion": 0}
    eh = {"e_type": 4, "e_machine": machine, "e_version": 1, "e_entry": 0, "e_phoff": phoff,
          "e_shoff": shoff, "e_flags": e_flags, "e_ehsize": ehsize,
          "e_phentsize": phentsize, "e_phnum": PN_XNUM if xnum else phnum,
          "e_shentsize": shentsize if xnum else 0, "e_shnum": 1 if xnum else 0,
          "e_shstrndx": 0}
    for k, v in overrides.items():
        (ident if k.startswith("ei_") else eh)[k] = v
    e_ident = (b"\x7fELF" + bytes([ident["ei_class"], ident["ei_data"], ident["ei_version"],
                                   ident["ei_osabi"], ident["ei_abiversion"]])).ljust(16, b"\0")
    w = "Q" if is64 else "I"
    out = bytearray(off)
    struct.pack_into(endian + f"16sHHI{w}{w}{w}IHHHHHH", out, 0, e_ident, eh["e_type"],
                     eh["e_machine"], eh["e_version"], eh["e_entry"], eh["e_phoff"],
                     eh["e_shoff"], eh["e_flags"], eh["e_ehsize"], eh["e_phentsize"],
                     eh["e_phnum"], eh["e_shentsize"], eh["e_shnum"], eh["e_shstrndx"])
    for i, (ptype, flags, poff, vaddr, paddr, filesz, memsz, align) in enumerate(phdrs):
        at = phoff + i * phentsize
        if is64:
            struct.pack_into(endian + "IIQQQQQQ", out, at, ptype, flags, poff, vaddr, paddr,
                             filesz, memsz, align)
        else:
            struct.pack_into(endian + "IIIIIIII", out, at, ptype, poff, vaddr & 0xFFFFFFFF,
                             paddr, filesz, memsz, flags, align)
    if xnum:
        # section header 0: sh_info = real e_phnum (ELF gABI extended numbering)
        if is64:
            struct.pack_into(endian + "IIQQQQIIQQ", out, shoff, 0, 0, 0, 0, 0, 0, 0, phnum, 0, 0)
        else:
            struct.pack_into(endian + "IIIIIIIIII", out, shoff, 0, 0, 0, 0, 0, 0, 0, phnum, 0, 0)
    out[note_off:note_off + len(blob)] = blob
    for at, d in seg_data:
        out[at:at + len(d)] = d
    return bytes(out)


# ---------------------------------------------------------------------------
# flattened format
# ---------------------------------------------------------------------------

FLAT_HEADER_SIZE = 4096
_FLAT_SIG = b"makedumpfile".ljust(16, b"\0")


def flatten(
    image: bytes | Sequence[tuple[int, bytes]],
    *,
    record_size: int = 65536,
    shuffle: random.Random | None = None,
    duplicate_overlaps: bool = False,
    end_marker: bool = True,
    flat_type: int = 1,
    flat_version: int = 1,
) -> bytes:
    """makedumpfile's flattened stream (``-F``) of an image.

    4096-byte header (``"makedumpfile"`` NUL-padded to 16 bytes, BE int64 ``type``,
    BE int64 ``version``, zero padding), then records ``{BE int64 offset, BE int64 size,
    data}``, then the end marker ``{-1, -1}``.  ``image`` is the whole file (cut into
    ``record_size`` records) or explicit ``(offset, data)`` records kept as given.

    ``shuffle`` permutes record order.  ``duplicate_overlaps`` adds decoy records of
    garbage (bit-inverted data, spanning record boundaries) that are each emitted before
    every real record they overlap, so only "later record wins" gives the image back.
    """
    if isinstance(image, bytes | bytearray | memoryview):
        img = bytes(image)
        records = [(o, img[o:o + record_size]) for o in range(0, len(img), record_size)]
    else:
        records = [(o, bytes(d)) for o, d in image]
    if shuffle is not None:
        records = records[:]
        shuffle.shuffle(records)
    if duplicate_overlaps and records:
        rng = shuffle if shuffle is not None else random.Random(0xF1A7)
        lo = min(o for o, _ in records)
        hi = max(o + len(d) for o, d in records)
        decoys: list[tuple[int, int, bytes]] = []  # (insert before index, offset, data)
        for _ in range(max(1, len(records) // 3)):
            a = rng.randrange(lo, hi)
            b = min(hi, a + rng.randrange(1, 2 * record_size + 2))
            overl = [i for i, (o, d) in enumerate(records) if o < b and a < o + len(d)]
            if not overl:
                continue
            # garbage = inverted true content where known
            buf = bytearray(b - a)
            for i in overl:
                o, d = records[i]
                s, e = max(a, o), min(b, o + len(d))
                buf[s - a:e - a] = bytes(x ^ 0xFF for x in d[s - o:e - o])
            decoys.append((rng.randint(0, min(overl)), a, bytes(buf)))
        merged: list[tuple[int, bytes]] = []
        for i, rec in enumerate([*records, None]):
            merged += [(a, d) for pos, a, d in decoys if pos == i]
            if rec is not None:
                merged.append(rec)
        records = merged
    out = bytearray(_FLAT_SIG + struct.pack(">qq", flat_type, flat_version))
    out += bytes(FLAT_HEADER_SIZE - len(out))
    for o, d in records:
        out += struct.pack(">qq", o, len(d)) + d
    if end_marker:
        out += struct.pack(">qq", -1, -1)
    return bytes(out)


def unflatten(stream: bytes) -> bytes:
    """Reference de-flattener (later records win; unwritten gaps are zeros)."""
    if stream[:16] != _FLAT_SIG:
        raise ValueError("not a flattened stream")
    img = bytearray()
    off = FLAT_HEADER_SIZE
    while off + 16 <= len(stream):
        o, n = struct.unpack_from(">qq", stream, off)
        off += 16
        if o == -1 and n == -1:
            break
        if o < 0 or n < 0 or off + n > len(stream):
            raise ValueError(f"bad flattened record at {off - 16}")
        if len(img) < o + n:
            img += bytes(o + n - len(img))
        img[o:o + n] = stream[off:off + n]
        off += n
    return bytes(img)


# ---------------------------------------------------------------------------


def write_to(path: str | Path, data: bytes | Callable[[], bytes]) -> Path:
    """Write builder output (bytes, or a zero-argument builder) to ``path``."""
    p = Path(path)
    p.write_bytes(data() if callable(data) else data)
    return p
