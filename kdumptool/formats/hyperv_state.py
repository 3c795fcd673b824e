"""Hyper-V saved state: the ``partition_state`` chunk stream (processor state, guest OS ID).

Spec: SPEC.md §11; microsoft/openvmm (MIT): ``vmm_core/hyperv_dump/src/defs.rs``
(``VidSavedStateDescriptor``), ``vmm_core/hyperv_dump/src/partition_state.rs`` and
``vm/hv1/hvdef/src/save_restore.rs`` (partition state chunk ids and register chunk layouts),
``vm/hv1/hvdef/src/lib.rs`` (``HvX64SegmentRegister``, ``HvX64TableRegister``,
``HvGuestOsId``); Linux ``include/asm-generic/mshyperv.h`` (``hv_generate_guest_id``,
``HV_LINUX_VENDOR_ID``); the Hyper-V TLFS ("Reporting the Guest OS Identity").

:func:`parse_partition_state` never raises on foreign data: what it cannot decode it lists in
``problems``. :func:`prstatus_note` makes one ``NT_PRSTATUS`` note per virtual processor (x86_64
and aarch64), as the reader (:mod:`kdumptool.formats.hyperv`) puts them in the dump's notes.
"""

from __future__ import annotations

from typing import Any

import construct as cs

from kdumptool.dump import Note
from kdumptool.formats.notes import NT_PRSTATUS, prstatus_struct
from kdumptool.schema import ints

_i = ints("<")
VidSavedStateDescriptor = cs.Struct("descriptor_size" / _i.u64, "header_size" / _i.u64,
                                    "total_size" / _i.u64)
ChunkHeader = cs.Struct("id" / _i.u32, "data_length" / _i.u32, cs.Padding(8))  # 16 bytes

# partition state chunk ids (save_restore.rs ``VmSaveChunkId``)
CH_PROLOG, CH_EPILOG = 0x00000000, 0xF0000000
CH_OS_ID = 0x20001000
CH_VP_INDICES, CH_VP = 0x30000000, 0x30001000
CH_GP, CH_FP, CH_CONTROL, CH_DEBUG = 0x30005000, 0x30006000, 0x30007000, 0x30008000
CH_SEGMENT, CH_TABLE, CH_XSAVE_CONTROL = 0x30009000, 0x3000A000, 0x3000D000
CH_VP_VTL = 0x3001A000
VENDORS = {0x0: ("AMD", "x86_64"), 0x1: ("Intel", "x86_64"), 0x2: ("Hygon", "x86_64"),
           0x10: ("ARM", "aarch64")}

ChunkProlog = cs.Struct("undefined_tag" / _i.u32, "is_summary_save_state" / _i.u8, cs.Padding(3),
                        "vendor" / _i.u32)
ChunkOsId = cs.Struct("os_id" / _i.u64)
ChunkVp = cs.Struct("vp_index" / _i.u32)
ChunkVtl = cs.Struct("vtl" / _i.u8)
X64_GP = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
          "r12", "r13", "r14", "r15", "rip", "rflags")
