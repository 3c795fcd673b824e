"""Xen vCPU state (``vcpu_guest_context``) and its conversion to Linux ``NT_PRSTATUS`` notes.

Spec: SPEC.md §13.1 (CPU state). Upstream Xen ``xen/include/public/arch-x86/xen.h``
(``struct vcpu_guest_context``, ``struct trap_info``), ``arch-x86/xen-x86_64.h`` and
``xen-x86_32.h`` (``struct cpu_user_regs``), ``xen/arch/x86/domctl.c``
(``arch_get_info_guest``: which fields an HVM or PV vCPU fills, and where the active GS base
goes); ``xen/include/public/hvm/save.h`` and ``arch-x86/hvm/save.h`` (the HVM context blob of
a save stream: ``struct hvm_save_descriptor`` records, ``struct hvm_hw_cpu``). Xen tools
store each context in a slot of ``sizeof(vcpu_guest_context_any_t)`` = 5168
bytes (the x86_64 layout, the larger one); a 32-bit PV guest's context uses the x86_32 layout
at the start of its slot.

The result follows Linux ``struct elf_prstatus`` (``kdumptool.formats.notes.prstatus_struct``),
with ``pr_pid`` = vCPU index + 1 as QEMU writes it, so that converted dumps carry the vCPU
registers the way peer tools expect them.
"""

from __future__ import annotations

import functools
from typing import Any

import construct as cs

from kdumptool.dump import Note
from kdumptool.formats.notes import NT_PRSTATUS, prstatus_struct
from kdumptool.schema import ints

#: ``flags`` bits (``VGCF_*``).
VGCF_IN_KERNEL = 1 << 2
VGCF_ONLINE = 1 << 5
#: Size of ``vcpu_guest_context`` for x86_64 and x86_32 (the x86_64 one is the slot size).
X86_64_CONTEXT_SIZE = 5168
X86_32_CONTEXT_SIZE = 2800

_GPRS_64 = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
            "rdx", "rsi", "rdi")
_GPRS_32 = ("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax")


@functools.cache
def vcpu_context_struct(layout: str, endian: str = "<") -> cs.Struct:
    """``struct vcpu_guest_context`` for ``layout`` ``"x86_64"`` (5168 bytes) or ``"x86_32"``
    (2800 bytes)."""
    i = ints(endian)
    if layout == "x86_64":
        seg = [cs.Padding(6)]
        regs = cs.Struct(
            *(name / i.u64 for name in _GPRS_64),
            "error_code" / i.u32, "entry_vector" / i.u32,
            "rip" / i.u64,
            "cs" / i.u16, cs.Padding(2), "saved_upcall_mask" / i.u8, cs.Padding(3),
            "rflags" / i.u64, "rsp" / i.u64,
            "ss" / i.u16, *seg, "es" / i.u16, *seg, "ds" / i.u16, *seg,
            "fs" / i.u16, *seg, "gs" / i.u16, *seg,
        )
        w, trap_size = i.u64, 16
        tail: list[cs.Construct] = ["event_callback_eip" / w, "failsafe_callback_eip" / w,
                                    "syscall_callback_eip" / w, "vm_assist" / w,
                                    "fs_base" / i.u64, "gs_base_kernel" / i.u64,
                                    "gs_base_user" / i.u64]
    elif layout == "x86_32":
        seg = [cs.Padding(2)]
        regs = cs.Struct(
            *(name / i.u32 for name in _GPRS_32),
            "error_code" / i.u16, "entry_vector" / i.u16,
            "eip" / i.u32,
            "cs" / i.u16, "saved_upcall_mask" / i.u8, cs.Padding(1),
            "eflags" / i.u32, "esp" / i.u32,
            "ss" / i.u16, *seg, "es" / i.u16, *seg, "ds" / i.u16, *seg,
            "fs" / i.u16, *seg, "gs" / i.u16, *seg,
        )
        w, trap_size = i.u32, 8
        tail = ["event_callback_cs" / w, "event_callback_eip" / w, "failsafe_callback_cs" / w,
                "failsafe_callback_eip" / w, "vm_assist" / w]
    else:
        raise KeyError(f"no vcpu_guest_context layout {layout!r}")
    return cs.Struct(
        "fpu_ctxt" / cs.Bytes(512),
        "flags" / w,
        "user_regs" / regs,
        "trap_ctxt" / cs.Bytes(256 * trap_size),
        "ldt_base" / w, "ldt_ents" / w,
        "gdt_frames" / cs.Array(16, w), "gdt_ents" / w,
        "kernel_ss" / w, "kernel_sp" / w,
        "ctrlreg" / cs.Array(8, w),
        "debugreg" / cs.Array(8, w),
        *tail,
    )


def context_layout(machine: str, hvm: bool) -> str | None:
    """Which layout the contexts of a guest use: PV guests have their own width (the ELF
    ``e_machine`` of a dump-core file says it); HVM contexts are always the native x86_64
    one (``arch_get_info_guest`` uses the compat layout only for 32-bit PV)."""
    if machine == "x86_64" or (machine == "i386" and hvm):
        return "x86_64"
    if machine == "i386":
        return "x86_32"
    return None


def parse_context(raw: bytes, layout: str, endian: str = "<") -> cs.Container | None:
    """Decode one context, None when ``raw`` is too short for ``layout``."""
    struct = vcpu_context_struct(layout, endian)
    if len(raw) < struct.sizeof():
        return None
    return struct.parse(raw[:struct.sizeof()])


def _common(pid: int) -> dict[str, Any]:
    tv = {"tv_sec": 0, "tv_usec": 0}
    return {"si_signo": 0, "si_code": 0, "si_errno": 0, "pr_cursig": 0, "pr_sigpend": 0,
            "pr_sighold": 0, "pr_pid": pid, "pr_ppid": 0, "pr_pgrp": 0, "pr_sid": 0,
            "pr_utime": tv, "pr_stime": tv, "pr_cutime": tv, "pr_cstime": tv, "pr_fpvalid": 0}


