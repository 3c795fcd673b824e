"""ELF note schemas (``kdumptool/formats/notes.py``) and the CPU state ``info`` shows.

Schemas: sizes from the C headers, offsets against the independent struct-based builder,
hypothesis build/parse round trips in both byte orders, and garbage that must never raise.
Real corpus: the crashed kernel's per-CPU ``NT_PRSTATUS`` (pids, pcs resolved with the guest's
own ``/proc/kallsyms``, every register against python3-libkdumpfile), and QEMU's
``QEMUCPUState`` notes (CR3 is the page-table root: its kernel half equals ``init_top_pgt``'s).
"""

from __future__ import annotations

import bisect
import gzip
import json
import struct
import subprocess
from typing import Any

import builders as B
import construct as cs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ours import HANG_S, REPO, kdumptool
from peers import require_tool

from corpus import corpus_bytes, need_corpus, need_corpus_file
from kdumptool.dump import Note
from kdumptool.formats import notes as N
from kdumptool.open import open_dump

KDUMP_ELF = "x86_64-kdump-320m/vmcore.elf"
QEMU_ELF = "x86_64-qemu-256m/qemu-elf.vmcore"
QEMU_KDUMP = "x86_64-qemu-256m/qemu-kdump-zlib.vmcore"
BUNDLED = REPO / "corpus" / "x86_64-kdump-320m-c-d31.kdump"
ENDIANS = ("<", ">")
PROPS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------------
# schemas


def _strategy(con: cs.Construct) -> st.SearchStrategy[Any]:
    """Values for a construct made of integers, byte strings, arrays and structs."""
    if isinstance(con, cs.Renamed):
        return _strategy(con.subcon)
    if isinstance(con, cs.FormatField):
        bits = 8 * con.sizeof()
        if con.fmtstr[-1].islower():
            return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        return st.integers(0, (1 << bits) - 1)
    if isinstance(con, cs.Bytes):
        return st.binary(min_size=con.sizeof(), max_size=con.sizeof())
    if isinstance(con, cs.Array):
        return st.lists(_strategy(con.subcon), min_size=con.count, max_size=con.count)
    if isinstance(con, cs.Struct):
        return st.fixed_dictionaries({sc.name: _strategy(sc) for sc in con.subcons if sc.name})
    raise TypeError(f"no strategy for {con!r}")


