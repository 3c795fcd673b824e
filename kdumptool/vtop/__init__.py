"""Address translation: kernel virtual to physical addresses.

* :mod:`kdumptool.vtop.walker` — paging forms as data and the one generic page-table walker;
* :mod:`kdumptool.vtop.x86_64`, :mod:`kdumptool.vtop.aarch64` — each architecture's paging
  forms, PTE decoder and translator (kernel image, direct map, page tables);
* :mod:`kdumptool.vtop.kernel_image` — kernel-image addresses from VMCOREINFO alone, no page
  tables;
* :mod:`kdumptool.vtop.kaslr` — the kernel image's KASLR offset found from a CPU's CR3.

This module chooses the translator by the dump's architecture (:func:`translator_for`) and
reads kernel virtual memory through it (:func:`read_virtual`).
"""

from __future__ import annotations

from kdumptool.dump import DumpReader
from kdumptool.errors import KdumpToolError, UsageError
from kdumptool.vtop.aarch64 import Aarch64Translator
from kdumptool.vtop.x86_64 import X86_64Translator


def translator_for(reader: DumpReader) -> X86_64Translator | Aarch64Translator:
    """The kernel address translator for the dump's architecture.

    :raises KdumpToolError: no VMCOREINFO, or an architecture not supported yet
    """
    info = reader.info
    if info.vmcoreinfo is None:
        raise KdumpToolError(f"{info.path}: the dump has no VMCOREINFO, which address "
                             "translation needs (supply it with -i FILE)")
    if info.machine == "x86_64":
        return X86_64Translator(info.vmcoreinfo, reader.read, phys_base=info.phys_base,
                                frame_map=reader.frame_map)
    if info.machine == "aarch64" and info.endian == "<":
        return Aarch64Translator(info.vmcoreinfo, reader.read)
    raise KdumpToolError(f"{info.path}: address translation supports x86_64 and little-endian "
                         f"aarch64 dumps so far (this one is {info.machine or 'unknown'})")


def read_virtual(reader: DumpReader, vaddr: int, size: int) -> bytes:
    """``size`` bytes of kernel virtual memory of the dump (x86_64 or aarch64).

    :raises KdumpToolError: no VMCOREINFO, unsupported architecture, an address that does
        not translate (:class:`~kdumptool.vtop.walker.TranslationError`) or a page that is
        not in the dump
    """
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
