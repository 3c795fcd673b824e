"""What a readable format declares about itself: one :class:`ReaderEntry` per format module.

A format module that can be opened declares ``ENTRY = ReaderEntry(...)`` at its end; the
package (:mod:`kdumptool.formats`) finds every such entry and probes them in ``order``, and
tells the entry of an open reader (:func:`kdumptool.formats.entry_of`): the commands above
(``info``, ``fsck``, ``repair``) ask it, never the reader's class.

The entry's hooks say what a format adds to those commands, at the format's level (they
use nothing above :mod:`kdumptool.formats`). The ``fsck`` checks of a format use the repair
tools and the page classes, which sit above the formats: they are registered by the entry's
``name`` in :data:`kdumptool.repair.checks.FORMAT_CHECKS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kdumptool.dump import DumpReader


@dataclass(frozen=True)
class ReaderEntry:
    """One readable format.

    :param name: the format's name (``DumpInfo.format`` may be more precise: ``elf64``)
    :param probe: cheap test of the first 4 KiB of a file; never raises on foreign data
    :param reader: the reader class (``reader(source, strict=..., transport=...)``)
    :param signature: what ``probe`` looks for, as the "not a dump" error lists it
    :param order: probe order, lower first (where magics collide, the narrower format first)
    :param recover: ``(source, transport=...)`` -> a tolerant reader of a file whose magic is
        damaged, recognised by the rest of it, or None
    :param lost_pages: ``info``: ``(reader)`` -> pages the dump declares whose data is not in
        the file (truncated or incomplete); None: the format cannot lose any
    :param page_data_offset: ``fsck``: ``(reader, pfn)`` -> the file offset of a page's stored
        data, named by a "corrupt page" finding; None: not told
    :param repair_as: repair policy: the format a repaired copy is written in, ``"elf"`` or
        ``"kdump"`` (every format but ELF becomes kdump-compressed)
    :param writer: the format's own writer, by its name in
        :data:`kdumptool.formats.writers.WRITERS`; None: read-only
    """

    name: str
    probe: Callable[[bytes], bool]
    reader: Callable[..., DumpReader]
    signature: str
    order: int
    recover: Callable[..., DumpReader | None] | None = None
    lost_pages: Callable[[DumpReader], int] | None = None
    page_data_offset: Callable[[DumpReader, int], int] | None = None
    repair_as: str = "kdump"
    writer: str | None = None
