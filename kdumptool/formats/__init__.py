"""Dump formats: one module per format, and the ordered registry used to open a file.

Each format module declares its construct schemas once (parameterised by byte
order and word size), a cheap ``probe(head) -> bool`` that never raises on
foreign data, and a reader class built on those schemas; writers live next to
them (``*_writer.py``). A readable format declares itself at the end of its
module: ``ENTRY = ReaderEntry(name, probe, Reader, signature, order=N)``
(:class:`~kdumptool.formats.registry.ReaderEntry`); this package finds every
``ENTRY`` and probes them in ``order``.

Adding a read-only format touches three files:

1. ``formats/<name>.py`` — schemas, ``probe``, reader (subclass of
   :class:`kdumptool.dump.DumpReader`) and its ``ENTRY``;
2. ``SPEC.md`` — the format in our own words with the upstream source of each field;
3. ``tests/test_<name>.py`` — real files, or files built from real memory.

The command line, ``info`` and the fuzz harness find it through :data:`READERS`; a
``fuzz_seed()`` in ``tests/builders_<name>.py`` gives the fuzzer a seed of it.

A format kdumptool also writes names its writer in its entry (``writer="kdump"``), the
name under which :data:`kdumptool.formats.writers.WRITERS` holds it.

An entry may also declare hooks for the commands that read it (``info``'s lost pages, the
offset ``fsck`` names for a corrupt page, the format ``repair`` writes): see
:class:`~kdumptool.formats.registry.ReaderEntry`; :func:`entry_of` finds the entry of an open
reader (no command tests a reader's class). A format's ``fsck`` checks, which use the repair
tools above this package, are registered by name in
:data:`kdumptool.repair.checks.FORMAT_CHECKS` (a fourth file, for a format with checks of
its own).

An entry may also name a ``recover`` function: when no probe accepts a file read tolerantly,
it may still recognise the format by the rest of the file (a damaged magic) and return a
reader, or None (:func:`recover`).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from kdumptool.dump import DumpReader
from kdumptool.errors import UnknownFormatError
from kdumptool.formats.registry import ReaderEntry
from kdumptool.transport.source import ByteSource

_DECLARATION = "\nENTRY = ReaderEntry("


def _discover() -> tuple[ReaderEntry, ...]:
    """Every ``ENTRY`` of the modules of this package, in probe order. Only the modules whose
    source declares one are imported (writers and helpers are not: ``info`` stays quick)."""
    found = []
    for mod in pkgutil.iter_modules(__path__):
        path = Path(__path__[0]) / f"{mod.name}.py"
        if not path.is_file() or _DECLARATION not in path.read_text(encoding="utf-8"):
            continue
        entry = importlib.import_module(f"{__name__}.{mod.name}").ENTRY
        if isinstance(entry, ReaderEntry):
            found.append(entry)
    return tuple(sorted(found, key=lambda e: (e.order, e.name)))


#: Probe order matters where magics collide: ``xen-core`` (an ELF core file without program
#: headers) must come before the generic ``elf`` reader.
READERS: tuple[ReaderEntry, ...] = _discover()


def find_reader(head: bytes) -> ReaderEntry | None:
    """The first format whose probe accepts ``head`` (the first 4 KiB of an image)."""
    for entry in READERS:
        if entry.probe(head):
            return entry
    return None


def entry_of(reader: DumpReader, *, of_parts: bool = False) -> ReaderEntry | None:
    """The registered format of an open reader, None for a reader of none (a wrapper, a split
    set).

    :param of_parts: for a set of parts (a split set), the format of its parts
    """
    if of_parts and getattr(reader, "parts", None):
        reader = reader.parts[0]  # type: ignore[attr-defined]
    for entry in READERS:
        if isinstance(entry.reader, type) and isinstance(reader, entry.reader):
            return entry
    return None


def expected_signatures() -> str:
    """What the probes look for, in probe order, for the "not a dump" error."""
    names = list(dict.fromkeys(e.signature for e in READERS))
    return ", ".join(names[:-1]) + f" or {names[-1]} signature (or a 'makedumpfile' flattened stream)"


def open_source(source: ByteSource, *, strict: bool = True, transport: str = "plain") -> DumpReader:
    """Open the image in ``source`` with the first format that recognises it (tolerant: also
    by the rest of the file when its magic is damaged, :func:`recover`).

    :raises UnknownFormatError: no format recognises it (strict: the message says what a
        damaged file looks like)
    """
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
        raise UnknownFormatError(f"not a kernel dump kdumptool can read{hint}", path=source.name,
                                 offset=0, expected=expected_signatures(), got=head[:8])
    return entry.reader(source, strict=strict, transport=transport)


def recover(source: ByteSource, *, transport: str = "plain") -> DumpReader | None:
    """A tolerant reader from the first format that recognises a file by more than its magic."""
    for entry in READERS:
        reader = entry.recover(source, transport=transport) if entry.recover else None
        if reader is not None:
            return reader
    return None


__all__ = ["READERS", "ReaderEntry", "entry_of", "expected_signatures", "find_reader", "open_source",
           "recover"]
