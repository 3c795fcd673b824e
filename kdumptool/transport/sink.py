"""Byte sinks that writers emit positional writes into, and atomic output files.

Every output is written to a temporary file in the destination's directory
and renamed over the destination only when the writer has finished, so an
interrupted or failed run leaves nothing half-written. An existing output is
replaced only with ``force``; an output that is the same file as an input
(same inode) is always refused.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Protocol

from kdumptool.errors import OutputError
from kdumptool.transport.flattened import FlattenedSink


class ByteSink(Protocol):
    """What a format writer writes into."""

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write ``data`` at image offset ``offset``."""

    def finish(self) -> None:
        """Flush; called once after the last write."""


class FileSink:
    """Positional writes into a regular file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while len(view):
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def finish(self) -> None:
        os.fsync(self.fd)


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
def open_output(
    path: str, *, inputs: list[str], force: bool = False, flattened: bool = False
) -> Iterator[ByteSink]:
    """Open ``path`` (``-`` for standard output) as a sink, atomically.

    :param flattened: emit makedumpfile's flattened stream instead of a plain image
        (required for standard output, which cannot seek)
    :raises OutputError: see :func:`check_output_path`
    """
    if path == "-":
        if not flattened:
            raise OutputError("writing to standard output needs the flattened format (-F)")
        sink = FlattenedSink(sys.stdout.buffer)
        yield sink
        sink.finish()
        return
    check_output_path(path, inputs, force=force)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".kdumptool-tmp",
                                   dir=directory)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create a file in {directory}: {exc.strerror}") from None
    try:
        if flattened:
            with os.fdopen(os.dup(fd), "wb", buffering=1 << 20) as stream:
                fsink = FlattenedSink(stream)
                yield fsink
                fsink.finish()
            os.fsync(fd)
        else:
            sink = FileSink(fd)
            yield sink
            sink.finish()
        os.fchmod(fd, 0o644 & ~_umask())
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except OSError as exc:
        _discard(fd, tmp)
        raise OutputError(f"{path}: {exc.strerror or exc}", errno=exc.errno) from None
    except BaseException:
        _discard(fd, tmp)
        raise


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
        end = offset + len(data)
        if end > len(self.buf):
            self.buf.extend(bytes(end - len(self.buf)))
        self.buf[offset:end] = data

    def finish(self) -> None:
        pass

    def getvalue(self) -> bytes:
        return bytes(self.buf)
