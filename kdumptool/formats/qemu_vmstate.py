"""Device state in a QEMU migration stream: the trailing JSON description, and the few devices
a kernel dump needs (vCPUs, the ``vmcoreinfo`` device, the RTC's CMOS memory-size bytes).

Spec: SPEC.md "QEMU savevm / migration streams", device-state part. Upstream QEMU:

* ``migration/savevm.c`` (``qemu_savevm_state_complete_precopy_non_iterable``: after
  ``QEMU_VM_EOF`` comes ``QEMU_VM_VMDESCRIPTION``, a big-endian u32 length and a JSON text
  ``{"page_size": N, "devices": [...]}`` describing every ``SECTION_FULL`` in stream order);
* ``migration/vmstate.c`` (``vmstate_save_state_v``, ``vmsd_desc_field_start`` /
  ``vmsd_desc_field_end``: each field's ``name``, ``type``, ``size`` in bytes as written and
  ``array_len``; ``vmstate_subsection_save``: a subsection is ``QEMU_VM_SUBSECTION`` (5), a u8
  name length, the name, a big-endian u32 version, then its fields; all integers big-endian);
* ``target/i386/machine.c`` (``vmstate_x86_cpu``, version 12: ``env.regs``, ``env.eip``,
  ``env.eflags``, ... ``env.segs``, ``env.cr[0..4]``, ``env.efer``, ``env.kernelgsbase``);
* ``hw/misc/vmcoreinfo.c`` + ``include/hw/misc/vmcoreinfo.h`` (``vmstate_vmcoreinfo``: the
  guest-physical address and size of the guest's VMCOREINFO ELF note, as the guest wrote them
  into the fw_cfg file ``etc/vmcoreinfo`` in little-endian; ``dump/dump.c`` reads the note from
  there the same way);
* ``hw/i386/pc.c`` (``pc_cmos_init``: CMOS 0x34/0x35 = RAM between 16 MiB and 4 GiB in 64 KiB
  units, 0x5b..0x5d = RAM above 4 GiB in 64 KiB units);
* ``target/i386/arch_dump.c`` (how QEMU's own ``dump-guest-memory`` turns a vCPU into an
  ``NT_PRSTATUS`` note and a ``QEMU`` note: the notes built here are the same).

Sizes come from the JSON description when the stream has one (``devices`` entry with the
section's ``name`` and ``instance_id``); without it the known layouts below are used.
Nothing here raises on foreign data: a description or a section that does not fit gives None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kdumptool.dump import Note
from kdumptool.formats.notes import (
    NT_PRSTATUS,
    QEMU_CPU_STATE_SIZE_GS,
    QEMUCPUSTATE_VERSION,
    prstatus_struct,
    qemu_cpu_state_struct,
)

QEMU_VM_SUBSECTION = 5
QEMU_VM_VMDESCRIPTION = 6
#: the JSON description is looked for in this many bytes at the end of the file
MAX_VMDESC = 16 << 20
_MAX_DEPTH = 16

#: (name, element size, count) of the leading fields of ``vmstate_x86_cpu`` version 12 for a
#: 64-bit target (``target_ulong`` = 8, ``CPU_NB_REGS`` = 16), used when there is no JSON
#: description. A test checks it against the description of the real corpus stream.
X86_64_CPU_V12 = (
    ("env.regs", 8, 16), ("env.eip", 8, 1), ("env.eflags", 8, 1), ("env.hflags", 4, 1),
    ("env.fpuc", 2, 1), ("env.fpus_vmstate", 2, 1), ("env.fptag_vmstate", 2, 1),
    ("env.fpregs_format_vmstate", 2, 1), ("env.fpregs", 10, 8), ("env.segs", 20, 6),
    ("env.ldt", 20, 1), ("env.tr", 20, 1), ("env.gdt", 20, 1), ("env.idt", 20, 1),
    ("env.sysenter_cs", 4, 1), ("env.sysenter_esp", 8, 1), ("env.sysenter_eip", 8, 1),
    ("env.cr[0]", 8, 1), ("env.cr[2]", 8, 1), ("env.cr[3]", 8, 1), ("env.cr[4]", 8, 1),
    ("env.dr", 8, 8), ("env.a20_mask", 4, 1), ("env.mxcsr", 4, 1), ("env.xmm_regs[0]", 16, 16),
    ("env.efer", 8, 1), ("env.star", 8, 1), ("env.lstar", 8, 1), ("env.cstar", 8, 1),
    ("env.fmask", 8, 1), ("env.kernelgsbase", 8, 1),
)
#: ``struct segment`` (``vmstate_segment``) of a 64-bit target: selector, base, limit, flags
SEGMENT_64 = (("selector", 4), ("base", 8), ("limit", 4), ("flags", 4))
#: ``vmstate_vmcoreinfo`` version 1
VMCOREINFO_V1 = (("has_vmcoreinfo", 1, 1), ("vmcoreinfo.host_format", 2, 1),
                 ("vmcoreinfo.guest_format", 2, 1), ("vmcoreinfo.size", 4, 1),
                 ("vmcoreinfo.paddr", 8, 1))
#: ``FW_CFG_VMCOREINFO_FORMAT_ELF``: the guest wrote an ELF note
VMCOREINFO_FORMAT_ELF = 1
#: ``MAX_GUEST_NOTE_SIZE`` of QEMU ``dump/dump.c``
MAX_GUEST_NOTE = 1 << 20
#: ``vmstate_rtc`` (mc146818rtc) versions 1..3 begin with the 128 CMOS bytes
CMOS_FIELD = ("cmos_data", 128, 1)

# x86 register indices of QEMU's CPUX86State (target/i386/cpu.h)
R_EAX, R_ECX, R_EDX, R_EBX, R_ESP, R_EBP, R_ESI, R_EDI = range(8)
R_ES, R_CS, R_SS, R_DS, R_FS, R_GS = range(6)


# --- the JSON description -------------------------------------------------------------------


@dataclass(frozen=True)
class VmDesc:
    """The trailing JSON description: where it is and what it lists."""

    marker_offset: int  # file offset of the QEMU_VM_VMDESCRIPTION byte
    json_offset: int
    length: int
    page_size: int | None
    devices: list[dict[str, Any]]

    def find(self, name: str, instance_id: int) -> dict[str, Any] | None:
        """The description of section ``name`` / ``instance_id`` (first match)."""
        for dev in self.devices:
            if dev.get("name") == name and dev.get("instance_id") == instance_id:
                return dev
        return None


def find_vmdesc(tail: bytes, tail_offset: int, file_size: int) -> VmDesc | None:
    """Locate the JSON description in ``tail`` (the last bytes of the file, at ``tail_offset``).

    The JSON holds no NUL byte and its big-endian length (below 16 MiB) starts with one, so the
    text starts at the first ``{`` after the last NUL; it is accepted only if the byte five
    before is ``QEMU_VM_VMDESCRIPTION`` and the length reaches exactly the end of the file.
    """
    nul = tail.rfind(b"\0")
    brace = tail.find(b"{", nul + 1)
    if nul < 0 or brace < 5 or tail[brace - 5] != QEMU_VM_VMDESCRIPTION:
        return None
    length = int.from_bytes(tail[brace - 4:brace], "big")
    if tail_offset + brace + length != file_size:
        return None
    try:
        doc = json.loads(tail[brace:].decode("utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), list):
        return None
    devices = [d for d in doc["devices"] if isinstance(d, dict)]
    ps = doc.get("page_size")
    return VmDesc(tail_offset + brace - 5, tail_offset + brace, length,
                  ps if isinstance(ps, int) else None, devices)


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def desc_size(desc: dict[str, Any], depth: int = 0) -> int | None:
    """Bytes a described section (or subsection) occupies in the stream, None if unknown.

    Fields: ``size`` x ``array_len``; each subsection adds its header (type byte, name length,
    name, u32 version) and its own fields and subsections.
    """
    if depth > _MAX_DEPTH:
        return None
    total = 0
    fields = desc.get("fields", [])
    subs = desc.get("subsections", [])
    if not isinstance(fields, list) or not isinstance(subs, list):
        return None
    for f in fields:
        if not isinstance(f, dict):
            return None
        size, count = _int(f.get("size")), _int(f.get("array_len", 1))
        if size is None or count is None:
            return None
        total += size * count
    for sub in subs:
        name = sub.get("vmsd_name") if isinstance(sub, dict) else None
        inner = desc_size(sub, depth + 1) if isinstance(name, str) else None
        if inner is None or not isinstance(name, str):
            return None
        total += 2 + len(name.encode()) + 4 + inner
    return total


def field_layout(desc: dict[str, Any] | None,
                 fallback: tuple[tuple[str, int, int], ...]) -> dict[str, tuple[int, int, int]]:
    """``name -> (offset, element size, count)`` of a section's top-level fields."""
    out: dict[str, tuple[int, int, int]] = {}
    pos = 0
    if desc is None:
        for name, size, count in fallback:
            out[name] = (pos, size, count)
            pos += size * count
        return out
    fields = desc.get("fields", [])
    for f in fields if isinstance(fields, list) else []:
        size = _int(f.get("size")) if isinstance(f, dict) else None
        count = _int(f.get("array_len", 1)) if isinstance(f, dict) else None
        if size is None or count is None:
            break
        name = f.get("name")
        if isinstance(name, str) and name not in out:
            out[name] = (pos, size, count)
        pos += size * count
    return out


def _get(data: bytes, layout: dict[str, tuple[int, int, int]], name: str,
         index: int = 0) -> int | None:
    spec = layout.get(name)
    if spec is None:
        return None
    off, size, count = spec
    if index >= count or size > 8:
        return None
    start = off + index * size
    if start + size > len(data):
        return None
    return int.from_bytes(data[start:start + size], "big")


# --- vCPUs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One x86 segment register of the CPU state (``SegmentCache``: selector, base, limit,
    flags).
    """

    selector: int
    base: int
    limit: int
    flags: int


@dataclass(frozen=True)
class X86Cpu:
    """The registers of one x86 vCPU that a kernel dump carries."""

    index: int
    regs: tuple[int, ...]  # 16 general registers in QEMU's order (rax, rcx, rdx, rbx, rsp, ...)
    rip: int
    rflags: int
    segs: tuple[Segment, ...]  # es, cs, ss, ds, fs, gs
    ldt: Segment
    tr: Segment
    gdt: Segment
    idt: Segment
    cr: tuple[int, int, int, int, int]
    efer: int
    kernel_gs_base: int


def _segment_layout(desc: dict[str, Any] | None, field: str) -> tuple[tuple[str, int], ...]:
    if desc is not None:
        for f in desc.get("fields", []) if isinstance(desc.get("fields"), list) else []:
            if isinstance(f, dict) and f.get("name") == field and isinstance(f.get("struct"), dict):
                sub = f["struct"].get("fields")
                if isinstance(sub, list):
                    out = tuple((s.get("name"), _int(s.get("size"))) for s in sub if isinstance(s, dict))
                    if all(isinstance(n, str) and z is not None for n, z in out):
                        return out  # type: ignore[return-value]
    return SEGMENT_64


def parse_x86_cpu(data: bytes, index: int, desc: dict[str, Any] | None) -> X86Cpu | None:
    """Decode the leading fields of an x86 ``cpu`` section (64-bit target only), None if they
    are not there or do not look like a 64-bit target's."""
    layout = field_layout(desc, X86_64_CPU_V12)
    if layout.get("env.regs", (0, 0, 0))[1:] != (8, 16) or layout.get("env.segs", (0, 0, 0))[2] != 6:
        return None
    seg_fields = _segment_layout(desc, "env.segs")
    seg_size = sum(size for _, size in seg_fields)

    def seg(name: str, k: int = 0) -> Segment | None:
        spec = layout.get(name)
        if spec is None or spec[1] != seg_size or k >= spec[2]:
            return None
        pos = spec[0] + k * seg_size
        vals: dict[str, int] = {}
        for fname, size in seg_fields:
            if pos + size > len(data):
                return None
            vals[fname] = int.from_bytes(data[pos:pos + size], "big")
            pos += size
        return Segment(vals.get("selector", 0), vals.get("base", 0), vals.get("limit", 0),
                       vals.get("flags", 0))

    regs = [_get(data, layout, "env.regs", k) for k in range(16)]
    scalars = {n: _get(data, layout, n) for n in ("env.eip", "env.eflags", "env.cr[0]", "env.cr[2]",
                                                  "env.cr[3]", "env.cr[4]", "env.efer",
                                                  "env.kernelgsbase")}
    segs = [seg("env.segs", k) for k in range(6)]
    tables = [seg(n) for n in ("env.ldt", "env.tr", "env.gdt", "env.idt")]
    if any(v is None for v in regs) or any(s is None for s in segs + tables):
        return None
    if any(scalars[n] is None for n in ("env.eip", "env.eflags", "env.cr[3]")):
        return None
    v = {n: scalars[n] or 0 for n in scalars}
    return X86Cpu(
        index=index, regs=tuple(r or 0 for r in regs), rip=v["env.eip"], rflags=v["env.eflags"],
        segs=tuple(s for s in segs if s is not None), ldt=tables[0], tr=tables[1],  # type: ignore[arg-type]
        gdt=tables[2], idt=tables[3],  # type: ignore[arg-type]
        cr=(v["env.cr[0]"], 0, v["env.cr[2]"], v["env.cr[3]"], v["env.cr[4]"]),
        efer=v["env.efer"], kernel_gs_base=v["env.kernelgsbase"],
    )


