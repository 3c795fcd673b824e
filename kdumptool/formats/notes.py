"""ELF notes of crash dumps: their names, and the CPU state they carry.

Spec: SPEC.md 2.5 "Note kinds recognised" (2.5.1 - 2.5.4). Upstream definitions:

* Linux ``include/uapi/linux/elf.h`` (``NT_*`` types and the ``NN_*`` note names),
  ``include/linux/elfcore.h`` (``struct elf_prstatus``, ``struct elf_prstatus_common``),
  ``arch/x86/include/asm/user_64.h`` and ``user_32.h`` (``struct user_regs_struct``: the
  order of ``pr_reg``), ``arch/arm64/include/uapi/asm/ptrace.h`` (``struct user_pt_regs``);
* QEMU ``target/i386/arch_dump.c`` (``x86_64_elf_prstatus``, ``QEMUCPUSegment``,
  ``QEMUCPUState``, ``qemu_get_cpustate``);
* Xen ``xen/include/public/elfnote.h`` (``XEN_ELFNOTE_*`` numbers), ``xen/include/asm-x86/elf.h``
  (``crash_xen_core_t``), ``tools/libxc/xc_core.h`` (dump-core note descriptors);
* libkdumpfile ``src/kdumpfile/notes.c`` (which notes a reader acts on, and how it matches
  names), ``x86_64.c`` / ``aarch64.c`` (``process_prstatus``).

Every structure is declared once, as a function of byte order (and word size where the C type
is ``long``), with the integer constructors of :func:`kdumptool.schema.ints`. Nothing here
raises on foreign data: :func:`describe_cpus` reports a descriptor it cannot decode by its size.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import construct as cs

from kdumptool.dump import Note
from kdumptool.errors import CorruptDumpError
from kdumptool.schema import ints
from kdumptool.vmcoreinfo import VmcoreInfo

# --- note names and types --------------------------------------------------------------------

NT_PRSTATUS = 1
NT_PRFPREG = 2
NT_PRPSINFO = 3
NT_TASKSTRUCT = 4
NT_AUXV = 6
NT_SIGINFO = 0x53494749  # "SIGI"
NT_FILE = 0x46494C45  # "FILE"
NT_ARM_PAC_MASK = 0x406
NT_VMCOREDD = 0x700

XEN_ELFNOTE_CRASH_INFO = 0x1000001
XEN_ELFNOTE_CRASH_REGS = 0x1000002
XEN_ELFNOTE_DUMPCORE_NONE = 0x2000000
XEN_ELFNOTE_DUMPCORE_HEADER = 0x2000001
XEN_ELFNOTE_DUMPCORE_XEN_VERSION = 0x2000002
XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION = 0x2000003
#: ``xch_magic`` of a Xen dump-core header (``xc_core.h``): PV and HVM guests.
XC_CORE_MAGIC = 0xF00FEBED
XC_CORE_MAGIC_HVM = 0xF00FEBEE

#: ``CORE`` note types (Linux ``elf.h``; ``NT_TASKSTRUCT`` only in /proc/kcore, the others in
#: user-space cores and /proc/kcore; vmcores hold ``NT_PRSTATUS``).
CORE_TYPES: dict[int, str] = {
    NT_PRSTATUS: "NT_PRSTATUS", NT_PRFPREG: "NT_PRFPREG", NT_PRPSINFO: "NT_PRPSINFO",
    NT_TASKSTRUCT: "NT_TASKSTRUCT", NT_AUXV: "NT_AUXV", NT_SIGINFO: "NT_SIGINFO",
    NT_FILE: "NT_FILE",
}

#: ``LINUX`` note types (Linux ``elf.h``: register sets of PTRACE_GETREGSET, plus the
#: device dumps ``NT_VMCOREDD`` that /proc/vmcore appends, ``fs/proc/vmcore.c``).
LINUX_TYPES: dict[int, str] = {
    0x46E62B7F: "NT_PRXFPREG",
    0x100: "NT_PPC_VMX", 0x101: "NT_PPC_SPE", 0x102: "NT_PPC_VSX", 0x103: "NT_PPC_TAR",
    0x104: "NT_PPC_PPR", 0x105: "NT_PPC_DSCR", 0x106: "NT_PPC_EBB", 0x107: "NT_PPC_PMU",
    0x108: "NT_PPC_TM_CGPR", 0x109: "NT_PPC_TM_CFPR", 0x10A: "NT_PPC_TM_CVMX",
    0x10B: "NT_PPC_TM_CVSX", 0x10C: "NT_PPC_TM_SPR", 0x10D: "NT_PPC_TM_CTAR",
    0x10E: "NT_PPC_TM_CPPR", 0x10F: "NT_PPC_TM_CDSCR", 0x110: "NT_PPC_PKEY",
    0x111: "NT_PPC_DEXCR", 0x112: "NT_PPC_HASHKEYR",
    0x200: "NT_386_TLS", 0x201: "NT_386_IOPERM", 0x202: "NT_X86_XSTATE", 0x204: "NT_X86_SHSTK",
    0x205: "NT_X86_XSAVE_LAYOUT",
    0x300: "NT_S390_HIGH_GPRS", 0x301: "NT_S390_TIMER", 0x302: "NT_S390_TODCMP",
    0x303: "NT_S390_TODPREG", 0x304: "NT_S390_CTRS", 0x305: "NT_S390_PREFIX",
    0x306: "NT_S390_LAST_BREAK", 0x307: "NT_S390_SYSTEM_CALL", 0x308: "NT_S390_TDB",
    0x309: "NT_S390_VXRS_LOW", 0x30A: "NT_S390_VXRS_HIGH", 0x30B: "NT_S390_GS_CB",
    0x30C: "NT_S390_GS_BC", 0x30D: "NT_S390_RI_CB", 0x30E: "NT_S390_PV_CPU_DATA",
    0x400: "NT_ARM_VFP", 0x401: "NT_ARM_TLS", 0x402: "NT_ARM_HW_BREAK", 0x403: "NT_ARM_HW_WATCH",
    0x404: "NT_ARM_SYSTEM_CALL", 0x405: "NT_ARM_SVE", NT_ARM_PAC_MASK: "NT_ARM_PAC_MASK",
    0x407: "NT_ARM_PACA_KEYS", 0x408: "NT_ARM_PACG_KEYS", 0x409: "NT_ARM_TAGGED_ADDR_CTRL",
    0x40A: "NT_ARM_PAC_ENABLED_KEYS", 0x40B: "NT_ARM_SSVE", 0x40C: "NT_ARM_ZA", 0x40D: "NT_ARM_ZT",
    0x40E: "NT_ARM_FPMR", 0x40F: "NT_ARM_POE", 0x410: "NT_ARM_GCS",
    0x600: "NT_ARC_V2", NT_VMCOREDD: "NT_VMCOREDD",
    0x800: "NT_MIPS_DSP", 0x801: "NT_MIPS_FP_MODE", 0x802: "NT_MIPS_MSA",
    0x900: "NT_RISCV_CSR", 0x901: "NT_RISCV_VECTOR", 0x902: "NT_RISCV_TAGGED_ADDR_CTRL",
    0x903: "NT_RISCV_USER_CFI",
    0xA00: "NT_LOONGARCH_CPUCFG", 0xA01: "NT_LOONGARCH_CSR", 0xA02: "NT_LOONGARCH_LSX",
    0xA03: "NT_LOONGARCH_LASX", 0xA04: "NT_LOONGARCH_LBT", 0xA05: "NT_LOONGARCH_HW_BREAK",
    0xA06: "NT_LOONGARCH_HW_WATCH",
}

#: ``Xen`` note types found in dumps (``elfnote.h``): the hypervisor's kdump notes
#: (``CRASH_*``) and the ``xc_core`` dump-core notes (``DUMPCORE_*``).
XEN_TYPES: dict[int, str] = {
    XEN_ELFNOTE_CRASH_INFO: "XEN_ELFNOTE_CRASH_INFO",
    XEN_ELFNOTE_CRASH_REGS: "XEN_ELFNOTE_CRASH_REGS",
    XEN_ELFNOTE_DUMPCORE_NONE: "XEN_ELFNOTE_DUMPCORE_NONE",
    XEN_ELFNOTE_DUMPCORE_HEADER: "XEN_ELFNOTE_DUMPCORE_HEADER",
    XEN_ELFNOTE_DUMPCORE_XEN_VERSION: "XEN_ELFNOTE_DUMPCORE_XEN_VERSION",
    XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION: "XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION",
}

#: note name (without NUL) -> {type: readable kind}. libkdumpfile matches the dump-core notes
#: under the name ``.note.Xen`` (``process_xc_xen_note``), so both spellings are listed.
NOTE_KINDS: dict[bytes, dict[int, str]] = {
    b"CORE": CORE_TYPES,
    b"LINUX": LINUX_TYPES,
    b"VMCOREINFO": {0: "VMCOREINFO"},
    b"QEMU": {0: "QEMUCPUState"},
    b"ERASEINFO": {0: "ERASEINFO"},
    b"Xen": XEN_TYPES,
    b".note.Xen": XEN_TYPES,
    b"VMCOREINFO_XEN": {0: "VMCOREINFO_XEN"},
}


# --- the note area: ``Elf{32,64}_Nhdr`` records ------------------------------------------------

#: Upper bound for a note area loaded into memory (a PT_NOTE segment, a kdump note blob).
MAX_NOTES = 64 << 20


@functools.cache
def nhdr_struct(endian: str) -> cs.Struct:
    """``Elf32_Nhdr`` / ``Elf64_Nhdr`` (the same three 32-bit words in both classes)."""
    i = ints(endian)
    return cs.Struct("n_namesz" / i.u32, "n_descsz" / i.u32, "n_type" / i.u32)


def _align4(n: int) -> int:
    return (n + 3) & ~3


def parse_notes(blob: bytes, endian: str, *, base: int = 0, path: str | None = None,
                strict: bool = True) -> list[Note]:
    """Split a note segment into notes (names and descriptors 4-byte padded).

    :param base: file offset of ``blob`` (for error messages)
    :raises CorruptDumpError: (strict) a note runs past the segment
    """
    nhdr = nhdr_struct(endian)
    notes = []
    pos = 0
    while pos + 12 <= len(blob):
        h = nhdr.parse(blob[pos:pos + 12])
        if h.n_namesz == 0 and h.n_descsz == 0 and h.n_type == 0:
            break  # zero padding at the end of the segment
        name_end = pos + 12 + h.n_namesz
        desc_start = pos + 12 + _align4(h.n_namesz)
        desc_end = desc_start + h.n_descsz
        if desc_end > len(blob):
            if strict:
                raise CorruptDumpError(
                    "ELF note runs past the end of its segment", path=path, offset=base + pos,
                    expected=f"<= {len(blob) - pos} bytes", got=f"{desc_end - pos} bytes",
                )
            break
        name = blob[pos + 12:name_end].rstrip(b"\0")
        notes.append(Note(name, h.n_type, blob[desc_start:desc_end], base + pos))
        pos = desc_start + _align4(h.n_descsz)
    return notes


def build_notes(notes: list[Note], endian: str) -> bytes:
    """Serialise notes the way the kernel and makedumpfile do (NUL-terminated, 4-byte padded)."""
    nhdr = nhdr_struct(endian)
    out = bytearray()
    for note in notes:
        name = note.name + b"\0"
        out += nhdr.build({"n_namesz": len(name), "n_descsz": len(note.desc), "n_type": note.type})
        out += name.ljust(_align4(len(name)), b"\0")
        out += note.desc.ljust(_align4(len(note.desc)), b"\0")
    return bytes(out)


def vmcoreinfo_from_notes(notes: list[Note]) -> VmcoreInfo | None:
    """The VMCOREINFO note's text, parsed, if there is one."""
    for note in notes:
        if note.name == b"VMCOREINFO":
            return VmcoreInfo.parse(note.desc)
    return None


