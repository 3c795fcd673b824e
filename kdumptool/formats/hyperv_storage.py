"""HyperVStorage: the key-value container of Hyper-V ``.vmrs``, ``.vsv`` and ``.vmcx`` files.

Spec: SPEC.md §11.1-11.4; microsoft/openvmm (MIT) ``support/hvs_file/FORMAT.md`` and
``support/hvs_file/src/defs.rs`` (``FileHeader``, ``ObjectTableHeader``, ``ObjectTableEntry``,
``KeyTableHeader``, ``KeyTableEntryHeader``, ``FileObjectData``, ``ReplayLogHeader``).

Little-endian, packed. Two copies of the file header (offsets 0 and 4096; the valid copy
with the higher sequence wins); a chain of object tables from offset 8192 listing key
tables and file objects; key tables of variable-size entries forming a tree of named nodes
and typed leaf values; values of 2048 bytes or more live in a header-less file object the
entry points to. Every header and entry carries a zlib CRC-32 computed with its own
checksum field zeroed.

Memory does not grow with the number of guest RAM blocks beyond a few NumPy words each:
leaves named ``RamBlock<n>`` (and the all-digit names of the pre-v5 layout) are indexed in
arrays, not as Python objects (:class:`NumberedValues`).
"""

from __future__ import annotations

import functools
import re
import struct
import zlib
from array import array
from dataclasses import dataclass, field

import construct as cs
import numpy as np

from kdumptool.errors import CorruptDumpError, TruncatedDumpError, UnknownFormatError
from kdumptool.schema import ints, parse_at
from kdumptool.transport.source import ByteSource

HEADER_SIGNATURE = 0x01282014
OBJECT_TABLE_SIGNATURE = 0x01110001
KEY_TABLE_SIGNATURE = 0x0002
REPLAY_LOG_SIGNATURE = 0x01110003
HEADER_COPY_SIZE = 4096
FIRST_OBJECT_TABLE = 2 * HEADER_COPY_SIZE
#: Values of at least this many bytes are stored as file objects.
FILE_OBJECT_THRESHOLD = 2048
#: Format version 3.1 fixed the object table entry checksum: older ones are not checked.
FORMAT_ENTRY_CRC = 0x0301

OBJ_EMPTY, OBJ_OBJECT_TABLE, OBJ_KEY_TABLE, OBJ_FILE_OBJECT, OBJ_FREE = range(5)
KEY_FREE, KEY_INT, KEY_UINT, KEY_DOUBLE, KEY_STRING, KEY_ARRAY, KEY_BOOL, KEY_NODE = 1, 3, 4, 5, 6, 7, 8, 9
KEY_TYPE_NAMES = {KEY_FREE: "free", KEY_INT: "int", KEY_UINT: "uint", KEY_DOUBLE: "double",
                  KEY_STRING: "string", KEY_ARRAY: "array", KEY_BOOL: "bool", KEY_NODE: "node"}
#: Inline data size of the fixed-size key types.
FIXED_SIZES = {KEY_INT: 8, KEY_UINT: 8, KEY_DOUBLE: 8, KEY_BOOL: 4, KEY_NODE: 12}
FLAG_FILE_OBJECT = 0x01

#: Sanity bounds (file sizes bound everything else).
MAX_KEY_TABLE = 16 << 20
MAX_OBJECT_ENTRIES = 1 << 20
MAX_DEPTH = 256
#: Leaves indexed in arrays: ``RamBlock<n>`` (current layout) and ``<n>`` (pre-v5 ``RamBlock/<n>``).
NUMBERED = re.compile(r"(RamBlock)?([0-9]{1,19})")

_i = ints("<")
FileHeader = cs.Struct(
    "signature" / _i.u32, "checksum" / _i.u32, "sequence" / _i.u16, "format_version" / _i.u32,
    "data_version" / _i.u32, "flags" / _i.u32, "data_alignment" / _i.u32,
    "replay_log_offset" / _i.u64, "replay_log_size" / _i.u64, "replay_log_header_size" / _i.u32,
)  # 46 bytes
ObjectTableHeader = cs.Struct("signature" / _i.u32, "entries_count" / _i.u32)
ObjectTableEntry = cs.Struct("object_type" / _i.u8, "checksum" / _i.u32, "file_offset" / _i.u64,
                             "size" / _i.u32, "flags" / _i.u8)  # 18 bytes