def cpu_notes(cpu: X86Cpu, endian: str = "<") -> list[Note]:
    """The ``CORE``/``NT_PRSTATUS`` and ``QEMU`` notes QEMU's ``dump-guest-memory`` writes for
    this vCPU (``arch_dump.c``: ``pr_pid`` is the vCPU index + 1, ``orig_rax`` is left 0).

    A test checks them byte for byte against the notes of QEMU's own ELF dump of the same
    stopped guest."""
    r, s = cpu.regs, cpu.segs
    pr = prstatus_struct("x86_64", endian)
    c = pr.parse(bytes(pr.sizeof()))
    c.pr_pid = cpu.index + 1
    names = {"r15": r[15], "r14": r[14], "r13": r[13], "r12": r[12], "rbp": r[R_EBP], "rbx": r[R_EBX],
             "r11": r[11], "r10": r[10], "r9": r[9], "r8": r[8], "rax": r[R_EAX], "rcx": r[R_ECX],
             "rdx": r[R_EDX], "rsi": r[R_ESI], "rdi": r[R_EDI], "orig_rax": 0,
             "rip": cpu.rip, "cs": s[R_CS].selector, "rflags": cpu.rflags, "rsp": r[R_ESP],
             "ss": s[R_SS].selector, "fs_base": s[R_FS].base, "gs_base": s[R_GS].base,
             "ds": s[R_DS].selector, "es": s[R_ES].selector, "fs": s[R_FS].selector,
             "gs": s[R_GS].selector}
    for name, value in names.items():
        c.pr_reg[name] = value
    qs = qemu_cpu_state_struct(endian, True)
    q = qs.parse(bytes(qs.sizeof()))
    q.version, q.size = QEMUCPUSTATE_VERSION, QEMU_CPU_STATE_SIZE_GS
    order = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp")
    idx = (R_EAX, R_EBX, R_ECX, R_EDX, R_ESI, R_EDI, R_ESP, R_EBP)
    for name, k in zip(order, idx, strict=True):
        q[name] = r[k]
    for k in range(8, 16):
        q[f"r{k}"] = r[k]
    q.rip, q.rflags = cpu.rip, cpu.rflags
    by_name = {"cs": s[R_CS], "ds": s[R_DS], "es": s[R_ES], "fs": s[R_FS], "gs": s[R_GS],
               "ss": s[R_SS], "ldt": cpu.ldt, "tr": cpu.tr, "gdt": cpu.gdt, "idt": cpu.idt}
    for name, sg in by_name.items():
        q[name].selector, q[name].limit, q[name].flags, q[name].base = (
            sg.selector, sg.limit, sg.flags, sg.base)
    q.cr = list(cpu.cr)
    q.kernel_gs_base = cpu.kernel_gs_base
    return [Note(b"CORE", NT_PRSTATUS, pr.build(c)), Note(b"QEMU", 0, qs.build(q))]


