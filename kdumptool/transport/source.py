"""Random-access byte sources that format readers parse.

Every read is bounded by the file size. The process that opened a dump never maps it
(a file cut while mapped kills the process with SIGBUS, as it does in libkdumpfile);
only the forked workers of :mod:`kdumptool.parallel`, whose death the parent survives
and whose work it then does again with ``pread``, may read page data through a mapping
(:func:`allow_mapping`, :func:`mapped`): the pages are then used in place instead of being
copied out of the page cache.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from typing import Protocol

from kdumptool.errors import DumpError, TruncatedDumpError


class ByteSource(Protocol):
    """What a format reader reads from."""

    name: str
    size: int

    def pread(self, offset: int, length: int) -> bytes:
        """Read up to ``length`` bytes at ``offset`` (short only at the end of data)."""

    def close(self) -> None:
        """Release the underlying file."""


def read_exact(src: ByteSource, offset: int, length: int, what: str) -> bytes:
    """Read exactly ``length`` bytes or raise :class:`TruncatedDumpError` naming ``what``."""
    if offset < 0 or offset + length > src.size:
        raise TruncatedDumpError(
            f"{what} lies beyond the end of the file", path=src.name, offset=offset,
            expected=f"{length} bytes at {offset:#x}", got=f"file size {src.size:#x}",
        )
    data = src.pread(offset, length)
    if len(data) != length:
        raise TruncatedDumpError(
            f"short read of {what}", path=src.name, offset=offset + len(data),
            expected=f"{length} bytes", got=f"{len(data)} bytes",
        )
    return data


def read_into(src: ByteSource, offset: int, buf: memoryview) -> int:
    """Read into ``buf`` (bytes from ``offset``) without an intermediate copy where the source
    can (plain files: ``preadv``); returns the number of bytes read (short at the end)."""
    into = getattr(src, "pread_into", None)
    if into is not None:
        return int(into(offset, buf))
    data = src.pread(offset, len(buf))
    buf[:len(data)] = data
    return len(data)


#: Whether file sources may be mapped in this process (only a worker of kdumptool.parallel).
_MAPPING = False


def allow_mapping() -> None:
    """Let file sources be mapped in this process: called in a forked worker only, whose
    death by SIGBUS (the file cut while mapped, a read error) the parent survives."""
    global _MAPPING
    _MAPPING = True


def mapped(src: ByteSource, offset: int, length: int) -> memoryview | None:
    """A read-only view of ``[offset, offset + length)`` of the source's file, without a copy,
    where this process may map it (:func:`allow_mapping`) and the range lies inside the
    file's size; else None (read it with :func:`read_into`)."""
    view = getattr(src, "view", None)
    return None if view is None or not _MAPPING else view(offset, length)


def may_hold_data(src: ByteSource, offset: int, length: int) -> bool:
    """False only when the source knows ``[offset, offset + length)`` reads as zeros without
    storing them (a hole of a sparse file, a gap of a flattened stream): metadata passes then
    skip it, so a dump claiming a huge, mostly empty address space is read quickly."""
    probe = getattr(src, "holds_data", None)
    return True if probe is None else bool(probe(offset, length))


class FileSource:
    """A plain regular file, read with ``os.pread``.

    :param path: file to open read-only (it is never modified)
    :raises OSError: it cannot be opened, or is a directory
    """

    def __init__(self, path: str, *, display_name: str | None = None) -> None:
        self.path = path
        self.name = display_name or path
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        st = os.fstat(self._fd)
        if stat.S_ISDIR(st.st_mode):  # opens read-only, but every read fails (EISDIR)
            self.close()
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        self.size = st.st_size
        self._regular = stat.S_ISREG(st.st_mode)

    def view(self, offset: int, length: int) -> memoryview | None:
        """A read-only view of a range inside the file's size: a shared mapping of that range
        alone, unmapped once the view and every array over it are gone (so mapped pages never
        pile up in the process); None for a file that is not a regular one, an empty or
        out-of-range request, or when the system refuses to map it. Use through
        :func:`mapped`: only a process whose death is survived may touch the view."""
        if not self._regular or self._fd < 0 or length <= 0 or offset < 0 or offset + length > self.size:
            return None
        skip = offset % mmap.ALLOCATIONGRANULARITY
        try:
            area = mmap.mmap(self._fd, skip + length, mmap.MAP_SHARED, mmap.PROT_READ,
                             offset=offset - skip)
        except (OSError, ValueError, OverflowError):
            return None
        return memoryview(area)[skip:]

    def pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; fewer only at the end of the file."""
        if length <= 0 or offset >= self.size:
            return b""
        length = min(length, self.size - offset)
        chunks = []
        while length > 0:
            data = os.pread(self._fd, min(length, 1 << 30), offset)
            if not data:
                break
            chunks.append(data)
            offset += len(data)
            length -= len(data)
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    def pread_into(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` from ``offset``.

        :return: the number of bytes read (fewer than ``len(buf)`` only at the end of the file)
        """
        done = 0
        while done < len(buf):
            n = os.preadv(self._fd, [buf[done:]], offset + done)
            if n <= 0:
                break
            done += n
        return done

    def holds_data(self, offset: int, length: int) -> bool:
        """Whether the range has stored data (``SEEK_DATA``; True when the system cannot say)."""
        if offset + length > self.size:
            return True  # past the end: let the read say what is wrong
        try:
            return os.lseek(self._fd, offset, os.SEEK_DATA) < offset + length
        except OSError as exc:  # ENXIO: only a hole after offset; others: not supported
            return exc.errno != errno.ENXIO

    def close(self) -> None:
        """Close the file descriptor (again: nothing happens)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SpooledSource(FileSource):
    """A temporary copy of a dump that could only be read front to back (standard input,
    a compressed file), already unlinked.

    :param damage: the error that stopped the copy early (tolerant mode), else None
    """

    def __init__(self, path: str, *, display_name: str | None = None,
                 damage: DumpError | None = None, fd: int | None = None) -> None:
        if fd is None:
            super().__init__(path, display_name=display_name)
        else:  # another handle on an open (maybe already unlinked) copy
            self.path, self.name, self._fd = path, display_name or path, fd
            st = os.fstat(fd)
            self.size = st.st_size
            self._regular = stat.S_ISREG(st.st_mode)
        self.damage = damage

    def reopen(self) -> SpooledSource:
        """Another handle on the same copy, closed independently of this one."""
        return SpooledSource(self.path, display_name=self.name, damage=self.damage,
                             fd=os.dup(self._fd))


class BytesSource:
    """An image held in memory (tests, small dumps built on the fly)."""

    def __init__(self, data: bytes, name: str = "<memory>") -> None:
        self.data = bytes(data)
        self.name = name
        self.size = len(self.data)

    def pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; fewer only at the end of the data."""
        if length <= 0 or offset >= self.size:
            return b""
        return self.data[offset:offset + length]

    def close(self) -> None:
        """Nothing to release."""
        pass
