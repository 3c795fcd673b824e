"""Structure maps: which bytes of an input are which field, from kdumptool's own construct
schemas (kdump headers and page descriptors, ELF headers and notes, the flattened headers).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import construct as cs
import numpy as np
from common import PS

from kdumptool.errors import KdumpToolError
from kdumptool.formats.elf import PT_LOAD, PT_NOTE, elf_structs
from kdumptool.formats.kdump import detect_layout, kdump_structs
from kdumptool.transport.flattened import MakedumpfileDataHeader, MakedumpfileHeader

# ============================================================================================
# structure maps: which bytes are which field (from kdumptool's construct schemas)
# ============================================================================================


@dataclass(frozen=True)
class Field:
    """An integer or byte-string field at an absolute file offset."""

    name: str
    offset: int
    size: int
    kind: str  # "u", "s" or "bytes"
    endian: str
    group: str = ""  # "header", "table", "notes", ...

    def read(self, data: bytes | bytearray) -> int:
        """The field's value in ``data`` (zero-extended past its end)."""
        raw = bytes(data[self.offset:self.offset + self.size]).ljust(self.size, b"\0")
        return int.from_bytes(raw, "little" if self.endian == "<" else "big",
                              signed=self.kind == "s")

    def write(self, data: bytearray, value: int) -> None:
        """Store ``value`` (masked to the field's size) in ``data``, if the field fits in it."""
        if self.offset + self.size > len(data):
            return
        mask = (1 << (8 * self.size)) - 1
        data[self.offset:self.offset + self.size] = (value & mask).to_bytes(
            self.size, "little" if self.endian == "<" else "big")


def schema_fields(st: cs.Construct, endian: str, base: int = 0, prefix: str = "",
                  group: str = "") -> list[Field]:
    """Flatten a construct Struct of fixed-size fields into :class:`Field` s at ``base``."""
    out: list[Field] = []
    off = base
    for sub in st.subcons:  # type: ignore[attr-defined]
        name = sub.name or ""
        inner = sub.subcon if isinstance(sub, cs.Renamed) else sub
        size = inner.sizeof()
        if isinstance(inner, cs.Struct):
            out += schema_fields(inner, endian, off, f"{prefix}{name}.", group)
        elif isinstance(inner, cs.FormatField):
            kind = "s" if inner.fmtstr[-1].islower() else "u"
            out.append(Field(prefix + name, off, size, kind, endian, group))
        elif name and not name.startswith("_"):
            out.append(Field(prefix + name, off, size, "bytes", endian, group))
        off += size
    return out


@dataclass
class Layout:
    """What the generators know about an input's structure."""

    fmt: str  # "kdump", "elf", "flat", "raw"
    endian: str = "<"
    page_size: int = PS
    fields: list[Field] = field(default_factory=list)
    boundaries: set[int] = field(default_factory=set)
    regions: dict[str, tuple[int, int]] = field(default_factory=dict)
    texts: list[tuple[int, int]] = field(default_factory=list)  # VMCOREINFO spans


def parse_field(st: cs.Construct, data: bytes | bytearray, off: int) -> Any:
    """``st`` parsed at ``off`` of ``data``, None when it does not fit."""
    size = st.sizeof()
    if off < 0 or off + size > len(data):
        return None
    return st.parse(bytes(data[off:off + size]))


def _note_fields(data: bytes | bytearray, start: int, size: int, endian: str,
                 lay: Layout) -> None:
    """Nhdr fields of every note in ``[start, start + size)`` and VMCOREINFO spans."""
    nh = elf_structs(2, endian).Nhdr
    pos, end = start, min(start + size, len(data))
    for k in range(64):
        if pos < 0 or pos + 12 > end:
            break
        h = parse_field(nh, data, pos)
        lay.fields += schema_fields(nh, endian, pos, f"note[{k}].", "notes")
        lay.boundaries.add(pos)
        name_end = pos + 12 + h.n_namesz
        desc = pos + 12 + ((h.n_namesz + 3) & ~3)
        name = bytes(data[pos + 12:min(name_end, end)]).rstrip(b"\0")
        if name == b"VMCOREINFO" and desc < end:
            lay.texts.append((desc, max(0, min(h.n_descsz, end - desc))))
        nxt = desc + ((h.n_descsz + 3) & ~3)
        if nxt <= pos or (h.n_namesz == 0 and h.n_descsz == 0):
            break
        pos = nxt
    lay.boundaries.add(min(pos, end))