# --- the vmcoreinfo device and the CMOS --------------------------------------------------------


def vmcoreinfo_location(data: bytes, desc: dict[str, Any] | None) -> tuple[int, int] | None:
    """``(paddr, size)`` of the guest's VMCOREINFO ELF note, None if the guest gave none.

    The guest wrote the fields little-endian; the stream holds them as the host read them
    (big-endian on the wire), so a big-endian host shows them byte-swapped: the format field
    decides.
    """
    layout = field_layout(desc, VMCOREINFO_V1)
    has = _get(data, layout, "has_vmcoreinfo")
    fmt = _get(data, layout, "vmcoreinfo.guest_format")
    size = _get(data, layout, "vmcoreinfo.size")
    paddr = _get(data, layout, "vmcoreinfo.paddr")
    if not has or fmt is None or size is None or paddr is None:
        return None
    if fmt != VMCOREINFO_FORMAT_ELF:
        if int.from_bytes(fmt.to_bytes(2, "big"), "little") != VMCOREINFO_FORMAT_ELF:
            return None
        size = int.from_bytes(size.to_bytes(4, "big"), "little")
        paddr = int.from_bytes(paddr.to_bytes(8, "big"), "little")
    if not 0 < size <= MAX_GUEST_NOTE:
        return None
    return paddr, size


def cmos_memory_split(data: bytes, desc: dict[str, Any] | None) -> tuple[int, int] | None:
    """``(below_4g, above_4g)`` RAM sizes from the CMOS bytes the BIOS reads (``pc_cmos_init``),
    None when the CMOS does not say (RAM below 4 GiB of 16 MiB or less)."""
    layout = field_layout(desc, (CMOS_FIELD,))
    spec = layout.get("cmos_data")
    if spec is None or spec[1] * spec[2] != 128 or spec[0] + 128 > len(data):
        return None
    cmos = data[spec[0]:spec[0] + 128]
    mid = cmos[0x34] | cmos[0x35] << 8
    if mid == 0:
        return None
    above = (cmos[0x5B] | cmos[0x5C] << 8 | cmos[0x5D] << 16) << 16
    return (16 << 20) + (mid << 16), above
