"""Builder of synthetic Hyper-V saved state files (``.vmrs``), the test oracle for the reader.

Written with :mod:`struct` / :mod:`zlib` only, never importing ``kdumptool``, strictly from the
published description: microsoft/openvmm (MIT) ``support/hvs_file/FORMAT.md`` and ``src/defs.rs``
(container), ``vmm_core/hyperv_dump/src/defs.rs`` and ``vmrs_writer.rs`` (RAM keys),
``vm/hv1/hvdef/src/save_restore.rs`` (partition state chunks). No real ``.vmrs`` file is
public, so the reader is backed by this builder alone.

Compressed RAM blocks follow the reverse-engineered record layout described in SPEC.md §10.6
(Pascal Beyer's VMRS parser), with [MS-XCA] §2.3 Plain LZ77 (XPRESS) page payloads produced by
the small compressor :func:`xpress_compress` below.

Every header, table and entry field can be overridden (to build damaged files), and the
builder returns a :class:`Layout` naming the file offset of every structure it wrote.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

HEADER_SIGNATURE = 0x01282014
OBJECT_TABLE_SIGNATURE = 0x01110001
KEY_TABLE_SIGNATURE = 0x0002
REPLAY_LOG_SIGNATURE = 0x01110003
FORMAT_VERSION = 0x0400
FILE_OBJECT_THRESHOLD = 2048
PAGE = 4096
BLOCK = 256 * PAGE

TYPES = {"free": 1, "int": 3, "uint": 4, "double": 5, "string": 6, "array": 7, "bool": 8, "node": 9}

# (field name, struct code) in on-disk order — FORMAT.md tables
FILE_HEADER = [("signature", "I"), ("checksum", "I"), ("sequence", "H"), ("format_version", "I"),
               ("data_version", "I"), ("flags", "I"), ("data_alignment", "I"),
               ("replay_log_offset", "Q"), ("replay_log_size", "Q"), ("replay_log_header_size", "I")]
OBJECT_ENTRY = [("object_type", "B"), ("checksum", "I"), ("file_offset", "Q"), ("size", "I"),
                ("flags", "B")]
KEY_TABLE_HEADER = [("signature", "H"), ("table_index", "H"), ("sequence", "H"), ("checksum", "I")]
KEY_ENTRY = [("key_type", "B"), ("flags", "B"), ("size", "I"), ("parent_table", "H"),
             ("parent_offset", "I"), ("checksum", "I"), ("insertion_sequence", "I"), ("name_size", "B")]
REPLAY_LOG = [("signature", "I"), ("checksum", "I"), ("current_entries_count", "I"), ("reserved", "B"),
              ("maximum_number_of_entries", "I"), ("change_tracking_enabled", "B"),
              ("change_tracking_buffer_offset", "Q"), ("change_tracking_buffer_size", "I"),
              ("change_tracking_buffer_used_size", "I")]
MEMORY_BLOCK = [("saved_state_version", "I"), ("flags", "I"), ("page_count_total", "Q"),
                ("mbp_index_start", "Q"), ("gpa_index_start", "Q"), ("virtual_node", "I"),
                ("padding", "I"), ("ksr_block_id", "Q")]


def pack(fields: list[tuple[str, str]], values: Mapping[str, int], *, crc_field: str | None = "checksum",
         extra: bytes = b"") -> bytes:
    """Pack ``fields`` little-endian; a missing or None ``crc_field`` is computed (CRC-32 of the
    packed bytes with that field zero, followed by ``extra``)."""
    fmt = "<" + "".join(code for _, code in fields)
    vals = {name: values.get(name, 0) for name, _ in fields}
    if crc_field is not None and values.get(crc_field) is None:
        vals[crc_field] = 0
        vals[crc_field] = zlib.crc32(struct.pack(fmt, *vals.values()) + extra)
    return struct.pack(fmt, *vals.values())


def field_offset(fields: list[tuple[str, str]], name: str) -> int:
    """Byte offset of ``name`` inside the packed structure."""
    return struct.calcsize("<" + "".join(c for n, c in fields[:[n for n, _ in fields].index(name)]))


# --- XPRESS (MS-XCA Plain LZ77) ------------------------------------------------------------

def xpress_compress(data: bytes) -> bytes:
    """Greedy MS-XCA §2.3 Plain LZ77 compressor (3-byte hash, distances up to 8192)."""
    out = bytearray()
    flags = 0
    nflags = 0
    flag_pos = len(out)
    out += b"\0\0\0\0"
    nibble_at = -1
    table: dict[bytes, int] = {}
    pos, n = 0, len(data)

    def push_flag(bit: int) -> None:
        nonlocal flags, nflags, flag_pos
        if nflags == 32:
            out[flag_pos:flag_pos + 4] = struct.pack("<I", flags)
            flag_pos = len(out)
            out.extend(b"\0\0\0\0")
            flags, nflags = 0, 0
        flags = flags << 1 | bit
        nflags += 1

    while pos < n:
        best_len = best_dist = 0
        if pos + 3 <= n:
            key = data[pos:pos + 3]
            cand = table.get(key)
            table[key] = pos
            if cand is not None and pos - cand <= 8192:
                length = 3
                while pos + length < n and data[cand + length] == data[pos + length] and length < 70000:
                    length += 1
                best_len, best_dist = length, pos - cand
        if best_len < 3:
            push_flag(0)
            out.append(data[pos])
            pos += 1
            continue
        push_flag(1)
        rest = best_len - 3
        out += struct.pack("<H", (best_dist - 1) << 3 | min(rest, 7))
        if rest >= 7:
            rest -= 7
            nib = min(rest, 15)
            if nibble_at < 0:
                nibble_at = len(out)
                out.append(nib)
            else:
                out[nibble_at] |= nib << 4
                nibble_at = -1
            if rest >= 15:
                rest -= 15
                if rest < 255:
                    out.append(rest)
                else:
                    out.append(255)
                    if best_len - 3 <= 0xFFFF:
                        out += struct.pack("<H", best_len - 3)
                    else:
                        out += struct.pack("<HI", 0, best_len - 3)
        for k in range(pos + 1, min(pos + best_len, n - 2)):
            table[data[k:k + 3]] = k
        pos += best_len
    if nflags == 32:  # the end marker needs a flag bit of its own
        out[flag_pos:flag_pos + 4] = struct.pack("<I", flags)
        flag_pos = len(out)
        out.extend(b"\0\0\0\0")
        flags, nflags = 0, 0
    flags = (flags << (32 - nflags)) | ((1 << (32 - nflags)) - 1)
    out[flag_pos:flag_pos + 4] = struct.pack("<I", flags)
    return bytes(out)


def compress_block(block: bytes, *, sized_records: bool = False) -> bytes:
    """A 1 MiB RAM block as records: fill records for pages of one repeated 8-byte pattern,
    XPRESS pages where smaller, raw pages otherwise, then the end record. With
    ``sized_records`` the data records use the ``0xfffffffc`` form."""
    assert len(block) == BLOCK
    out = bytearray()
    k = 0
    while k < 256:
        page = block[k * PAGE:(k + 1) * PAGE]
        if page == page[:8] * (PAGE // 8):
            run = 1
            while k + run < 256 and block[(k + run) * PAGE:(k + run + 1) * PAGE] == page:
                run += 1
            out += (struct.pack("<IQ", 0xFFFFFFFE, int.from_bytes(page[:8], "little")) if run == 1
                    else struct.pack("<IQI", 0xFFFFFFFD, int.from_bytes(page[:8], "little"), run))
            k += run
            continue
        packed = xpress_compress(page)
        payload = packed if len(packed) < PAGE else page
        out += (struct.pack("<III", 0xFFFFFFFC, PAGE, len(payload)) if sized_records
                else struct.pack("<I", len(payload)))
        out += payload
        k += 1
    out += struct.pack("<I", 0xFFFFFFFF)
    return bytes(out)


# --- the container ---------------------------------------------------------------------------

@dataclass
class Key:
    """One leaf: ``type`` is a name of :data:`TYPES`; ``value`` an int, str or bytes.

    ``entry`` overrides key-entry header fields (``checksum``, ``flags``, ``size``...).
    """

    path: str
    type: str
    value: Any
    entry: dict[str, int] = field(default_factory=dict)


@dataclass
class Layout:
    """Where the builder put things (file offsets)."""

    size: int = 0
    headers: list[int] = field(default_factory=lambda: [0, PAGE])
    object_tables: list[int] = field(default_factory=list)
    object_entries: list[tuple[int, int, int]] = field(default_factory=list)  # (entry off, type, obj off)
    key_tables: list[int] = field(default_factory=list)
    entries: dict[str, int] = field(default_factory=dict)  # path -> key entry offset
    file_objects: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (offset, size)
    replay_log: int = 0


def _value_bytes(key: Key) -> bytes:
    t = key.type
    if t in ("int", "uint"):
        return struct.pack("<q" if t == "int" else "<Q", key.value)
    if t == "bool":
        return struct.pack("<i", 1 if key.value else 0)
    if t == "double":
        return struct.pack("<d", key.value)
    if t == "string":
        raw = (key.value + "\0").encode("utf-16-le")
        return struct.pack("<I", len(raw)) + raw
    raw = bytes(key.value)
    return struct.pack("<I", len(raw)) + raw


class HvsWriter:
    """Writes a HyperVStorage file to ``f`` (file objects immediately, the rest in :meth:`finish`).

    :param reserve_key_tables: put this many key tables right after the root object table,
        before the file objects (openvmm puts them after), so a cut file keeps its keys
    """

    def __init__(self, f: BinaryIO, *, alignment: int = PAGE, reserve_key_tables: int = 0,
                 key_table_size: int = PAGE) -> None:
        self.f = f
        self.alignment = alignment
        self.key_table_size = key_table_size
        self.reserved = reserve_key_tables
        self.keys: list[Key] = []
        self.fobjs: dict[str, tuple[int, int, int]] = {}  # path -> (offset, size, aligned size)
        self.data_end = 2 * PAGE + alignment + reserve_key_tables * key_table_size
        self.layout = Layout()

    def _align(self, n: int) -> int:
        return -(-n // self.alignment) * self.alignment

    def add(self, key: Key) -> None:
        """Add a leaf; arrays of 2048 bytes or more become file objects, written now."""
        if key.type == "array" and len(key.value) >= FILE_OBJECT_THRESHOLD:
            off = self.data_end
            self.f.seek(off)
            self.f.write(key.value)
            aligned = self._align(len(key.value))
            self.f.write(bytes(aligned - len(key.value)))
            self.fobjs[key.path] = (off, len(key.value), aligned)
            self.layout.file_objects[key.path] = (off, len(key.value))
            self.data_end += aligned
        self.keys.append(key)

    def finish(self, *, headers: tuple[Mapping[str, int], Mapping[str, int]] = ({}, {}),
               object_entries: Mapping[int, Mapping[str, int]] | None = None,
               key_tables: Mapping[int, Mapping[str, int]] | None = None,
               replay_log: Mapping[str, int] | None = None,
               format_version: int = FORMAT_VERSION) -> Layout:
        """Write key tables, object tables, the replay log and both file headers.

        :param headers: field overrides for header copy 0 and copy 1 (``checksum`` too)
        :param object_entries: overrides per object table entry (index in write order:
            key tables first, then file objects)
        :param key_tables: header overrides per key table (0-based position)
        :param replay_log: replay log header overrides
        """
        entries = self._entries()
        tables = self._fill_tables(entries)
        al = self.alignment
        ks = self.key_table_size
        if self.reserved:
            if len(tables) > self.reserved:
                raise ValueError(f"{len(tables)} key tables do not fit {self.reserved} reserved")
            kt_base = 2 * PAGE + al
        else:
            kt_base = self.data_end
            self.data_end += len(tables) * ks
        for i, (body, overrides) in enumerate(zip(tables, [dict((key_tables or {}).get(i, {}))
                                                           for i in range(len(tables))], strict=True)):
            off = kt_base + i * ks
            hdr = pack(KEY_TABLE_HEADER, {"signature": KEY_TABLE_SIGNATURE, "table_index": i + 1,
                                          "sequence": 1, **overrides})
            self.f.seek(off)
            self.f.write(hdr + body)
            self.layout.key_tables.append(off)
        for path, pos in self._entry_pos.items():
            t, o = pos
            self.layout.entries[path] = kt_base + (t - 1) * ks + o
        # object entries: key tables, then file objects
        objs = [{"object_type": 2, "file_offset": kt_base + i * ks, "size": ks, "flags": 1}
                for i in range(len(tables))]
        objs += [{"object_type": 3, "file_offset": o, "size": a} for o, _, a in self.fobjs.values()]
        per = (al - 8) // 18
        usable = per - 1
        n_tables = max(1, -(-len(objs) // usable))
        replay_off = self.data_end
        table_offs = [2 * PAGE] + [replay_off + al + k * al for k in range(n_tables - 1)]
        for t in range(n_tables):
            chunk = objs[t * usable:(t + 1) * usable]
            buf = bytearray(struct.pack("<II", OBJECT_TABLE_SIGNATURE, per))
            for j in range(usable):
                idx = t * usable + j
                vals = dict(chunk[j]) if j < len(chunk) else {}
                if j < len(chunk):
                    vals.update((object_entries or {}).get(idx, {}))
                    self.layout.object_entries.append((table_offs[t] + len(buf), vals["object_type"],
                                                       vals["file_offset"]))
                buf += pack(OBJECT_ENTRY, vals)
            chain = ({"object_type": 1, "file_offset": table_offs[t + 1], "size": al}
                     if t + 1 < n_tables else {})
            buf += pack(OBJECT_ENTRY, chain)
            self.f.seek(table_offs[t])
            self.f.write(bytes(buf) + bytes(al - len(buf)))
            self.layout.object_tables.append(table_offs[t])
        max_entries = (al - 34) // 28
        rl = pack(REPLAY_LOG, {"signature": REPLAY_LOG_SIGNATURE, "maximum_number_of_entries": max_entries,
                               **(replay_log or {})})
        self.f.seek(replay_off)
        self.f.write(rl + bytes(al - len(rl)))
        self.layout.replay_log = replay_off
        for copy, (seq, off) in enumerate([(1, 0), (0, PAGE)]):
            vals = {"signature": HEADER_SIGNATURE, "sequence": seq, "format_version": format_version,
                    "data_alignment": al, "replay_log_offset": replay_off, "replay_log_size": al,
                    "replay_log_header_size": al, **headers[copy]}
            raw = pack(FILE_HEADER, vals)
            self.f.seek(off)
            self.f.write(raw + bytes(PAGE - len(raw)))
        self.f.seek(0, 2)
        self.layout.size = self.f.tell()
        self.f.flush()
        return self.layout

    def _entries(self) -> list[tuple[str, dict[str, Any], bytes, bytes, bool]]:
        """Key entries in tree order: (path, header fields, name, data, is_node)."""
        tree: dict[str, Any] = {}
        for key in self.keys:
            node = tree
            parts = key.path.strip("/").split("/")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = key
        out: list[tuple[str, dict[str, Any], bytes, bytes, bool]] = []

        def walk(node: dict[str, Any], prefix: str) -> int:
            seq = 0
            for name, child in node.items():
                seq += 1
                path = f"{prefix}/{name}"
                nm = name.encode() + b"\0"
                if isinstance(child, dict):
                    slot = len(out)
                    out.append((path, {"key_type": 9, "insertion_sequence": seq}, nm, b"", True))
                    nxt = walk(child, path)
                    out[slot] = (path, out[slot][1], nm, struct.pack("<QI", 0, nxt + 1), True)
                else:
                    if child.path in self.fobjs:
                        off, size, _ = self.fobjs[child.path]
                        data, flags = struct.pack("<IQ", size, off), 1
                    else:
                        data, flags = _value_bytes(child), 0
                    hdr = {"key_type": TYPES[child.type], "flags": flags, "insertion_sequence": seq,
                           **child.entry}
                    out.append((path, hdr, nm, data, False))
            return seq

        walk(tree, "")
        return out

    def _fill_tables(self, entries: list[tuple[str, dict[str, Any], bytes, bytes, bool]]) -> list[bytes]:
        usable = self.key_table_size - 10
        tables: list[bytearray] = []
        cur = bytearray()
        index = 1
        where: dict[str, tuple[int, int]] = {}
        self._entry_pos = {}
        for path, hdr, name, data, is_node in entries:
            size = 21 + len(name) + len(data)
            if len(cur) + size > usable and cur:
                tables.append(cur)
                cur, index = bytearray(), index + 1
            offset = 10 + len(cur)
            parent = path.rsplit("/", 1)[0]
            pt, po = where.get(parent, (0, 0))
            if is_node:
                where[path] = (index, offset)
            self._entry_pos[path] = (index, offset)
            gap = usable - len(cur) - size
            vals = {"size": size + (gap if 0 < gap <= 21 else 0), "parent_table": pt,
                    "parent_offset": po, "name_size": len(name), **hdr}
            vals.setdefault("checksum", None)
            cur += pack(KEY_ENTRY, vals, extra=name + data) + name + data
            if 0 < gap <= 21:
                cur += bytes(gap)
        tables.append(cur)
        out = []
        for t in tables:
            rest = usable - len(t)
            if rest:
                t += pack(KEY_ENTRY, {"key_type": 1, "size": rest}, crc_field=None) + bytes(rest - 21)
            out.append(bytes(t))
        return out


# --- saved state ------------------------------------------------------------------------------

X64_GP = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
          "r12", "r13", "r14", "r15", "rip", "rflags")
X64_SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs", "ldtr", "tr")


def _chunk(cid: int, data: bytes) -> bytes:
    return struct.pack("<II8x", cid, len(data)) + data


def partition_state(vps: Iterable[Mapping[str, int]], *, os_id: int = 0, vendor: int = 1,
                    arm64: bool = False, header_size: int = 24) -> bytes:
    """The ``partition_state`` blob: descriptor, prolog, OS id, VTL, VP indices, per VP its
    marker, VTL marker and register chunks (x64: GP, control, segments, tables, debug, FP,
    XSAVE control; arm64: GP, control, tables), epilog. Registers default to 0.

    VP dicts: ``vp_index`` and register names (segments as ``cs`` selector and ``cs_base``,
    tables as ``idtr_base``/``idtr_limit``...).
    """
    vps = list(vps)
    out = bytearray(24 + 16)  # descriptor + 16 bytes before the first chunk
    out += _chunk(0, struct.pack("<IB3xI", 0x50546475, 0, 0x10 if arm64 else vendor) + bytes(4052))
    out += _chunk(0x20001000, struct.pack("<Q8x", os_id))
    out += _chunk(0x20008000, bytes(16))  # PARTITION_VTL 0
    bitmap = bytearray(8)
    for vp in vps:
        bitmap[vp["vp_index"] // 8] |= 1 << vp["vp_index"] % 8
    out += _chunk(0x30000000, struct.pack("<I", min(v["vp_index"] for v in vps)) + bytes(bitmap))
    for vp in vps:
        g = vp.get
        out += _chunk(0x30001000, struct.pack("<I12x", vp["vp_index"]))
        out += _chunk(0x3001A000, bytes(16))  # VP_VTL 0
        if arm64:
            names = [f"x{k}" for k in range(29)] + ["fp", "lr", "elr_el2", "spsr_el2", "esr_el1",
                                                    "spsr_el1", "far_el1", "par_el1", "elr_el1",
                                                    "sp_el0", "sp_el1", "afsr0_el1", "afsr1_el1"]
            out += _chunk(0x30005000, struct.pack(f"<{len(names)}Q", *(g(n, 0) for n in names)))
            out += _chunk(0x30007000, struct.pack("<16Q", *(g(n, 0) for n in (
                "vmpidr_el2", "vpidr_el2", "sctlr_el1", "actlr_el1", "tcr_el1", "mair_el1",
                "tpidr_el1", "amair_el1", "tpidrro_el0", "tpidr_el0", "contextidr_el1", "cpacr_el1",
                "csselr_el1", "cntk_ctl_el1", "cntv_cval_el0", "cntv_ctl_el0"))))
            out += _chunk(0x3000A000, struct.pack("<3Q8x", g("ttbr0_el1", 0), g("ttbr1_el1", 0),
                                                  g("vbar_el1", 0)))
            continue
        out += _chunk(0x30005000, struct.pack("<18Q", *(g(n, 0) for n in X64_GP)))
        out += _chunk(0x30007000, struct.pack("<6Q", *(g(n, 0) for n in ("cr0", "cr2", "cr3", "cr4",
                                                                          "cr8", "efer"))))
        segs = b"".join(struct.pack("<QIHH", g(f"{s}_base", 0), g(f"{s}_limit", 0xFFFFFFFF), g(s, 0),
                                    g(f"{s}_attributes", 0)) for s in X64_SEGMENTS)
        out += _chunk(0x30009000, segs + struct.pack("<B15x", g("cs", 0) & 3))
        out += _chunk(0x3000A000, struct.pack("<6xHQ6xHQ", g("idtr_limit", 0), g("idtr_base", 0),
                                              g("gdtr_limit", 0), g("gdtr_base", 0)))
        out += _chunk(0x30008000, struct.pack("<6Q", *(g(n, 0) for n in ("dr0", "dr1", "dr2", "dr3",
                                                                         "dr6", "dr7"))))
        out += _chunk(0x30006000, bytes(26 * 16))
        out += _chunk(0x3000D000, struct.pack("<Q56x", g("xcr0", 1)))
    out += _chunk(0xF0000000, b"")
    out[0:24] = struct.pack("<QQQ", 24, header_size, len(out))
    return bytes(out)


def linux_guest_os_id(major: int, minor: int, sublevel: int) -> int:
    """``hv_generate_guest_id(LINUX_VERSION_CODE)`` (Linux ``include/asm-generic/mshyperv.h``)."""
    return 0x8100 << 48 | ((major << 16) + (minor << 8) + min(sublevel, 255)) << 16


def build_vmrs(
    path: str | Path,
    ranges: Iterable[tuple[int, int]],
    read_gpa: Callable[[int, int], bytes],
    *,
    vps: Iterable[Mapping[str, int]] = ({"vp_index": 0},),
    os_id: int = 0,
    vm_version: int = 0x0A00,
    compress: Iterable[int] = (),
    sized_records: bool = False,
    omit_blocks: Iterable[int] = (),
    block_data: Mapping[int, bytes] | None = None,
    meta: Mapping[int, Mapping[str, int]] | None = None,
    extra_keys: Iterable[Key] = (),
    entry_overrides: Mapping[str, Mapping[str, int]] | None = None,
    partition: bytes | None = None,
    prefix: str = "/savedstate",
    writer: Mapping[str, Any] | None = None,
    finish: Mapping[str, Any] | None = None,
) -> Layout:
    """A ``.vmrs`` of the guest RAM ``ranges`` (``(gpa, size)``, page-aligned), as openvmm's
    ``VmrsWriter`` lays it out: one ``RamMemoryBlock<i>`` per range, 1 MiB ``RamBlock<n>``
    blocks numbered across ranges (a short last block zero-filled).

    :param compress: RamBlock numbers stored compressed (see :func:`compress_block`)
    :param omit_blocks: RamBlock numbers not written at all
    :param block_data: RamBlock number -> stored bytes, replacing what would be written
    :param meta: RamMemoryBlock index -> metadata field overrides
    :param entry_overrides: key path -> key entry header overrides
    :param writer: keyword arguments of :class:`HvsWriter`; ``finish``: of :meth:`HvsWriter.finish`
    """
    compress, omit = set(compress), set(omit_blocks)
    with open(path, "w+b") as f:
        w = HvsWriter(f, **(writer or {}))
        w.add(Key(f"{prefix}/VmVersion", "int", vm_version))
        w.add(Key("/configuration/properties/version", "int", vm_version))
        w.add(Key(f"{prefix}/type", "string", "Normal"))
        w.add(Key(f"{prefix}/savedVM/partition_state", "array",
                  partition if partition is not None else partition_state(vps, os_id=os_id)))
        n = 0
        for i, (gpa, size) in enumerate(ranges):
            vals = {"saved_state_version": 3, "page_count_total": size // PAGE,
                    "mbp_index_start": n * 256, "gpa_index_start": gpa // PAGE, **(meta or {}).get(i, {})}
            w.add(Key(f"{prefix}/RamMemoryBlock{i}", "array", pack(MEMORY_BLOCK, vals, crc_field=None)))
            for start in range(gpa, gpa + size, BLOCK):
                if n not in omit:
                    if block_data is not None and n in block_data:
                        data = block_data[n]
                    else:
                        data = read_gpa(start, min(BLOCK, gpa + size - start)).ljust(BLOCK, b"\0")
                        if n in compress:
                            data = compress_block(data, sized_records=sized_records)
                    w.add(Key(f"{prefix}/RamBlock{n}", "array", data))
                n += 1
        for key in extra_keys:
            w.add(key)
        for key in w.keys:
            key.entry.update((entry_overrides or {}).get(key.path, {}))
        return w.finish(**(finish or {}))
