"""QEMU migration streams: the constants, the schemas and a front-to-back cursor.

Spec: SPEC.md "QEMU savevm / migration streams". Upstream QEMU (7.2 and later):
``migration/savevm.c`` (``QEMU_VM_FILE_MAGIC``, ``QEMU_VM_FILE_VERSION``, the section types
``QEMU_VM_EOF`` .. ``QEMU_VM_COMMAND``, ``QEMU_VM_SECTION_FOOTER``), ``migration/ram.c``
(``RAM_SAVE_FLAG_*``). Every integer is big-endian (``QEMUFile``'s ``qemu_put_be*``).

The stream is read once, front to back, by :class:`Cursor`, which raises
:class:`~kdumptool.errors.StreamCutError` where the file ends inside a structure; the reader
(:mod:`kdumptool.formats.qemu_savevm`) says what it was reading then.
"""

from __future__ import annotations

import functools
import io
import struct

import construct as cs

from kdumptool.errors import CorruptDumpError, StreamCutError
from kdumptool.schema import ints
from kdumptool.transport.source import ByteSource

MAGIC = b"QEVM"
FILE_VERSION = 3
FILE_VERSION_COMPAT = 2  # the pre-2008 format, refused by QEMU itself

# section types (savevm.c)
EOF, START, PART, END, FULL, SUBSECTION, VMDESCRIPTION, CONFIGURATION, COMMAND = range(9)
FOOTER = 0x7E
SECTION_NAMES = {EOF: "EOF", START: "SECTION_START", PART: "SECTION_PART", END: "SECTION_END",
                 FULL: "SECTION_FULL", CONFIGURATION: "CONFIGURATION", COMMAND: "COMMAND"}

# RAM record flags (ram.c), in the bits of the offset below the target page size
F_FULL, F_ZERO, F_MEM_SIZE, F_PAGE, F_EOS, F_CONTINUE = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
F_XBZRLE, F_HOOK, F_COMPRESS_PAGE, F_MULTIFD_FLUSH = 0x40, 0x80, 0x100, 0x200

#: how a page's latest copy is stored (the ``kind`` array of the index)
K_RAW, K_FILL, K_ZLIB, K_XBZRLE = 0, 1, 2, 3

#: x86 target page size (``TARGET_PAGE_BITS`` 12), unless the configuration says otherwise
DEFAULT_PAGE_BITS = 12
MAX_MACHINE_NAME = 256
MAX_CAPABILITIES = 256
#: device sections larger than this are not skipped (the largest real ones are far smaller)
MAX_DEVICE_SECTION = 64 << 20


# --- schemas (all big-endian: QEMUFile's qemu_put_be*) ----------------------------------------

@functools.cache
def schemas() -> dict[str, cs.Construct]:
    """Every structure of the stream, declared once."""
    i = ints(">")
    name = cs.PascalString(i.u8, "latin-1")
    return {
        "file_header": cs.Struct("magic" / cs.Bytes(4), "version" / i.u32),
        "configuration": cs.Struct("len" / i.u32),  # then the machine type, len bytes
        "subsection": cs.Struct("name" / name, "version_id" / i.u32),
        "section_start": cs.Struct("section_id" / i.u32, "idstr" / name, "instance_id" / i.u32,
                                   "version_id" / i.u32),  # START and FULL
        "section_part": cs.Struct("section_id" / i.u32),  # PART and END
        "footer": cs.Struct("section_id" / i.u32),
        "command": cs.Struct("cmd" / i.u16, "len" / i.u16),  # then len bytes
        "ram_block": cs.Struct("idstr" / name, "used_length" / i.u64),
        "ram_record": cs.Struct("offset_flags" / i.u64),  # then the block name unless CONTINUE
        "compressed": cs.Struct("len" / i.u32),  # then a zlib stream (COMPRESS_PAGE)
        "xbzrle": cs.Struct("encoding" / i.u8, "len" / i.u16),  # then the encoded delta
    }


#: A RAM record header: ``offset | flags`` (``save_page_header``).
U64 = struct.Struct(">Q")


class Cursor:
    """Reads the stream front to back through a buffer of a few MiB."""

    CHUNK = 4 << 20

    def __init__(self, source: ByteSource, pos: int) -> None:
        self.src = source
        self.end = source.size
        self.buf = b""
        self.base = pos  # file offset of buf[0]
        self.i = 0

    @property
    def pos(self) -> int:
        """The file offset of the next byte."""
        return self.base + self.i

    def seek(self, pos: int) -> None:
        """Move to file offset ``pos`` (keeping the buffer when ``pos`` lies in it)."""
        if self.base <= pos <= self.base + len(self.buf):
            self.i = pos - self.base
        else:
            self.buf, self.base, self.i = b"", pos, 0

    def ensure(self, n: int) -> bool:
        """Make ``n`` bytes at the position available; False if the file ends first."""
        if self.i + n <= len(self.buf):
            return True
        rest = self.buf[self.i:]
        self.base += self.i
        self.buf = rest + self.src.pread(self.base + len(rest), max(self.CHUNK, n - len(rest)))
        self.i = 0
        return len(self.buf) >= n

    def peek(self, n: int) -> bytes:
        """The next ``n`` bytes, without moving (fewer at the end of the file)."""
        self.ensure(n)
        return self.buf[self.i:self.i + n]

    def take(self, n: int, what: str) -> bytes:
        """The next ``n`` bytes, moving past them.

        :raises StreamCutError: the file ends first (``what`` names the structure)
        """
        if not self.ensure(n):
            raise StreamCutError(self.pos, n, what)
        out = self.buf[self.i:self.i + n]
        self.i += n
        return out

    def skip(self, n: int, what: str) -> None:
        """Move ``n`` bytes on.

        :raises StreamCutError: the file ends first
        """
        if self.pos + n > self.end:
            raise StreamCutError(self.pos, n, what)
        self.seek(self.pos + n)

    def parse(self, name: str, what: str, max_size: int) -> cs.Container:
        """Parse the schema ``name`` (at most ``max_size`` bytes) at the position and move past it.

        :raises StreamCutError: the file ends inside it
        :raises CorruptDumpError: the bytes do not parse
        """
        data = self.peek(max_size)
        stream = io.BytesIO(data)
        try:
            value = schemas()[name].parse_stream(stream)
        except cs.ConstructError:
            if len(data) < max_size:
                raise StreamCutError(self.pos + len(data), max_size, what) from None
            raise CorruptDumpError(f"cannot parse the {what}", path=self.src.name,
                                   offset=self.pos) from None
        self.i += stream.tell()
        return value

    def u8(self, what: str) -> int:
        """The next byte. :raises StreamCutError: at the end of the file"""
        return self.take(1, what)[0]

    def u32(self, what: str) -> int:
        """The next big-endian u32. :raises StreamCutError: the file ends first"""
        return int.from_bytes(self.take(4, what), "big")
