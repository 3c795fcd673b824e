"""One object for the kernel inside a dump: memory, symbols, types and kernel objects.

:func:`open_kernel` opens a dump (any format, a split set, ``-``), makes sure its
VMCOREINFO is known (from the dump, from ``-i FILE``, or the copy the kernel keeps in
its own memory) and returns a :class:`Kernel`, whose properties are computed on first
use and kept: ``symbols`` (kallsyms, with module symbols), ``btf`` (vmlinux BTF) and
the kernel objects built on them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kdumptool.dump import DumpReader
from kdumptool.errors import KdumpToolError, KernelDataMissingError
from kdumptool.kernel.btf_dump import KernelBtf, read_kernel_btf
from kdumptool.kernel.kallsyms import SymbolTable
from kdumptool.kernel.kallsyms_scan import core_kallsyms
from kdumptool.kernel.memory import KernelMemory
from kdumptool.vmcoreinfo import VmcoreInfo

if TYPE_CHECKING:
    from kdumptool.kernel.btf import Btf
    from kdumptool.kernel.modules import Module
    from kdumptool.kernel.state import Clock, Taint
    from kdumptool.kernel.tasks import Task


@dataclass(frozen=True)
class VmcoreinfoOrigin:
    """Where the VMCOREINFO in use came from: ``"dump"``, ``"file"`` or ``"memory"``
    (then ``paddr`` is where the copy was found)."""

    source: str
    paddr: int | None = None


def ensure_vmcoreinfo(reader: DumpReader, vmcoreinfo_file: str | None = None) -> VmcoreinfoOrigin:
    """Make sure ``reader.info.vmcoreinfo`` is set: the file given, else the dump's own, else
    the copy found in memory (:func:`kdumptool.scan.scan_vmcoreinfo`).

    :raises KernelDataMissingError: none anywhere
    """
    from kdumptool.open import recover_vmcoreinfo, supply_vmcoreinfo

    if vmcoreinfo_file:
        supply_vmcoreinfo(reader, vmcoreinfo_file)
        return VmcoreinfoOrigin("file")
    if reader.info.vmcoreinfo is not None:
        return VmcoreinfoOrigin("dump")
    return VmcoreinfoOrigin("memory", recover_vmcoreinfo(reader, KernelDataMissingError))


class Kernel:
    """The kernel of one open dump.

    :param reader: the dump, with VMCOREINFO known (see :func:`ensure_vmcoreinfo`)
    :param origin: where that VMCOREINFO came from
    :param scan: find kallsyms by scanning memory even when VMCOREINFO names the tables
    """

    def __init__(self, reader: DumpReader, origin: VmcoreinfoOrigin | None = None, *,
                 scan: bool = False) -> None:
        self.reader = reader
        self.origin = origin or VmcoreinfoOrigin("dump")
        self.mem = KernelMemory(reader)
        self._force_scan = scan

    @property
    def vmcoreinfo(self) -> VmcoreInfo:
        """The VMCOREINFO in use."""
        vmci = self.reader.info.vmcoreinfo
        if vmci is None:
            raise KernelDataMissingError(f"{self.reader.info.path}: no VMCOREINFO")
        return vmci

    def read_virtual(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes of kernel virtual memory at ``vaddr`` (page tables walked as needed).

        :raises KernelDataMissingError: the address does not translate or a page is missing
        """
        return self.mem.read(vaddr, size)

    def read_physical(self, paddr: int, size: int) -> bytes:
        """``size`` bytes of physical memory at ``paddr``."""
        return self.reader.read(paddr, size)

    def _stext(self) -> int | None:
        vmci = self.vmcoreinfo
        return vmci.symbol("_stext") if vmci.has("SYMBOL(_stext)") else None

    @functools.cached_property
    def core_symbols(self) -> SymbolTable:
        """The core kernel's kallsyms (no module symbols): from the tables VMCOREINFO names
        (Linux 6.0+), else found by scanning the kernel image."""
        return core_kallsyms(self.mem, self.vmcoreinfo, scan=self._force_scan)

    @functools.cached_property
    def symbols(self) -> SymbolTable:
        """kallsyms of the core kernel, then every loaded module's symbols when the module
        list can be walked (it needs the vmlinux BTF: else :attr:`module_symbols_error`
        says why and only the core kernel's are there)."""
        from kdumptool.kernel.modules import module_symbols

        try:
            return self.core_symbols.with_modules(module_symbols(self))
        except KdumpToolError as exc:
            self.module_symbols_error = str(exc)
        return self.core_symbols

    #: Why module symbols are missing from :attr:`symbols`, or ``None``.
    module_symbols_error: str | None = None

    def read_btf(self, modules: bool | Iterable[str] = True) -> KernelBtf:
        """The dump's BTF blobs, validated: vmlinux's (through ``__start_BTF``, or found by a
        memory scan when the symbols cannot be read) and, where ``btf_modules`` can be
        walked, the modules' (``modules``: all, none, or these names). See
        :func:`kdumptool.kernel.btf_dump.read_kernel_btf`."""
        try:
            symbol: Callable[[str], int | None] | None = self.core_symbols.address
            note = None
        except KdumpToolError as exc:
            symbol, note = None, f"the kernel's symbols could not be read ({exc})"
        return read_kernel_btf(self.reader, symbol=symbol, symbol_note=note, modules=modules,
                               mem=self.mem)

    @functools.cached_property
    def btf(self) -> Btf:
        """vmlinux's BTF (:class:`kdumptool.kernel.btf.Btf`): struct layouts, enums, types."""
        return self.read_btf(modules=False).vmlinux

    def tasks(self) -> list[Task]:
        """Every task (:func:`kdumptool.kernel.tasks.list_tasks`)."""
        from kdumptool.kernel.tasks import list_tasks

        return list_tasks(self)

    def modules(self) -> list[Module]:
        """Loaded modules (:func:`kdumptool.kernel.modules.list_modules`)."""
        from kdumptool.kernel.modules import list_modules

        return list_modules(self)

    def taint(self) -> Taint:
        """The kernel's taint (:func:`kdumptool.kernel.state.read_taint`)."""
        from kdumptool.kernel.state import read_taint

        return read_taint(self)

    def clock(self) -> Clock:
        """Uptime and wall clock (:func:`kdumptool.kernel.state.read_clock`)."""
        from kdumptool.kernel.state import read_clock

        return read_clock(self)

    def symbol(self, name: str) -> int:
        """The address of symbol ``name``.

        :raises KernelDataMissingError: no such symbol
        """
        addr = self.core_symbols.address(name)
        if addr is None:
            raise KernelDataMissingError(f"{self.reader.info.path}: symbol {name!r} is not in the "
                                         "kernel's kallsyms")
        return addr

    def close(self) -> None:
        """Close the dump."""
        self.reader.close()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_kernel(paths: str | list[str], *, vmcoreinfo_file: str | None = None,
                strict: bool = False, scan: bool = False) -> Kernel:
    """Open a dump (or split set) and return its :class:`Kernel`.

    :param vmcoreinfo_file: VMCOREINFO text to use instead of the dump's (``-i``)
    :param strict: open the dump strictly (damage raises) instead of tolerantly
    :param scan: find kallsyms by scanning memory even when VMCOREINFO names them
    :raises KdumpToolError: not a dump, or no VMCOREINFO anywhere
    """
    from kdumptool.open import open_dumps

    reader = open_dumps([paths] if isinstance(paths, str) else list(paths), strict=strict)
    try:
        origin = ensure_vmcoreinfo(reader, vmcoreinfo_file)
    except BaseException:
        reader.close()
        raise
    return Kernel(reader, origin, scan=scan)