KeyTableHeader = cs.Struct("signature" / _i.u16, "table_index" / _i.u16, "sequence" / _i.u16,
                           "checksum" / _i.u32)  # 10 bytes
KeyEntryHeader = cs.Struct(
    "key_type" / _i.u8, "flags" / _i.u8, "size" / _i.u32, "parent_table" / _i.u16,
    "parent_offset" / _i.u32, "checksum" / _i.u32, "insertion_sequence" / _i.u32,
    "name_size" / _i.u8,
)  # 21 bytes
FileObjectData = cs.Struct("size" / _i.u32, "offset" / _i.u64)
ReplayLogHeader = cs.Struct(
    "signature" / _i.u32, "checksum" / _i.u32, "current_entries_count" / _i.u32, "reserved" / _i.u8,
    "maximum_number_of_entries" / _i.u32, "change_tracking_enabled" / _i.u8,
    "change_tracking_buffer_offset" / _i.u64, "change_tracking_buffer_size" / _i.u32,
    "change_tracking_buffer_used_size" / _i.u32,
)  # 34 bytes
#: Offset of the checksum field in each checksummed structure.
CRC_AT = {"file header": 4, "object table entry": 1, "key table header": 6, "key entry": 12,
          "replay log header": 4}


@functools.cache
def fast(struct_: cs.Struct) -> struct.Struct:
    """A :mod:`struct` twin of a flat construct Struct of integers (for per-entry loops)."""
    fmt = "<"
    for sub in struct_.subcons:
        inner = sub.subcon if isinstance(sub, cs.Renamed) else sub
        fmt += inner.fmtstr[1:]
    return struct.Struct(fmt)


def crc_zeroed(raw: bytes, at: int) -> int:
    """CRC-32 of ``raw`` with its 4-byte checksum field at ``at`` taken as zero."""
    return zlib.crc32(raw[at + 4:], zlib.crc32(b"\0\0\0\0", zlib.crc32(raw[:at])))


_KTH, _KEH, _FOD = fast(KeyTableHeader), fast(KeyEntryHeader), fast(FileObjectData)


def probe(head: bytes) -> bool:
    """True if ``head`` starts with a HyperVStorage file header signature."""
    return len(head) >= 4 and int.from_bytes(head[:4], "little") == HEADER_SIGNATURE


@dataclass(frozen=True)
class KeyValue:
    """One leaf of the key tree.

    ``value_offset``/``value_size`` locate the value bytes in the file: the payload of a
    string or array (after its length word), the file object, or the fixed-size value.
    """

    path: str
    key_type: int
    flags: int
    entry_offset: int
    value_offset: int
    value_size: int
    inline: bytes  # the value bytes when stored in the key table (b"" for file objects)


@dataclass
class NumberedValues:
    """Array leaves ``<stem><n>`` of one parent, sorted by ``n`` (value location per leaf)."""

    number: np.ndarray
    value_offset: np.ndarray
    value_size: np.ndarray
    entry_offset: np.ndarray
    file_object: np.ndarray  # bool


@dataclass
class _Staging:
    number: array = field(default_factory=lambda: array("q"))
    value_offset: array = field(default_factory=lambda: array("q"))
    value_size: array = field(default_factory=lambda: array("q"))
    entry_offset: array = field(default_factory=lambda: array("q"))
    file_object: array = field(default_factory=lambda: array("b"))


@dataclass
class _KeyWalk:
    """What the key tables hold, gathered before the tree's paths are resolved."""

    wide: bool  # UTF-16 key names (format 1.0)
    nodes: dict[tuple[int, int], tuple[tuple[int, int], str, int]] = field(default_factory=dict)
    leaves: list[tuple[tuple[int, int], str, int, int, int, int, int, bytes]] = field(default_factory=list)
    staged: dict[tuple[tuple[int, int], str], _Staging] = field(default_factory=dict)


