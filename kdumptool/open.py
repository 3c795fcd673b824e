"""Opening a dump: choose the transport (plain, flattened, compressed, standard input), then the format.

A plain or flattened file is read in place. Standard input and compressed files
(``.zst``, ``.xz``, ``.gz``, ``.lz4``: recognised by their magic, see
:mod:`kdumptool.transport.compressed`) cannot be read at random, so they are read
once, front to back, into a temporary file in ``$TMPDIR`` (deleted at once, kept
open until the reader closes): a flattened stream is rearranged on the way as
``makedumpfile -R`` does, any other image is copied. That file needs as much
free space as the uncompressed image. Standard input can be read only once, so its
copy is kept for the life of the process: every later open of ``-`` (a command that
checks, then salvages, or a probe before the real open) reads the same copy.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import BinaryIO

from kdumptool.dump import DumpReader
from kdumptool.errors import DumpError, KdumpToolError, UnknownFormatError, UnreadableInputError
from kdumptool.formats import open_source
from kdumptool.transport import compressed, flattened
from kdumptool.transport.source import ByteSource, FileSource, SpooledSource
from kdumptool.vmcoreinfo import VmcoreInfo

#: Bytes read to recognise a compressed file (room for leading skippable frames).
DETECT_BYTES = 4096


def open_dump(path: str, *, strict: bool = True) -> DumpReader:
    """Open a dump file of any supported format, plain, flattened or compressed; ``-`` is
    standard input (which may be any of those).

    Standard input and compressed files are read front to back once (never seeked):
    a flattened stream is rearranged into a temporary file as ``makedumpfile -R``
    does, any other image is copied there. The temporary file is deleted when the
    reader closes.

    :param strict: raise on damage instead of reporting lost/corrupt pages; when
        False, a compressed stream that is cut short or corrupt gives the image up to
        the damage (``source.damage`` says what happened)
    :raises UnknownFormatError: not a dump
    :raises UnreadableInputError: the file cannot be opened or read (missing, a directory,
        no permission, an I/O error)
    :raises CorruptDumpError: a dump, but damaged (strict), or its compression is
    """
    if path == "-":
        return _open_stdin(strict=strict)
    try:
        src: ByteSource = FileSource(path)
    except OSError as exc:
        raise UnreadableInputError(f"cannot open: {exc.strerror}", path=path) from None
    try:
        kind = compressed.detect(src.pread(0, DETECT_BYTES))
        if kind is None:
            return _open_plain_or_flat(src, strict=strict)
    except OSError as exc:  # an I/O error while recognising it
        src.close()
        raise UnreadableInputError(f"cannot read: {exc.strerror or exc}", path=path) from None
    except BaseException:
        src.close()
        raise
    src.close()
    try:
        raw = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise UnreadableInputError(f"cannot open: {exc.strerror}", path=path) from None
    with raw:
        return _open_stream(raw, path, strict=strict, kind=kind)


def split_part_kind(path: str) -> str:
    """What ``path`` is, for telling the parts of a split set from an output name: ``"part"``
    (a part of a split set; also ``-``, which only the real open can tell), ``"a whole dump,
    not a part of a split set"``, ``"not a kernel dump"`` or ``"no such file"``."""
    if path == "-":
        return "part"
    if not os.path.lexists(path):
        return "no such file"
    try:
        with open_dump(path, strict=False) as reader:
            return "part" if reader.info.split is not None else "a whole dump, not a part of a split set"
    except UnknownFormatError:
        return "not a kernel dump"
    except KdumpToolError as exc:
        return str(exc).removeprefix(f"{path}: ")
    except OSError as exc:  # a directory, say
        return (exc.strerror or str(exc)).lower()


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
    if not info.machine:  # a format that does not say (LiME): the keys do
        info.machine = vmci.machine
    if vmci.has("NUMBER(phys_base)"):
        info.phys_base = vmci.number("phys_base") % (1 << 64)  # printed signed
    if info.utsname is None or not info.utsname.looks_sane():
        info.utsname = Utsname(sysname="Linux", release=vmci.osrelease, machine=info.machine)


def recover_vmcoreinfo(reader: DumpReader, error: type[KdumpToolError] = KdumpToolError) -> int:
    """Adopt the first VMCOREINFO text found in the memory of a dump that carries none
    (:func:`adopt_vmcoreinfo`); returns the physical address it was found at.

    :param error: the class of the error raised when none is found
    :raises KdumpToolError: (``error``) none found; the text says to supply one with ``-i FILE``
    """
    from kdumptool.scan import scan_vmcoreinfo

    found = scan_vmcoreinfo(reader, first_only=True)
    if not found:
        raise error(f"{reader.info.path}: the dump has no VMCOREINFO and none was found in its "
                    "memory (supply it with -i FILE)")
    adopt_vmcoreinfo(reader, found[0].vmcoreinfo)
    return found[0].paddr


def _open_plain_or_flat(src: ByteSource, *, strict: bool) -> DumpReader:
    head = src.pread(0, 64)
    if flattened.probe(head):
        flat = flattened.FlattenedSource(src, strict=strict)
        return open_source(flat, strict=strict, transport="flattened")
    return open_source(src, strict=strict)


