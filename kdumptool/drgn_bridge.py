"""drgn on every dump kdumptool reads: :func:`drgn_program`.

drgn opens ELF and kdump-compressed files itself, and refuses the rest (QEMU migration
streams, Xen and Hyper-V images, split sets, QEMU 7.2's kdump files with an empty
utsname, dumps without VMCOREINFO).  Here drgn's own API for custom targets does the
work: a :class:`drgn.Program` with the dump's platform, one physical memory segment
whose reads go to kdumptool's reader (a page not in the dump is a :class:`drgn.FaultError`),
``set_linux_kernel_custom`` with the VMCOREINFO kdumptool found (in the dump, in a file, or
in the kernel's memory) so drgn walks the page tables itself, and a symbol index made
from the kallsyms kdumptool decoded (core kernel and modules), so ``prog.symbol()`` and
stack-trace symbolization work without vmlinux.  No temporary file is written.

drgn 0.3.0 reads types from DWARF only: ``prog["init_task"]`` and helpers that need types
still need debug info (``prog.load_debug_info``); memory, symbols and registers do not.
drgn is an optional dependency (``pip install drgn``).
"""

from __future__ import annotations

from typing import Any

from kdumptool.errors import KdumpToolError, UsageError
from kdumptool.kernel.kallsyms import Symbol, SymbolTable
from kdumptool.kernel.session import Kernel, open_kernel

_ARCHES = {"x86_64": "X86_64", "aarch64": "AARCH64"}


def _drgn() -> Any:
    try:
        import drgn
    except ImportError:
        raise UsageError("drgn is not installed (pip install drgn)") from None
    return drgn


def _platform(drgn: Any, kernel: Kernel) -> Any:
    info = kernel.reader.info
    arch = _ARCHES.get(info.machine)
    if arch is None:
        raise UsageError(f"{info.path}: drgn_program supports x86_64 and aarch64, not "
                         f"{info.machine or 'an unknown machine'}")
    flags = drgn.PlatformFlags.IS_64_BIT
    if info.endian == "<":
        flags |= drgn.PlatformFlags.IS_LITTLE_ENDIAN
    return drgn.Platform(getattr(drgn.Architecture, arch), flags)


def _drgn_symbols(drgn: Any, table: SymbolTable) -> list[Any]:
    """drgn Symbols with sizes running to the next higher address (as kallsyms sizes them)."""
    syms: list[Symbol] = [s for s in table if s.type not in "aAuU"]
    starts = sorted({s.address for s in syms})
    following = {a: b for a, b in zip(starts, starts[1:], strict=False)}
    out = []
    for s in syms:
        size = following.get(s.address, s.address) - s.address
        if s.type in "wWvV":
            binding = drgn.SymbolBinding.WEAK
        elif s.type.isupper():
            binding = drgn.SymbolBinding.GLOBAL
        else:
            binding = drgn.SymbolBinding.LOCAL
        kind = (drgn.SymbolKind.FUNC if s.type in "tTwW" else
                drgn.SymbolKind.OBJECT if s.type in "dDbBrRgGsS" else drgn.SymbolKind.UNKNOWN)
        out.append(drgn.Symbol(s.name, s.address, size, binding, kind))
    return out


def program_for(kernel: Kernel) -> Any:
    """A :class:`drgn.Program` over an open :class:`~kdumptool.kernel.session.Kernel` (which
    must stay open while the program is used)."""
    drgn = _drgn()
    reader = kernel.reader
    prog = drgn.Program(_platform(drgn, kernel))

    def read(address: int, count: int, offset: int, physical: bool) -> bytes:
        try:
            return reader.read(address, count)
        except KdumpToolError as exc:
            raise drgn.FaultError(str(exc), address) from None

    prog.add_memory_segment(0, reader.max_pfn * reader.page_size, read, physical=True)
    prog.set_linux_kernel_custom(kernel.vmcoreinfo.raw, False)
    index = drgn.SymbolIndex(_drgn_symbols(drgn, kernel.symbols))
    prog.register_symbol_finder("kdumptool-kallsyms", index, enable_index=0)
    return prog


def drgn_program(path: str | list[str], *, vmcoreinfo_file: str | None = None) -> Any:
    """A :class:`drgn.Program` over any dump kdumptool opens (any format, a split set, a
    compressed file), with kdumptool's memory reader, VMCOREINFO and kallsyms behind it.

    :raises UsageError: drgn is not installed, or the architecture is not supported
    :raises KdumpToolError: the dump cannot be opened or has no VMCOREINFO anywhere
    """
    kernel = open_kernel(path, vmcoreinfo_file=vmcoreinfo_file)
    try:
        return program_for(kernel)
    except BaseException:
        kernel.close()
        raise