def _plain(value: Any) -> Any:
    """A parsed Container as plain dicts and lists (without construct's ``_io``)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


SCHEMAS = {
    "prstatus_x86_64": (lambda e: N.prstatus_struct("x86_64", e), 336),
    "prstatus_aarch64": (lambda e: N.prstatus_struct("aarch64", e), 392),
    "prstatus_i386": (lambda e: N.prstatus_struct("i386", e), 144),
    "qemu_cpu_state": (lambda e: N.qemu_cpu_state_struct(e), 440),
    "qemu_cpu_state_432": (lambda e: N.qemu_cpu_state_struct(e, kernel_gs_base=False), 432),
    "xen_dumpcore_header": (N.xen_dumpcore_header_struct, 32),
    "xen_format_version": (N.xen_format_version_struct, 8),
    "xen_dumpcore_version_64": (lambda e: N.xen_dumpcore_version_struct(e, 8), 1280),
    "xen_crash_info_x86_64": (lambda e: N.xen_crash_info_struct(e, 8), 80),
    "xen_crash_info_32": (lambda e: N.xen_crash_info_struct(e, 4, x86=False), 32),
    "xen_crash_regs_x86_64": (lambda e: N.xen_crash_regs_x86_struct(e, 8), 32),
}


@pytest.mark.parametrize("endian", ENDIANS)
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_sizes(name: str, endian: str) -> None:
    make, size = SCHEMAS[name]
    assert make(endian).sizeof() == size


@pytest.mark.parametrize("endian", ENDIANS)
@pytest.mark.parametrize("name", sorted(SCHEMAS))
@PROPS
@given(data=st.data())
def test_schema_round_trip(name: str, endian: str, data: st.DataObject) -> None:
    schema = SCHEMAS[name][0](endian)
    value = data.draw(_strategy(schema))
    raw = schema.build(value)
    assert len(raw) == schema.sizeof()
    assert _plain(schema.parse(raw)) == value
    assert schema.build(schema.parse(raw)) == raw


def test_prstatus_x86_64_matches_the_independent_builder() -> None:
    regs = {name: 0x1000 + k for k, name in enumerate(B._X86_64_REGS)}
    pr = N.parse_prstatus(B.prstatus_x86_64(4242, regs), "x86_64", "<")
    assert pr is not None and pr.pr_pid == 4242
    ours = {("eflags" if k == "rflags" else k): v for k, v in _plain(pr.pr_reg).items()}
    assert ours == regs


@pytest.mark.parametrize("endian", ENDIANS)
def test_prstatus_aarch64_offsets(endian: str) -> None:
    """SPEC 2.5.2: pr_pid at 32, x0..x30, sp, pc, pstate at 112, pr_fpvalid at 384."""
    raw = bytearray(392)
    struct.pack_into(f"{endian}i", raw, 32, 77)
    struct.pack_into(f"{endian}34Q", raw, 112, *range(100, 134))
    struct.pack_into(f"{endian}i", raw, 384, 1)
    pr = N.parse_prstatus(bytes(raw), "aarch64", endian)
    assert pr is not None
    assert (pr.pr_pid, pr.pr_reg.x0, pr.pr_reg.x30, pr.pr_fpvalid) == (77, 100, 130, 1)
    assert (pr.pr_reg.sp, pr.pr_reg.pc, pr.pr_reg.pstate) == (131, 132, 133)
    cpu = N.describe_cpus([Note(b"CORE", 1, bytes(raw))], "arm64", endian)
    assert cpu == [{"cpu": 0, "pid": 77, "pc": 132, "sp": 131}]
    # libkdumpfile accepts a descriptor that ends with pr_reg; so do we
    assert N.describe_cpus([Note(b"CORE", 1, bytes(raw[:384]))], "aarch64", endian)[0]["pc"] == 132


def test_prstatus_i386_offsets() -> None:
    """SPEC 2.5.1: i386 pr_pid at 24, pr_reg (17 u32) at 72, eip = index 12, esp = 15."""
    raw = bytearray(144)
    struct.pack_into("<i", raw, 24, 9)
    struct.pack_into("<17I", raw, 72, *range(17))
    assert N.describe_cpus([Note(b"CORE", 1, bytes(raw))], "i686", "<") == [
        {"cpu": 0, "pid": 9, "pc": 12, "sp": 15}]


def _qemu_state(endian: str, size: int = 440, **fields: Any) -> bytes:
    schema = N.qemu_cpu_state_struct(endian, size >= 440)
    value = {sc.name: 0 for sc in schema.subcons}
    seg = {"selector": 0, "limit": 0, "flags": 0, "pad": 0, "base": 0}
    value.update({name: dict(seg) for name in N.QEMU_SEGMENTS}, cr=[0] * 5, version=1, size=size)
    value.update(fields)
    return schema.build(value)


def test_qemu_note_size_decides_kernel_gs_base() -> None:
    full = N.parse_qemu_cpu_state(_qemu_state("<", kernel_gs_base=7))
    assert full is not None and full.kernel_gs_base == 7
    old = N.parse_qemu_cpu_state(_qemu_state("<", 432, cr=[0, 0, 0, 0x1000, 0]))
    assert old is not None and "kernel_gs_base" not in old and old.cr[3] == 0x1000
    # a 440-byte note that declares 432 bytes: the trailing field is not trusted
    short = N.parse_qemu_cpu_state(_qemu_state("<", 432) + bytes(8))
    assert short is not None and "kernel_gs_base" not in short


def test_qemu_note_in_the_other_byte_order() -> None:
    """QEMU stores QEMUCPUState in the host's order: a big-endian host, little-endian guest."""
    desc = _qemu_state(">", cr=[0, 0, 0, 0x5000, 0x20], idt={"selector": 0, "limit": 0xFFF,
                                                             "flags": 0, "pad": 0, "base": 0xFE00})
    cpu = N.describe_cpus([Note(b"QEMU", 0, desc)], "x86_64", "<")
    assert cpu == [{"cpu": 0, "rip": 0, "cr3": 0x5000, "cr4": 0x20, "idt_base": 0xFE00,
                    "gdt_base": 0}]


