"""Opening a dump: choose the transport (plain, flattened, standard input), then the format."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from kdumptool.dump import DumpReader
from kdumptool.errors import DumpError, KdumpToolError
from kdumptool.formats import open_source
from kdumptool.transport import flattened
from kdumptool.transport.source import ByteSource, FileSource
from kdumptool.vmcoreinfo import VmcoreInfo


def open_dump(path: str, *, strict: bool = True) -> DumpReader:
    """Open a dump file of any supported format, plain or flattened; ``-`` is standard input.

    Standard input is read front to back once (never seeked): a flattened stream
    is rearranged into a temporary file as ``makedumpfile -R`` does, any other
    image is copied there. The temporary file is deleted when the reader closes.

    :param strict: raise on damage instead of reporting lost/corrupt pages
    :raises UnknownFormatError: not a dump
    :raises CorruptDumpError: a dump, but damaged (strict)
    """
    if path == "-":
        return _open_stdin(strict=strict)
    try:
        src: ByteSource = FileSource(path)
    except OSError as exc:
        raise KdumpToolError(f"{path}: cannot open: {exc.strerror}") from None
    try:
        return _open_plain_or_flat(src, strict=strict)
    except BaseException:
        src.close()
        raise


def open_dumps(paths: list[str], *, strict: bool = True) -> DumpReader:
    """Open one dump, or the parts of a split set (``makedumpfile --split``) as one dump.

    :raises CorruptDumpError: the parts do not form a set (strict: also a missing part)
    """
    if len(paths) == 1:
        reader = open_dump(paths[0], strict=strict)
        if reader.info.split is None:
            return reader
        readers = [reader]
    else:
        readers = []
    try:
        for path in paths[len(readers):]:
            readers.append(open_dump(path, strict=strict))
        from kdumptool.formats.split import SplitSetReader

        return SplitSetReader(readers, strict=strict)
    except BaseException:
        for r in readers:
            r.close()
        raise


def open_bytes(data: bytes, *, strict: bool = True, name: str = "<memory>") -> DumpReader:
    """Open a dump image (plain or flattened) held in memory."""
    from kdumptool.transport.source import BytesSource

    return _open_plain_or_flat(BytesSource(data, name), strict=strict)


def supply_vmcoreinfo(reader: DumpReader, path: str) -> None:
    """Use the VMCOREINFO text in ``path`` for this dump (makedumpfile's ``-i``).

    It replaces what the dump carries (a missing or wrong note); writers then carry it.

    :raises KdumpToolError: the file cannot be read, is too large or has no OSRELEASE
    """
    from kdumptool.vmcoreinfo import MAX_VMCOREINFO

    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_VMCOREINFO + 1)
    except OSError as exc:
        raise KdumpToolError(f"{path}: cannot read VMCOREINFO: {exc.strerror}") from None
    if len(raw) > MAX_VMCOREINFO:
        raise KdumpToolError(f"{path}: VMCOREINFO file is larger than {MAX_VMCOREINFO} bytes")
    vmci = VmcoreInfo.parse(raw)
    if not vmci.osrelease:
        raise KdumpToolError(f"{path}: not VMCOREINFO text (no OSRELEASE= line)")
    adopt_vmcoreinfo(reader, vmci)


def adopt_vmcoreinfo(reader: DumpReader, vmci: VmcoreInfo) -> None:
    """Use ``vmci`` (from a file or found in memory) as this dump's VMCOREINFO."""
    from kdumptool.dump import Utsname

    info = reader.info
    info.vmcoreinfo = vmci
    if vmci.has("NUMBER(phys_base)"):
        info.phys_base = vmci.number("phys_base") % (1 << 64)  # printed signed
    if info.utsname is None or not info.utsname.looks_sane():
        info.utsname = Utsname(sysname="Linux", release=vmci.osrelease, machine=info.machine)


def _open_plain_or_flat(src: ByteSource, *, strict: bool) -> DumpReader:
    head = src.pread(0, 64)
    if flattened.probe(head):
        flat = flattened.FlattenedSource(src, strict=strict)
        return open_source(flat, strict=strict, transport="flattened")
    return open_source(src, strict=strict)


def _open_stdin(*, strict: bool) -> DumpReader:
    stream = sys.stdin.buffer
    fd, tmp = tempfile.mkstemp(prefix="kdumptool-stdin-")
    try:
        with os.fdopen(fd, "w+b") as out:
            head = stream.read(flattened.HEADER_SIZE)
            if flattened.probe(head):
                transport = "flattened"
                rest = _Prefixed(head, stream)
                flattened.rearrange_stream(rest, out)  # type: ignore[arg-type]
            else:
                transport = "stdin"
                out.write(head)
                shutil.copyfileobj(stream, out, 1 << 20)
        src = FileSource(tmp, display_name="<stdin>")
    except DumpError:
        os.unlink(tmp)
        raise
    except BaseException:
        os.unlink(tmp)
        raise
    os.unlink(tmp)  # the open descriptor keeps the data until the reader closes
    try:
        return open_source(src, strict=strict, transport=transport)
    except BaseException:
        src.close()
        raise


class _Prefixed:
    """A stream with some bytes already read put back in front."""

    def __init__(self, prefix: bytes, stream: object) -> None:
        self.prefix = prefix
        self.stream = stream

    def read(self, n: int = -1) -> bytes:
        if self.prefix:
            out, self.prefix = self.prefix[:n], self.prefix[n:]
            if len(out) < n:
                out += self.stream.read(n - len(out))  # type: ignore[attr-defined]
            return out
        return self.stream.read(n)  # type: ignore[attr-defined]


__all__ = ["open_bytes", "open_dump", "open_dumps", "supply_vmcoreinfo"]