def count_cpus(notes: list[Note]) -> int | None:
    """Number of ``CORE``/``NT_PRSTATUS`` notes (one per CPU), None if there are none."""
    n = sum(1 for note in notes if note.name == b"CORE" and note.type == NT_PRSTATUS)
    return n or None



# --- note kinds ----------------------------------------------------------------------------------


def note_kind(name: bytes, type: int) -> str:
    """A readable name for a note: ``"CORE/NT_PRSTATUS"``, ``"QEMU/QEMUCPUState"``, ...

    :param name: the note name, with or without its terminating NUL
    :param type: ``n_type``
    :return: ``"NAME/KIND"`` for a recognised pair, else ``"NAME/type 0x.."``
    """
    name = name.rstrip(b"\0")
    text = name.decode("latin-1")
    kind = NOTE_KINDS.get(name, {}).get(type)
    return f"{text}/{kind}" if kind else f"{text}/type {type:#x}"


# --- NT_PRSTATUS -----------------------------------------------------------------------------

#: ``struct user_regs_struct`` of x86_64 (``asm/user_64.h``), register names as libkdumpfile
#: gives them (kernel: ``bp``, ``bx``, ``ax``, ``orig_ax``, ``ip``, ``flags``, ``sp`` ...).
X86_64_REGS = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
    "rsi", "rdi", "orig_rax", "rip", "cs", "rflags", "rsp", "ss", "fs_base", "gs_base",
    "ds", "es", "fs", "gs",
)
#: ``struct user_pt_regs`` of arm64 (``uapi/asm/ptrace.h``): ``regs[31]``, ``sp``, ``pc``, ``pstate``.
AARCH64_REGS = tuple(f"x{k}" for k in range(31)) + ("sp", "pc", "pstate")
#: ``struct user_regs_struct`` of i386 (``asm/user_32.h``).
I386_REGS = (
    "ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "ds", "es", "fs", "gs", "orig_eax",
    "eip", "cs", "eflags", "esp", "ss",
)