class HyperVStorage:
    """The parsed directory of a HyperVStorage file (values are read on demand).

    :param strict: raise on any CRC or structure error; when False such damage is skipped
        and described in :attr:`notices`
    :raises UnknownFormatError: no file header signature
    :raises CorruptDumpError: (strict) a checksum or structure is wrong
    :raises TruncatedDumpError: (strict) a table or file object lies past the end of the file
    """

    def __init__(self, source: ByteSource, *, strict: bool = True) -> None:
        self.source = source
        self.path = source.name
        self.strict = strict
        self.notices: list[str] = []
        #: offsets of key tables past the end of the file (tolerant mode): their keys are lost
        self.lost_key_tables: list[int] = []
        self.truncated = False  # (tolerant mode) some structure lies past the end of the file
        self.damage: list[CorruptDumpError] = []  # (tolerant mode) what strict mode would raise
        self.header, self.header_copy = self._read_header()
        self.format_version = self.header.format_version
        self.objects: list[tuple[int, int, int, int]] = []  # (type, offset, size, entry offset)
        self._read_object_tables()
        self.keys: dict[str, KeyValue] = {}
        self.numbered: dict[str, NumberedValues] = {}
        self.key_tables = 0
        self._read_key_tables()
        self.replay_log = self._read_replay_log()

    # --- damage policy ---------------------------------------------------------------------
    def _damage(self, exc: CorruptDumpError) -> None:
        """Raise in strict mode, else remember the problem as a notice."""
        if self.strict:
            raise exc
        if isinstance(exc, TruncatedDumpError):
            self.truncated = True
        self.damage.append(exc)
        self.notices.append(str(exc).removeprefix(f"{self.path}: "))

    def _check_crc(self, raw: bytes, what: str, offset: int, stored: int) -> bool:
        computed = crc_zeroed(raw, CRC_AT[what])
        if computed == stored:
            return True
        self._damage(CorruptDumpError(f"{what} CRC-32 mismatch", path=self.path,
                                      offset=offset + CRC_AT[what], expected=computed, got=stored))
        return False

    # --- file header -----------------------------------------------------------------------
    def _read_header(self) -> tuple[cs.Container, int]:
        size = FileHeader.sizeof()
        copies = []
        for k in range(2):
            off = k * HEADER_COPY_SIZE
            raw = self.source.pread(off, size)
            if len(raw) < size:
                copies.append((None, False, raw, off))
                continue
            h = FileHeader.parse(raw)
            sig = h.signature == HEADER_SIGNATURE
            copies.append((h, sig and crc_zeroed(raw, 4) == h.checksum, raw, off))
        valid = [(h, k) for k, (h, ok, _, _) in enumerate(copies) if ok]
        if len(valid) == 2:
            (h0, _), (h1, _) = valid
            if h0.sequence == h1.sequence:
                self.notices.append(f"both file headers have sequence {h0.sequence}; using copy 0")
            chosen = valid[1] if h1.sequence > h0.sequence else valid[0]
        elif valid:
            chosen = valid[0]
            bad = 1 - chosen[1]
            self.notices.append(f"file header copy {bad} is invalid (bad signature or CRC-32); "
                                f"using copy {chosen[1]}")
        else:
            h0, _, raw0, _ = copies[0]
            if h0 is None or h0.signature != HEADER_SIGNATURE:
                if len(raw0) < size:
                    raise TruncatedDumpError("file ends inside the HyperVStorage file header",
                                             path=self.path, offset=len(raw0),
                                             expected=f"{size} bytes", got=f"{len(raw0)} bytes")
                raise UnknownFormatError("not a HyperVStorage file", path=self.path, offset=0,
                                         expected=HEADER_SIGNATURE, got=h0.signature)
            exc = CorruptDumpError("both HyperVStorage file headers fail their CRC-32", path=self.path,
                                   offset=4, expected=crc_zeroed(raw0, 4), got=h0.checksum)
            self._damage(exc)
            sigs = [(h, k) for k, (h, _, _, _) in enumerate(copies)
                    if h is not None and h.signature == HEADER_SIGNATURE]
            chosen = max(sigs, key=lambda hk: hk[0].sequence)
        h, k = chosen
        align = h.data_alignment
        if align & (align - 1) or not 4096 <= align <= 65536:
            self._damage(CorruptDumpError("file header DataAlignmentInBytes is not a power of two "
                                          "in 4096..65536", path=self.path,
                                          offset=k * HEADER_COPY_SIZE + 22, expected="4096..65536",
                                          got=align))
        return h, k

    # --- object tables ---------------------------------------------------------------------
    def _read_object_tables(self) -> None:
        size = self.source.size
        hsize, esize = ObjectTableHeader.sizeof(), ObjectTableEntry.sizeof()
        entry_fmt = fast(ObjectTableEntry)
        check_crc = self.format_version >= FORMAT_ENTRY_CRC
        table_off = FIRST_OBJECT_TABLE
        seen: set[int] = set()
        while True:
            if table_off in seen:
                self._damage(CorruptDumpError("object table chain loops", path=self.path,
                                              offset=table_off))
                return
            seen.add(table_off)
            head = parse_at(ObjectTableHeader, self.source.pread(table_off, hsize), path=self.path,
                            offset=table_off, what="object table header")
            if head.signature != OBJECT_TABLE_SIGNATURE:
                exc = CorruptDumpError("bad object table signature", path=self.path, offset=table_off,
                                       expected=OBJECT_TABLE_SIGNATURE, got=head.signature)
                if not self.objects or self.strict:
                    raise exc
                self._damage(exc)
                return
            count = head.entries_count
            if count > MAX_OBJECT_ENTRIES:
                raise CorruptDumpError("implausible object table entry count", path=self.path,
                                       offset=table_off + 4, expected=f"<= {MAX_OBJECT_ENTRIES}",
                                       got=count)
            end = table_off + hsize + count * esize
            if end > size:
                self._damage(TruncatedDumpError("file is truncated: object table runs past the end of "
                                                "the file", path=self.path, offset=size,
                                                expected=f"file size >= {end:#x}", got=f"{size:#x}"))
                count = max(0, (size - table_off - hsize) // esize)
            raw = self.source.pread(table_off + hsize, count * esize)
            chain = None
            for k in range(count):
                eoff = table_off + hsize + k * esize
                rec = raw[k * esize:(k + 1) * esize]
                otype, crc, foff, fsize, _flags = entry_fmt.unpack(rec)
                if otype == OBJ_EMPTY and foff == 0 and fsize == 0:
                    continue  # the writer's checksummed empty entries: nothing to verify
                if check_crc and not self._check_crc(rec, "object table entry", eoff, crc):
                    continue
                if otype == OBJ_OBJECT_TABLE:
                    if k != count - 1:
                        self._damage(CorruptDumpError(
                            "object table chain entry is not the table's last entry", path=self.path,
                            offset=eoff, expected=f"entry {count - 1}", got=f"entry {k}"))
                        continue
                    chain = foff
                elif otype in (OBJ_KEY_TABLE, OBJ_FILE_OBJECT):
                    if foff + fsize > size:
                        what = "key table" if otype == OBJ_KEY_TABLE else "file object"
                        self._damage(TruncatedDumpError(
                            f"file is truncated: {what} at {foff:#x} (object table entry at "
                            f"{eoff:#x}) ends past the end of the file", path=self.path, offset=size,
                            expected=f"file size >= {foff + fsize:#x}", got=f"{size:#x}"))
                        if otype == OBJ_KEY_TABLE:
                            self.lost_key_tables.append(foff)
                            continue
                    self.objects.append((otype, foff, fsize, eoff))
                elif otype not in (OBJ_EMPTY, OBJ_FREE):
                    self._damage(CorruptDumpError("unknown object type", path=self.path, offset=eoff,
                                                  expected="0..4", got=otype))
            if chain is None:
                return
            table_off = chain

    # --- key tables ------------------------------------------------------------------------
    def _read_key_tables(self) -> None:
        """Read every key table object: its entries become :attr:`keys` (a value each) and
        :attr:`numbered` (``stem<n>`` arrays of one node, in number order)."""
        walk = _KeyWalk(wide=self.format_version < 0x0101)  # format 1.0: UTF-16 key names
        table_indexes: set[int] = set()
        for otype, toff, tsize, eoff in self.objects:
            if otype != OBJ_KEY_TABLE:
                continue
            found = self._key_table(toff, tsize, eoff, table_indexes)
            if found is not None:
                self._key_entries(walk, *found, toff)
        paths = _NodePaths(walk.nodes, self)
        for parent, name, ktype, flags, at, voff, vsize, inline in walk.leaves:
            base = paths.resolve(parent, at)
            if base is not None:
                p = f"{base}/{name}"
                self.keys.setdefault(p, KeyValue(p, ktype, flags, at, voff, vsize, inline))
        for (parent, stem), st in walk.staged.items():
            base = paths.resolve(parent, st.entry_offset[0])
            if base is not None:
                self._numbered_values(f"{base}/{stem}", st)

    def _key_table(self, toff: int, tsize: int, eoff: int,
                   table_indexes: set[int]) -> tuple[bytes, int] | None:
        """The bytes and ``TableIndex`` of the key table object at ``toff``, None (and the
        damage noted) if its size, signature or index is wrong."""
        hsize = KeyTableHeader.sizeof()
        if tsize > MAX_KEY_TABLE or tsize < hsize:
            self._damage(CorruptDumpError("implausible key table size", path=self.path,
                                          offset=eoff + 13, expected=f"{hsize}..{MAX_KEY_TABLE}",
                                          got=tsize))
            return None
        table = self.source.pread(toff, min(tsize, max(0, self.source.size - toff)))
        if len(table) < hsize:
            return None  # past the end of the file: reported with the object table
        sig, index, _seq, crc = _KTH.unpack_from(table)
        if sig != KEY_TABLE_SIGNATURE:
            self._damage(CorruptDumpError("bad key table signature", path=self.path, offset=toff,
                                          expected=KEY_TABLE_SIGNATURE, got=sig))
            return None
        self._check_crc(table[:hsize], "key table header", toff, crc)
        if index in table_indexes:
            self._damage(CorruptDumpError("two key tables have the same TableIndex",
                                          path=self.path, offset=toff + 2, got=index))
            return None
        table_indexes.add(index)
        self.key_tables += 1
        return table, index

    def _key_entries(self, walk: _KeyWalk, table: bytes, index: int, toff: int) -> None:
        """Walk the entries of one key table up to its unused tail."""
        ehsize = _KEH.size
        pos = KeyTableHeader.sizeof()
        while pos + ehsize <= len(table):
            at = toff + pos
            head = _KEH.unpack_from(table, pos)
            ktype, esz = head[0], head[2]
            if esz == 0:
                if ktype != 0:
                    self._damage(CorruptDumpError("key entry of size 0", path=self.path,
                                                  offset=at + 2, expected=f">= {ehsize}", got=0))
                break  # unused tail of the table
            if esz < ehsize or pos + esz > len(table):
                self._damage(CorruptDumpError("key entry runs past the end of its key table",
                                              path=self.path, offset=at + 2,
                                              expected=f"{ehsize}..{len(table) - pos}", got=esz))
                break
            if ktype != KEY_FREE:
                self._key_entry(walk, table, pos, head, index, toff)
            pos += esz

    def _key_entry(self, walk: _KeyWalk, table: bytes, pos: int, head: tuple[int, ...],
                   index: int, toff: int) -> None:
        """One used key entry: a node of the tree, a value, or an element of a numbered array."""
        ktype, flags, esz, ptable, poff, crc, _ins, nsz = head
        at, ehsize = toff + pos, _KEH.size
        name_end = pos + ehsize + (2 * nsz if walk.wide else nsz)
        if flags & FLAG_FILE_OBJECT:
            dlen = _FOD.size
        elif ktype in FIXED_SIZES:
            dlen = FIXED_SIZES[ktype]
        elif ktype in (KEY_STRING, KEY_ARRAY) and name_end + 4 <= pos + esz:
            dlen = 4 + int.from_bytes(table[name_end:name_end + 4], "little")
        else:
            self._damage(CorruptDumpError("unknown key type or entry too short for its type",
                                          path=self.path, offset=at, got=ktype))
            return
        end = name_end + dlen
        if end > pos + esz:
            self._damage(CorruptDumpError("key entry value runs past the entry", path=self.path,
                                          offset=at + 2, expected=f">= {end - pos}", got=esz))
            return
        if not self._check_crc(table[pos:end], "key entry", at, crc):
            return
        raw_name = table[pos + ehsize:name_end]
        name = (raw_name.decode("utf-16-le", "replace") if walk.wide
                else raw_name.decode("utf-8", "replace")).rstrip("\0")
        parent = (ptable, poff)
        if ktype == KEY_NODE:
            walk.nodes[(index, pos)] = (parent, name, at)
            return
        data = table[name_end:end]
        if flags & FLAG_FILE_OBJECT:
            vsize, voff = _FOD.unpack(data)
            voff = min(voff, 1 << 62)  # past any file; keeps the int64 index valid
            inline = b""
        elif ktype in (KEY_STRING, KEY_ARRAY):
            voff, vsize, inline = toff + name_end + 4, dlen - 4, data[4:]
        else:
            voff, vsize, inline = toff + name_end, dlen, data
        m = NUMBERED.fullmatch(name)
        if m and ktype == KEY_ARRAY:
            st = walk.staged.setdefault((parent, m.group(1) or ""), _Staging())
            st.number.append(int(m.group(2)) if int(m.group(2)) < 1 << 62 else -1)
            st.value_offset.append(voff)
            st.value_size.append(vsize)
            st.entry_offset.append(at)
            st.file_object.append(1 if flags & FLAG_FILE_OBJECT else 0)
        else:
            walk.leaves.append((parent, name, ktype, flags, at, voff, vsize, inline))

    def _numbered_values(self, path: str, st: _Staging) -> None:
        """The elements of one numbered array, sorted by number; a number seen twice keeps
        its first entry (and is damage), a number too large to index is dropped."""
        num = np.frombuffer(st.number, dtype=np.int64)
        order = np.argsort(num, kind="stable")
        num = num[order]
        dup = np.flatnonzero(num[1:] == num[:-1])
        if len(dup):
            at = int(np.frombuffer(st.entry_offset, dtype=np.int64)[order][dup[0] + 1])
            self._damage(CorruptDumpError(f"key {path}{int(num[dup[0]])} appears twice",
                                          path=self.path, offset=at))
        keep = np.ones(len(num), dtype=bool)
        keep[dup + 1] = False
        keep &= num >= 0
        self.numbered[path] = NumberedValues(
            num[keep],
            np.frombuffer(st.value_offset, dtype=np.int64)[order][keep],
            np.frombuffer(st.value_size, dtype=np.int64)[order][keep],
            np.frombuffer(st.entry_offset, dtype=np.int64)[order][keep],
            np.frombuffer(st.file_object, dtype=np.int8)[order][keep].astype(bool),
        )

    # --- replay log ------------------------------------------------------------------------
    def _read_replay_log(self) -> dict[str, object]:
        """What the replay log says; it is never applied (see SPEC.md §11.4)."""
        h = self.header
        off = h.replay_log_offset
        raw = self.source.pread(off, ReplayLogHeader.sizeof())
        if off == 0 or len(raw) < ReplayLogHeader.sizeof():
            if off and off < self.source.size + ReplayLogHeader.sizeof():
                self._damage(TruncatedDumpError(
                    "file is truncated: it ends inside the replay log header", path=self.path,
                    offset=self.source.size, expected=f"file size >= {off + ReplayLogHeader.sizeof():#x}",
                    got=f"{self.source.size:#x}"))
            else:
                self.notices.append(f"replay log header offset {off:#x} lies outside the file")
            return {"offset": off, "state": "missing"}
        rl = ReplayLogHeader.parse(raw)
        if rl.signature != REPLAY_LOG_SIGNATURE or crc_zeroed(raw, 4) != rl.checksum:
            self.notices.append(f"replay log header at {off:#x} has a bad signature or CRC-32")
            return {"offset": off, "state": "invalid"}
        state = "empty"
        if rl.current_entries_count:
            state = f"{rl.current_entries_count} pending entries, not applied"
            self.notices.append(f"the replay log holds {rl.current_entries_count} uncommitted entries "
                                "that kdumptool does not apply (the last save may be incomplete)")
        return {"offset": off, "state": state, "entries": rl.current_entries_count,
                "change_tracking": bool(rl.change_tracking_enabled)}

    # --- values ----------------------------------------------------------------------------
    def value(self, key: KeyValue, *, limit: int = 64 << 20) -> bytes:
        """The bytes of a leaf's value (file objects read from the file).

        :raises TruncatedDumpError: the value lies past the end of the file
        :raises CorruptDumpError: the value is larger than ``limit``
        """
        if key.inline or not key.flags & FLAG_FILE_OBJECT:
            return key.inline
        if key.value_size > limit:
            raise CorruptDumpError(f"value of {key.path} is implausibly large", path=self.path,
                                   offset=key.entry_offset, expected=f"<= {limit}", got=key.value_size)
        if key.value_offset + key.value_size > self.source.size:
            raise TruncatedDumpError(f"file is truncated: the value of {key.path} ends past the end "
                                     "of the file", path=self.path, offset=self.source.size,
                                     expected=f"file size >= {key.value_offset + key.value_size:#x}",
                                     got=f"{self.source.size:#x}")
        return self.source.pread(key.value_offset, key.value_size)

    def integer(self, path: str) -> int | None:
        """An int/uint/bool leaf's value, None when absent or of another type."""
        key = self.keys.get(path)
        if key is None or key.key_type not in (KEY_INT, KEY_UINT, KEY_BOOL) or key.flags & FLAG_FILE_OBJECT:
            return None
        return int.from_bytes(key.inline, "little", signed=key.key_type != KEY_UINT)

    def string(self, path: str) -> str | None:
        """A string leaf's value (UTF-16LE, NUL-terminated), None when absent."""
        key = self.keys.get(path)
        if key is None or key.key_type != KEY_STRING:
            return None
        try:
            raw = self.value(key, limit=1 << 16)
        except CorruptDumpError:
            return None
        return raw.decode("utf-16-le", "replace").split("\0", 1)[0]


class _NodePaths:
    """Full paths of the key tree's nodes, resolved on demand (root is the sentinel ``(0, 0)``)."""

    def __init__(self, nodes: dict[tuple[int, int], tuple[tuple[int, int], str, int]],
                 store: HyperVStorage) -> None:
        self.nodes = nodes
        self.store = store
        self.cache: dict[tuple[int, int], str | None] = {(0, 0): ""}

    def resolve(self, parent: tuple[int, int], at: int) -> str | None:
        chain: list[tuple[int, int]] = []
        key = parent
        while key not in self.cache:
            if key not in self.nodes or len(chain) > MAX_DEPTH or key in chain:
                for k in chain:
                    self.cache[k] = None
                self.cache[key] = None
                self.store._damage(CorruptDumpError(
                    "key entry's parent node is missing (or the tree loops)", path=self.store.path,
                    offset=at + 6, got=f"table {parent[0]}, offset {parent[1]:#x}"))
                return None
            chain.append(key)
            key = self.nodes[key][0]
        base = self.cache[key]
        for k in reversed(chain):
            base = None if base is None else f"{base}/{self.nodes[k][1]}"
            self.cache[k] = base
        return self.cache[parent]
