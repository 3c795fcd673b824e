"""Helpers shared by the construct schemas of every format.

Formats declare each structure once, as a function of byte order (``"<"`` or
``">"``) and word size (4 or 8), using the integer constructors returned by
:func:`ints`. :func:`numpy_dtype` turns a flat structure of integers into the
matching NumPy dtype, so that arrays of records (``page_desc`` tables) are
decoded in bulk from the same declaration. :func:`parse_at` is the one choke
point where construct errors become :class:`~kdumptool.errors.DumpError` with
the file offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import construct as cs
import numpy as np

from kdumptool.errors import TruncatedDumpError


@dataclass(frozen=True)
class Ints:
    """Integer field constructors for one byte order."""

    u8: cs.Construct
    u16: cs.Construct
    u32: cs.Construct
    u64: cs.Construct
    s16: cs.Construct
    s32: cs.Construct
    s64: cs.Construct

    def word(self, size: int, signed: bool = False) -> cs.Construct:
        """An unsigned (or signed) integer of ``size`` bytes (4 or 8)."""
        if size == 4:
            return self.s32 if signed else self.u32
        return self.s64 if signed else self.u64


def ints(endian: str) -> Ints:
    """Integer constructors for ``"<"`` (little-endian) or ``">"`` (big-endian)."""
    if endian == "<":
        return Ints(cs.Int8ul, cs.Int16ul, cs.Int32ul, cs.Int64ul, cs.Int16sl, cs.Int32sl, cs.Int64sl)
    if endian == ">":
        return Ints(cs.Int8ub, cs.Int16ub, cs.Int32ub, cs.Int64ub, cs.Int16sb, cs.Int32sb, cs.Int64sb)
    raise ValueError(f"bad byte order {endian!r}")


def parse_at(
    struct: cs.Construct, data: bytes, *, path: str | None, offset: int, what: str
) -> cs.Container:
    """Parse ``struct`` from ``data`` (read at file ``offset``), raising DumpError on failure."""
    need = struct.sizeof()
    if len(data) < need:
        raise TruncatedDumpError(
            f"file ends inside the {what}", path=path, offset=offset + len(data),
            expected=f"{need} bytes", got=f"{len(data)} bytes",
        )
    try:
        return struct.parse(data[:need])
    except cs.ConstructError as exc:  # pragma: no cover - fixed-size ints cannot fail
        raise TruncatedDumpError(f"cannot parse the {what}: {exc}", path=path, offset=offset) from None


def strip_c_string(raw: bytes) -> str:
    """Decode a NUL-padded C char array (latin-1, so any byte survives)."""
    return raw.split(b"\0", 1)[0].decode("latin-1")


def numpy_dtype(struct: cs.Struct, endian: str) -> np.dtype:
    """The NumPy dtype of a construct Struct made only of fixed-size integers."""
    fields = []
    for sub in struct.subcons:
        inner = sub.subcon if isinstance(sub, cs.Renamed) else sub
        if not isinstance(inner, cs.FormatField):
            raise TypeError(f"field {sub.name} is not a plain integer")
        size = inner.sizeof()
        signed = inner.fmtstr[-1].islower()
        fields.append((sub.name, f"{endian}{'i' if signed else 'u'}{size}"))
    return np.dtype(fields)