X64Gp = cs.Struct(*(n / _i.u64 for n in X64_GP))
X64Control = cs.Struct(*(n / _i.u64 for n in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer")))
X64Debug = cs.Struct(*(n / _i.u64 for n in ("dr0", "dr1", "dr2", "dr3", "dr6", "dr7")))
X64Segment = cs.Struct("base" / _i.u64, "limit" / _i.u32, "selector" / _i.u16, "attributes" / _i.u16)
X64_SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs", "ldtr", "tr")
X64Segments = cs.Struct(*(n / X64Segment for n in X64_SEGMENTS), "cpl" / _i.u8)
X64TableRegister = cs.Struct(cs.Padding(6), "limit" / _i.u16, "base" / _i.u64)
X64Tables = cs.Struct("idtr" / X64TableRegister, "gdtr" / X64TableRegister)
X64XsaveControl = cs.Struct("xfem" / _i.u64)
ARM64_GP = tuple(f"x{k}" for k in range(29)) + (
    "fp", "lr", "elr_el2", "spsr_el2", "esr_el1", "spsr_el1", "far_el1", "par_el1", "elr_el1",
    "sp_el0", "sp_el1", "afsr0_el1", "afsr1_el1")
Arm64Gp = cs.Struct(*(n / _i.u64 for n in ARM64_GP))
Arm64Control = cs.Struct(*(n / _i.u64 for n in (
    "vmpidr_el2", "vpidr_el2", "sctlr_el1", "actlr_el1", "tcr_el1", "mair_el1", "tpidr_el1",
    "amair_el1", "tpidrro_el0", "tpidr_el0", "contextidr_el1", "cpacr_el1", "csselr_el1",
    "cntk_ctl_el1", "cntv_cval_el0", "cntv_ctl_el0")))
Arm64Table = cs.Struct("ttbr0_el1" / _i.u64, "ttbr1_el1" / _i.u64, "vbar_el1" / _i.u64)
#: chunk id -> (name, schema) per architecture
X64_CHUNKS = {CH_GP: ("gp", X64Gp), CH_CONTROL: ("control", X64Control), CH_DEBUG: ("debug", X64Debug),
              CH_SEGMENT: ("segments", X64Segments), CH_TABLE: ("tables", X64Tables),
              CH_XSAVE_CONTROL: ("xsave_control", X64XsaveControl)}
ARM64_CHUNKS = {CH_GP: ("gp", Arm64Gp), CH_CONTROL: ("control", Arm64Control),
                CH_TABLE: ("tables", Arm64Table)}

OPEN_SOURCE_OS = {1: "Linux", 2: "FreeBSD", 3: "Xen", 4: "Illumos"}
MICROSOFT_OS = {1: "MS-DOS", 2: "Windows 3.x", 3: "Windows 9x", 4: "Windows NT", 5: "Windows CE"}
#: The guest ID the first Linux Hyper-V drivers (staging, before 3.x) wrote, without a version.
OLD_LINUX_GUEST_ID = 0xB16B00B5_00000000


def describe_guest_os_id(os_id: int) -> dict[str, Any]:
    """Decode ``HV_X64_MSR_GUEST_OS_ID`` (Hyper-V TLFS "Reporting the Guest OS Identity").

    Open-source guests (bit 63): OS type in bits 62:56, OS id 55:48, version 47:16, build
    15:0; Linux writes ``hv_generate_guest_id(LINUX_VERSION_CODE)`` = ``0x8100 << 48 |
    version << 16``, so the kernel's major.minor.sublevel is read straight from it (sublevel
    capped at 255 as in ``LINUX_VERSION_CODE``). Microsoft guests: vendor 62:48, OS 47:40,
    major 39:32, minor 31:24, service version 23:16, build 15:0.
    """
    out: dict[str, Any] = {"guest_os_id": f"{os_id:#018x}"}
    if os_id == 0:
        out["text"] = "not reported (guest without Hyper-V enlightenments, or not yet booted)"
    elif os_id == OLD_LINUX_GUEST_ID:
        out.update(os="Linux", text="Linux (old Hyper-V drivers, no kernel version)")
    elif os_id >> 63:
        os_type, distro = (os_id >> 56) & 0x7F, (os_id >> 48) & 0xFF
        version, build = (os_id >> 16) & 0xFFFFFFFF, os_id & 0xFFFF
        name = OPEN_SOURCE_OS.get(os_type, f"open-source OS type {os_type}")
        out["os"] = name
        if os_type == 1:
            kv = f"{version >> 16}.{(version >> 8) & 0xFF}.{version & 0xFF}"
            out.update(kernel_version=kv, text=f"Linux, kernel {kv}")
        else:
            out["text"] = f"{name}, version {version:#x}"
        if distro or build:
            out["text"] += f" (distribution data {distro:#x}/{build:#x})"
    else:
        vendor, osid = (os_id >> 48) & 0x7FFF, (os_id >> 40) & 0xFF
        major, minor = (os_id >> 32) & 0xFF, (os_id >> 24) & 0xFF
        sp, build = (os_id >> 16) & 0xFF, os_id & 0xFFFF
        name = MICROSOFT_OS.get(osid, f"OS {osid}") if vendor == 1 else f"vendor {vendor:#x} OS {osid}"
        out.update(os=name, text=f"{name} {major}.{minor} build {build}"
                   + (f" service version {sp}" if sp else ""))
    return out


def parse_partition_state(blob: bytes) -> dict[str, Any]:
    """Decode the ``partition_state`` chunk stream (never raises on foreign data).

    :return: ``vendor``, ``machine``, ``os_id``, ``bsp``, ``vps`` (list of dicts with
        ``vp_index``, ``vtl`` and one dict of registers per chunk kind), ``problems``
    """
    out: dict[str, Any] = {"vendor": None, "machine": "", "os_id": None, "vps": [], "problems": []}
    dsize = VidSavedStateDescriptor.sizeof()
    if len(blob) < dsize:
        out["problems"].append(f"partition state of {len(blob)} bytes has no descriptor")
        return out
    desc = VidSavedStateDescriptor.parse(blob[:dsize])
    end = min(len(blob), desc.total_size) if desc.total_size >= dsize else len(blob)
    pos = desc.header_size + 16
    chunks = X64_CHUNKS
    vp: dict[str, Any] | None = None
    hsize = ChunkHeader.sizeof()
    while pos + hsize <= end:
        h = ChunkHeader.parse(blob[pos:pos + hsize])
        data = blob[pos + hsize:pos + hsize + h.data_length]
        if len(data) < h.data_length:
            out["problems"].append(f"chunk {h.id:#x} at {pos:#x} runs past the end of the blob")
            break
        if h.id == CH_EPILOG:
            break
        if h.id == CH_PROLOG and len(data) >= ChunkProlog.sizeof():
            vendor = ChunkProlog.parse(data).vendor
            name, machine = VENDORS.get(vendor, (f"vendor {vendor:#x}", ""))
            out.update(vendor=name, machine=machine)
            chunks = ARM64_CHUNKS if machine == "aarch64" else X64_CHUNKS
        elif h.id == CH_OS_ID and len(data) >= 8:
            out["os_id"] = ChunkOsId.parse(data).os_id
        elif h.id == CH_VP_INDICES and len(data) >= 4:
            out["bsp"] = int.from_bytes(data[:4], "little")
        elif h.id == CH_VP and len(data) >= 4:
            vp = {"vp_index": ChunkVp.parse(data).vp_index, "states": {}}
            out["vps"].append(vp)
        elif h.id == CH_VP_VTL and vp is not None and data:
            vp["vtl"] = ChunkVtl.parse(data).vtl
        elif h.id in chunks and vp is not None:
            name, schema = chunks[h.id]
            state = vp["states"].setdefault(vp.get("vtl", 0), {})
            if len(data) >= schema.sizeof() and name not in state:
                state[name] = schema.parse(data)
        pos += hsize + h.data_length
    return out


def vp_registers(vp: dict[str, Any]) -> dict[str, Any]:
    """The VTL 0 state of a VP (else its lowest VTL's), flattened to ``{name: value}``."""
    states = vp["states"]
    if not states:
        return {}
    state = states.get(0, states[min(states)])
    regs: dict[str, Any] = {}
    for name, c in state.items():
        if name == "segments":
            for seg in X64_SEGMENTS:
                regs[seg] = c[seg].selector
                regs[f"{seg}_base"] = c[seg].base
        elif name == "tables":
            if "idtr" in c:
                regs.update(idtr_base=c.idtr.base, idtr_limit=c.idtr.limit,
                            gdtr_base=c.gdtr.base, gdtr_limit=c.gdtr.limit)
            else:
                regs.update({k: v for k, v in c.items() if not k.startswith("_")})
        else:
            regs.update({k: v for k, v in c.items() if not k.startswith("_")})
    return regs


def prstatus_note(machine: str, vp_index: int, regs: dict[str, Any]) -> Note | None:
    """An ``NT_PRSTATUS`` note for one VP (``pr_pid`` = VP index + 1, as QEMU numbers CPUs)."""
    if "rip" not in regs and "elr_el2" not in regs:
        return None  # no general-purpose register chunk
    reg: dict[str, int]
    if machine == "x86_64":
        reg = {n: regs.get(n, 0) for n in X64_GP}
        reg.update(orig_rax=0, fs_base=regs.get("fs_base", 0), gs_base=regs.get("gs_base", 0))
        for seg in ("cs", "ss", "ds", "es", "fs", "gs"):
            reg[seg] = regs.get(seg, 0)
    elif machine == "aarch64":
        reg = {f"x{k}": regs.get(f"x{k}", 0) for k in range(29)}
        spsr = regs.get("spsr_el2", 0)
        reg.update(x29=regs.get("fp", 0), x30=regs.get("lr", 0), pc=regs.get("elr_el2", 0),
                   pstate=spsr, sp=regs.get("sp_el1" if spsr & 0xF == 0b0101 else "sp_el0", 0))
    else:
        return None
    s = prstatus_struct(machine, "<")
    fields = {sub.name: 0 for sub in s.subcons if sub.name}
    fields.update(pr_pid=(vp_index + 1) & 0x7FFFFFFF, pr_utime={"tv_sec": 0, "tv_usec": 0},
                  pr_stime={"tv_sec": 0, "tv_usec": 0}, pr_cutime={"tv_sec": 0, "tv_usec": 0},
                  pr_cstime={"tv_sec": 0, "tv_usec": 0})
    layout = [sub for sub in s.subcons if sub.name == "pr_reg"][0]
    fields["pr_reg"] = {sub.name: reg.get(sub.name, 0) for sub in layout.subcon.subcons}
    return Note(b"CORE", NT_PRSTATUS, s.build(fields))
