"""Build BTF blobs for tests: every kind, either byte order, split on a base, any header field
overridable (to make corrupt variants).

Written from Linux ``include/uapi/linux/btf.h`` (the record layouts) for kdumptool's tests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

KIND = {"int": 1, "ptr": 2, "array": 3, "struct": 4, "union": 5, "enum": 6, "fwd": 7,
        "typedef": 8, "volatile": 9, "const": 10, "restrict": 11, "func": 12, "func_proto": 13,
        "var": 14, "datasec": 15, "float": 16, "decl_tag": 17, "type_tag": 18, "enum64": 19}


@dataclass
class BtfBuilder:
    """Types are added in id order; each ``add``-style method returns the new type id.

    :param endian: ``"<"`` or ``">"``
    :param base: for split BTF, the builder of the base (already complete)
    """

    endian: str = "<"
    base: BtfBuilder | None = None
    records: list[list[int]] = field(default_factory=list)
    strings: bytearray = field(default_factory=lambda: bytearray(b"\0"))
    _offsets: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.base is not None:
            self.strings = bytearray()  # a split string section need not start with NUL

    @property
    def first_id(self) -> int:
        return self.base.next_id if self.base is not None else 1

    @property
    def next_id(self) -> int:
        return self.first_id + len(self.records)

    @property
    def str_base(self) -> int:
        return self.base.str_base + len(self.base.strings) if self.base is not None else 0

    def s(self, text: str) -> int:
        """The string offset of ``text`` (added once; "" is offset 0 in a base)."""
        if self.base is not None and text in self.base._offsets:
            return self.base._offsets[text]
        if text == "" and self.base is None:
            return 0
        if text not in self._offsets:
            self._offsets[text] = self.str_base + len(self.strings)
            self.strings += text.encode() + b"\0"
        return self._offsets[text]

    def raw(self, kind: str, name: str = "", third: int = 0, tail: tuple[int, ...] = (), *,
            vlen: int = 0, kflag: bool = False) -> int:
        info = (int(kflag) << 31) | (KIND[kind] << 24) | vlen
        self.records.append([self.s(name), info, third, *tail])
        return self.next_id - 1

    def int_(self, name: str, size: int, *, bits: int | None = None, offset: int = 0,
             encoding: int = 0) -> int:
        bits = 8 * size if bits is None else bits
        return self.raw("int", name, size, ((encoding << 24) | (offset << 16) | bits,))

    def ref(self, kind: str, target: int, name: str = "") -> int:
        return self.raw(kind, name, target)

    def array(self, elem: int, index: int, nelems: int) -> int:
        return self.raw("array", "", 0, (elem, index, nelems))

    def struct(self, name: str, size: int, members: list[tuple[str, int, int, int]], *,
               union: bool = False, kflag: bool | None = None) -> int:
        """``members``: ``(name, type, bit_offset, bitfield_size)``."""
        kflag = any(m[3] for m in members) if kflag is None else kflag
        tail: list[int] = []
        for mname, mtype, off, bits in members:
            tail += [self.s(mname), mtype, (bits << 24 | off) if kflag else off]
        return self.raw("union" if union else "struct", name, size, tuple(tail), vlen=len(members),
                        kflag=kflag)

    def enum(self, name: str, values: list[tuple[str, int]], *, size: int = 4,
             signed: bool = False) -> int:
        tail: list[int] = []
        for vname, v in values:
            tail += [self.s(vname), v & 0xFFFFFFFF]
        return self.raw("enum", name, size, tuple(tail), vlen=len(values), kflag=signed)

    def enum64(self, name: str, values: list[tuple[str, int]], *, signed: bool = False) -> int:
        tail: list[int] = []
        for vname, v in values:
            v &= (1 << 64) - 1
            tail += [self.s(vname), v & 0xFFFFFFFF, v >> 32]
        return self.raw("enum64", name, 8, tuple(tail), vlen=len(values), kflag=signed)

    def func_proto(self, ret: int, params: list[tuple[str, int]]) -> int:
        tail: list[int] = []
        for pname, ptype in params:
            tail += [self.s(pname), ptype]
        return self.raw("func_proto", "", ret, tuple(tail), vlen=len(params))

    def datasec(self, name: str, size: int, variables: list[tuple[int, int, int]]) -> int:
        tail = [w for v in variables for w in v]
        return self.raw("datasec", name, size, tuple(tail), vlen=len(variables))

    def type_section(self) -> bytes:
        words = [w for r in self.records for w in r]
        return struct.pack(f"{self.endian}{len(words)}I", *words)

    def build(self, **override: int) -> bytes:
        """The blob: header (fields overridable by name), types, strings."""
        types, strings = self.type_section(), bytes(self.strings)
        h = {"magic": 0xEB9F, "version": 1, "flags": 0, "hdr_len": 24, "type_off": 0,
             "type_len": len(types), "str_off": len(types), "str_len": len(strings)}
        h.update(override)
        head = struct.pack(f"{self.endian}HBBIIIII", h["magic"], h["version"], h["flags"], h["hdr_len"],
                           h["type_off"], h["type_len"], h["str_off"], h["str_len"])
        return head + types + strings


def every_kind(b: BtfBuilder) -> dict[str, int]:
    """Add one type of every kind (and a few layouts worth testing) to ``b``; their ids by role."""
    ids: dict[str, int] = {}
    ids["int"] = b.int_("int", 4, encoding=1)
    ids["uint"] = b.int_("unsigned int", 4)
    ids["char"] = b.int_("char", 1, encoding=2)
    ids["long"] = b.int_("long unsigned int", 8)
    ids["ptr_void"] = b.ref("ptr", 0)
    ids["const_char"] = b.ref("const", ids["char"])
    ids["ptr_const_char"] = b.ref("ptr", ids["const_char"])
    ids["arr16"] = b.array(ids["char"], ids["int"], 16)
    ids["fwd"] = b.raw("fwd", "opaque", 0, kflag=True)
    ids["list_head"] = b.next_id
    ids["ptr_list"] = ids["list_head"] + 1
    b.struct("list_head", 16, [("next", ids["ptr_list"], 0, 0), ("prev", ids["ptr_list"], 64, 0)])
    b.ref("ptr", ids["list_head"])
    ids["anon_union"] = b.struct("", 8, [("u_a", ids["long"], 0, 0), ("u_b", ids["int"], 0, 0)],
                                 union=True)
    ids["bits4"] = b.int_("unsigned int", 4, bits=4)  # kind_flag-less bitfield: width in the int
    ids["typedef_list"] = b.ref("typedef", ids["list_head"], "list_t")
    ids["volatile_int"] = b.ref("volatile", ids["int"])
    ids["restrict_ptr"] = b.ref("restrict", ids["ptr_void"])
    ids["type_tag"] = b.ref("type_tag", ids["ptr_void"], "rcu")
    ids["proto"] = b.func_proto(ids["int"], [("arg", ids["ptr_void"]), ("", 0)])
    ids["ptr_proto"] = b.ref("ptr", ids["proto"])
    ids["thing"] = b.struct("thing", 64, [
        ("id", ids["int"], 0, 0), ("flags", ids["uint"], 32, 3), ("more", ids["uint"], 35, 5),
        ("", ids["anon_union"], 64, 0), ("node", ids["typedef_list"], 128, 0),
        ("name", ids["arr16"], 256, 0), ("fn", ids["ptr_proto"], 384, 0),
        ("cv", ids["volatile_int"], 448, 0)])
    ids["old_bits"] = b.struct("old_bits", 4, [("lo", ids["bits4"], 0, 0), ("hi", ids["bits4"], 4, 0)],
                               kflag=False)
    ids["enum"] = b.enum("color", [("RED", 0), ("MINUS", -2)], signed=True)
    ids["uenum"] = b.enum("big", [("TOP", 0xFFFFFFFF)])
    ids["enum64"] = b.enum64("e64", [("HUGE", 1 << 40), ("NEG", -1)], signed=True)
    ids["func"] = b.raw("func", "do_thing", ids["proto"], vlen=1)
    ids["var"] = b.raw("var", "counter", ids["int"], (1,))
    ids["datasec"] = b.datasec(".data..percpu", 4, [(ids["var"], 0, 4)])
    ids["float"] = b.raw("float", "double", 8)
    ids["decl_tag"] = b.raw("decl_tag", "tagged", ids["thing"], (0xFFFFFFFF,))
    ids["decl_tag_member"] = b.raw("decl_tag", "member_tag", ids["thing"], (1,))
    ids["ptr_arr"] = b.ref("ptr", ids["arr16"])
    ids["const_ptr"] = b.ref("const", ids["ptr_const_char"])
    return ids
