"""C types for the scrubber, built from the dump's BTF: what an erase expression points at.

A :class:`CType` is the small part of a BTF type an erase needs: its kind after typedefs and
qualifiers (``int``, ``struct``, ``union``, ``enum``, ``ptr``, ``array``, ``void``...), its
size, and for pointers and arrays the element type. Struct members are looked up in BTF on
demand, so a self-referencing struct costs nothing. Types can also come from text (a config's
``SYM:struct NAME`` annotation, or :data:`KNOWN_GLOBALS`), because vmlinux BTF describes
only per-CPU variables (its one DATASEC is ``.data..percpu``; checked on the corpus' Debian
6.1 and 6.12 kernels), so every other global needs its type named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kdumptool.errors import BtfError, TypeMismatch
from kdumptool.kernel.btf import MAX_DEPTH, Btf, BtfType

#: The types of globals the built-in profiles and configs most often name (Linux 5.10+).
#: ``char[]`` takes its length from the symbol's extent in kallsyms.
KNOWN_GLOBALS: dict[str, str] = {
    "init_uts_ns": "struct uts_namespace",
    "init_task": "struct task_struct",
    "init_nsproxy": "struct nsproxy",
    "init_cred": "struct cred",
    "init_mm": "struct mm_struct",
    "key_serial_tree": "struct rb_root",
    "key_user_tree": "struct rb_root",
    "prb": "struct printk_ringbuffer*",
    "printk_rb_static": "struct printk_ringbuffer",
    "printk_rb_dynamic": "struct printk_ringbuffer",
    "__log_buf": "char[]",
    "log_buf": "char*",
    "log_buf_len": "u32",
    "modules": "struct list_head",
    "saved_command_line": "char*",
    "boot_command_line": "char[]",
}

_HINT_RE = re.compile(r"(?:(struct|union|enum) )?([A-Za-z_][A-Za-z0-9_]*)(\**)(?:\[(\d*)\])?")
_KINDS = ("int", "float", "enum", "enum64", "struct", "union", "ptr", "array", "void", "fwd",
          "func", "func_proto")


@dataclass(frozen=True)
class CType:
    """A type after typedefs and qualifiers.

    :ivar kind: ``int``, ``float``, ``enum``, ``struct``, ``union``, ``ptr``, ``array``,
        ``void``, ``fwd`` or ``func``
    :ivar name: the type's name (``"uts_namespace"``, ``"char"``); ``""`` when anonymous
    :ivar size: bytes (pointer: the pointer's own size; array: all elements)
    :ivar target: pointer's target / array's element type
    :ivar nelems: array length
    :ivar btf_id: the BTF id of a struct/union/int/enum (0 when built from text only)
    """

    kind: str
    name: str = ""
    size: int = 0
    target: CType | None = None
    nelems: int = 0
    btf_id: int = 0

    def __str__(self) -> str:
        if self.kind == "ptr" and self.target is not None:
            return f"{self.target} *"
        if self.kind == "array" and self.target is not None:
            return f"{self.target}[{self.nelems}]"
        if self.kind in ("struct", "union", "enum"):
            return f"{self.kind} {self.name or '<anonymous>'}"
        return self.name or self.kind

    @property
    def is_char_pointer(self) -> bool:
        """``char *`` (makedumpfile erases the string it points to, up to 1024 bytes)."""
        t = self.target
        return self.kind == "ptr" and t is not None and t.kind == "int" and t.name == "char"

    @property
    def is_void_pointer(self) -> bool:
        """Whether this is ``void *``."""
        return self.kind == "ptr" and self.target is not None and self.target.kind == "void"

    @property
    def is_integer(self) -> bool:
        """Whether this is an integer or an enum."""
        return self.kind in ("int", "enum", "enum64")


def ctype(btf: Btf, tid: int | BtfType, depth: int = 0) -> CType:
    """The :class:`CType` of BTF type ``tid``.

    :raises BtfError: a type chain deeper than the BTF limit
    """
    if depth > MAX_DEPTH:
        raise BtfError(f"type chain deeper than {MAX_DEPTH}", path=btf.name)
    t = btf.resolve(tid)
    if t.kind == "void" or t.id == 0:
        return CType("void", "void")
    if t.kind == "ptr":
        return CType("ptr", size=btf.pointer_size, target=ctype(btf, t.ref, depth + 1))
    if t.kind == "array" and t.array is not None:
        elem = ctype(btf, t.array.type, depth + 1)
        return CType("array", size=elem.size * t.array.nelems, target=elem, nelems=t.array.nelems)
    if t.kind in ("struct", "union", "int", "enum", "enum64", "float"):
        return CType("enum" if t.kind == "enum64" else t.kind, t.name, t.size, btf_id=t.id)
    if t.kind == "var":
        return ctype(btf, t.ref, depth + 1)
    if t.kind in ("func", "func_proto"):
        return CType("func", t.name)
    return CType("fwd", t.name)


def ctype_from_text(btf: Btf, text: str, *, extent: int | None = None) -> CType:
    """The type named by ``text``: ``struct NAME``, ``union NAME``, ``enum NAME`` or a type
    name, then ``*``\\ s and an optional ``[N]`` (``[]``: as many elements as ``extent`` bytes
    hold).

    :raises TypeMismatch: the text is not a type, or BTF has no such type
    """
    m = _HINT_RE.fullmatch(text.strip())
    if m is None:
        raise TypeMismatch(f"{text!r} is not a type (expected 'struct NAME', 'union NAME' or a "
                           "type name, then '*'s or '[N]')")
    tag, name, stars, count = m.groups()
    try:
        if tag in ("struct", "union"):
            found = btf.find(name, (tag,))
        elif tag == "enum":
            found = btf.find(name, ("enum", "enum64"))
        elif name == "void":
            found = None
        else:
            found = btf.find(name, ("typedef", "int", "struct", "union", "enum", "enum64", "float"))
    except KeyError:
        raise TypeMismatch(f"the dump's BTF has no type {(tag + ' ' if tag else '') + name!r}") from None
    t = ctype(btf, found) if found is not None else CType("void", "void")
    for _ in stars:
        t = CType("ptr", size=btf.pointer_size, target=t)
    if count is not None:
        if count == "":
            if extent is None or t.size <= 0:
                raise TypeMismatch(f"{text!r}: the array's length is not known")
            n = extent // t.size
        else:
            n = int(count)
        if n <= 0:
            raise TypeMismatch(f"{text!r}: an array of no elements")
        t = CType("array", size=t.size * n, target=t, nelems=n)
    return t


def member(btf: Btf, t: CType, name: str) -> tuple[int, CType]:
    """``(byte offset, type)`` of member ``name`` of struct/union ``t`` (anonymous members
    searched as C does).

    :raises TypeMismatch: ``t`` is not a struct or union, it has no such member, or the member
        is a bitfield
    """
    if t.kind not in ("struct", "union") or not t.btf_id:
        raise TypeMismatch(f"{t} has no members (it is not a struct or union): cannot take .{name}")
    try:
        m = btf.member(t.btf_id, name)
    except KeyError:
        raise TypeMismatch(f"{t} has no member {name!r}") from None
    except BtfError as exc:
        raise TypeMismatch(f"{t}: member {name!r}: {exc}") from None
    if m.bitfield_size or m.bit_offset % 8:
        raise TypeMismatch(f"member {name!r} of {t} is a bitfield: it cannot be erased by bytes")
    return m.bit_offset // 8, ctype(btf, m.type)


def same_struct(a: CType, b: CType) -> bool:
    """Whether two types are the same struct or union (by BTF id, or by kind and name)."""
    if a.btf_id and b.btf_id and a.btf_id == b.btf_id:
        return True
    return a.kind == b.kind and a.kind in ("struct", "union") and bool(a.name) and a.name == b.name
