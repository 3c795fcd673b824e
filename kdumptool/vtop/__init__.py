"""Address translation: kernel virtual to physical addresses.

This package will hold paging forms plus one generic page-table walker. For now it
has the translation every kernel dump allows without page tables: addresses in
the kernel image (text and data), from VMCOREINFO alone.
"""

from kdumptool.dump import DumpReader  # noqa: E402
from kdumptool.errors import UsageError


def read_virtual(reader: DumpReader, vaddr: int, size: int) -> bytes:
    """``size`` bytes of kernel virtual memory of the dump (x86_64 or aarch64).

    :raises KdumpToolError: no VMCOREINFO, unsupported architecture, an address that does
        not translate (:class:`~kdumptool.vtop.walker.TranslationError`) or a page that is
        not in the dump
    """
    from kdumptool.filters.exclusion import translator_for

    xlat = getattr(reader, "_translator", None)
    if xlat is None:  # one per reader: it caches page-table pages
        xlat = translator_for(reader)
        reader._translator = xlat  # type: ignore[attr-defined]
    return b"".join(reader.read(p, n) for p, n in xlat.ranges(vaddr, size))


def parse_address(text: str) -> int:
    """A 64-bit address in hexadecimal, ``0x`` optional (``ffffffff99bfb000`` as VMCOREINFO
    prints it, or ``0xffffffff99bfb000``); ``_`` between digits is allowed.

    :raises UsageError: not hexadecimal, or not within 64 bits
    """
    body = text.strip()
    body = body[2:] if body[:2].lower() == "0x" else body
    try:
        if not body or body[0] in "+-_":
            raise ValueError(text)
        value = int(body, 16)
    except ValueError:
        raise UsageError(f"address {text!r} is not a hexadecimal number") from None
    if value >= 1 << 64:
        raise UsageError(f"address {text!r} does not fit in 64 bits")
    return value