#: Standard input once copied (a handle kept open for the process) and its transport.
_stdin_copy: tuple[SpooledSource, str] | None = None


def _open_stdin(*, strict: bool) -> DumpReader:
    """Open standard input: copied on the first call, the same copy on every later one.

    :raises UnreadableInputError: standard input is closed or cannot be read
    """
    global _stdin_copy
    if _stdin_copy is None:
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:
            raise UnreadableInputError("standard input is closed: there is no dump to read",
                                       path="<stdin>")
        try:
            head = flattened.read_full(stream, DETECT_BYTES)
        except OSError as exc:
            raise UnreadableInputError(f"cannot read standard input: {exc.strerror or exc}",
                                       path="<stdin>") from None
        kind = compressed.detect(head)
        src, transport = _spool_stream(_Prefixed(head, stream), "<stdin>",  # type: ignore[arg-type]
                                       strict=strict, kind=kind, plain="stdin")
        _stdin_copy = (src.reopen(), transport)
    else:
        kept, transport = _stdin_copy
        if strict and kept.damage is not None:
            raise kept.damage
        src = kept.reopen()
    return _open_spooled(src, strict=strict, transport=transport)


def _open_stream(stream: BinaryIO, name: str, *, strict: bool, kind: str | None = None) -> DumpReader:
    """Open a compressed file (read front to back, once)."""
    src, transport = _spool_stream(stream, name, strict=strict, kind=kind, plain="plain")
    return _open_spooled(src, strict=strict, transport=transport)


def _spool_stream(stream: BinaryIO, name: str, *, strict: bool, kind: str | None,
                  plain: str) -> tuple[SpooledSource, str]:
    """Decompress (``kind``) and copy ``stream``; return the copy and its transport's name."""
    if kind is not None:
        stream = compressed.DecompressingReader(stream, kind, name)  # type: ignore[assignment]
    src, flat = _spool(stream, name, kind=kind, strict=strict)
    if kind is not None:
        return src, f"{kind} stream" + (", flattened" if flat else "")
    return src, "flattened" if flat else plain


def _open_spooled(src: SpooledSource, *, strict: bool, transport: str) -> DumpReader:
    """Open the format of a spooled copy (closing the copy if it is no dump)."""
    try:
        return open_source(src, strict=strict, transport=transport)
    except DumpError:
        src.close()
        if src.damage is not None:  # what is left of a damaged stream is no dump: say why
            raise src.damage from None
        raise
    except BaseException:
        src.close()
        raise


def _spool(stream: BinaryIO, name: str, *, kind: str | None, strict: bool) -> tuple[SpooledSource, bool]:
    """Copy (or rearrange, if flattened) ``stream`` into an unlinked temporary file.

    :return: the file as a source, and whether the stream was flattened
    """
    shown = name if kind is None else f"{name} ({kind}-decompressed)"
    tmpdir = tempfile.gettempdir()
    try:
        fd, tmp = tempfile.mkstemp(prefix="kdumptool-spool-")
    except OSError as exc:
        raise KdumpToolError(f"{name}: cannot create a temporary file in {tmpdir}: {exc.strerror}") from None
    damage: DumpError | None = None
    flat = False
    try:
        with os.fdopen(fd, "w+b") as out:
            try:
                head = flattened.read_full(stream, flattened.HEADER_SIZE)
                if flattened.probe(head):
                    flat = True
                    flattened.rearrange_stream(_Prefixed(head, stream), out,  # type: ignore[arg-type]
                                               name=shown)
                else:
                    out.write(head)
                    shutil.copyfileobj(stream, out, 1 << 20)
            except DumpError as exc:
                if strict:
                    raise
                damage = exc  # keep the image up to the damage
        src = SpooledSource(tmp, display_name=shown, damage=damage)
    except OSError as exc:
        what = "decompress" if kind is not None else "copy"
        raise KdumpToolError(
            f"{name}: cannot {what} the dump into {tmpdir}: {exc.strerror or exc} (it needs as "
            "much free space as the uncompressed dump; set TMPDIR to a roomier file system)"
        ) from None
    finally:
        os.unlink(tmp)  # an open descriptor keeps the data until the reader closes
    return src, flat


class _Prefixed:
    """A stream with some bytes already read put back in front."""

    def __init__(self, prefix: bytes, stream: object) -> None:
        self.prefix = prefix
        self.stream = stream

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            out, self.prefix = self.prefix, b""
            return out + self.stream.read()  # type: ignore[attr-defined]
        if self.prefix:
            out, self.prefix = self.prefix[:n], self.prefix[n:]
            if len(out) < n:
                out += self.stream.read(n - len(out))  # type: ignore[attr-defined]
            return out
        return self.stream.read(n)  # type: ignore[attr-defined]


__all__ = ["adopt_vmcoreinfo", "open_bytes", "open_dump", "open_dumps", "recover_vmcoreinfo",
           "split_part_kind", "supply_vmcoreinfo"]
