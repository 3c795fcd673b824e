"""Address translation: kernel virtual to physical addresses.

This package will hold paging forms plus one generic page-table walker. For now it
has the translation every kernel dump allows without page tables: addresses in
the kernel image (text and data), from VMCOREINFO alone.
"""

from kdumptool.dump import DumpReader  # noqa: E402


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
