"""The kernel's BTF blobs, read from a dump's memory: vmlinux's and each loaded module's.

Spec: SPEC.md "BTF" (where the kernel keeps it). Upstream:

* vmlinux: the ``.BTF`` section of the kernel image, bounded by the linker symbols
  ``__start_BTF`` and ``__stop_BTF`` (Linux ``include/asm-generic/vmlinux.lds.h``);
  ``/sys/kernel/btf/vmlinux`` is exactly these bytes (``kernel/bpf/sysfs_btf.c``).
* modules (``CONFIG_DEBUG_INFO_BTF_MODULES``, Linux 5.11+): ``kernel/bpf/btf.c`` keeps a
  ``struct btf_module`` per loaded module on the static list ``btf_modules``; its ``btf``
  points to a ``struct btf`` whose ``data``/``data_size`` are the module's split BTF, as
  ``/sys/kernel/btf/<module>`` shows it. Every offset used in that walk comes from the
  vmlinux BTF itself, none is hard-coded.

Without a symbol table the vmlinux blob is found by scanning physical memory for a BTF
header (magic, version 1, ``hdr_len`` 24) whose whole blob then validates as base BTF.
Modules need the symbol ``btf_modules``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kdumptool.dump import DumpReader
from kdumptool.errors import BtfError, KdumpToolError, KernelDataError, KernelDataMissingError
from kdumptool.kernel.btf import HEADER_SIZE, Btf
from kdumptool.kernel.kallsyms_scan import core_kallsyms
from kdumptool.kernel.memory import KernelMemory

#: ``read_virtual(vaddr, size) -> bytes``: kernel virtual memory of the dump.
ReadVirtual = Callable[[int, int], bytes]
#: ``symbol(name) -> address or None``: the kernel's symbol table.
SymbolLookup = Callable[[str], "int | None"]

#: A BTF blob larger than this is refused (vmlinux's is ~5-6 MB in 2025).
MAX_BTF_BYTES = 256 << 20
#: More entries than this on ``btf_modules`` is taken as a corrupt list.
MAX_MODULES = 8192
#: A scanned base BTF with at least this many types is taken as vmlinux's at once (BPF
#: programs' own BTF, also base BTF, has hundreds); below it, the largest found is used.
VMLINUX_MIN_TYPES = 10_000

_HEADER = re.compile(rb"\x9f\xeb\x01.\x18\x00\x00\x00|\xeb\x9f\x01.\x00\x00\x00\x18", re.S)


@dataclass(frozen=True)
class ModuleBtf:
    """One loaded module's BTF as the kernel holds it.

    :ivar name: the module's name (``struct module.name``)
    :ivar entry: address of its ``struct btf_module``
    :ivar data_address: address of the blob (``struct btf.data``)
    :ivar data: the blob (split BTF on vmlinux's)
    """

    name: str
    entry: int
    data_address: int
    data: bytes = field(repr=False)

    def parse(self, vmlinux: Btf) -> Btf:
        """The module's BTF parsed as split BTF on ``vmlinux``.

        :raises BtfError: the blob is malformed
        """
        return Btf.parse(self.data, base=vmlinux, name=f"{self.name} BTF")


@dataclass(frozen=True)
class VmlinuxBtf:
    """The vmlinux BTF blob and where it was found (``address`` virtual for ``"symbols"``,
    physical for ``"scan"``)."""

    data: bytes = field(repr=False)
    source: str
    address: int


def vmlinux_btf_blob(read_virtual: ReadVirtual, symbol: SymbolLookup) -> bytes:
    """The bytes from ``__start_BTF`` to ``__stop_BTF`` (not validated: see :class:`Btf`).

    :raises KernelDataMissingError: the symbols are missing (a kernel built without
        ``CONFIG_DEBUG_INFO_BTF``), or a page is not in the dump
    :raises BtfError: the symbols bound no plausible blob
    """
    start, stop = symbol("__start_BTF"), symbol("__stop_BTF")
    if start is None or stop is None:
        raise KernelDataMissingError("the kernel has no __start_BTF/__stop_BTF symbols (built without "
                             "CONFIG_DEBUG_INFO_BTF?)")
    if not HEADER_SIZE <= stop - start <= MAX_BTF_BYTES:
        raise BtfError("__start_BTF..__stop_BTF is not a plausible BTF blob", path="vmlinux BTF",
                       expected=f"{HEADER_SIZE}..{MAX_BTF_BYTES} bytes", got=stop - start)
    return read_virtual(start, stop - start)


def scan_vmlinux_btf(reader: DumpReader) -> VmlinuxBtf | None:
    """Find vmlinux's BTF in physical memory: the first base BTF of at least
    :data:`VMLINUX_MIN_TYPES` types, else the largest that validates; None if none does.

    Each window of pages is searched with one regular expression; a header that straddles
    two windows of consecutive pages is found too (7 bytes are carried over).
    """
    best: tuple[int, VmlinuxBtf] | None = None
    ps = reader.page_size
    tail, tail_end = b"", -1  # the last bytes of the previous window, and the paddr they end at
    for batch in reader.iter_batches():
        pfns = batch.pfns()
        if not len(pfns):
            continue
        carried = tail if tail_end == int(pfns[0]) * ps else b""
        blob = carried + batch.data.tobytes()
        for hit in _HEADER.finditer(blob):
            at = hit.start() - len(carried)
            paddr = int(pfns[at // ps]) * ps + at % ps if at >= 0 else tail_end + at
            if paddr % 4:
                continue
            found = _try_blob(reader, paddr)
            if found is None:
                continue
            if found.nr_types >= VMLINUX_MIN_TYPES:
                return VmlinuxBtf(found.data, "scan", paddr)
            if best is None or found.nr_types > best[0]:
                best = (found.nr_types, VmlinuxBtf(found.data, "scan", paddr))
        tail, tail_end = blob[-7:], (int(pfns[-1]) + 1) * ps
    return best[1] if best is not None else None


def _try_blob(reader: DumpReader, paddr: int) -> Btf | None:
    """The base BTF whose header is at ``paddr``, or None if it does not validate."""
    try:
        head = reader.read(paddr, HEADER_SIZE)
        endian = "<" if head[0] == 0x9F else ">"
        words = [int.from_bytes(head[i:i + 4], "little" if endian == "<" else "big")
                 for i in range(8, 24, 4)]
        total = HEADER_SIZE + max(words[0] + words[1], words[2] + words[3])
        if total > MAX_BTF_BYTES:
            return None
        return Btf.parse(reader.read(paddr, total), name=f"BTF at paddr {paddr:#x}")
    except KdumpToolError:  # not a blob (BtfError), or its pages are not all in the dump
        return None


@dataclass(frozen=True)
class _ModuleLayout:
    """Offsets (bytes) the ``btf_modules`` walk needs, all from vmlinux's BTF."""

    entry_size: int
    list_off: int
    module_off: int
    btf_off: int
    data_off: int
    data_size_off: int
    data_size_len: int
    name_off: int
    name_len: int

    @classmethod
    def from_btf(cls, btf: Btf) -> _ModuleLayout:
        """:raises BtfLookupError: a struct or member is missing (it is named)."""
        return cls(entry_size=btf.sizeof(btf.find("btf_module", "struct")),
                   list_off=btf.offsetof("btf_module", "list"),
                   module_off=btf.offsetof("btf_module", "module"),
                   btf_off=btf.offsetof("btf_module", "btf"),
                   data_off=btf.offsetof("btf", "data"),
                   data_size_off=btf.offsetof("btf", "data_size"),
                   data_size_len=btf.sizeof(btf.member("btf", "data_size").type),
                   name_off=btf.offsetof("module", "name"),
                   name_len=btf.sizeof(btf.member("module", "name").type))


def module_btf_blobs(read_virtual: ReadVirtual, symbol: SymbolLookup, vmlinux: Btf, *,
                     names: Iterable[str] | None = None) -> list[ModuleBtf]:
    """Every module on the kernel's ``btf_modules`` list with its BTF blob, in list order.

    :param names: read only the blobs of these modules (the list is walked all the same)
    :raises KernelDataMissingError: no ``btf_modules`` symbol, or memory that is not in the dump
    :raises BtfLookupError: vmlinux's BTF lacks a struct or member the walk needs
    :raises KernelDataError: the list loops, is too long, or holds an implausible blob size
    """
    head = symbol("btf_modules")
    if head is None:
        raise KernelDataMissingError("the kernel has no btf_modules symbol (built without "
                             "CONFIG_DEBUG_INFO_BTF_MODULES?)")
    layout = _ModuleLayout.from_btf(vmlinux)
    ptr, order = vmlinux.pointer_size, "little" if vmlinux.endian == "<" else "big"
    wanted = set(names) if names is not None else None

    def word(raw: bytes, at: int, size: int = ptr) -> int:
        return int.from_bytes(raw[at:at + size], order)

    out: list[ModuleBtf] = []
    seen = {head}
    node = word(read_virtual(head, ptr), 0)
    while node != head:
        if node in seen or len(seen) > MAX_MODULES:
            raise KernelDataError(f"btf_modules list at {head:#x}: "
                                   + (f"entry {node:#x} seen twice (a loop)" if node in seen
                                      else f"more than {MAX_MODULES} entries"))
        seen.add(node)
        entry = node - layout.list_off
        raw = read_virtual(entry, layout.entry_size)
        module, btf = word(raw, layout.module_off), word(raw, layout.btf_off)
        name = _c_string(read_virtual(module + layout.name_off, layout.name_len)) if module else ""
        if wanted is None or name in wanted:
            out.append(_read_module_blob(read_virtual, layout, entry, name, btf, word, ptr))
        node = word(raw, layout.list_off)
    return out


def _read_module_blob(read_virtual: ReadVirtual, layout: _ModuleLayout, entry: int, name: str,
                      btf: int, word: Callable[..., int], ptr: int) -> ModuleBtf:
    raw = read_virtual(btf, max(layout.data_off + ptr, layout.data_size_off + layout.data_size_len))
    data_address = word(raw, layout.data_off)
    size = word(raw, layout.data_size_off, layout.data_size_len)
    if not HEADER_SIZE <= size <= MAX_BTF_BYTES:
        raise KernelDataError(f"module {name or '?'}: struct btf at {btf:#x} has an implausible "
                               f"data_size (expected {HEADER_SIZE}..{MAX_BTF_BYTES}, got {size:#x})")
    return ModuleBtf(name, entry, data_address, read_virtual(data_address, size))


def _c_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass
class KernelBtf:
    """The BTF a dump holds: vmlinux's, and the loaded modules' where the list can be walked.

    :ivar vmlinux: the parsed vmlinux BTF (``vmlinux.data`` is the blob)
    :ivar source: how it was found: ``"__start_BTF"`` (symbols) or ``"scan"`` (memory scan)
    :ivar address: virtual address of ``__start_BTF``, or physical address of the scan's find
    :ivar modules: each module's blob, in the kernel's list order; None when the list could
        not be walked (``modules_note`` says why)
    """

    vmlinux: Btf
    source: str
    address: int
    modules: list[ModuleBtf] | None = None
    modules_note: str | None = None

    def module(self, name: str) -> ModuleBtf:
        """The module named ``name``.

        :raises KernelDataMissingError: it is not on the list (or the list could not be walked)
        """
        if self.modules is None:
            raise KernelDataMissingError(f"module BTF is not available: {self.modules_note}")
        for m in self.modules:
            if m.name == name:
                return m
        raise KernelDataMissingError(f"no loaded module {name!r} has BTF (modules with BTF: "
                             f"{', '.join(m.name for m in self.modules) or 'none'})")

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready summary: each blob's name, size, type count and first type id."""
        v = self.vmlinux
        mods = None
        if self.modules is not None:
            mods = []
            for m in self.modules:
                parsed = m.parse(v)
                mods.append({"name": m.name, "bytes": len(m.data), "types": parsed.nr_types,
                             "first_id": parsed.start_id, "address": hex(m.data_address)})
        return {"vmlinux": {"source": self.source, "address": hex(self.address), "bytes": len(v.data),
                            "types": v.nr_types, "endian": "little" if v.endian == "<" else "big"},
                "modules": mods, "modules_note": self.modules_note}


def symbol_lookup(reader: DumpReader, memory: KernelMemory | None = None
                  ) -> tuple[SymbolLookup | None, str | None]:
    """The dump's own core kallsyms (decoded from its memory) as a symbol lookup, or
    ``(None, why)`` when they cannot be read (no VMCOREINFO, tables not found or corrupt)."""
    vmci = reader.info.vmcoreinfo
    if vmci is None:
        return None, "the dump has no VMCOREINFO, so no symbols"
    try:
        return core_kallsyms(memory or KernelMemory(reader), vmci).address, None
    except KdumpToolError as exc:
        return None, f"the kernel's symbols could not be read ({exc})"


def read_kernel_btf(reader: DumpReader, *, symbol: SymbolLookup | None = None,
                    symbol_note: str | None = None, modules: bool | Iterable[str] = True,
                    mem: KernelMemory | None = None) -> KernelBtf:
    """Read and validate the dump's vmlinux BTF and (``modules``: all, or these names) its
    modules' BTF blobs.

    :param symbol: the kernel's symbol lookup; ``symbol_note`` says why there is none. Without
        either, the dump's own core kallsyms are decoded; without symbols at all, vmlinux's BTF
        is found by :func:`scan_vmlinux_btf` and modules are not read (``modules_note`` says
        why).
    :param mem: the kernel memory reader to use (a :class:`~kdumptool.kernel.session.Kernel`'s)
    :raises KernelDataMissingError: no BTF found, or memory it needs is not in the dump
    :raises BtfError: a blob is malformed
    :raises KernelDataError: the module list is corrupt
    """
    memory = mem if mem is not None else KernelMemory(reader)
    note = symbol_note
    if symbol is None and note is None:
        symbol, note = symbol_lookup(reader, memory)

    def virtual(vaddr: int, size: int) -> bytes:
        return memory.read(vaddr, size, "BTF")

    if symbol is not None and symbol("__start_BTF") is not None:
        address = symbol("__start_BTF") or 0
        vmlinux = Btf.parse(vmlinux_btf_blob(virtual, symbol), name="vmlinux BTF")
        result = KernelBtf(vmlinux, "__start_BTF", address)
    else:
        found = scan_vmlinux_btf(reader)
        if found is None:
            raise KernelDataMissingError(f"{reader.info.path}: no vmlinux BTF found in the dump's "
                                         "memory (a kernel built without CONFIG_DEBUG_INFO_BTF?)")
        vmlinux = Btf.parse(found.data, name=f"vmlinux BTF at paddr {found.address:#x}")
        result = KernelBtf(vmlinux, "scan", found.address)
        note = note or "the kernel has no __start_BTF symbol"
    if modules is False:
        return result
    if symbol is None or symbol("btf_modules") is None:
        result.modules_note = (f"{note}: module BTF needs the symbol btf_modules" if symbol is None
                               else "the kernel has no btf_modules symbol")
        return result
    names = None if modules is True else list(modules)
    result.modules = module_btf_blobs(virtual, symbol, vmlinux, names=names)
    return result


def format_btf(kbtf: KernelBtf, chosen: Btf | None = None) -> str:
    """Text for ``kdumptool btf``: with ``chosen`` (vmlinux's or a module's parsed BTF) a
    summary of it, else a table of vmlinux and every module (types, bytes, first type id)."""
    v = kbtf.vmlinux
    if chosen is None:
        rows = [f"{'NAME':<24} {'TYPES':>8} {'BYTES':>10} {'FIRST-ID':>9}",
                f"{'vmlinux':<24} {v.nr_types:>8} {len(v.data):>10} {v.start_id:>9}"]
        for m in kbtf.modules or []:
            parsed = m.parse(v)
            rows.append(f"{m.name:<24} {parsed.nr_types:>8} {len(m.data):>10} {parsed.start_id:>9}")
        if kbtf.modules is None:
            rows.append(f"(no modules: {kbtf.modules_note})")
        return "\n".join(rows)
    where = (f"__start_BTF at {kbtf.address:#x}" if kbtf.source == "__start_BTF"
             else f"found by scanning memory at physical address {kbtf.address:#x}")
    lines = [f"vmlinux BTF: {v.nr_types} types, {len(v.data)} bytes, "
             f"{'little' if v.endian == '<' else 'big'}-endian, {where}"]
    if chosen is not v:
        lines.append(f"{chosen.name}: {chosen.nr_types} types (ids {chosen.start_id}.."
                     f"{len(chosen.types) - 1}), {len(chosen.data)} bytes")
    elif kbtf.modules is not None:
        lines.append(f"{len(kbtf.modules)} modules with BTF: "
                     + (", ".join(m.name for m in kbtf.modules) or "none"))
    else:
        lines.append(f"modules: not read ({kbtf.modules_note})")
    return "\n".join(lines)