@dataclass(frozen=True)
class PrstatusLayout:
    """How one architecture fills ``struct elf_prstatus``."""

    word_size: int  # sizeof(long) of the crashed kernel
    regs: tuple[str, ...]  # pr_reg, in order
    pc: str  # the register holding the program counter
    sp: str  # ... and the stack pointer


PRSTATUS_LAYOUTS: dict[str, PrstatusLayout] = {
    "x86_64": PrstatusLayout(8, X86_64_REGS, "rip", "rsp"),
    "aarch64": PrstatusLayout(8, AARCH64_REGS, "pc", "sp"),
    "i386": PrstatusLayout(4, I386_REGS, "eip", "esp"),
}
#: ``uname -m`` spellings of the machines above.
MACHINE_ALIASES = {"i486": "i386", "i586": "i386", "i686": "i386", "arm64": "aarch64", "amd64": "x86_64"}


def prstatus_layout(machine: str) -> PrstatusLayout | None:
    """The ``NT_PRSTATUS`` layout of ``machine`` (``DumpInfo.machine``), None if unknown."""
    return PRSTATUS_LAYOUTS.get(MACHINE_ALIASES.get(machine, machine))


def _prstatus_common(endian: str, word_size: int) -> list[cs.Construct]:
    """``struct elf_prstatus_common``: everything before ``pr_reg``.

    112 bytes with a 64-bit ``long``, 72 with a 32-bit one.
    """
    i = ints(endian)
    ulong, slong = i.word(word_size), i.word(word_size, signed=True)
    timeval = cs.Struct("tv_sec" / slong, "tv_usec" / slong)
    return [
        "si_signo" / i.s32, "si_code" / i.s32, "si_errno" / i.s32,  # struct elf_siginfo pr_info
        "pr_cursig" / i.s16,
        cs.Padding(2),
        "pr_sigpend" / ulong,
        "pr_sighold" / ulong,
        "pr_pid" / i.s32, "pr_ppid" / i.s32, "pr_pgrp" / i.s32, "pr_sid" / i.s32,
        "pr_utime" / timeval, "pr_stime" / timeval, "pr_cutime" / timeval, "pr_cstime" / timeval,
    ]