def context_to_prstatus(ctx: cs.Container, layout: str, *, pid: int, hvm: bool,
                        endian: str = "<") -> Note:
    """A ``CORE``/``NT_PRSTATUS`` note holding the registers of one vCPU context.

    x86_64: ``fs_base`` is the context's; ``gs_base`` is the base active in the vCPU's mode
    (HVM: ring 0 when ``cs & 3 == 0``; PV: ``VGCF_in_kernel``), as ``arch_get_info_guest``
    stores the active base in ``gs_base_kernel`` in kernel mode. ``orig_rax`` is 0 (Xen does
    not keep it; QEMU writes 0 too).
    """
    r = ctx.user_regs
    if layout == "x86_64":
        kernel = (r.cs & 3) == 0 if hvm else bool(ctx.flags & VGCF_IN_KERNEL)
        regs = {name: r[name] for name in _GPRS_64}
        regs.update(orig_rax=0, rip=r.rip, cs=r.cs, rflags=r.rflags, rsp=r.rsp, ss=r.ss,
                    fs_base=ctx.fs_base,
                    gs_base=ctx.gs_base_kernel if kernel else ctx.gs_base_user,
                    ds=r.ds, es=r.es, fs=r.fs, gs=r.gs)
        machine = "x86_64"
    else:
        regs = {name: r[name] for name in _GPRS_32}
        regs.update(ds=r.ds, es=r.es, fs=r.fs, gs=r.gs, orig_eax=0, eip=r.eip, cs=r.cs,
                    eflags=r.eflags, esp=r.esp, ss=r.ss)
        machine = "i386"
    values = _common(pid)
    values["pr_reg"] = regs
    return Note(b"CORE", NT_PRSTATUS, prstatus_struct(machine, endian).build(values))


def prstatus_notes(blob: bytes, count: int, stride: int, layout: str, *, hvm: bool,
                   endian: str = "<") -> tuple[list[Note], list[int]]:
    """``NT_PRSTATUS`` notes for ``count`` contexts stored ``stride`` bytes apart in ``blob``,
    and each decoded vCPU's CR3 (``ctrlreg[3]``: a guest-physical address for HVM, a
    machine address for PV). Slots cut short are skipped."""
    notes, cr3 = [], []
    for k in range(count):
        ctx = parse_context(blob[k * stride:(k + 1) * stride], layout, endian)
        if ctx is None:
            break
        notes.append(context_to_prstatus(ctx, layout, pid=k + 1, hvm=hvm, endian=endian))
        cr3.append(int(ctx.ctrlreg[3]))
    return notes, cr3


#: HVM save record type codes (``public/arch-x86/hvm/save.h``): END 0, HEADER 1, CPU 2.
HVM_SAVE_END, HVM_SAVE_CPU = 0, 2
_HVM_GPRS = ("rax", "rbx", "rcx", "rdx", "rbp", "rsi", "rdi", "rsp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15")
_SEGS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldtr")


@functools.cache
def hvm_hw_cpu_struct(endian: str = "<") -> cs.Struct:
    """The head of ``struct hvm_hw_cpu`` up to ``gdtr_base`` (888 bytes; the record is longer)."""
    i = ints(endian)
    return cs.Struct(
        "fpu_regs" / cs.Bytes(512),
        *(name / i.u64 for name in _HVM_GPRS),
        "rip" / i.u64, "rflags" / i.u64,
        "cr0" / i.u64, "cr2" / i.u64, "cr3" / i.u64, "cr4" / i.u64,
        "dr" / cs.Array(6, i.u64),
        *(f"{name}_sel" / i.u32 for name in _SEGS),
        "limits" / cs.Array(10, i.u32),
        *(f"{name}_base" / i.u64 for name in (*_SEGS, "idtr", "gdtr")),
    )


def hvm_context_notes(blob: bytes, endian: str = "<") -> tuple[list[Note], list[int]]:
    """``NT_PRSTATUS`` notes (pid = vCPU + 1) and CR3s of the CPU records of an HVM context
    blob (``hvm_save_descriptor`` {u16 typecode, u16 instance, u32 length} + data, up to END).
    ``gs_base`` is the segment's base, the one active in the saved mode."""
    cpu = hvm_hw_cpu_struct(endian)
    desc = ints(endian)
    notes, cr3 = [], []
    pos = 0
    while pos + 8 <= len(blob):
        typecode, instance = desc.u16.parse(blob[pos:pos + 2]), desc.u16.parse(blob[pos + 2:pos + 4])
        length = desc.u32.parse(blob[pos + 4:pos + 8])
        data = blob[pos + 8:pos + 8 + length]
        if typecode == HVM_SAVE_END or len(data) < length:
            break
        if typecode == HVM_SAVE_CPU and length >= cpu.sizeof():
            c = cpu.parse(data[:cpu.sizeof()])
            regs = {name: c[name] for name in _GPRS_64}
            regs.update(orig_rax=0, rip=c.rip, cs=c.cs_sel, rflags=c.rflags, rsp=c.rsp,
                        ss=c.ss_sel, fs_base=c.fs_base, gs_base=c.gs_base, ds=c.ds_sel,
                        es=c.es_sel, fs=c.fs_sel, gs=c.gs_sel)
            values = _common(instance + 1)
            values["pr_reg"] = regs
            notes.append(Note(b"CORE", NT_PRSTATUS, prstatus_struct("x86_64", endian).build(values)))
            cr3.append(int(c.cr3))
        pos += 8 + length
    return notes, cr3
