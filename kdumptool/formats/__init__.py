"""Dump formats: one module per format, and the ordered registry used to open a file.

Each format module declares its construct schemas once (parameterised by byte
order and word size), a cheap ``probe(head) -> bool`` that never raises on
foreign data, and a reader class built on those schemas; writers live next to
them (``*_writer.py``).

Adding a format touches about four files:

1. ``formats/<name>.py`` — schemas, ``probe``, reader (subclass of
   :class:`kdumptool.dump.DumpReader`);
2. this registry (:data:`READERS`), in probe order;
3. ``SPEC.md`` — the format in our own words with the upstream source of each field;
4. ``tests/`` — a builder for synthetic files and real-file tests.

A format may also name a ``recover`` function: when no probe accepts a file read tolerantly,
it may still recognise the format by the rest of the file (a damaged magic) and return a
reader, or None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kdumptool.dump import DumpReader
from kdumptool.formats import (
    elf,
    hyperv,
    kdump,
    kdump_recover,
    qemu_savevm,
    windows_dmp,
    xen_core,
    xen_stream,
)
from kdumptool.transport.source import ByteSource


@dataclass(frozen=True)
class ReaderEntry:
    """One readable format: its name, its probe and its reader class."""

    name: str
    probe: Callable[[bytes], bool]
    reader: Callable[..., DumpReader]
    #: (source, transport) -> a tolerant reader of a file whose magic is damaged, or None
    recover: Callable[..., DumpReader | None] | None = None


#: Probe order matters where magics collide: ``xen-core`` (an ELF core file without program
#: headers) must come before the generic ``elf`` reader.
READERS: tuple[ReaderEntry, ...] = (
    ReaderEntry("kdump", kdump.probe, kdump.KdumpReader, kdump_recover.recover_signature),
    ReaderEntry("xen-core", xen_core.probe, xen_core.XenCoreReader),
    ReaderEntry("elf", elf.probe, elf.ElfReader),
    ReaderEntry("hyperv", hyperv.probe, hyperv.HyperVReader),
    ReaderEntry("qemu-savevm", qemu_savevm.probe, qemu_savevm.QemuSavevmReader),
    ReaderEntry("xen-stream", xen_stream.probe, xen_stream.XenStreamReader),
    ReaderEntry("windows-dmp", windows_dmp.probe, windows_dmp.WindowsDumpReader),
)


def find_reader(head: bytes) -> ReaderEntry | None:
    """The first format whose probe accepts ``head`` (the first 4 KiB of an image)."""
    for entry in READERS:
        if entry.probe(head):
            return entry
    return None


def open_source(source: ByteSource, *, strict: bool = True, transport: str = "plain") -> DumpReader:
    """Open the image in ``source`` with the first format that recognises it."""
    from kdumptool.errors import UnknownFormatError

    head = source.pread(0, 4096)
    entry = find_reader(head)
    if entry is None:
        recovered = recover(source, transport=transport)
        if recovered is not None and not strict:
            return recovered
        hint = ""
        if recovered is not None:  # say what it looks like; a strict reader does not guess
            kind = {"kdump": "kdump-compressed"}.get(recovered.info.format, recovered.info.format)
            hint = f" (it is a {kind} file whose signature is damaged: `kdumptool repair` restores it)"
        raise UnknownFormatError(
            f"not a kernel dump kdumptool can read{hint}", path=source.name, offset=0,
            expected="ELF core, 'KDUMP   ', 'DISKDUMP', 'makedumpfile', 'QEVM', 'LibvirtQemudSave', "
                     "HyperVStorage, Xen save or Windows PAGEDU64 signature",
            got=head[:8],
        )
    return entry.reader(source, strict=strict, transport=transport)


def recover(source: ByteSource, *, transport: str = "plain") -> DumpReader | None:
    """A tolerant reader from the first format that recognises a file by more than its magic."""
    for entry in READERS:
        reader = entry.recover(source, transport=transport) if entry.recover else None
        if reader is not None:
            return reader
    return None