@functools.cache
def prstatus_struct(machine: str, endian: str) -> cs.Struct:
    """``struct elf_prstatus`` of ``machine``: 336 bytes on x86_64, 392 on aarch64, 144 on i386.

    :raises KeyError: no layout is known for ``machine``
    """
    layout = prstatus_layout(machine)
    if layout is None:
        raise KeyError(f"no NT_PRSTATUS layout for machine {machine!r}")
    i = ints(endian)
    w = layout.word_size
    reg = i.word(w)
    fields = _prstatus_common(endian, w)
    fields.append("pr_reg" / cs.Struct(*(name / reg for name in layout.regs)))
    fields.append("pr_fpvalid" / i.s32)
    if w == 8:
        fields.append(cs.Padding(4))  # the struct is 8-aligned
    return cs.Struct(*fields)


def parse_prstatus(desc: bytes, machine: str, endian: str) -> cs.Container | None:
    """Decode an ``NT_PRSTATUS`` descriptor, None when it cannot be.

    A descriptor may stop after ``pr_reg`` (libkdumpfile accepts that much for aarch64): the
    missing ``pr_fpvalid`` then reads as 0. A longer one is decoded from its start.
    """
    layout = prstatus_layout(machine)
    if layout is None:
        return None
    struct = prstatus_struct(machine, endian)
    size = struct.sizeof()
    need = size - (8 if layout.word_size == 8 else 4)  # up to the end of pr_reg
    if len(desc) < need:
        return None
    return struct.parse(desc[:size].ljust(size, b"\0"))


