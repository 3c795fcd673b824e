"""BTF's on-disk layout: the header, the kinds and how long each type record is.

Spec: SPEC.md §16.2; upstream Linux ``include/uapi/linux/btf.h``, and ``kernel/bpf/btf.c``
``btf_parse_hdr`` / ``btf_parse_str_sec`` for the checks. :mod:`kdumptool.kernel.btf` builds
the parser on these.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from kdumptool.errors import BtfError

BTF_MAGIC = 0xEB9F
BTF_VERSION = 1
#: ``sizeof(struct btf_header)``; a longer header (``hdr_len``) is accepted, its tail ignored.
HEADER_SIZE = 24
#: The largest type id the kernel accepts (``BTF_MAX_TYPE``).
MAX_TYPE_ID = 0x000FFFFF
#: Longest chain of typedefs/qualifiers/arrays (or nesting of anonymous members) followed.
MAX_DEPTH = 64

#: Kind names by kind number (``BTF_KIND_*``); 0 is not a valid kind.
KINDS = ("unkn", "int", "ptr", "array", "struct", "union", "enum", "fwd", "typedef", "volatile",
         "const", "restrict", "func", "func_proto", "var", "datasec", "float", "decl_tag",
         "type_tag", "enum64")
#: kind -> (words after the 3-word ``struct btf_type``, words per ``vlen`` entry)
_TAILS = {1: (1, 0), 3: (3, 0), 4: (0, 3), 5: (0, 3), 6: (0, 2), 13: (0, 2), 14: (1, 0),
          15: (0, 3), 17: (1, 0), 19: (0, 3)}
#: by kind number (0-31): words of the fixed tail, -1 for an unknown kind
FIXED_WORDS = [(_TAILS.get(k, (0, 0))[0] if 1 <= k < len(KINDS) else -1) for k in range(32)]
#: by kind number: words per ``vlen`` entry
ENTRY_WORDS = [_TAILS.get(k, (0, 0))[1] for k in range(32)]


@dataclass(frozen=True, slots=True)
class BtfHeader:
    """``struct btf_header``; ``endian`` is ``"<"`` or ``">"`` (told by how the magic reads)."""

    endian: str
    version: int
    flags: int
    hdr_len: int
    type_off: int
    type_len: int
    str_off: int
    str_len: int


def parse_header(blob: bytes, name: str) -> BtfHeader:
    """The header of ``blob``, checked: magic (which gives the byte order), version,
    ``hdr_len``, and both sections inside the blob, aligned and apart.

    :raises BtfError: with the offset of the field at fault
    """
    if len(blob) < 8:
        raise BtfError("BTF header cut short", path=name, offset=0,
                       expected=f"at least {HEADER_SIZE} bytes", got=f"{len(blob)} bytes")
    endian = {b"\x9f\xeb": "<", b"\xeb\x9f": ">"}.get(blob[:2])
    if endian is None:
        raise BtfError("not BTF: bad magic", path=name, offset=0, expected=BTF_MAGIC,
                       got=int.from_bytes(blob[:2], "little"))
    version, flags, hdr_len = struct.unpack_from(endian + "BBI", blob, 2)
    if version != BTF_VERSION:
        raise BtfError("unsupported BTF version", path=name, offset=2, expected=BTF_VERSION, got=version)
    if not HEADER_SIZE <= hdr_len <= len(blob):
        raise BtfError("bad BTF header length", path=name, offset=4,
                       expected=f"{HEADER_SIZE}..{len(blob)}", got=hdr_len)
    type_off, type_len, str_off, str_len = struct.unpack_from(endian + "4I", blob, 8)
    body = len(blob) - hdr_len
    for field_at, what, off, length in ((8, "type", type_off, type_len), (16, "string", str_off, str_len)):
        if off + length > body:
            raise BtfError(f"{what} section runs past the end of the blob", path=name, offset=field_at,
                           expected=f"offset + length <= {body:#x}", got=off + length)
    if type_off % 4 or type_len % 4:
        raise BtfError("type section not made of 4-byte words", path=name,
                       offset=8 if type_off % 4 else 12, expected="a multiple of 4",
                       got=type_off if type_off % 4 else type_len)
    if type_len and str_len and type_off < str_off + str_len and str_off < type_off + type_len:
        raise BtfError("type and string sections overlap", path=name, offset=16,
                       expected=f"outside {type_off:#x}..{type_off + type_len:#x}", got=str_off)
    return BtfHeader(endian, version, flags, hdr_len, type_off, type_len, str_off, str_len)


def check_strings(strings: bytes, at: int, *, split: bool, name: str) -> None:
    """A base string section starts with the empty string; any ends with a NUL.

    :raises BtfError: at the offending byte
    """
    if not split and strings[:1] != b"\0":
        raise BtfError("string section does not start with the empty string", path=name, offset=at,
                       expected=b"\0", got=strings[:1])
    if strings and strings[-1] != 0:
        raise BtfError("string section does not end with NUL", path=name,
                       offset=at + len(strings) - 1, expected=b"\0", got=strings[-1:])


def record_starts(words: np.ndarray, type_at: int, first_id: int, name: str) -> np.ndarray:
    """Word index of each record of the type section (one pass: each length depends on the
    record's kind and ``vlen``)."""
    mv = memoryview(words)
    n = len(mv)
    fixed, per = FIXED_WORDS, ENTRY_WORDS
    starts: list[int] = []
    append = starts.append
    pos = 0
    while pos < n:
        if pos + 3 > n:
            raise BtfError(f"type {first_id + len(starts)} cut short by the end of the type section",
                           path=name, offset=type_at + 4 * pos, expected="12 bytes",
                           got=f"{4 * (n - pos)} bytes")
        info = mv[pos + 1]
        kind = (info >> 24) & 0x1F
        if fixed[kind] < 0:
            raise BtfError(f"type {first_id + len(starts)} has an unknown kind", path=name,
                           offset=type_at + 4 * pos + 4, expected=f"1..{len(KINDS) - 1}", got=kind)
        end = pos + 3 + fixed[kind] + per[kind] * (info & 0xFFFF)
        if end > n:
            raise BtfError(f"type {first_id + len(starts)} ({KINDS[kind]}, vlen {info & 0xFFFF}) runs "
                           "past the end of the type section", path=name, offset=type_at + 4 * pos + 4,
                           expected=f"{4 * (end - pos)} bytes", got=f"{4 * (n - pos)} bytes")
        append(pos)
        pos = end
    if first_id + len(starts) - 1 > MAX_TYPE_ID:
        raise BtfError("too many types", path=name, offset=type_at, expected=f"<= {MAX_TYPE_ID:#x}",
                       got=first_id + len(starts) - 1)
    return np.array(starts, dtype=np.int64)
