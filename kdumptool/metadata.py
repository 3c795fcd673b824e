"""What an output dump says about itself, derived from the source dump.

The writers take an :class:`OutputMeta`; this module derives one from a
reader, filling what a source lacks so that peer tools open the output: the
utsname (QEMU leaves it empty, and drgn then refuses the file) is read from
``init_uts_ns`` in memory, or made from VMCOREINFO; ``phys_base`` comes from
VMCOREINFO (QEMU 7.2 writes a wrong one); the crash time from ``CRASHTIME``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdumptool.dump import UTS_FIELDS, UTS_LEN, DumpReader, Note, Utsname
from kdumptool.errors import KdumpToolError
from kdumptool.schema import strip_c_string
from kdumptool.vmcoreinfo import VmcoreInfo
from kdumptool.vtop.kernel_image import kernel_image_to_phys


@dataclass
class OutputMeta:
    """Everything a writer needs besides the pages."""

    machine: str
    endian: str
    word_size: int
    page_size: int
    max_pfn: int
    notes: list[Note] = field(default_factory=list)
    vmcoreinfo: VmcoreInfo | None = None
    utsname: Utsname = field(default_factory=Utsname)
    timestamp: tuple[int, int] = (0, 0)
    nr_cpus: int = 1
    phys_base: int = 0
    dump_level: int = 0
    incomplete: bool = False
    eraseinfo: bytes = b""  # makedumpfile's ERASEINFO text (kdump: after the data; ELF: a note)


#: The note that carries ERASEINFO in an ELF dump (makedumpfile ``ERASEINFO_NOTE_NAME``, type 0).
ERASEINFO_NOTE = b"ERASEINFO"


def is_eraseinfo_note(note: Note) -> bool:
    """Whether ``note`` is makedumpfile's ERASEINFO note (name ``ERASEINFO``, type 0)."""
    return note.name == ERASEINFO_NOTE and note.type == 0


def source_eraseinfo(reader: DumpReader) -> bytes:
    """The ERASEINFO text a dump carries: a kdump file's erase info (every part's, in order,
    for a split set), else its ``ERASEINFO`` notes (makedumpfile pads an ELF note's text with
    NULs: they are dropped)."""
    inner = getattr(reader, "inner", None)
    if isinstance(inner, DumpReader):
        return source_eraseinfo(inner)
    parts = getattr(reader, "parts", None)
    if isinstance(parts, list) and parts:
        return b"".join(source_eraseinfo(p) for p in parts)
    blob = getattr(reader, "eraseinfo", None)
    if isinstance(blob, bytes) and blob.rstrip(b"\0"):
        return blob.rstrip(b"\0")
    return b"".join(n.desc.rstrip(b"\0") for n in reader.info.notes if is_eraseinfo_note(n))


@dataclass(frozen=True)
class KernelUtsname:
    """The kernel's own ``init_uts_ns.name`` and where it was read."""

    utsname: Utsname
    vaddr: int  # kernel-image virtual address (SYMBOL(init_uts_ns) + OFFSET(uts_namespace.name))
    paddr: int  # its physical address in the dump


def read_init_uts_ns(reader: DumpReader) -> KernelUtsname | None:
    """``init_uts_ns.name`` at ``SYMBOL(init_uts_ns)``, translated through the kernel-image
    mapping (:func:`~kdumptool.vtop.kernel_image.kernel_image_to_phys`): the copy the kernel
    uses, unlike other ``struct new_utsname`` images a memory scan may find first (Linux 6.1+
    also keeps the ``__weak`` one of ``init/version.c``, whose version lacks the build number).

    :return: None when VMCOREINFO does not name the symbol, the page is not in the dump or
        the structure does not start with ``Linux``
    """
    info = reader.info
    vmci = info.vmcoreinfo
    if vmci is None or not vmci.has("SYMBOL(init_uts_ns)"):
        return None
    try:
        vaddr = vmci.symbol("init_uts_ns")
        if vmci.has("OFFSET(uts_namespace.name)"):
            vaddr += vmci.offset("uts_namespace.name")
        paddr = kernel_image_to_phys(vmci, info.machine, vaddr, info.phys_base)
        raw = reader.read(paddr, UTS_LEN * len(UTS_FIELDS))
    except (KdumpToolError, ValueError):
        return None
    uts = Utsname(*(strip_c_string(raw[i * UTS_LEN:(i + 1) * UTS_LEN]) for i in range(6)))
    return KernelUtsname(uts, vaddr, paddr) if uts.sysname == "Linux" else None


def utsname_from_memory(reader: DumpReader) -> Utsname | None:
    """``init_uts_ns.name`` read through the kernel-image mapping, if it looks real (its
    release is VMCOREINFO's OSRELEASE)."""
    found = read_init_uts_ns(reader)
    vmci = reader.info.vmcoreinfo
    if found is None or vmci is None or (vmci.osrelease and found.utsname.release != vmci.osrelease):
        return None
    return found.utsname


def best_utsname(reader: DumpReader) -> Utsname:
    """The header's utsname if sane, else the one in memory, else one made from VMCOREINFO."""
    info = reader.info
    if info.utsname is not None and info.utsname.looks_sane() and info.utsname.version:
        return info.utsname
    mem = utsname_from_memory(reader)
    if mem is not None:
        return mem
    release = info.release or ""
    return Utsname(sysname="Linux" if release else "", release=release, machine=info.machine)


def output_metadata(reader: DumpReader, *, dump_level: int = 0) -> OutputMeta:
    """Derive the output's metadata from a source dump."""
    info = reader.info
    vmci = info.vmcoreinfo
    phys_base = info.phys_base or 0
    if vmci is not None and vmci.has("NUMBER(phys_base)"):
        phys_base = vmci.number("phys_base") & ((1 << 64) - 1)
    timestamp = (info.timestamp or (0, 0))[0], 0  # tv_usec != 0 confuses libkdumpfile (32-bit trial)
    if vmci is not None and vmci.crash_time is not None and timestamp == (0, 0):
        timestamp = (vmci.crash_time, 0)
    level = (dump_level | (info.dump_level or 0)) & 31
    limit = 1 << (8 * info.word_size - 1)
    if not 0 <= timestamp[0] < limit:  # a hostile header's time does not fit the output's
        timestamp = (0, 0)
    return OutputMeta(
        machine=info.machine, endian=info.endian, word_size=info.word_size,
        page_size=info.page_size, max_pfn=info.max_pfn,
        notes=[n for n in info.notes if not is_eraseinfo_note(n)],
        vmcoreinfo=vmci, utsname=best_utsname(reader), timestamp=timestamp,
        nr_cpus=min(max(info.nr_cpus or 1, 1), 1 << 20), phys_base=phys_base, dump_level=level,
        incomplete=info.incomplete, eraseinfo=source_eraseinfo(reader),
    )