# --- QEMUCPUState ----------------------------------------------------------------------------

QEMUCPUSTATE_VERSION = 1
#: ``QEMUCPUState.size`` without and with the trailing ``kernel_gs_base``.
QEMU_CPU_STATE_SIZE = 432
QEMU_CPU_STATE_SIZE_GS = 440
QEMU_REGS = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags",
)
QEMU_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")


@functools.cache
def qemu_cpu_state_struct(endian: str, kernel_gs_base: bool = True) -> cs.Struct:
    """``QEMUCPUState`` version 1: 440 bytes, or 432 without ``kernel_gs_base``.

    Only x86 guests get a ``QEMU`` note; its byte order is the QEMU host's (see
    :func:`parse_qemu_cpu_state`).
    ``kernel_gs_base`` was appended later without a new ``version``: readers go by ``size``.
    """
    i = ints(endian)
    segment = cs.Struct("selector" / i.u32, "limit" / i.u32, "flags" / i.u32, "pad" / i.u32,
                        "base" / i.u64)
    fields: list[cs.Construct] = ["version" / i.u32, "size" / i.u32]
    fields += [name / i.u64 for name in QEMU_REGS]
    fields += [name / segment for name in QEMU_SEGMENTS]
    fields.append("cr" / cs.Array(5, i.u64))
    if kernel_gs_base:
        fields.append("kernel_gs_base" / i.u64)
    return cs.Struct(*fields)


def parse_qemu_cpu_state(desc: bytes, endian: str = "<") -> cs.Container | None:
    """Decode a ``QEMU`` note, None when it is not a version-1 ``QEMUCPUState``.

    The fields decoded are those that lie within both the note and the ``size`` it declares.
    QEMU fills the structure in the *host's* byte order (``qemu_get_cpustate`` does not convert,
    unlike the note header and ``NT_PRSTATUS``), so when ``version`` does not read as 1 in
    ``endian`` the other order is tried.
    """
    if len(desc) < 8:
        return None
    for order in (endian, ">" if endian == "<" else "<"):
        head = ints(order).u32
        version, size = head.parse(desc[:4]), head.parse(desc[4:8])
        usable = min(size, len(desc))
        if version == QEMUCPUSTATE_VERSION and usable >= QEMU_CPU_STATE_SIZE:
            struct = qemu_cpu_state_struct(order, usable >= QEMU_CPU_STATE_SIZE_GS)
            return struct.parse(desc[:struct.sizeof()])
    return None


# --- Xen -------------------------------------------------------------------------------------


@functools.cache
def xen_dumpcore_header_struct(endian: str) -> cs.Struct:
    """``XEN_ELFNOTE_DUMPCORE_HEADER`` descriptor (``xc_core.h``), 32 bytes."""
    i = ints(endian)
    return cs.Struct("xch_magic" / i.u64, "xch_nr_vcpus" / i.u64, "xch_nr_pages" / i.u64,
                     "xch_page_size" / i.u64)


@functools.cache
def xen_format_version_struct(endian: str) -> cs.Struct:
    """``XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION`` descriptor: one u64, 1 for the known format."""
    return cs.Struct("version" / ints(endian).u64)