def describe(data: bytes | bytearray) -> Layout:
    """Map the fields and structure boundaries of a kdump, ELF or flattened image."""
    head = bytes(data[:16])
    try:
        if head[:8] in (b"KDUMP   ", b"DISKDUMP"):
            return _describe_kdump(data)
        if head[:4] == b"\x7fELF":
            return _describe_elf(data)
        if head[:12] == b"makedumpfile":
            return _describe_flat(data)
    except (cs.ConstructError, ValueError, OverflowError, KdumpToolError, IndexError):
        pass
    return Layout("raw", boundaries={0, len(data)})


def _describe_kdump(data: bytes | bytearray) -> Layout:
    head = bytes(data[:4096]).ljust(4096, b"\0")
    try:
        s, hdr = detect_layout(head)
    except KdumpToolError:
        s = kdump_structs("64", "<")
        hdr = s.DiskDumpHeader.parse(head[:s.DiskDumpHeader.sizeof()])
    e = s.endian
    lay = Layout("kdump", e)
    bs = hdr.block_size if 512 <= hdr.block_size <= 1 << 18 else PS
    lay.page_size = bs
    hsize = s.DiskDumpHeader.sizeof()
    lay.fields += schema_fields(s.DiskDumpHeader, e, 0, "disk_dump_header.", "header")
    lay.boundaries |= {0, hsize, bs}
    lay.regions["header"] = (0, hsize)
    sub = parse_field(s.KdumpSubHeader, data, bs)
    ssize = s.KdumpSubHeader.sizeof()
    if sub is not None:
        lay.fields += schema_fields(s.KdumpSubHeader, e, bs, "kdump_sub_header.", "header")
        lay.boundaries.add(bs + ssize)
        lay.regions["sub_header"] = (bs, bs + ssize)
        if 0 < sub.offset_note < len(data):
            lay.regions["notes"] = (sub.offset_note, min(len(data), sub.offset_note + sub.size_note))
            _note_fields(data, sub.offset_note, min(sub.size_note, 1 << 20), e, lay)
        if 0 < sub.offset_vmcoreinfo < len(data):
            lay.texts.append((sub.offset_vmcoreinfo,
                              max(0, min(sub.size_vmcoreinfo, len(data) - sub.offset_vmcoreinfo))))
        if 0 < sub.offset_eraseinfo < len(data):
            lay.boundaries |= {sub.offset_eraseinfo, sub.offset_eraseinfo + sub.size_eraseinfo}
    shs = hdr.sub_hdr_size if 0 <= hdr.sub_hdr_size < 1 << 16 else 1
    bmb = hdr.bitmap_blocks if hdr.bitmap_blocks < 1 << 16 else 2
    bm = bs * (1 + shs)
    half = bmb * bs // 2
    desc = bs * (1 + shs + bmb)
    lay.boundaries |= {bm, bm + half, desc}
    lay.regions["bitmap1"] = (bm, bm + half)
    lay.regions["bitmap2"] = (bm + half, desc)
    if desc < len(data):
        bits = np.frombuffer(bytes(data[bm + half:min(desc, len(data))]), np.uint8)
        ndesc = int(np.unpackbits(bits).sum()) if bits.size else 0
        ndesc = max(1, min(ndesc, (len(data) - desc) // 24))
        lay.regions["descs"] = (desc, desc + 24 * ndesc)
        lay.boundaries.add(desc + 24 * ndesc)
        idx = sorted(set(range(min(ndesc, 24))) | set(range(max(0, ndesc - 4), ndesc)))
        for i in idx:
            pos = desc + 24 * i
            d = parse_field(s.PageDesc, data, pos)
            if d is None:
                break
            lay.fields += schema_fields(s.PageDesc, e, pos, f"page_desc[{i}].", "table")
            lay.boundaries.add(pos)
            if 0 < d.offset < len(data):
                lay.boundaries |= {d.offset, d.offset + d.size}
        lay.regions["data"] = (desc + 24 * ndesc, len(data))
    return lay


def _describe_elf(data: bytes | bytearray) -> Layout:
    cls = 2 if data[4:5] != b"\x01" else 1
    e = ">" if data[5:6] == b"\x02" else "<"
    s = elf_structs(cls, e)
    lay = Layout("elf", e)
    lay.fields += schema_fields(s.Ehdr, e, 0, "ehdr.", "header")
    lay.fields += [Field("ehdr.e_ident[EI_CLASS]", 4, 1, "u", e, "header"),
                   Field("ehdr.e_ident[EI_DATA]", 5, 1, "u", e, "header"),
                   Field("ehdr.e_ident[EI_VERSION]", 6, 1, "u", e, "header")]
    esz = s.Ehdr.sizeof()
    lay.boundaries |= {0, 16, esz}
    lay.regions["header"] = (0, esz)
    eh = parse_field(s.Ehdr, data, 0)
    if eh is None:
        return lay
    phsz = s.Phdr.sizeof()
    phnum = eh.e_phnum
    if eh.e_shoff and eh.e_shoff < len(data):
        sh = parse_field(s.Shdr, data, eh.e_shoff)
        if sh is not None:
            lay.fields += schema_fields(s.Shdr, e, eh.e_shoff, "shdr[0].", "header")
            lay.boundaries |= {eh.e_shoff, eh.e_shoff + s.Shdr.sizeof()}
            if phnum == 0xFFFF:
                phnum = sh.sh_info
    phoff = eh.e_phoff
    phnum = min(phnum, 256, max(0, (len(data) - phoff) // phsz) if phoff < len(data) else 0)
    lay.regions["phdrs"] = (phoff, phoff + phnum * phsz)
    lay.boundaries.add(phoff + phnum * phsz)
    for k in range(phnum):
        pos = phoff + k * phsz
        ph = parse_field(s.Phdr, data, pos)
        if ph is None:
            break
        lay.fields += schema_fields(s.Phdr, e, pos, f"phdr[{k}].", "table")
        lay.boundaries.add(pos)
        if ph.p_type == PT_NOTE and ph.p_offset < len(data):
            lay.regions["notes"] = (ph.p_offset, min(len(data), ph.p_offset + ph.p_filesz))
            _note_fields(data, ph.p_offset, min(ph.p_filesz, 1 << 20), e, lay)
        elif ph.p_type == PT_LOAD and ph.p_offset < len(data):
            lay.boundaries |= {ph.p_offset, ph.p_offset + ph.p_filesz}
            lay.regions.setdefault("data", (ph.p_offset, len(data)))
    return lay


def _describe_flat(data: bytes | bytearray) -> Layout:
    lay = Layout("flat", ">")
    lay.fields += schema_fields(MakedumpfileHeader, ">", 0, "makedumpfile_header.", "header")
    lay.boundaries |= {0, MakedumpfileHeader.sizeof(), 4096}
    lay.regions["header"] = (0, 4096)
    pos = 4096
    for k in range(4096):
        if pos + 16 > len(data):
            break
        off, size = struct.unpack_from(">qq", data, pos)
        lay.fields += schema_fields(MakedumpfileDataHeader, ">", pos, f"record[{k}].", "table")
        lay.boundaries |= {pos, pos + 16}
        if off == -1 and size == -1 or size <= 0 or pos + 16 + size > len(data):
            break
        pos += 16 + size
        lay.boundaries.add(pos)
    lay.regions["records"] = (4096, min(pos + 16, len(data)))
    return lay
