"""Byte sinks that writers emit positional writes into, and atomic output files.

Every output is written to a temporary file in the destination's directory
and renamed over the destination only when the writer has finished, so an
interrupted or failed run leaves nothing half-written. An existing output is
replaced only with ``force``; an output that is the same file as an input
(same inode) is always refused.

A flattened output may be written through a zstd or lz4 frame
(``--stream-compress``). A size limit (makedumpfile's ``-L``) is a
:class:`LimitedSink` around the sink: writers ask it how much still fits and
stop writing pages there (see SPEC.md "Transport compression and the size limit").
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from kdumptool import interrupts
from kdumptool.errors import LimitReached, OutputError
from kdumptool.transport.compressed import CompressingWriter, compress_bound
from kdumptool.transport.flattened import HEADER_SIZE, FlattenedSink


class ByteSink(Protocol):
    """What a format writer writes into."""

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write ``data`` at image offset ``offset``."""

    def finish(self) -> None:
        """Flush; called once after the last write."""


class FileSink:
    """Positional writes into a regular file descriptor.

    :param fd: the file
    :param path: the file's name, when another process is to write it (e.g. a split part
        written by a cluster worker); its directory takes the temporary files of local
        workers (:mod:`kdumptool.parallel`), on the same file system
    """

    #: Page data written between two starts of the kernel's writeback (:meth:`wrote`).
    WRITEBACK_BYTES = 32 << 20

    def __init__(self, fd: int, path: str | None = None) -> None:
        self.fd = fd
        self.path = path
        self.tmpdir = os.path.dirname(os.path.abspath(path)) if path else None
        self._unflushed: tuple[int, int] | None = None  # page data not yet handed to writeback

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write all of ``data`` at ``offset`` (``os.pwrite`` until done)."""
        view = memoryview(data)
        while len(view):
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def wrote(self, offset: int, nbytes: int) -> None:
        """Note that page data ``[offset, offset + nbytes)`` is in the file (written by a
        chunk, here or by ``copy_file_range`` from a worker's file). Every
        :data:`WRITEBACK_BYTES` the kernel is asked to start writing that range out
        (:func:`_start_writeback`), so the final ``fsync`` waits for the last part only.
        Headers and descriptors, written again later, are never in the range."""
        lo, hi = (offset, offset + nbytes) if self._unflushed is None else (
            min(self._unflushed[0], offset), max(self._unflushed[1], offset + nbytes))
        if hi - lo >= self.WRITEBACK_BYTES:
            _start_writeback(self.fd, lo, hi - lo)
            self._unflushed = None
        else:
            self._unflushed = (lo, hi)

    def finish(self) -> None:
        """``fsync`` the file, so that an error of the disk shows up as an error here."""
        os.fsync(self.fd)


def _start_writeback(fd: int, offset: int, length: int) -> bool:
    """Have Linux start writing out the range's dirty pages, not waiting:
    ``POSIX_FADV_DONTNEED`` starts their writeback, then drops the range's whole pages that
    are clean from the page cache (page data: not read again). A hint: errors are the final
    ``fsync``'s to report. Returns whether the hint was given."""
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):  # no fadvise here (or not for this file): fsync does it all
        return False
    return True


_RECORD = 16  # a flattened record header


