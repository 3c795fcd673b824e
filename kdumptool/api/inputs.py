"""What every library command does with its inputs and options: opening the dumps (with the
input's name put into the errors found below the reader), recovering a missing VMCOREINFO from
memory, and parsing makedumpfile's dump levels (``-d 11,31``) and sizes (``-L 10M``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from kdumptool.errors import CodecUnavailableError, DumpError, KdumpToolError, OutputError, UsageError
from kdumptool.filters.levels import MAX_DUMP_LEVEL

if TYPE_CHECKING:
    from kdumptool.dump import DumpReader

#: Where a library command reports what the user should know while it works (a warning,
#: a VMCOREINFO recovered from memory, a retry at the next dump level): one line, without
#: the program's name. The command line prints them as ``kdumptool: <line>``.
Notify = Callable[[str], None]


def as_paths(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """One path (``str`` or ``pathlib.Path``) or several, as a list of strings."""
    if isinstance(paths, str | os.PathLike):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def _silent(line: str) -> None:
    """A :data:`Notify` that drops the line."""


def notifier(notify: Notify | None) -> Notify:
    """``notify``, or one that drops every line."""
    return notify if notify is not None else _silent


# --- the input's name in errors ------------------------------------------------------------------

#: The attribute of an exception that holds the inputs open when it was raised (set only when
#: its text names no file itself).
INPUTS_ATTRIBUTE = "inputs"


def _names_a_file(exc: BaseException, paths: Sequence[str]) -> bool:
    if isinstance(exc, (OutputError, UsageError, CodecUnavailableError)):
        return True  # about the output or the options, not about an input
    if isinstance(exc, DumpError) and exc.path is not None:
        return True
    text = str(exc)
    return any(text.startswith(f"{p}:") for p in paths)


@contextlib.contextmanager
def naming_inputs(paths: Sequence[str]) -> Iterator[None]:
    """Within the block, a kdumptool error (or a MemoryError) that does not name a file gets
    ``paths`` as its ``inputs`` attribute: errors found below the reader (a page table that
    cannot be walked, a log page not in the dump) know addresses, not which file they came
    from. The innermost block wins. :func:`error_text` writes the names in front."""
    try:
        yield
    except (KdumpToolError, MemoryError) as exc:
        if getattr(exc, INPUTS_ATTRIBUTE, None) is None:
            named = isinstance(exc, KdumpToolError) and _names_a_file(exc, paths)
            setattr(exc, INPUTS_ATTRIBUTE, () if named else tuple(paths))
        raise


def error_text(exc: BaseException) -> str:
    """The one-line text of a kdumptool error: led by the input's name when the error was
    raised while inputs were open (:func:`naming_inputs`) and does not name a file itself."""
    text = str(exc)
    paths = getattr(exc, INPUTS_ATTRIBUTE, None) or ()
    if not paths:
        return text
    return f"{', '.join('<stdin>' if p == '-' else p for p in paths)}: {text}"


def memory_error_text(exc: MemoryError) -> str:
    """The one line for running out of memory, naming the inputs open then."""
    names = ", ".join(getattr(exc, INPUTS_ATTRIBUTE, None) or ()) or "kdumptool"
    return (f"{names}: out of memory (the machine's memory or address-space limit is too small "
            "for this dump)")


@contextlib.contextmanager
def opened(paths: Sequence[str], *, strict: bool, vmcoreinfo_file: str | None = None) -> Iterator[DumpReader]:
    """Open one dump or the parts of a split set, as :func:`kdumptool.open.open_dumps`, with
    VMCOREINFO from ``vmcoreinfo_file`` when given; errors raised while it is open name the
    inputs (:func:`naming_inputs`)."""
    from kdumptool.open import open_dumps, supply_vmcoreinfo

    with naming_inputs(paths):
        reader = open_dumps(list(paths), strict=strict)
        with reader:
            if vmcoreinfo_file:
                supply_vmcoreinfo(reader, vmcoreinfo_file)
            yield reader


def recover_vmcoreinfo(reader: DumpReader, notify: Notify | None = None) -> None:
    """Use the VMCOREINFO text found in memory for a dump that carries none.

    :param notify: told where the copy was found
    :raises KdumpToolError: none was found (the message says to supply it with ``-i FILE``)
    """
    from kdumptool.open import recover_vmcoreinfo as recover

    paddr = recover(reader)
    notifier(notify)(f"note: the dump has no VMCOREINFO; using the copy found in memory at {paddr:#x}")


# --- options ---------------------------------------------------------------------------------------


def parse_levels(text: str | int | Sequence[int]) -> list[int]:
    """Dump levels: ``31``, makedumpfile's list form ``"11,31"`` (the next is tried when the
    output does not fit), or a list of numbers.

    :raises UsageError: a level that is not a number from 0 to 31, or no level
    """
    if isinstance(text, int):
        parts: Sequence[str | int] = [text]
    elif isinstance(text, str):
        parts = text.split(",")
    else:
        parts = list(text)
    levels = []
    for part in parts:
        try:
            level = int(part)
        except ValueError:
            raise UsageError(f"dump level {part!r} is not a number from 0 to 31") from None
        if not 0 <= level <= MAX_DUMP_LEVEL:
            raise UsageError(f"dump level {level} is out of range 0..31")
        levels.append(level)
    if not levels:
        raise UsageError("no dump level given")
    return levels


_SIZE_SUFFIXES = "KMGTPE"


def parse_size(text: str) -> int:
    """makedumpfile's ``-L`` size (its ``memparse``): a number (``0x`` hex, leading-``0``
    octal, else decimal) and an optional suffix K, M, G, T, P or E (powers of 1024).

    :return: the size in bytes
    :raises UsageError: not a size, or zero
    """
    body, shift = text.strip(), 0
    if body and body[-1].upper() in _SIZE_SUFFIXES:
        shift = 10 * (_SIZE_SUFFIXES.index(body[-1].upper()) + 1)
        body = body[:-1]
    try:
        if body.lower().startswith("0x"):
            value = int(body[2:], 16)
        elif len(body) > 1 and body.startswith("0"):
            value = int(body[1:], 8)
        else:
            value = int(body, 10)
    except ValueError:
        value = -1
    if value <= 0 or not body.isalnum():
        raise UsageError(f"size limit {text!r} is invalid (a number of bytes, with K, M or G)")
    return value << shift