def test_describe_cpus_reports_what_it_cannot_decode() -> None:
    pr = B.prstatus_x86_64(1, {"rip": 5, "rsp": 6})
    notes = [
        Note(b"CORE", 1, pr[:200]),  # short
        Note(b"CORE", 1, pr),
        Note(b"CORE", 1, pr),
        Note(b"QEMU", 0, b"\x02\0\0\0" + bytes(436)),  # version 2
        Note(b"QEMU", 0, _qemu_state("<")[:100]),  # short
        Note(b"VMCOREINFO", 0, b"OSRELEASE=x\n"),
    ]
    assert N.describe_cpus(notes, "x86_64", "<") == [
        {"cpu": 0, "raw_size": 200, "qemu_raw_size": 440},
        {"cpu": 1, "pid": 1, "pc": 5, "sp": 6, "qemu_raw_size": 100},
        {"cpu": 2, "pid": 1, "pc": 5, "sp": 6},
    ]
    assert N.describe_cpus(notes[1:2], "sparc64", "<") == [{"cpu": 0, "raw_size": 336}]
    assert N.describe_cpus([], "x86_64", "<") == []


@settings(max_examples=200, deadline=None)
@given(descs=st.lists(st.tuples(st.sampled_from([b"CORE", b"QEMU"]), st.binary(max_size=500)),
                      max_size=4),
       machine=st.sampled_from(["x86_64", "aarch64", "i386", "s390x", ""]),
       endian=st.sampled_from(ENDIANS))
def test_describe_cpus_never_raises_on_garbage(descs: list[tuple[bytes, bytes]], machine: str,
                                               endian: str) -> None:
    notes = [Note(name, 1 if name == b"CORE" else 0, desc) for name, desc in descs]
    cpus = N.describe_cpus(notes, machine, endian)
    assert len(cpus) == max(sum(n == b"CORE" for n, _ in descs), sum(n == b"QEMU" for n, _ in descs))


@pytest.mark.parametrize("name,type_,kind", [
    (b"CORE", 1, "CORE/NT_PRSTATUS"),
    (b"CORE\0", 4, "CORE/NT_TASKSTRUCT"),
    (b"CORE", 0x53494749, "CORE/NT_SIGINFO"),
    (b"CORE", 0x46494C45, "CORE/NT_FILE"),
    (b"LINUX", 0x406, "LINUX/NT_ARM_PAC_MASK"),
    (b"LINUX", 0x700, "LINUX/NT_VMCOREDD"),
    (b"LINUX", 0x202, "LINUX/NT_X86_XSTATE"),
    (b"VMCOREINFO", 0, "VMCOREINFO/VMCOREINFO"),
    (b"QEMU", 0, "QEMU/QEMUCPUState"),
    (b"ERASEINFO", 0, "ERASEINFO/ERASEINFO"),
    (b"Xen", 0x1000001, "Xen/XEN_ELFNOTE_CRASH_INFO"),
    (b"Xen", 0x1000002, "Xen/XEN_ELFNOTE_CRASH_REGS"),
    (b"Xen", 0x2000001, "Xen/XEN_ELFNOTE_DUMPCORE_HEADER"),
    (b".note.Xen", 0x2000003, ".note.Xen/XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION"),
    (b"VMCOREINFO_XEN", 0, "VMCOREINFO_XEN/VMCOREINFO_XEN"),
    (b"CORE", 0x99, "CORE/type 0x99"),
    (b"QEMU", 1, "QEMU/type 0x1"),
    (b"GNU", 3, "GNU/type 0x3"),
    (b"\xff", 0, "\xff/type 0x0"),
])
def test_note_kind(name: bytes, type_: int, kind: str) -> None:
    assert N.note_kind(name, type_) == kind


# --------------------------------------------------------------------------------------------
# the real corpus