class LimitedSink:
    """A sink whose output may not grow past ``limit`` bytes (makedumpfile ``-L``).

    The size counted is the output file's: for a plain file, the end of the furthest
    write; for a flattened stream, every record (16-byte header and data) plus the
    stream's header and end marker. Writers ask :meth:`cost` / :meth:`fit` and write
    only what fits; a write that does not fit raises :class:`LimitReached` (the
    writer's metadata does not fit at all). Writes the writer will make last (its
    headers) are set aside first with :meth:`reserve`.

    :param inner: the real sink
    :param limit: the largest output size, in bytes
    :param flattened: ``inner`` writes a flattened stream
    :param name: the output, for errors
    """

    def __init__(self, inner: ByteSink, limit: int, *, flattened: bool, name: str = "output") -> None:
        self.inner = inner
        self.limit = limit
        self.flattened = flattened
        self.name = name
        self.size = HEADER_SIZE + _RECORD if flattened else 0  # flattened: header and end marker
        self.reserved = 0

    def cost(self, offset: int, length: int) -> int:
        """How many bytes the output grows by if ``length`` bytes are written at ``offset``."""
        if length <= 0:
            return 0
        if self.flattened:
            return _RECORD + length
        return max(0, offset + length - self.size)

    def room(self) -> int:
        """Bytes the output may still grow by (after what is reserved)."""
        return self.limit - self.size - self.reserved

    def fits(self, offset: int, length: int) -> bool:
        """True if writing ``length`` bytes at ``offset`` keeps the output within the limit."""
        return self.cost(offset, length) <= self.room()

    def fit(self, n: int, cost: Callable[[int], int]) -> int:
        """The largest ``j <= n`` whose ``cost(j)`` fits (``cost`` grows with ``j``)."""
        room = self.room()
        if cost(n) <= room:
            return n
        lo, hi = 0, n  # cost(lo) fits or lo == 0; cost(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cost(mid) <= room:
                lo = mid
            else:
                hi = mid
        return lo

    def reserve(self, writes: list[tuple[int, int]]) -> None:
        """Set aside room for writes ``(offset, length)`` made at the end (headers, at the start
        of the image: they cost nothing in a plain file that has grown past them, but are
        records of their own in a flattened stream)."""
        self.reserved = sum(_RECORD + n for _, n in writes if n) if self.flattened else 0

    def release(self) -> None:
        """Give back the reserved room, before making the reserved writes."""
        self.reserved = 0

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write through to the inner sink, counting the growth.

        :raises LimitReached: the write would take the output past the limit
        """
        grow = self.cost(offset, len(data))
        if grow > self.room():
            raise LimitReached(
                f"{self.name}: the size limit of {self.limit} bytes is too small for the dump's "
                f"headers, bitmaps and page table (a write of {len(data)} bytes at {offset:#x} does "
                f"not fit in the {max(self.room(), 0)} bytes left)")
        self.inner.pwrite(offset, data)
        self.size += grow

    def finish(self) -> None:
        """Finish the inner sink."""
        self.inner.finish()


def uncompressed_limit(limit: int) -> int:
    """The uncompressed stream size whose compressed form surely fits in ``limit`` bytes."""
    n = max(0, (limit - 4096) * 255 // 256)
    while n and compress_bound("zstd", n) > limit:
        n -= 1 + n // 1024
    return n


def check_output_path(path: str, inputs: list[str], *, force: bool) -> None:
    """Refuse an output that is an input, or that exists without ``force``.

    :raises OutputError: with the reason
    """
    if not os.path.lexists(path):
        return
    for inp in inputs:
        with contextlib.suppress(OSError):
            if inp != "-" and os.path.samefile(path, inp):
                raise OutputError(f"{path}: output is the same file as the input {inp}")
    if not force:
        raise OutputError(f"{path}: output exists (use --force to replace it)")
    if os.path.isdir(path):
        raise OutputError(f"{path}: output is a directory")


@contextlib.contextmanager
def _flattened_sink(stream: Any, *, compress: str | None, limit: int | None,
                    name: str) -> Iterator[ByteSink]:
    """A flattened stream into ``stream``, through a compressed frame if asked, limited if asked."""
    target = CompressingWriter(stream, compress) if compress else stream
    fsink = FlattenedSink(target)
    if limit is not None and compress:
        limit = uncompressed_limit(limit)
    yield LimitedSink(fsink, limit, flattened=True, name=name) if limit is not None else fsink
    fsink.finish()
    if isinstance(target, CompressingWriter):
        target.finish()


@contextlib.contextmanager
def open_output(
    path: str, *, inputs: list[str], force: bool = False, flattened: bool = False,
    compress: str | None = None, limit: int | None = None,
) -> Iterator[ByteSink]:
    """Open ``path`` (``-`` for standard output) as a sink, atomically.

    :param flattened: emit makedumpfile's flattened stream instead of a plain image
        (required for standard output, which cannot seek)
    :param compress: write the flattened stream through one ``"zstd"`` or ``"lz4"`` frame
        (only with ``flattened``: the other outputs are written out of order)
    :param limit: the output may not exceed this many bytes (the sink is a
        :class:`LimitedSink`; with ``compress``, the uncompressed stream is limited so that
        the compressed file surely fits)
    :raises OutputError: see :func:`check_output_path`
    :raises LimitReached: (from the writer) the limit is too small
    """
    if compress and not flattened:
        raise OutputError("a compressed output stream needs the flattened format (-F)")
    if path == "-":
        if not flattened:
            raise OutputError("writing to standard output needs the flattened format (-F)")
        with _flattened_sink(sys.stdout.buffer, compress=compress, limit=limit,
                             name="standard output") as sink:
            yield sink
        sys.stdout.buffer.flush()
        return
    check_output_path(path, inputs, force=force)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = ""
    fd = -1
    try:
        tmp = _temp_name(path, directory)
        fd = _create_temp(tmp, path, directory)
        if flattened:
            with os.fdopen(os.dup(fd), "wb", buffering=1 << 20) as stream, \
                    _flattened_sink(stream, compress=compress, limit=limit, name=path) as fsink:
                yield fsink
            os.fsync(fd)
        else:
            sink = FileSink(fd, tmp)
            yield LimitedSink(sink, limit, flattened=False, name=path) if limit is not None else sink
            sink.finish()
        os.fchmod(fd, 0o644 & ~_umask())
        os.close(fd)
        fd = -1
        interrupts.check()  # an interrupt Python swallowed still leaves no output
        os.replace(tmp, path)
    except OSError as exc:
        _discard(fd, tmp)
        raise OutputError(f"{path}: {exc.strerror or exc}", errno=exc.errno) from None
    except BaseException:
        _discard(fd, tmp)
        raise


@contextlib.contextmanager
def open_outputs(paths: list[str], *, inputs: list[str], force: bool = False) -> Iterator[list[ByteSink]]:
    """Open several plain outputs (the parts of a split set) as sinks, all or nothing.

    Each is written to a temporary file in its destination's directory; only when every one
    is complete are they renamed over their destinations. A failure or an interruption before
    that leaves none of them; a failure while renaming removes those already renamed.

    :raises OutputError: an output is standard output, given twice, an input, or exists
        without ``force`` (see :func:`check_output_path`)
    """
    seen: dict[str, str] = {}
    for path in paths:
        if path == "-":
            raise OutputError("the files of a split set cannot go to standard output")
        check_output_path(path, inputs, force=force)
        key = os.path.realpath(path)
        if key in seen:
            raise OutputError(f"{path}: given twice as an output (also as {seen[key]})")
        seen[key] = path
    temps: list[tuple[int, str, str]] = []  # (fd, temporary name, destination)
    done: list[str] = []
    try:
        for path in paths:
            directory = os.path.dirname(os.path.abspath(path))
            tmp = _temp_name(path, directory)
            temps.append((-1, tmp, path))  # named before it exists: an interrupt still removes it
            temps[-1] = (_create_temp(tmp, path, directory), tmp, path)
        sinks = [FileSink(fd, tmp) for fd, tmp, _ in temps]
        yield list(sinks)
        for sink in sinks:
            sink.finish()
        mode = 0o644 & ~_umask()
        for i, (fd, tmp, path) in enumerate(temps):
            os.fchmod(fd, mode)
            os.close(fd)
            temps[i] = (-1, tmp, path)
        interrupts.check()
        for _, tmp, path in temps:
            os.replace(tmp, path)
            done.append(path)
    except BaseException as exc:
        for fd, tmp, _ in temps:
            _discard(fd, tmp)
        for path in done:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if isinstance(exc, OSError):
            where = exc.filename or ", ".join(paths)
            raise OutputError(f"{where}: {exc.strerror or exc}", errno=exc.errno) from None
        raise


def _temp_name(path: str, directory: str) -> str:
    """A fresh name for the temporary file of ``path``, chosen before the file is created, so
    that an interrupt arriving while it is being created still finds it to remove (with
    :func:`tempfile.mkstemp` the name is only known once the call returns)."""
    return os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(6).hex()}.kdumptool-tmp")


def _create_temp(tmp: str, path: str, directory: str) -> int:
    """Create ``tmp`` exclusively (mode 0600) and return its descriptor.

    :raises OutputError: it cannot be created
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create a file in {directory}: {exc.strerror}") from None


def _discard(fd: int, tmp: str) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class BytesSink:
    """Positional writes into memory; ``getvalue()`` gives the image (holes are zeros)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write ``data`` at ``offset`` of the buffer, growing it with zeros as needed."""
        end = offset + len(data)
        if end > len(self.buf):
            self.buf.extend(bytes(end - len(self.buf)))
        self.buf[offset:end] = data

    def finish(self) -> None:
        """Nothing to do: the buffer is the output."""
        pass

    def getvalue(self) -> bytes:
        """Everything written, as bytes."""
        return bytes(self.buf)