@functools.cache
def xen_dumpcore_version_struct(endian: str, word_size: int) -> cs.Struct:
    """``XEN_ELFNOTE_DUMPCORE_XEN_VERSION`` descriptor (``xen_dumpcore_elfnote_xen_version_desc``).

    ``platform_parameters.virt_start`` is a ``long`` of the dumping tool; with a 32-bit long
    this schema assumes no padding before ``pagesize`` (the i386 ABI; unverified on real files).
    """
    i = ints(endian)
    return cs.Struct(
        "major_version" / i.u64, "minor_version" / i.u64,
        "extra_version" / cs.Bytes(16),
        "compiler" / cs.Bytes(64), "compile_by" / cs.Bytes(16), "compile_domain" / cs.Bytes(32),
        "compile_date" / cs.Bytes(32),
        "capabilities" / cs.Bytes(1024), "changeset" / cs.Bytes(64),
        "virt_start" / i.word(word_size),
        "pagesize" / i.u64,
    )


@functools.cache
def xen_crash_info_struct(endian: str, word_size: int, x86: bool = True) -> cs.Struct:
    """``XEN_ELFNOTE_CRASH_INFO`` descriptor (``xen_crash_info_{32,64}``): 8 words, and on x86
    ``xen_phys_start`` and ``dom0_pfn_to_mfn_frame_list_list`` after them."""
    w = ints(endian).word(word_size)
    names = ["xen_major_version", "xen_minor_version", "xen_extra_version", "xen_changeset",
             "xen_compiler", "xen_compile_date", "xen_compile_time", "tainted"]
    if x86:
        names += ["xen_phys_start", "dom0_pfn_to_mfn_frame_list_list"]
    return cs.Struct(*(name / w for name in names))


@functools.cache
def xen_crash_regs_x86_struct(endian: str, word_size: int) -> cs.Struct:
    """``XEN_ELFNOTE_CRASH_REGS`` descriptor on x86 (``crash_xen_core_t``): cr0, cr2, cr3, cr4."""
    w = ints(endian).word(word_size)
    return cs.Struct("cr0" / w, "cr2" / w, "cr3" / w, "cr4" / w)


# --- per-CPU summary -------------------------------------------------------------------------


def _is(note: Note, name: bytes, type: int) -> bool:
    return note.name.rstrip(b"\0") == name and note.type == type


def describe_cpus(notes: Iterable[Note], machine: str, endian: str) -> list[dict[str, Any]]:
    """One dict per CPU: the k-th ``CORE``/``NT_PRSTATUS`` note merged with the k-th ``QEMU`` note.

    From ``NT_PRSTATUS``: ``pid`` (``pr_pid``: the task on that CPU for the kernel's crash
    notes, 0 = idle; the vCPU index + 1 in QEMU dumps), ``pc`` and ``sp``. From ``QEMUCPUState``:
    ``rip``, ``cr3``, ``cr4``, ``idt_base``, ``gdt_base``. A descriptor that cannot be decoded
    (unknown machine, too short, unknown version) gives ``raw_size`` (``qemu_raw_size`` for the
    QEMU note) instead; this never raises on foreign data.

    :param machine: ``DumpInfo.machine`` (``uname -m`` spelling)
    :param endian: ``"<"`` or ``">"``
    :return: dicts with a ``cpu`` index and integer values
    """
    notes = list(notes)
    prstatus = [n for n in notes if _is(n, b"CORE", NT_PRSTATUS)]
    qemu = [n for n in notes if _is(n, b"QEMU", 0)]
    layout = prstatus_layout(machine)
    cpus: list[dict[str, Any]] = []
    for k in range(max(len(prstatus), len(qemu))):
        cpu: dict[str, Any] = {"cpu": k}
        if k < len(prstatus):
            desc = prstatus[k].desc
            pr = parse_prstatus(desc, machine, endian)
            if pr is None or layout is None:
                cpu["raw_size"] = len(desc)
            else:
                cpu.update(pid=pr.pr_pid, pc=pr.pr_reg[layout.pc], sp=pr.pr_reg[layout.sp])
        if k < len(qemu):
            desc = qemu[k].desc
            st = parse_qemu_cpu_state(desc, endian)
            if st is None:
                cpu["qemu_raw_size"] = len(desc)
            else:
                cpu.update(rip=st.rip, cr3=st.cr[3], cr4=st.cr[4], idt_base=st.idt.base,
                           gdt_base=st.gdt.base)
        cpus.append(cpu)
    return cpus
