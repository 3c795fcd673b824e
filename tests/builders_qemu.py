"""Builders of synthetic QEMU migration streams and libvirt save images (the test oracle).

Written from the published layout only (SPEC.md "QEMU savevm / migration streams"; QEMU
``migration/savevm.c``, ``migration/ram.c``, ``migration/vmstate.c``; libvirt
``src/qemu/qemu_saveimage.h``) with :mod:`struct` / :mod:`json` / :mod:`zlib`, and never
importing ``kdumptool``. Every field can be overridden, to make damaged variants. The
builder is proven right against the real corpus stream in ``tests/test_qemu_savevm.py``
(it rebuilds the corpus file's header, configuration and RAM setup section byte for byte).

Usage::

    s = QemuStream()
    s.configuration("pc-i440fx-7.2")
    s.ram_setup([("pc.ram", 64 << 20), ("pc.bios", 256 << 10)])
    s.ram_part([("page", "pc.ram", 0x1000, data), ("zero", "pc.ram", 0x2000, 0)], end=True)
    s.device("cpu", cpu_content, desc_fields=fields)
    s.eof()
    blob = s.bytes()
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Sequence
from typing import Any

PS = 4096
EOF, START, PART, END, FULL, SUBSECTION, VMDESCRIPTION, CONFIGURATION, COMMAND = range(9)
FOOTER = 0x7E
F_ZERO, F_MEM_SIZE, F_PAGE, F_EOS, F_CONTINUE = 0x02, 0x04, 0x08, 0x10, 0x20
F_XBZRLE, F_HOOK, F_COMPRESS_PAGE = 0x40, 0x80, 0x100


def be16(v: int) -> bytes:
    return struct.pack(">H", v)


def be32(v: int) -> bytes:
    return struct.pack(">I", v)


def be64(v: int) -> bytes:
    return struct.pack(">Q", v)


def pstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return bytes([len(b)]) + b


class QemuStream:
    """A migration stream built piece by piece. ``marks`` records the file offset of every
    piece (``"config"``, ``"ram_start"``, ``"ram_part0"``..., ``"device:cpu#0"``, ``"eof"``)."""

    def __init__(self, *, magic: bytes = b"QEVM", version: int = 3, footers: bool = True,
                 page_size: int = PS) -> None:
        self.buf = bytearray(magic + be32(version))
        self.footers = footers
        self.page_size = page_size
        self.marks: dict[str, int] = {}
        self.descs: list[dict[str, Any]] = []
        self.last_block: str | None = None
        self.next_sid = 3
        self.parts = 0

    def _footer(self, sid: int) -> None:
        if self.footers:
            self.buf += bytes([FOOTER]) + be32(sid)

    def configuration(self, machine_type: str = "pc-i440fx-7.2", *, length: int | None = None,
                      subsections: Sequence[tuple[str, int, bytes]] = ()) -> None:
        """``QEMU_VM_CONFIGURATION``: u32 length, the machine type, then subsections
        ``(name, version, payload)``."""
        self.marks["config"] = len(self.buf)
        name = machine_type.encode()
        self.buf += bytes([CONFIGURATION]) + be32(len(name) if length is None else length) + name
        for sub, ver, payload in subsections:
            self.buf += bytes([SUBSECTION]) + pstr(sub) + be32(ver) + payload

    def ram_setup(self, blocks: Sequence[tuple[str, int]], *, sid: int = 2, total: int | None = None,
                  extras: dict[str, Sequence[int]] | None = None, instance: int = 0,
                  version: int = 4) -> None:
        """``SECTION_START`` of ``"ram"``: the ``MEM_SIZE`` record, the block list, ``EOS``."""
        self.marks["ram_start"] = len(self.buf)
        self.ram_sid = sid
        self.buf += bytes([START]) + be32(sid) + pstr("ram") + be32(instance) + be32(version)
        size = sum(n for _, n in blocks) if total is None else total
        self.buf += be64(size | F_MEM_SIZE)
        for name, used in blocks:
            self.buf += pstr(name) + be64(used)
            for value in (extras or {}).get(name, ()):
                self.buf += be64(value)
        self.buf += be64(F_EOS)
        self._footer(sid)

    def record(self, kind: str, block: str, offset: int, payload: Any = None, *,
               cont: bool | None = None, flags: int | None = None) -> bytes:
        """One RAM record: ``page`` (payload = page bytes), ``zero`` (fill byte), ``zlib``
        (page bytes, or ``blob=`` raw compressed bytes via a ``(data, blob)`` tuple),
        ``xbzrle`` (delta bytes). ``CONTINUE`` is set when the block is the previous one."""
        if cont is None:
            cont = block == self.last_block
        self.last_block = block
        f = {"page": F_PAGE, "zero": F_ZERO, "zlib": F_COMPRESS_PAGE, "xbzrle": F_XBZRLE}[kind]
        if cont:
            f |= F_CONTINUE
        out = be64(offset | (f if flags is None else flags))
        if not cont:
            out += pstr(block)
        if kind == "page":
            out += payload
        elif kind == "zero":
            out += bytes([payload or 0])
        elif kind == "zlib":
            blob = payload[1] if isinstance(payload, tuple) else zlib.compress(payload)
            out += be32(len(blob)) + blob
        else:
            out += bytes([1]) + be16(len(payload)) + payload
        return out

    def ram_part(self, records: Sequence[tuple[Any, ...] | bytes], *, sid: int | None = None,
                 end: bool = False) -> None:
        """A ``SECTION_PART`` (or ``SECTION_END``) of RAM records, closed by ``EOS``.
        A record is a tuple of :meth:`record` arguments or ready bytes."""
        self.marks[f"ram_part{self.parts}"] = len(self.buf)
        self.parts += 1
        sid = self.ram_sid if sid is None else sid
        self.buf += bytes([END if end else PART]) + be32(sid)
        for rec in records:
            self.buf += rec if isinstance(rec, bytes) else self.record(*rec)
        self.buf += be64(F_EOS)
        self._footer(sid)

    def device(self, idstr: str, content: bytes, *, instance: int = 0, version: int = 1,
               sid: int | None = None, desc_fields: list[dict[str, Any]] | None = None,
               describe: bool = True) -> None:
        """A ``SECTION_FULL`` holding ``content``; described in the JSON unless ``describe`` is
        False (default description: one buffer field of the content's size)."""
        if sid is None:
            sid, self.next_sid = self.next_sid, self.next_sid + 1
        self.marks[f"device:{idstr}#{instance}"] = len(self.buf)
        self.buf += bytes([FULL]) + be32(sid) + pstr(idstr) + be32(instance) + be32(version)
        self.buf += content
        self._footer(sid)
        if describe:
            fields = desc_fields if desc_fields is not None else [
                {"name": "data", "type": "buffer", "size": len(content)}]
            self.descs.append({"name": idstr, "instance_id": instance, "vmsd_name": idstr,
                               "version": version, "fields": fields})

    def command(self, cmd: int, data: bytes = b"") -> None:
        self.buf += bytes([COMMAND]) + be16(cmd) + be16(len(data)) + data

    def eof(self, *, vmdesc: bool = True) -> None:
        """``QEMU_VM_EOF``, then the JSON description of the device sections."""
        self.marks["eof"] = len(self.buf)
        self.buf += bytes([EOF])
        if vmdesc:
            text = json.dumps({"page_size": self.page_size, "devices": self.descs}).encode()
            self.marks["vmdesc"] = len(self.buf)
            self.buf += bytes([VMDESCRIPTION]) + be32(len(text)) + text

    def bytes(self) -> bytes:
        return bytes(self.buf)


# --- device contents ---------------------------------------------------------------------------

#: leading fields of QEMU's ``vmstate_x86_cpu`` v12 for a 64-bit target (name, size, count),
#: from ``target/i386/machine.c``
CPU_V12 = (
    ("env.regs", 8, 16), ("env.eip", 8, 1), ("env.eflags", 8, 1), ("env.hflags", 4, 1),
    ("env.fpuc", 2, 1), ("env.fpus_vmstate", 2, 1), ("env.fptag_vmstate", 2, 1),
    ("env.fpregs_format_vmstate", 2, 1), ("env.fpregs", 10, 8), ("env.segs", 20, 6),
    ("env.ldt", 20, 1), ("env.tr", 20, 1), ("env.gdt", 20, 1), ("env.idt", 20, 1),
    ("env.sysenter_cs", 4, 1), ("env.sysenter_esp", 8, 1), ("env.sysenter_eip", 8, 1),
    ("env.cr[0]", 8, 1), ("env.cr[2]", 8, 1), ("env.cr[3]", 8, 1), ("env.cr[4]", 8, 1),
    ("env.dr", 8, 8), ("env.a20_mask", 4, 1), ("env.mxcsr", 4, 1), ("env.xmm_regs[0]", 16, 16),
    ("env.efer", 8, 1), ("env.star", 8, 1), ("env.lstar", 8, 1), ("env.cstar", 8, 1),
    ("env.fmask", 8, 1), ("env.kernelgsbase", 8, 1),
)
_SEG_STRUCT = {"vmsd_name": "segment", "version": 1, "fields": [
    {"name": "selector", "type": "uint32", "size": 4}, {"name": "base", "type": "uint64", "size": 8},
    {"name": "limit", "type": "uint32", "size": 4}, {"name": "flags", "type": "uint32", "size": 4}]}


def seg(selector: int, base: int = 0, limit: int = 0xFFFFFFFF, flags: int = 0) -> bytes:
    return be32(selector) + be64(base) + be32(limit) + be32(flags)


def cpu_content(values: dict[str, Any] | None = None, *,
                tail: int = 100) -> tuple[bytes, list[dict[str, Any]]]:
    """A ``cpu`` section's bytes and its JSON field list. ``values`` maps a field name to an
    int (scalar), a list of ints (array) or bytes (raw element data, e.g. :func:`seg`);
    unset fields are zero. ``tail`` bytes of further (undecoded) state follow."""
    values = values or {}
    out = bytearray()
    fields: list[dict[str, Any]] = []
    for name, size, count in CPU_V12:
        v = values.get(name)
        if isinstance(v, bytes):
            raw = v
        elif isinstance(v, list):
            raw = b"".join(x if isinstance(x, bytes) else x.to_bytes(size, "big") for x in v)
        else:
            raw = (v or 0).to_bytes(size, "big") * count if count == 1 else bytes(size * count)
        assert len(raw) == size * count, name
        out += raw
        f: dict[str, Any] = {"name": name, "type": "uint64" if size == 8 else "buffer", "size": size}
        if count > 1:
            f["array_len"] = count
        if size == 20:
            f["type"], f["struct"] = "struct", _SEG_STRUCT
        fields.append(f)
    out += bytes(tail)
    fields.append({"name": "rest", "type": "buffer", "size": tail})
    return bytes(out), fields


def vmcoreinfo_content(paddr: int, size: int, *, has: int = 1, guest_format: int = 1,
                       host_format: int = 1) -> tuple[bytes, list[dict[str, Any]]]:
    """``vmstate_vmcoreinfo`` v1 (bool, u16, u16, u32, u64)."""
    data = bytes([has]) + be16(host_format) + be16(guest_format) + be32(size) + be64(paddr)
    fields = [{"name": "has_vmcoreinfo", "type": "bool", "size": 1},
              {"name": "vmcoreinfo.host_format", "type": "uint16", "size": 2},
              {"name": "vmcoreinfo.guest_format", "type": "uint16", "size": 2},
              {"name": "vmcoreinfo.size", "type": "uint32", "size": 4},
              {"name": "vmcoreinfo.paddr", "type": "uint64", "size": 8}]
    return data, fields


def rtc_content(below_4g: int, above_4g: int) -> tuple[bytes, list[dict[str, Any]]]:
    """``mc146818rtc``: CMOS bytes as ``pc_cmos_init`` fills them for this split, then the
    rest of the device state."""
    cmos = bytearray(128)
    mid = max(0, below_4g - (16 << 20)) >> 16
    cmos[0x34], cmos[0x35] = mid & 0xFF, mid >> 8
    hi = above_4g >> 16
    cmos[0x5B], cmos[0x5C], cmos[0x5D] = hi & 0xFF, (hi >> 8) & 0xFF, hi >> 16
    rest = bytes(117)
    return bytes(cmos) + rest, [{"name": "cmos_data", "type": "buffer", "size": 128},
                                {"name": "rest", "type": "buffer", "size": len(rest)}]


def elf_note_le(name: bytes, ntype: int, desc: bytes) -> bytes:
    """An ELF note as a little-endian guest keeps it (4-byte padded name and descriptor)."""
    n = name + b"\0"
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(n), len(desc), ntype) + pad(n) + pad(desc)


# --- libvirt -----------------------------------------------------------------------------------

def libvirt_wrap(stream: bytes, *, magic: bytes = b"LibvirtQemudSave", version: int = 2,
                 xml: bytes = b"<domain type='kvm'><name>guest1</name></domain>",
                 cookie: bytes | None = None, data_len: int | None = None, was_running: int = 1,
                 fmt: int = 0, cookie_offset: int | None = None, endian: str = "<",
                 padding: int = 64 * 1024) -> bytes:
    """``virQEMUSaveHeader`` + XML (+ cookie) + zero padding + the stream, as
    ``virQEMUSaveDataWrite`` writes them (header in the host's byte order)."""
    body = xml + b"\0"
    off = 0
    if cookie is not None:
        off = len(body)
        body += cookie + b"\0"
    dlen = len(body) + padding if data_len is None else data_len
    header = magic + struct.pack(f"{endian}5I14I", version, dlen, was_running, fmt,
                                 off if cookie_offset is None else cookie_offset, *([0] * 14))
    fill = dlen - len(body) if data_len is None else padding  # an overridden data_len may lie
    return header + body + bytes(max(0, fill)) + stream