def _cpus(rel: str) -> tuple[list[dict[str, Any]], Any]:
    with open_dump(str(need_corpus_file(rel))) as r:
        return N.describe_cpus(r.info.notes, r.info.machine, r.info.endian), r.info


class Kallsyms:
    """The guest's ``/proc/kallsyms`` of the same boot (addresses include its KASLR offset)."""

    def __init__(self, rel: str) -> None:
        need_corpus()
        text_syms = []
        for line in gzip.decompress(corpus_bytes(rel)).decode().splitlines():
            addr, kind, name = line.split()[:3]
            if kind in "Tt":
                text_syms.append((int(addr, 16), name))
        text_syms.sort()
        self.addrs = [a for a, _ in text_syms]
        self.names = [n for _, n in text_syms]

    def address(self, name: str) -> int:
        return self.addrs[self.names.index(name)]

    def function(self, pc: int) -> str:
        return self.names[bisect.bisect_right(self.addrs, pc) - 1]


def test_kdump_vmcore_cpus_are_idle_and_the_crashing_init() -> None:
    cpus, info = _cpus(KDUMP_ELF)
    assert [c["pid"] for c in cpus] == [0, 1]  # MANIFEST: the crashed thread is pid 1, init
    vi = info.vmcoreinfo
    stext = vi.symbol("_stext")
    for c in cpus:
        assert stext <= c["pc"] < stext + vi.number("KERNEL_IMAGE_SIZE")
    syms = Kallsyms("x86_64-kdump-320m/guest-info/crash/kallsyms.gz")
    assert syms.address("_stext") == stext  # the same boot
    # CPU 1 saved its registers in __crash_kexec (crash_setup_regs), CPU 0 was halted (NMI)
    assert [syms.function(c["pc"]) for c in cpus] == ["native_safe_halt", "__crash_kexec"]
    assert "qemu_raw_size" not in cpus[0] and "cr3" not in cpus[0]


@pytest.mark.parametrize("rel", [QEMU_ELF, QEMU_KDUMP])
def test_qemu_dump_cpu_state(rel: str) -> None:
    cpus, info = _cpus(rel)
    assert [c["pid"] for c in cpus] == [1, 2]  # QEMU: vCPU index + 1
    syms = Kallsyms("x86_64-qemu-256m/guest-info/idle/kallsyms.gz")
    assert syms.address("_stext") == info.vmcoreinfo.symbol("_stext")
    for c in cpus:
        assert c["rip"] == c["pc"]  # both notes are filled from the same env->eip
        assert syms.function(c["pc"]) == "native_safe_halt"  # an idle guest
        assert c["cr3"] % 4096 == 0
        assert c["idt_base"] >> 39 == 0xFFFFFE0000000000 >> 39  # cpu_entry_area (PGD slot 508)
        assert c["gdt_base"] >> 39 == 0xFFFFFE0000000000 >> 39
        assert c["cr4"] & (1 << 5)  # CR4.PAE: long mode
    kinds = [N.note_kind(n.name, n.type) for n in info.notes]
    assert kinds.count("QEMU/QEMUCPUState") == 2
    assert {len(n.desc) for n in info.notes if n.name == b"QEMU"} == {440}


def test_qemu_dump_without_vmcoreinfo_still_has_its_cpu_state() -> None:
    """The notes need no VMCOREINFO: the pc resolves in that boot's own kallsyms."""
    cpus, info = _cpus("x86_64-qemu-256m-novmcoreinfo/qemu-elf.vmcore")
    assert info.vmcoreinfo is None
    syms = Kallsyms("x86_64-qemu-256m-novmcoreinfo/guest-info/idle/kallsyms.gz")
    assert [c["pid"] for c in cpus] == [1, 2]
    assert [syms.function(c["pc"]) for c in cpus] == ["native_safe_halt"] * 2
    assert all(c["cr3"] % 4096 == 0 and c["idt_base"] == 0xFFFFFE0000000000 for c in cpus)


