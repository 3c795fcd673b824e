"""The decoded records of BTF types: :class:`BtfType` and the parts of it (members,
parameters, array and data-section entries), as :class:`~kdumptool.kernel.btf.Btf` returns them.

Spec: SPEC.md §16.2; upstream Linux ``include/uapi/linux/btf.h`` (``struct btf_type``,
``btf_member``, ``btf_param``, ``btf_array``, ``btf_var_secinfo``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Member:
    """A member of a struct or union.

    :ivar name: ``""`` for an anonymous struct/union member
    :ivar type: the member's type id
    :ivar bit_offset: bits from the start of the struct (from :meth:`Btf.member`: of the
        outermost struct, through every level of the path)
    :ivar bitfield_size: the width of a bitfield in bits, 0 for an ordinary member
    """

    name: str
    type: int
    bit_offset: int
    bitfield_size: int = 0


@dataclass(frozen=True, slots=True)
class Param:
    """A function prototype's parameter (``name == ""`` and ``type == 0`` last: ``...``)."""

    name: str
    type: int


@dataclass(frozen=True, slots=True)
class ArrayInfo:
    """An array's element type, index type and number of elements."""

    type: int
    index_type: int
    nelems: int


@dataclass(frozen=True, slots=True)
class DatasecVar:
    """A variable of a data section: its ``var`` type id, offset in the section, size."""

    type: int
    offset: int
    size: int


@dataclass(frozen=True, slots=True, repr=False)
class BtfType:
    """One decoded type record. Fields that do not apply to the kind keep their defaults.

    :ivar size: bytes (int, enum, enum64, struct, union, float, datasec)
    :ivar ref: the type referred to (ptr, typedef, qualifiers, type_tag, func (its
        func_proto), func_proto (return type), var, decl_tag)
    :ivar kind_flag: struct/union: members carry bitfield sizes; fwd: a union; enum/enum64:
        signed values; type_tag: an attribute
    :ivar enumerators: ``(name, value)`` of an enum or enum64 (signed when ``kind_flag``)
    :ivar int_encoding: ``BTF_INT_SIGNED`` (1), ``BTF_INT_CHAR`` (2), ``BTF_INT_BOOL`` (4)
    :ivar linkage: func: static/global/extern (0/1/2); var: static/global/extern
    :ivar component_idx: decl_tag: the member or parameter tagged, -1 for the whole type
    """

    id: int
    kind: str
    name: str = ""
    size: int = 0
    ref: int = 0
    kind_flag: bool = False
    members: tuple[Member, ...] = ()
    params: tuple[Param, ...] = ()
    enumerators: tuple[tuple[str, int], ...] = ()
    array: ArrayInfo | None = None
    vars: tuple[DatasecVar, ...] = ()
    int_encoding: int = 0
    int_offset: int = 0
    int_bits: int = 0
    linkage: int = 0
    component_idx: int = -1

    def __repr__(self) -> str:
        shown = [f"{f}={getattr(self, f)!r}" for f in self.__dataclass_fields__
                 if f in ("id", "kind", "name") or getattr(self, f) != _DEFAULTS[f]]
        return f"BtfType({', '.join(shown)})"

    @property
    def is_signed(self) -> bool:
        """An int with ``BTF_INT_SIGNED``, or an enum whose values are signed."""
        if self.kind == "int":
            return bool(self.int_encoding & 1)
        return self.kind in ("enum", "enum64") and self.kind_flag


VOID = BtfType(0, "void", "void")
_DEFAULTS = {f.name: f.default for f in fields(BtfType)}


class TypeTable(Protocol):
    """What reads a type by id (a :class:`~kdumptool.kernel.btf.Btf`)."""

    def type(self, tid: int) -> BtfType:
        """The type with id ``tid``."""
        ...
