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

import errno as _errno


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


class StreamCutError(TruncatedDumpError):
    """A file read front to back (a QEMU migration stream) ends inside a structure.

    :param offset: where the structure's bytes run out
    :param need: how many bytes it takes from there
    :param what: the structure
    """

    def __init__(self, offset: int, need: int, what: str) -> None:
        super().__init__(f"file ends inside the {what}", offset=offset, expected=f"{need} more bytes")
        self.need, self.what = need, what


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


# --- output -------------------------------------------------------------------------------------


class LimitReached(OutputError):
    """The output would exceed its size limit (``-L``): like a full disk, it makes the next
    dump level of a ``-d`` list worth trying."""

    def __init__(self, message: str) -> None:
        super().__init__(message, errno=_errno.EFBIG)


# --- VMCOREINFO, address translation and page classes --------------------------------------------


class VmcoreInfoKeyError(KdumpToolError, KeyError):
    """A VMCOREINFO key that an operation needs is missing."""

    def __str__(self) -> str:
        return f"VMCOREINFO has no {self.args[0]}"


class AddressError(KdumpToolError, ValueError):
    """An address that cannot be translated by this method."""


class TranslationError(KdumpToolError):
    """A virtual address does not translate; names the level, index and entry."""

    def __init__(self, vaddr: int, level: str, index: int, entry: int, table: int, why: str) -> None:
        super().__init__(f"cannot translate {vaddr:#x}: {level}[{index}] = {entry:#x} "
                         f"(table at {table:#x}) {why}")
        self.vaddr, self.level, self.index, self.entry, self.table = vaddr, level, index, entry, table


class NonCanonicalAddressError(KdumpToolError, ValueError):
    """An address the paging form cannot hold at all (x86_64: bits above the top level's
    not a copy of its highest bit): no page table is consulted."""

    def __init__(self, vaddr: int, form: str, va_bits: int) -> None:
        top = va_bits - 1
        super().__init__(f"{vaddr:#x} is not a canonical address: with {form} paging, bits "
                         f"63-{top} must all equal bit {top}")
        self.vaddr = vaddr


class PagingError(KdumpToolError, ValueError):
    """VMCOREINFO describes a paging setup aarch64 does not have."""


class MemMapError(KdumpToolError):
    """mem_map cannot be found or read."""


class PageClassError(KdumpToolError):
    """The dump's kernel cannot be classified with the rules kdumptool has."""


class DmesgError(CorruptDumpError):
    """The log structures in the dump are inconsistent (makedumpfile: "The printk log_buf
    is most likely corrupted").  ``partial`` holds the records printed before the problem,
    as makedumpfile leaves them in its output file."""

    def __init__(self, message: str, *, path: str | None = None, partial: bytes = b"") -> None:
        super().__init__(message, path=path)
        self.partial = partial


# --- codecs and scrub ------------------------------------------------------------------------------


class PageDecodeError(KdumpToolError):
    """A stored page does not decode to exactly one page (caller adds location)."""


class XpressError(ValueError):
    """An XPRESS (Plain LZ77) stream does not decode (caller adds the location)."""


class TypeMismatch(KdumpToolError):
    """A scrub expression does not fit the types (the caller adds the config's file and line)."""


# --- repair ---------------------------------------------------------------------------------------


class RepairError(KdumpToolError):
    """The dump cannot be repaired (not a dump, or damage that cannot be undone)."""

    exit_code = 3