def test_qemu_cr3_is_the_same_in_both_dumps_and_is_a_page_table() -> None:
    """Both QEMU dumps were taken of the same stopped guest; CR3 points at a PGD whose kernel
    half is the kernel's own (init_top_pgt, located with VMCOREINFO)."""
    elf, _ = _cpus(QEMU_ELF)
    kd, _ = _cpus(QEMU_KDUMP)
    assert [(c["cr3"], c["idt_base"], c["gdt_base"]) for c in elf] == \
        [(c["cr3"], c["idt_base"], c["gdt_base"]) for c in kd]
    with open_dump(str(need_corpus_file(QEMU_ELF))) as r:
        vi = r.info.vmcoreinfo
        start_kernel_map = 0xFFFFFFFF80000000
        top = (vi.symbol("init_top_pgt") - start_kernel_map + vi.number("phys_base")) % (1 << 64)
        kernel_half = r.read(top, 4096)[2048:]
        assert kernel_half != bytes(2048)
        for c in elf:
            assert r.read(c["cr3"] & ~0xFFF, 4096)[2048:] == kernel_half


LKDF_CPUS = r"""
import json, sys, kdumpfile
k = kdumpfile.kdumpfile(sys.argv[1])
out = []
for n in range(k.attr["cpu.number"]):
    d = k.attr["cpu"][str(n)]
    out.append({"pid": d["pid"], "reg": {r: d["reg"][r] for r in d["reg"].keys()}})
print(json.dumps(out))
"""


@pytest.mark.peer
@pytest.mark.parametrize("rel", [KDUMP_ELF, QEMU_ELF])
def test_prstatus_registers_match_libkdumpfile(rel: str) -> None:
    python = require_tool("libkdumpfile")
    path = need_corpus_file(rel)
    proc = subprocess.run([str(python), "-I", "-c", LKDF_CPUS, str(path)], capture_output=True,
                          timeout=HANG_S, check=True)
    theirs = json.loads(proc.stdout)
    with open_dump(str(path)) as r:
        prs = [N.parse_prstatus(n.desc, "x86_64", "<") for n in r.info.notes
               if n.name == b"CORE" and n.type == N.NT_PRSTATUS]
    assert len(theirs) == len(prs) == 2
    for lk, pr in zip(theirs, prs, strict=True):
        assert pr is not None and lk["pid"] == pr.pr_pid
        assert lk["reg"] == _plain(pr.pr_reg)


# --------------------------------------------------------------------------------------------
# kdumptool info


def test_info_json_has_the_qemu_cpu_state() -> None:
    path = need_corpus_file(QEMU_ELF)
    proc = kdumptool("info", "--json", path)
    assert proc.returncode == 0, proc.stderr.decode()
    s = json.loads(proc.stdout)
    cpus, _ = _cpus(QEMU_ELF)
    assert s["notes"]["QEMU/QEMUCPUState"] == 2
    assert [c["pid"] for c in s["cpus_state"]] == [1, 2]
    assert [int(c["cr3"], 16) for c in s["cpus_state"]] == [c["cr3"] for c in cpus]
    assert all(c["idt_base"] == "0xfffffe0000000000" for c in s["cpus_state"])


def test_info_text_shows_each_cpu_of_the_bundled_dump() -> None:
    """The bundled file is makedumpfile -c -d 31 of the kdump vmcore: the same crash notes."""
    proc = kdumptool("info", BUNDLED)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    cpu_lines = [line for line in lines if line.startswith("cpu ")]
    assert cpu_lines == [
        "cpu 0:         pid 0, pc 0xffffffff98a592eb, sp 0xffffffff99a03e98",
        "cpu 1:         pid 1, pc 0xffffffff981741ba, sp 0xffffcb1d40013cb8",
    ]
    s = json.loads(kdumptool("info", "--json", BUNDLED).stdout)
    assert s["cpus_state"][1] == {"cpu": 1, "pid": 1, "pc": "0xffffffff981741ba",
                                  "sp": "0xffffcb1d40013cb8"}


def test_bundled_dump_is_the_kdump_vmcore() -> None:
    """The CPU state of the bundled file equals that of the vmcore it was made from."""
    cpus, _ = _cpus(KDUMP_ELF)
    with open_dump(str(BUNDLED)) as r:
        assert N.describe_cpus(r.info.notes, r.info.machine, r.info.endian) == cpus
