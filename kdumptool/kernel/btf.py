"""BTF (BPF Type Format): the kernel's own description of its types, parsed and queried.

Spec: SPEC.md §16 (the byte layout and its checks are in :mod:`kdumptool.kernel.btf_layout`).
Upstream: Linux ``include/uapi/linux/btf.h`` (header, kinds, records),
``Documentation/bpf/btf.rst`` (what each kind's fields mean), ``kernel/bpf/btf.c``
(``btf_parse_hdr``, ``btf_parse_str_sec``: the checks the kernel makes, which we follow).

A blob is a 24-byte header, a type section (variable-length records, type id 1 first, id 0
being ``void``) and a string section (NUL-terminated names). Split BTF (a module's) continues
a base BTF (vmlinux's): its type ids start after the base's last id and its string offsets
after the base's string section.

Parsing walks the type section once to find where each record starts (a record is 12 bytes
plus a tail whose length depends on its kind and ``vlen``), then checks every name offset and
every type-id reference of every record at once with NumPy. A record becomes a
:class:`BtfType` only when asked for (then it is cached), so parsing vmlinux's ~130,000 types
costs a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np

from kdumptool.errors import BtfError, BtfLookupError
from kdumptool.kernel.btf_layout import (
    BTF_MAGIC,
    BTF_VERSION,
    ENTRY_WORDS,
    FIXED_WORDS,
    HEADER_SIZE,
    KINDS,
    MAX_DEPTH,
    MAX_TYPE_ID,
    BtfHeader,
    check_strings,
    parse_header,
    record_starts,
)
from kdumptool.kernel.btf_names import format_type as _format_type
from kdumptool.kernel.btf_types import VOID, ArrayInfo, BtfType, DatasecVar, Member, Param

__all__ = ["BTF_MAGIC", "BTF_VERSION", "HEADER_SIZE", "KINDS", "MAX_DEPTH", "MAX_TYPE_ID", "QUALIFIERS",
           "ArrayInfo", "Btf", "BtfHeader", "BtfType", "DatasecVar", "Member", "Param"]

_KIND_NUMBER = {name: n for n, name in enumerate(KINDS) if n}
#: kinds whose third header word is a byte size (the others: a type id)
_SIZE_KINDS = frozenset({1, 4, 5, 6, 15, 16, 19})
_REF_KINDS = (2, 8, 9, 10, 11, 12, 13, 14, 17, 18)
#: kinds with ``vlen`` entries -> (words per entry, name word, type-id word) within an entry
_ENTRIES = {(4, 5): (3, 0, 1), (6,): (2, 0, None), (19,): (3, 0, None), (13,): (2, 0, 1),
            (15,): (3, None, 0)}
#: kinds that only qualify or rename another type (skipped by :meth:`Btf.resolve`)
QUALIFIERS = frozenset({"typedef", "volatile", "const", "restrict", "type_tag"})
_SIZED = frozenset({"int", "enum", "enum64", "struct", "union", "float", "datasec"})


class Btf:
    """A parsed BTF blob (use :meth:`parse`). Type ids index :attr:`types`; 0 is ``void``."""

    def __init__(self, *, name: str, data: bytes, header: BtfHeader, base: Btf | None,
                 words: np.ndarray, starts: np.ndarray, strings: bytes) -> None:
        self.name = name
        self.data = data
        self.header = header
        self.base = base
        self.start_id = len(base.types) if base is not None else 1
        self.str_start = base._str_end if base is not None else 0
        self._str_end = self.str_start + len(strings)
        self._type_start = header.hdr_len + header.type_off
        self._words = words
        self._mv = memoryview(words)
        self._starts = starts
        self._kinds = bytes(((words[starts + 1] >> 24) & 0x1F).astype(np.uint8)) if len(starts) else b""
        self._strings = strings
        self._cache: list[BtfType | None] = [None] * len(starts)
        self._names: dict[str, list[int]] | None = None
        self._pointer_size: int | None = None
        self.types: Sequence[BtfType] = _TypeList(self)

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview, *, base: Btf | None = None,
              name: str = "<btf>") -> Btf:
        """Parse and validate a BTF blob.

        :param base: for split BTF (a module's), the BTF it continues (vmlinux's)
        :param name: names the blob in errors
        :raises BtfError: the header, a section, a record, a name offset or a type id is
            invalid (the error gives the byte offset in the blob)
        """
        blob = bytes(data)
        header = parse_header(blob, name)
        str_at = header.hdr_len + header.str_off
        strings = blob[str_at:str_at + header.str_len]
        check_strings(strings, str_at, split=base is not None, name=name)
        type_at = header.hdr_len + header.type_off
        words = np.frombuffer(blob, dtype=header.endian + "u4", count=header.type_len // 4,
                              offset=type_at).astype(np.uint32)
        first = len(base.types) if base is not None else 1
        starts = record_starts(words, type_at, first, name)
        btf = cls(name=name, data=blob, header=header, base=base, words=words, starts=starts,
                  strings=strings)
        btf._check_references()
        return btf

    def __repr__(self) -> str:
        return f"<Btf {self.name}: {self.nr_types} types from id {self.start_id}>"

    @property
    def nr_types(self) -> int:
        """How many types this blob itself holds (not counting void or a base's)."""
        return len(self._starts)

    @property
    def endian(self) -> str:
        """``"<"`` (little-endian) or ``">"``."""
        return self.header.endian

    # ---- validation ----------------------------------------------------------------------

    def _check_references(self) -> None:
        """Every name offset inside the string sections, every type id below the last id."""
        w, s = self._words, self._starts
        if not len(s):
            return
        kinds = (w[s + 1] >> 24) & 0x1F
        vlen = (w[s + 1] & 0xFFFF).astype(np.int64)
        ids = self.start_id + len(s)
        self._first_bad(s, w[s] >= self._str_end, "name offset", self._str_end)
        at = s[np.isin(kinds, _REF_KINDS)] + 2
        self._first_bad(at, w[at] >= ids, "type id", ids)
        arrays = s[kinds == 3]
        for field in (3, 4):
            self._first_bad(arrays + field, w[arrays + field] >= ids, "array type id", ids)
        for group, (size, name_word, type_word) in _ENTRIES.items():
            chosen = np.isin(kinds, group)
            counts = vlen[chosen]
            total = int(counts.sum())
            if not total:
                continue
            firsts = np.repeat(s[chosen] + 3, counts)
            rank = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            entry = firsts + size * rank
            if name_word is not None:
                at = entry + name_word
                self._first_bad(at, w[at] >= self._str_end, "name offset", self._str_end)
            if type_word is not None:
                at = entry + type_word
                self._first_bad(at, w[at] >= ids, "type id", ids)

    def _first_bad(self, word_at: np.ndarray, bad: np.ndarray, what: str, limit: int) -> None:
        hits = np.flatnonzero(bad)
        if len(hits):
            at = int(word_at[hits[0]])
            record = int(np.searchsorted(self._starts, at, side="right")) - 1
            raise BtfError(f"{what} out of range in type {self.start_id + record} "
                           f"({KINDS[self._kinds[record]]})", path=self.name,
                           offset=self._type_start + 4 * at, expected=f"< {limit:#x}",
                           got=int(self._words[at]))

    # ---- strings and records ---------------------------------------------------------------

    def string(self, offset: int) -> str:
        """The NUL-terminated string at ``offset`` of the string sections (base's first).

        :raises BtfError: the offset is outside them
        """
        if offset < self.str_start and self.base is not None:
            return self.base.string(offset)
        local = offset - self.str_start
        if not 0 <= local < len(self._strings):
            raise BtfError(f"string offset {offset:#x} out of range", path=self.name,
                           expected=f"< {self._str_end:#x}", got=offset)
        end = self._strings.find(b"\0", local)
        return self._strings[local:end].decode("utf-8", "replace")

    def type(self, tid: int) -> BtfType:
        """The type with id ``tid`` (0 is ``void``).

        :raises BtfLookupError: no such type id
        """
        if tid < self.start_id:
            if tid == 0:
                return VOID
            if self.base is not None and tid > 0:
                return self.base.type(tid)
        i = tid - self.start_id
        if not 0 <= i < len(self._cache):
            raise BtfLookupError(f"type id {tid} out of range (0..{len(self.types) - 1})",
                                 path=self.name)
        found = self._cache[i]
        if found is None:
            found = self._cache[i] = self._decode(tid, int(self._starts[i]))
        return found

    def _kind_of(self, tid: int) -> int:
        if tid < self.start_id:
            return self.base._kind_of(tid) if self.base is not None and tid > 0 else 0
        return self._kinds[tid - self.start_id]

    def _decode(self, tid: int, pos: int) -> BtfType:
        mv = self._mv
        name_off, info, third = mv[pos], mv[pos + 1], mv[pos + 2]
        kind, vlen, flag = (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31)
        tail = mv[pos + 3:pos + 3 + FIXED_WORDS[kind] + ENTRY_WORDS[kind] * vlen].tolist()
        extra: dict[str, object] = {}
        if kind == 1:
            extra.update(int_encoding=(tail[0] >> 24) & 0x0F, int_offset=(tail[0] >> 16) & 0xFF,
                         int_bits=tail[0] & 0xFF)
        elif kind == 3:
            extra["array"] = ArrayInfo(tail[0], tail[1], tail[2])
        elif kind in (4, 5):
            extra["members"] = tuple(self._member(tail[j:j + 3], flag) for j in range(0, 3 * vlen, 3))
        elif kind == 6:
            extra["enumerators"] = tuple(
                (self.string(tail[j]), _signed(tail[j + 1], 32) if flag else tail[j + 1])
                for j in range(0, 2 * vlen, 2))
        elif kind == 19:
            extra["enumerators"] = tuple(
                (self.string(tail[j]), _signed(v, 64) if flag else v)
                for j in range(0, 3 * vlen, 3) for v in (tail[j + 1] | tail[j + 2] << 32,))
        elif kind == 13:
            extra["params"] = tuple(Param(self.string(tail[j]), tail[j + 1]) for j in range(0, 2 * vlen, 2))
        elif kind == 15:
            extra["vars"] = tuple(DatasecVar(*tail[j:j + 3]) for j in range(0, 3 * vlen, 3))
        elif kind in (12, 14):
            extra["linkage"] = vlen if kind == 12 else tail[0]
        elif kind == 17:
            extra["component_idx"] = _signed(tail[0], 32)
        if kind in _SIZE_KINDS:
            extra["size"] = third
        else:
            extra["ref"] = third
        return BtfType(tid, KINDS[kind], self.string(name_off), kind_flag=flag, **extra)  # type: ignore[arg-type]

    def _member(self, entry: list[int], flag: bool) -> Member:
        name_off, mtype, offset = entry
        if flag:
            return Member(self.string(name_off), mtype, offset & 0xFFFFFF, offset >> 24)
        if self._kind_of(mtype) == 1:  # without kind_flag, a bitfield's width is its int's
            t = self.type(mtype)
            if t.int_offset or t.int_bits != 8 * t.size:
                return Member(self.string(name_off), mtype, offset + t.int_offset, t.int_bits)
        return Member(self.string(name_off), mtype, offset)

    # ---- queries -----------------------------------------------------------------------------

    def find(self, name: str, kind: str | Iterable[str] | None = None) -> BtfType:
        """The type named ``name`` (lowest id first; without ``kind``, a full definition is
        preferred to a ``fwd``). ``"struct x"``, ``"union x"``, ``"enum x"`` set the kind.

        :param kind: a kind name (``"struct"``, ``"typedef"``...) or several
        :raises BtfLookupError: no such type
        """
        found = self.find_all(name, kind)
        if not found:
            what = kind if isinstance(kind, str) else "/".join(kind) if kind else "type"
            raise BtfLookupError(f"no {what} named {name!r}", path=self.name)
        full = [t for t in found if t.kind != "fwd"]
        return (full or found)[0]

    def find_all(self, name: str, kind: str | Iterable[str] | None = None) -> list[BtfType]:
        """Every type named ``name`` (of ``kind``), lowest id first; base types first."""
        word, _, rest = name.partition(" ")
        if rest and word in ("struct", "union", "enum") and kind is None:
            name, kind = rest, (word, "fwd") if word != "enum" else ("enum", "enum64")
        wanted = None
        if kind is not None:
            names = (kind,) if isinstance(kind, str) else tuple(kind)
            unknown = [k for k in names if k not in _KIND_NUMBER]
            if unknown:
                raise ValueError(f"unknown BTF kind {unknown[0]!r}")
            wanted = {_KIND_NUMBER[k] for k in names}
        out = self.base.find_all(name, kind) if self.base is not None else []
        for tid in self._name_index().get(name, ()):
            if wanted is None or self._kinds[tid - self.start_id] in wanted:
                out.append(self.type(tid))
        return out

    def _name_index(self) -> dict[str, list[int]]:
        if self._names is None:
            index: dict[str, list[int]] = {}
            if len(self._starts):
                offsets, inverse = np.unique(self._words[self._starts], return_inverse=True)
                texts = [self.string(off) for off in offsets.tolist()]
                for i, k in enumerate(inverse.tolist()):
                    if texts[k]:
                        index.setdefault(texts[k], []).append(self.start_id + i)
            self._names = index
        return self._names

    def resolve(self, tid: int | BtfType) -> BtfType:
        """The type after skipping typedefs, const, volatile, restrict and type tags.

        :raises BtfError: the chain is longer than :data:`MAX_DEPTH` (a loop)
        """
        t = tid if isinstance(tid, BtfType) else self.type(tid)
        for _ in range(MAX_DEPTH):
            if t.kind not in QUALIFIERS:
                return t
            t = self.type(t.ref)
        raise BtfError(f"type {t.id}: chain of typedefs/qualifiers longer than {MAX_DEPTH}",
                       path=self.name)

    @property
    def pointer_size(self) -> int:
        """Bytes in a pointer: the size of ``long`` (BTF has no pointer size), else 8."""
        if self.base is not None:
            return self.base.pointer_size
        if self._pointer_size is None:
            longs = self.find_all("long unsigned int", "int") or self.find_all("long int", "int")
            self._pointer_size = longs[0].size if longs and longs[0].size in (4, 8) else 8
        return self._pointer_size

    def sizeof(self, tid: int | BtfType) -> int:
        """Bytes in an object of this type (arrays: all elements; pointers: :attr:`pointer_size`).

        :raises BtfError: the type has no size (void, fwd, func, func_proto) or loops
        """
        t = tid if isinstance(tid, BtfType) else self.type(tid)
        count = 1
        for _ in range(MAX_DEPTH):
            if t.kind in _SIZED:
                return count * t.size
            if t.kind == "ptr":
                return count * self.pointer_size
            if t.kind == "array" and t.array is not None:
                count *= t.array.nelems
                t = self.type(t.array.type)
            elif t.kind in QUALIFIERS or t.kind == "var":
                t = self.type(t.ref)
            else:
                raise BtfError(f"{self.format_type(tid)!r} has no size ({t.kind})", path=self.name)
        raise BtfError(f"type {t.id}: type chain longer than {MAX_DEPTH}", path=self.name)

    def member(self, struct_type: str | int | BtfType, path: str) -> Member:
        """The member at ``path`` (``"a.b.c"``) of a struct or union, with its bit offset from
        the start of the outermost struct. Anonymous struct/union members are searched as C
        does; a typedef'd struct is accepted at every level.

        :param struct_type: a struct/union/typedef name (``"task_struct"``, ``"struct
            list_head"``), a type id or a :class:`BtfType`
        :raises BtfLookupError: the struct or a member of the path is missing
        :raises BtfError: a path component that is not a struct or union is descended into
        """
        t = self._struct(struct_type)
        bits = 0
        parts = path.split(".")
        for depth, part in enumerate(parts):
            found = self._lookup(t, part, 0)
            if found is None:
                raise BtfLookupError(f"{_tag(t)} has no member {part!r}", path=self.name)
            m, extra = found
            bits += extra + m.bit_offset
            if depth == len(parts) - 1:
                return Member(path, m.type, bits, m.bitfield_size)
            inner = self.resolve(m.type)
            if inner.kind not in ("struct", "union"):
                raise BtfError(f"member {'.'.join(parts[:depth + 1])!r} of {_tag(self._struct(struct_type))} "
                               f"is {self.format_type(m.type)!r}, not a struct or union", path=self.name)
            t = inner
        raise BtfLookupError(f"empty member path for {_tag(t)}", path=self.name)

    def offsetof(self, struct_type: str | int | BtfType, path: str) -> int:
        """Byte offset of the member at ``path`` (see :meth:`member`).

        :raises BtfError: the member is a bitfield (it has no byte offset), or see :meth:`member`
        """
        m = self.member(struct_type, path)
        if m.bitfield_size or m.bit_offset % 8:
            raise BtfError(f"member {path!r} of {_tag(self._struct(struct_type))} is a bitfield "
                           f"(bit {m.bit_offset}, {m.bitfield_size} bits)", path=self.name)
        return m.bit_offset // 8

    def _struct(self, struct_type: str | int | BtfType) -> BtfType:
        if isinstance(struct_type, BtfType):
            t = struct_type
        elif isinstance(struct_type, int):
            t = self.type(struct_type)
        else:
            word, _, rest = struct_type.partition(" ")
            if rest and word in ("struct", "union"):
                t = self.find(rest, word)
            else:
                t = self.find(struct_type, ("struct", "union", "typedef"))
        resolved = self.resolve(t)
        if resolved.kind not in ("struct", "union"):
            raise BtfError(f"{self.format_type(t)!r} is not a struct or union", path=self.name)
        return resolved

    def _lookup(self, t: BtfType, name: str, depth: int,
                searched: set[int] | None = None) -> tuple[Member, int] | None:
        """``(member, bits from t's start to the struct holding it)``, searching anonymous
        members depth first; each anonymous type is searched once (a corrupt blob may share
        one among many members, or nest one in itself)."""
        if depth > MAX_DEPTH:
            raise BtfError(f"{_tag(t)}: anonymous members nested deeper than {MAX_DEPTH}",
                           path=self.name)
        searched = set() if searched is None else searched
        searched.add(t.id)
        for m in t.members:
            if m.name == name:
                return m, 0
            if not m.name:
                inner = self.resolve(m.type)
                if inner.kind in ("struct", "union") and inner.id not in searched:
                    found = self._lookup(inner, name, depth + 1, searched)
                    if found is not None:
                        return found[0], found[1] + m.bit_offset
        return None

    def format_type(self, tid: int | BtfType) -> str:
        """A C-like name of the type: ``"struct task_struct *"``, ``"char [16]"``,
        ``"int (*)(void *)"``, ``"const char *"``."""
        return _format_type(self, tid if isinstance(tid, BtfType) else self.type(tid))

    def iter_types(self, kind: str | None = None) -> Iterator[BtfType]:
        """This blob's own types (not its base's), optionally only those of one kind."""
        number = _KIND_NUMBER[kind] if kind is not None else None
        for i in range(len(self._starts)):
            if number is None or self._kinds[i] == number:
                yield self.type(self.start_id + i)


class _TypeList(Sequence[BtfType]):
    """``btf.types``: every type id (base's and own) to its :class:`BtfType`, decoded on access."""

    __slots__ = ("_btf",)

    def __init__(self, btf: Btf) -> None:
        self._btf = btf

    def __len__(self) -> int:
        return self._btf.start_id + len(self._btf._starts)

    @overload
    def __getitem__(self, index: int) -> BtfType: ...

    @overload
    def __getitem__(self, index: slice) -> list[BtfType]: ...

    def __getitem__(self, index: int | slice) -> BtfType | list[BtfType]:
        if isinstance(index, slice):
            return [self._btf.type(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"type id {index} out of range")
        return self._btf.type(index)


def _tag(t: BtfType) -> str:
    return f"{t.kind} {t.name or '<anonymous>'}"


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value
