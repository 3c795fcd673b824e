"""What a readable format declares about itself: one :class:`ReaderEntry` per format module.

A format module that can be opened declares ``ENTRY = ReaderEntry(...)`` at its end; the
package (:mod:`kdumptool.formats`) finds every such entry and probes them in ``order``.
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
    """

    name: str
    probe: Callable[[bytes], bool]
    reader: Callable[..., DumpReader]
    signature: str
    order: int
    recover: Callable[..., DumpReader | None] | None = None
