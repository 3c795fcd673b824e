"""The kdumptool exception hierarchy.

Every error caused by bad input names the file, the byte offset where the
problem was found, and what was expected versus what was found, so that the
command line can print it as a single line. Missing data (a page excluded by
filtering, a hole, a page lost in an incomplete dump) is *not* corruption and
has its own branch of the hierarchy.

Exit codes used by the command line come from the class (``exit_code``):

====  ==========================================================
 1    any other kdumptool error (output, codec unavailable, ...)
 2    usage error (bad options; raised by click)
 3    the input is not a dump kdumptool can read, or cannot be read at all
 4    the input is a dump but is corrupt or truncated
====  ==========================================================
"""

from __future__ import annotations


class KdumpToolError(Exception):
    """Base class of every error kdumptool raises on purpose."""

    exit_code = 1


class DumpError(KdumpToolError):
    """A problem with an input file, located by path and byte offset.

    :param message: what is wrong, in a few words
    :param path: the file (or ``"<stdin>"``)
    :param offset: byte offset in that file where the problem was found
    :param expected: what a valid file holds there (optional)
    :param got: what was found instead (optional)
    """

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        offset: int | None = None,
        expected: object = None,
        got: object = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.offset = offset
        self.expected = expected
        self.got = got

    def __str__(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(str(self.path))
        if self.offset is not None:
            parts.append(f"offset {self.offset:#x}")
        text = self.message
        if self.expected is not None or self.got is not None:
            text += f" (expected {_show(self.expected)}, got {_show(self.got)})"
        parts.append(text)
        return ": ".join(parts)


def _as_bytes(value: str | bytes) -> bytes:
    """A ``str`` as latin-1 (how kdumptool decodes C strings, so every byte survives)."""
    return value.encode("latin-1", "backslashreplace") if isinstance(value, str) else bytes(value)


def _escaped(raw: bytes, special: bytes) -> str:
    """Printable ASCII as is, ``special`` bytes after a backslash, every other byte ``\\xNN``."""
    return "".join(chr(b) if 0x20 <= b < 0x7F and b not in special else
                   ("\\" + chr(b) if b in special else f"\\x{b:02x}") for b in raw)


def printable(value: str | bytes, limit: int | None = None) -> str:
    """Text read from a dump, which may be garbage, made safe to print: every byte outside
    printable ASCII escaped as ``\\xNN`` (nothing a terminal would act on), a backslash
    doubled, at most ``limit`` bytes, then ``...`` when there were more."""
    raw = _as_bytes(value)
    cut = limit is not None and len(raw) > limit
    return _escaped(raw[:limit] if cut else raw, b"\\") + ("..." if cut else "")


def quote(value: str | bytes, limit: int = 32) -> str:
    """A string read from a dump as a message quotes it: :func:`printable`, in single quotes
    (a quote inside escaped), at most ``limit`` bytes, then ``...`` when there were more."""
    raw = _as_bytes(value)
    body = _escaped(raw[:limit], b"\\'")
    return f"'{body}'" + ("..." if len(raw) > limit else "")


def _show(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:#x}" if abs(value) > 9 else str(value)
    if isinstance(value, bytes):
        return repr(value[:32]) + ("..." if len(value) > 32 else "")
    return str(value)


class UnknownFormatError(DumpError):
    """The input is not in any format kdumptool reads."""

    exit_code = 3


class UnreadableInputError(DumpError):
    """The input cannot be opened or read at all (missing, a directory, no permission, an
    I/O error): like a file that is not a dump, kdumptool cannot read it."""

    exit_code = 3


class CorruptDumpError(DumpError):
    """The input is a dump, but a structure in it is inconsistent."""


class TruncatedDumpError(CorruptDumpError):
    """The input ends before a structure it declares."""


class CorruptPageError(CorruptDumpError):
    """One page's stored data cannot be decoded into exactly one page."""

    def __init__(self, message: str, *, pfn: int, **kwargs: object) -> None:
        super().__init__(f"pfn {pfn:#x}: {message}", **kwargs)  # type: ignore[arg-type]
        self.pfn = pfn


class PageNotPresentError(KdumpToolError):
    """A page has no data in the dump. This is missing data, not corruption.

    :param pfn: the page frame number
    :param reason: ``"hole"`` (not RAM), ``"excluded"`` (filtered out when the
        dump was made) or ``"lost"`` (the dump was cut short before it)
    """

    def __init__(self, pfn: int, reason: str) -> None:
        super().__init__(f"pfn {pfn:#x} is not in the dump ({reason})")
        self.pfn = pfn
        self.reason = reason


class CodecUnavailableError(KdumpToolError):
    """A page codec is needed whose Python package is not installed."""


class OutputError(KdumpToolError):
    """The output cannot be written (exists without --force, same as input, disk full, ...).

    :param errno: the operating system's error number, when an OS error caused it
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class UsageError(KdumpToolError):
    """Options that contradict each other or the input."""

    exit_code = 2


class ScrubConfigError(UsageError):
    """A scrub filter configuration (``--config``) that cannot be used: bad syntax, an unknown
    symbol, type or member, or a type mismatch. The message starts with ``FILE:LINE:``."""


class KernelDataError(KdumpToolError):
    """A kernel structure read from the dump's memory (kallsyms tables, BTF, a linked list)
    is corrupt, hostile or out of bounds.

    The message names the structure and the kernel virtual address where it went wrong.
    """

    exit_code = 4


class KernelDataMissingError(KdumpToolError):
    """The dump lacks what a kernel-level question needs (a symbol, a BTF type or member,
    the pages holding a structure)."""

    exit_code = 1


class BtfError(CorruptDumpError, KernelDataError):
    """BPF Type Format data (the kernel's own type information) that is malformed, or that
    lacks a type or member an operation needs. ``path`` names the blob (``"vmlinux BTF"``,
    a module's name, a file) and ``offset`` is relative to the blob's first byte."""


class BtfLookupError(BtfError, KernelDataMissingError, KeyError):
    """A type or struct member asked for is not in the BTF (the message names it): missing
    data, not corruption."""

    exit_code = 1
