"""The output format registry: each writer kdumptool has, by name and by the option that
chooses it, so that no caller picks a writer function by hand.

A writer takes the selected pages (:class:`~kdumptool.pipeline.Selection`), a sink and the
output's metadata, and returns its counts. Adding one: write the module (its ``write_*``
function), then add a :class:`Writer` to :data:`WRITERS` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kdumptool.errors import UsageError

if TYPE_CHECKING:
    from kdumptool.codecs import Codec
    from kdumptool.metadata import OutputMeta
    from kdumptool.pipeline import Selection
    from kdumptool.transport.sink import ByteSink

#: ``write(selection, sink, meta, codec, threads)`` -> the writer's counts
WriteFunction = Callable[["Selection", "ByteSink", "OutputMeta", "Codec | None", "int | None"],
                         dict[str, int]]


@dataclass(frozen=True)
class Writer:
    """One output format.

    :ivar name: the registry key (``"kdump"``, ``"elf"``)
    :ivar option: the command-line flag that chooses it (``None``: the default writer)
    :ivar compresses: whether pages go through a page codec (``-c``/``-l``/``-p``/``-z``)
    :ivar splits: whether it writes the parts of a split set (``--split``)
    :ivar write: the function that writes it
    """

    name: str
    option: str | None
    compresses: bool
    splits: bool
    write: WriteFunction

    def kind(self, codec: Codec | None) -> str:
        """How a message names the output: ``ELF``, ``kdump-compressed (zlib)``..."""
        if not self.compresses:
            return "ELF" if self.name == "elf" else self.name
        return f"kdump-compressed ({codec.name if codec else 'uncompressed'})"


def _write_kdump(selection: Selection, sink: ByteSink, meta: OutputMeta, codec: Codec | None,
                 threads: int | None) -> dict[str, int]:
    from kdumptool.formats.kdump_writer import write_kdump

    return write_kdump(selection, sink, meta, codec, threads=threads)


def _write_elf(selection: Selection, sink: ByteSink, meta: OutputMeta, codec: Codec | None,
               threads: int | None) -> dict[str, int]:
    from kdumptool.formats.elf_writer import write_elf

    return write_elf(selection, sink, meta, threads=threads)


#: Every writer by name; the first is the default.
WRITERS: dict[str, Writer] = {
    "kdump": Writer("kdump", None, compresses=True, splits=True, write=_write_kdump),
    "elf": Writer("elf", "-E", compresses=False, splits=False, write=_write_elf),
}

DEFAULT_WRITER = "kdump"


def get_writer(name: str) -> Writer:
    """The writer called ``name``.

    :raises UsageError: no writer has that name
    """
    try:
        return WRITERS[name]
    except KeyError:
        raise UsageError(f"no output format {name!r} (formats: {', '.join(WRITERS)})") from None
