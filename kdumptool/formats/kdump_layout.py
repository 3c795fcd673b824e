"""kdump-compressed header layouts: constants, the structures of every layout, the probe and
the layout trial.

Spec: SPEC.md "kdump-compressed" (3.2 - 3.7) and 1.3 (the trial); upstream makedumpfile
``diskdump_mod.h`` (``struct disk_dump_header``, ``struct kdump_sub_header``,
``struct page_desc``, ``DUMP_DH_*``); libkdumpfile ``src/kdumpfile/diskdump.c``
(``kdump_sub_header_32pack``/``32pad``/``64``, ``open_common``, ``try_header_*``).
The reader is :mod:`kdumptool.formats.kdump`, which re-exports these names.
:func:`rebuild_block_size` is the trial a tolerant reader makes when ``block_size`` is damaged.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import construct as cs
import numpy as np

from kdumptool.dump import UTS_FIELDS, UTS_LEN
from kdumptool.errors import CorruptDumpError
from kdumptool.schema import ints, numpy_dtype, parse_at, strip_c_string
from kdumptool.transport.source import ByteSource
from kdumptool.vmcoreinfo import MAX_VMCOREINFO, VmcoreInfo

KDUMP_SIGNATURE = b"KDUMP   "
DISKDUMP_SIGNATURE = b"DISKDUMP"
#: The header version makedumpfile writes (and kdumptool writes).
KDUMP_HEADER_VERSION = 6

# disk_dump_header.status bits (diskdump_mod.h)
DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8
DUMP_DH_EXCLUDED_VMEMMAP = 0x10
DUMP_DH_COMPRESSED_ZSTD = 0x20
KNOWN_STATUS = 0x3F

#: machines whose dumps use the 32-bit header layouts
MACHINES_32 = {"i386", "i486", "i586", "i686", "x86", "arm", "armv7l", "armv6l", "ppc", "mips",
               "s390", "sparc"}
MACHINES_32_PACKED = {"i386", "i486", "i586", "i686", "x86"}  # i386 aligns u64 to 4 bytes
MACHINES_64 = {"x86_64", "aarch64", "ppc64", "ppc64le", "s390x", "riscv64", "loongarch64",
               "mips64", "sparc64", "ia64", "alpha"}
MIN_BLOCK_SIZE = 1024
MAX_BLOCK_SIZE = 1 << 18
PAGE_DESC_SIZE = 24

# Offset of the utsname "machine" field, the same in every layout.
_MACHINE_OFFSET = 8 + 4 + 4 * UTS_LEN


@dataclass(frozen=True)
class KdumpStructs:
    """The structures of one layout and byte order (declared once, in :func:`kdump_structs`)."""

    layout: str
    endian: str
    DiskDumpHeader: cs.Struct
    KdumpSubHeader: cs.Struct
    PageDesc: cs.Struct
    page_desc_dtype: np.dtype


@functools.cache
def kdump_structs(layout: str, endian: str) -> KdumpStructs:
    """Structures for ``layout`` ("64", "32pack" = i386, "32pad" = arm and others) and ``endian``."""
    i = ints(endian)
    w = 8 if layout == "64" else 4
    ulong = i.word(w)
    slong = i.word(w, signed=True)
    header = cs.Struct(
        "signature" / cs.Bytes(8),  # "KDUMP   " or "DISKDUMP"
        "header_version" / i.s32,  # makedumpfile writes 6
        "utsname" / cs.Struct(*(name / cs.Bytes(UTS_LEN) for name in UTS_FIELDS)),
        "pad" / cs.Bytes(6 if w == 8 else 2),  # alignment of struct timeval
        "timestamp" / cs.Struct("tv_sec" / slong, "tv_usec" / slong),
        "status" / i.u32,  # DUMP_DH_* bits
        "block_size" / i.s32,  # = page size
        "sub_hdr_size" / i.s32,  # in blocks
        "bitmap_blocks" / i.u32,  # both bitmaps, in blocks
        "max_mapnr" / i.u32,  # truncated to 32 bits; v6+: see max_mapnr_64
        "total_ram_blocks" / i.u32,
        "device_blocks" / i.u32,
        "written_blocks" / i.u32,
        "current_cpu" / i.u32,
        "nr_cpus" / i.s32,
        # tasks[nr_cpus] follows in the old diskdump format; makedumpfile writes none
    )
    off_t = i.s64  # off_t is 64-bit in makedumpfile's builds (_FILE_OFFSET_BITS=64)

    def pad(n: int) -> list[cs.Construct]:
        return ["_pad" / cs.Padding(n)] if layout == "32pad" else []

    sub = cs.Struct(
        "phys_base" / ulong,  # v0+
        "dump_level" / i.s32,  # v1+
        "split" / i.s32,  # v2+
        "start_pfn" / ulong,  # v2+ (obsolete: 32-bit on 32-bit machines)
        "end_pfn" / ulong,  # v2+
        *pad(4),
        "offset_vmcoreinfo" / off_t,  # v3+
        "size_vmcoreinfo" / ulong,  # v3+
        *pad(4 if layout == "32pad" else 0),
        "offset_note" / off_t,  # v4+
        "size_note" / ulong,  # v4+
        *pad(4 if layout == "32pad" else 0),
        "offset_eraseinfo" / off_t,  # v5+
        "size_eraseinfo" / ulong,  # v5+
        *pad(4 if layout == "32pad" else 0),
        "start_pfn_64" / i.u64,  # v6+
        "end_pfn_64" / i.u64,  # v6+
        "max_mapnr_64" / i.u64,  # v6+
    )
    desc = cs.Struct(
        "offset" / i.s64,  # file offset of the page's data
        "size" / i.u32,  # stored size
        "flags" / i.u32,  # DUMP_DH_COMPRESSED_* of the page
        "page_flags" / i.u64,  # page->flags; makedumpfile writes 0
    )
    return KdumpStructs(layout, endian, header, sub, desc, numpy_dtype(desc, endian))


def probe(head: bytes) -> bool:
    """True if ``head`` starts a kdump-compressed or diskdump file."""
    return head[:8] in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE)


def _plausible(h: cs.Container) -> bool:
    bs = h.block_size
    return (
        0 <= h.header_version <= 64
        and MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE and bs & (bs - 1) == 0
        and h.sub_hdr_size >= 0 and h.bitmap_blocks > 0
        and 8 * h.bitmap_blocks * bs >= h.max_mapnr
    )


def detect_layout(head: bytes, *, path: str | None = None) -> tuple[KdumpStructs, cs.Container]:
    """Find the layout and byte order under which the header makes sense.

    :raises CorruptDumpError: none does (names the block_size field)
    """
    machine = strip_c_string(head[_MACHINE_OFFSET:_MACHINE_OFFSET + UTS_LEN])
    if machine in MACHINES_64:
        order = [("64", "<"), ("64", ">")]
    elif machine in MACHINES_32:
        kind = "32pack" if machine in MACHINES_32_PACKED else "32pad"
        order = [(kind, "<"), (kind, ">")]
    else:  # unknown machine: the order libkdumpfile tries (32-bit first)
        order = [("32pad", "<"), ("32pad", ">"), ("64", "<"), ("64", ">")]
    # the machine's layouts first, then every other (a header may lie about its machine)
    order += [(lay, e) for lay, e in [("32pad", "<"), ("32pad", ">"), ("64", "<"), ("64", ">"),
                                       ("32pack", "<"), ("32pack", ">")] if (lay, e) not in order]
    for layout, endian in order:
        s = kdump_structs(layout, endian)
        hdr = parse_at(s.DiskDumpHeader, head, path=path, offset=0, what="disk_dump_header")
        if _plausible(hdr):
            return s, hdr
    s = kdump_structs(*order[0])
    hdr = parse_at(s.DiskDumpHeader, head, path=path, offset=0, what="disk_dump_header")
    off = s.DiskDumpHeader.sizeof() - 36
    raise CorruptDumpError(
        "disk_dump_header is invalid: block_size must be a power of two from 1 KiB to 256 KiB "
        "and the bitmaps must cover max_mapnr", path=path, offset=off,
        expected="block_size = page size (e.g. 4096)", got=hdr.block_size,
    )


def rebuild_block_size(source: ByteSource, head: bytes) -> tuple[KdumpStructs, cs.Container, str] | None:
    """A header whose ``block_size`` is damaged, rebuilt from the sub-header and VMCOREINFO.

    The sub-header sits at offset ``block_size``: each page size is tried there, and kept
    when that sub-header points at a VMCOREINFO whose ``PAGESIZE`` is the same size and the
    rest of the header is plausible with it.
    """
    machine = strip_c_string(head[_MACHINE_OFFSET:_MACHINE_OFFSET + UTS_LEN])
    layouts = [("64", "<"), ("64", ">")] if machine not in MACHINES_32 else \
        [("32pack" if machine in MACHINES_32_PACKED else "32pad", e) for e in "<>"]
    for layout, endian in layouts:
        s = kdump_structs(layout, endian)
        hdr = s.DiskDumpHeader.parse(head[:s.DiskDumpHeader.sizeof()])
        for bs in (4096, 16384, 65536, 8192, 2048, 1024, 32768, 131072, 262144):
            raw = source.pread(bs, s.KdumpSubHeader.sizeof())
            if len(raw) < s.KdumpSubHeader.sizeof():
                continue
            sub = s.KdumpSubHeader.parse(raw)
            off, size = sub.offset_vmcoreinfo, sub.size_vmcoreinfo
            if not (3 <= hdr.header_version <= 64 and bs < off and 0 < size <= MAX_VMCOREINFO
                    and off + size <= source.size):
                continue
            vmci = VmcoreInfo.parse(source.pread(off, size))
            if vmci.page_size != bs:
                continue
            old = hdr.block_size
            hdr.block_size = bs
            if _plausible(hdr):
                return s, hdr, f"block_size {old} replaced by {bs} (the sub-header's VMCOREINFO PAGESIZE)"
            hdr.block_size = old
    return None
