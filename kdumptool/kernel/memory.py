"""Kernel virtual memory of a dump, with bounded reads of C values and strings.

Everything read here comes from a dump that a crash or an attacker may have damaged:
every read has a size the caller bounds, strings stop at a maximum length, and a page
that is not in the dump or an address that does not translate becomes a
:class:`~kdumptool.errors.KernelDataMissingError` naming the address.
"""

from __future__ import annotations

import struct

from kdumptool.dump import DumpReader
from kdumptool.errors import KdumpToolError, KernelDataMissingError
from kdumptool.vtop import read_virtual

#: The largest single read a kernel structure may ask for (the kallsyms names of the
#: biggest kernels are a few MiB; BTF of vmlinux ~ 6 MiB).
MAX_READ = 64 << 20


class KernelMemory:
    """Reads of the dump's kernel virtual address space (x86_64, aarch64).

    :param reader: an open dump whose VMCOREINFO is known (see
        :func:`kdumptool.kernel.session.open_kernel`, which recovers it from memory)
    """

    def __init__(self, reader: DumpReader) -> None:
        self.reader = reader
        self.path = reader.info.path
        self.endian = reader.info.endian or "<"

    def read(self, vaddr: int, size: int, what: str = "memory") -> bytes:
        """``size`` bytes at kernel virtual address ``vaddr``.

        :raises KernelDataMissingError: the size is over :data:`MAX_READ`, the address does
            not translate or a page is not in the dump
        """
        if size < 0 or size > MAX_READ:
            raise KernelDataMissingError(f"{self.path}: {what} at {vaddr:#x}: refusing to read "
                                         f"{size} bytes (limit {MAX_READ})")
        if size == 0:
            return b""
        try:
            data = read_virtual(self.reader, vaddr & ((1 << 64) - 1), size)
        except KdumpToolError as exc:
            raise KernelDataMissingError(f"{self.path}: {what} at {vaddr:#x}: {exc}") from exc
        if len(data) != size:
            raise KernelDataMissingError(f"{self.path}: {what} at {vaddr:#x}: got {len(data)} of "
                                         f"{size} bytes")
        return data

    def u32(self, vaddr: int, what: str = "u32") -> int:
        """An unsigned 32-bit value in the dump's byte order."""
        return int(struct.unpack(self.endian + "I", self.read(vaddr, 4, what))[0])

    def u64(self, vaddr: int, what: str = "u64") -> int:
        """An unsigned 64-bit value."""
        return int(struct.unpack(self.endian + "Q", self.read(vaddr, 8, what))[0])

    def cstr(self, vaddr: int, limit: int, what: str = "string") -> bytes:
        """A NUL-terminated string of at most ``limit`` bytes (the bytes before the NUL, or
        all ``limit`` bytes when none is found)."""
        out = bytearray()
        while len(out) < limit:
            chunk_len = min(limit - len(out), 4096 - ((vaddr + len(out)) & 4095))
            chunk = self.read(vaddr + len(out), chunk_len, what)
            nul = chunk.find(b"\0")
            if nul >= 0:
                out += chunk[:nul]
                return bytes(out)
            out += chunk
        return bytes(out)
