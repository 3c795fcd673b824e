"""Reading kernel structures laid out by BTF: members of one instance, and linked lists.

A :class:`Fields` resolves once, from the dump's own BTF, the offsets and sizes of the
members a walker needs; nothing is hard-coded per kernel version, and a member the
kernel does not have is a :class:`~kdumptool.errors.BtfLookupError` naming it.
:func:`walk_list` follows a ``struct list_head`` ring with a bounded count and cycle
detection, so a corrupt or hostile list ends in one error, never a hang.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from kdumptool.errors import KernelDataError
from kdumptool.kernel.btf import Btf
from kdumptool.kernel.memory import KernelMemory

#: More entries than any real list of tasks or modules has.
MAX_LIST = 1 << 20


@dataclass(frozen=True)
class Field:
    """One member: byte offset, byte size, signedness."""

    offset: int
    size: int
    signed: bool


class Fields:
    """Members of one struct, resolved from BTF.

    :param btf: the vmlinux BTF
    :param struct: ``"task_struct"``...
    :param paths: member paths (``"thread_info.cpu"``) to resolve now
    :raises BtfLookupError: the struct or a member is missing
    """

    def __init__(self, btf: Btf, struct: str, paths: tuple[str, ...] = ()) -> None:
        self.btf = btf
        self.struct = struct
        self.size = btf.sizeof(btf.find(struct, ("struct", "union")))
        self._fields: dict[str, Field] = {}
        for path in paths:
            self.add(path)

    def has(self, path: str) -> bool:
        """Whether the struct has the member (resolving it if so)."""
        try:
            self.add(path)
        except KeyError:
            return False
        return True

    def add(self, path: str) -> Field:
        """Resolve member ``path``."""
        if path not in self._fields:
            member = self.btf.member(self.struct, path)
            t = self.btf.resolve(member.type)
            signed = t.is_signed
            self._fields[path] = Field(self.btf.offsetof(self.struct, path),
                                       self.btf.sizeof(member.type), bool(signed))
        return self._fields[path]

    def offset(self, path: str) -> int:
        """Byte offset of member ``path``."""
        return self.add(path).offset

    def int(self, raw: bytes, path: str, endian: str = "<") -> int:
        """The integer (or pointer) value of member ``path`` in ``raw`` (one instance)."""
        f = self.add(path)
        return int.from_bytes(raw[f.offset:f.offset + f.size], "little" if endian == "<" else "big",
                              signed=f.signed)

    def bytes(self, raw: bytes, path: str) -> bytes:
        """The raw bytes of member ``path`` (an array such as ``comm``)."""
        f = self.add(path)
        return raw[f.offset:f.offset + f.size]

    def cstr(self, raw: bytes, path: str) -> str:
        """A ``char[N]`` member as text (up to the first NUL)."""
        return self.bytes(raw, path).split(b"\0", 1)[0].decode("utf-8", "replace")


def walk_list(mem: KernelMemory, head: int, *, what: str, limit: int = MAX_LIST) -> Iterator[int]:
    """Addresses of the ``list_head`` nodes on the ring that starts at ``head`` (``head``
    itself excluded), in ``next`` order.

    :raises KernelDataError: a node repeats before the ring closes (a cycle that does not
        pass through ``head``), more than ``limit`` nodes, or a null pointer
    :raises KernelDataMissingError: a node is not in the dump
    """
    seen: set[int] = set()
    node = mem.u64(head, f"{what} list head")
    while node != head:
        if node == 0:
            raise KernelDataError(f"{mem.path}: {what} list at {head:#x}: null next pointer after "
                                  f"{len(seen)} entries")
        if node in seen:
            raise KernelDataError(f"{mem.path}: {what} list at {head:#x}: cycle at {node:#x} after "
                                  f"{len(seen)} entries")
        if len(seen) >= limit:
            raise KernelDataError(f"{mem.path}: {what} list at {head:#x}: more than {limit} entries")
        seen.add(node)
        yield node
        node = mem.u64(node, f"{what} list entry")
