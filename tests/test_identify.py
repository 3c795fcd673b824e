"""Which kernel is this? Identified from every source a dump holds, VMCOREINFO or not."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from ours import kdumptool

from corpus import corpus_text, dump_entry, need_corpus_file

KD = "x86_64-kdump-320m"
DUMPS = [f"{KD}/vmcore.elf", f"{KD}/derived/c-d31.kdump", f"{KD}/derived/E-d31.elf",
         f"{KD}/derived/F-c-d31.flat", f"{KD}/derived/l-d0.kdump", "x86_64-qemu-256m/qemu-elf.vmcore",
         "x86_64-qemu-256m/qemu-kdump-zlib.vmcore"]


def info(path: Path, *args: str) -> dict:
    proc = kdumptool("info", "--json", *args, path)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


@pytest.mark.parametrize("rel", DUMPS)
def test_release_of_every_real_dump(rel: str) -> None:
    s = info(need_corpus_file(rel))
    assert s["kernel"]["release"] == dump_entry(rel)["osrelease_in_file"]
    assert s["arch"] == "x86_64"


def _strip_vmcoreinfo(data: bytearray) -> None:
    """Rename every VMCOREINFO note so that no reader finds it."""
    at = data.find(b"VMCOREINFO\0")
    while at >= 0:
        data[at:at + 10] = b"VMCOREINFX"
        at = data.find(b"VMCOREINFO\0", at + 1)


def test_elf_without_vmcoreinfo_is_identified_from_memory(tmp_path: Path) -> None:
    data = bytearray(need_corpus_file(f"{KD}/vmcore.elf").read_bytes())
    _strip_vmcoreinfo(data)
    path = tmp_path / "novmci.elf"
    path.write_bytes(bytes(data))
    s = info(path)
    assert not s["vmcoreinfo"]["present"]
    assert s["kernel"]["release"] == "6.1.0-56-amd64"
    assert s["kernel"]["release_source"] in ("banner in memory", "utsname in memory")
    sources = {e["source"] for e in info(path, "--deep")["identification"]}
    assert {"banner in memory", "utsname in memory"} <= sources


def test_kdump_without_vmcoreinfo_or_utsname_finds_release_and_arch(tmp_path: Path) -> None:
    data = bytearray(need_corpus_file(f"{KD}/derived/c-d31.kdump").read_bytes())
    _strip_vmcoreinfo(data)
    data[4096 + 40:4096 + 48] = struct.pack("<Q", 0)  # size_vmcoreinfo
    data[12:12 + 6 * 65] = bytes(6 * 65)  # the header's utsname, machine included
    path = tmp_path / "bare.kdump"
    path.write_bytes(bytes(data))
    s = info(path)
    assert s["kernel"]["release"] == "6.1.0-56-amd64"
    assert s["arch"] == "x86_64"  # no header names it: found in memory
    assert s["kernel"]["utsname_source"] == "utsname in memory"  # not "vmcoreinfo": it has none
    assert s["kernel"]["utsname_paddr"] == next(e["paddr"] for e in s["identification"]
                                                if e["source"] == "utsname in memory")


@pytest.mark.parametrize("release,source", [("6.1.0", "header utsname"), ("", None)])
def test_utsname_source_of_a_dump_without_vmcoreinfo(tmp_path: Path, release: str,
                                                     source: str | None) -> None:
    """No VMCOREINFO, no utsname in memory: the source is the header's utsname (which gives
    release and machine, not the version) or, when it is empty too, null; never "vmcoreinfo"."""
    import builders as B

    path = tmp_path / "bare.kdump"
    path.write_bytes(B.build_kdump(B.make_pages([(0, 64)]), release=release, version="",
                                   sysname="Linux" if release else "", machine="x86_64"))
    s = info(path)
    assert s["vmcoreinfo"]["present"] is False
    assert s["kernel"]["version"] is None and s["kernel"]["utsname_source"] == source


def test_qemu_dump_made_without_vmcoreinfo_is_identified() -> None:
    s = info(need_corpus_file("x86_64-qemu-256m-novmcoreinfo/qemu-elf.vmcore"))
    assert s["kernel"]["release"] == "6.1.0-56-amd64"
    assert s["kernel"]["release_source"] != "vmcoreinfo"


# --------------------------------------------------------------------------------------------
# CPU state: CR3 -> the kernel image mapping -> KASLR offset (no VMCOREINFO needed)


def _kallsyms_text(rel_set: str) -> int:
    import gzip

    from corpus import corpus_path

    kallsyms = corpus_path(f"{rel_set}/guest-info/idle/kallsyms.gz")
    for line in gzip.decompress(kallsyms.read_bytes()).decode().splitlines():
        addr, _, name = line.split()[:3]
        if name == "_text":
            return int(addr, 16)
    raise AssertionError("no _text in kallsyms")


@pytest.mark.parametrize("rel", ["x86_64-qemu-256m/qemu-elf.vmcore",
                                 "x86_64-qemu-256m/qemu-kdump-zlib.vmcore"])
def test_kaslr_offset_from_cr3_matches_vmcoreinfo(rel: str) -> None:
    s = info(need_corpus_file(rel))
    cpu = next(e for e in s["identification"] if e["source"] == "QEMU CPU state")
    vmci = dict(line.split("=", 1) for line in corpus_text("x86_64-qemu-256m/vmcoreinfo.txt").splitlines()
                if "=" in line)
    assert int(cpu["kaslr_offset"], 16) == int(vmci["KERNELOFFSET"], 16)
    assert int(cpu["phys_base"], 16) == int(vmci["NUMBER(phys_base)"]) % (1 << 64)
    assert int(cpu["kernel_text"], 16) == int(vmci["SYMBOL(_stext)"], 16)
    assert cpu["paging_levels"] == 4


def test_kaslr_offset_of_dump_without_vmcoreinfo_matches_kallsyms() -> None:
    """The guest's own /proc/kallsyms (taken before the dump) names _text: the walk finds it."""
    rel_set = "x86_64-qemu-256m-novmcoreinfo"
    s = info(need_corpus_file(f"{rel_set}/qemu-elf.vmcore"))
    cpu = next(e for e in s["identification"] if e["source"] == "QEMU CPU state")
    text = _kallsyms_text(rel_set)
    assert int(cpu["kernel_text"], 16) == text
    assert int(cpu["kaslr_offset"], 16) == text - 0xFFFFFFFF81000000
    out = kdumptool("info", need_corpus_file(f"{rel_set}/qemu-elf.vmcore")).stdout.decode()
    assert f"KASLR offset {cpu['kaslr_offset']}" in out


def test_cr3_walk_tolerates_garbage() -> None:
    from kdumptool.open import open_dumps
    from kdumptool.vtop.kaslr import kernel_image_from_cr3

    reader = open_dumps([str(need_corpus_file("x86_64-qemu-256m/qemu-elf.vmcore"))])
    for cr3 in (0, 0x1000, 1 << 51, (1 << 64) - 1, 0xF702000 | (1 << 12)):
        image = kernel_image_from_cr3(reader, cr3)
        assert image is None or image.text >= 0xFFFFFFFF80000000
    # with PTI the user copy (bit 12) and the PCID bits are masked off: the same answer
    a = kernel_image_from_cr3(reader, 0xF702000)
    b = kernel_image_from_cr3(reader, 0xF702000 | (1 << 12) | 0x5 | (1 << 63))
    assert a is not None and a == dataclass_replace(b, cr3=a.cr3)


def dataclass_replace(obj: object, **kw: object) -> object:
    import dataclasses

    return dataclasses.replace(obj, **kw)  # type: ignore[type-var]


# --------------------------------------------------------------------------------------------
# the kernel's own configuration (IKCFG), on an image made of real pages plus the blob


def _config_text() -> bytes:
    lines = ["#", "# Automatically generated file; DO NOT EDIT.",
             "# Linux/x86 6.1.192 Kernel Configuration", "#",
             'CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"',
             "CONFIG_X86_64=y", "CONFIG_X86=y", "CONFIG_PGTABLE_LEVELS=5", "CONFIG_X86_5LEVEL=y",
             "CONFIG_RANDOMIZE_BASE=y", "CONFIG_SPARSEMEM_VMEMMAP=y", 'CONFIG_LOCALVERSION=""',
             "# CONFIG_FLATMEM is not set"]
    lines += [f"CONFIG_FILLER_{i}=m" for i in range(4000)]  # a realistic size (~80 KiB)
    return ("\n".join(lines) + "\n").encode()


def _image_with_config(tmp_path: Path, at: int, *, corrupt: bool = False) -> Path:
    """ELF of 64 real pages of the kdump vmcore with the IKCFG blob written at byte ``at``."""
    import gzip

    from builders import build_elf

    from kdumptool.open import open_dumps

    reader = open_dumps([str(need_corpus_file(f"{KD}/vmcore.elf"))])
    blob = b"IKCFG_ST" + gzip.compress(_config_text()) + b"IKCFG_ED"
    if corrupt:
        blob = blob[:40] + bytes(64) + blob[104:]
    pages = {}
    first = 0x1000
    mem = bytearray(reader.read(first * 4096, 2048 * 4096))
    mem[at:at + len(blob)] = blob
    for i in range(2048):
        pages[first + i] = bytes(mem[i * 4096:(i + 1) * 4096])
    path = tmp_path / "ikcfg.elf"
    path.write_bytes(build_elf(pages))
    return path


@pytest.mark.parametrize("at", [4096 * 5 + 100, 4 * 1024 * 1024 - 3000])  # inside a window; across two
def test_kernel_config_in_memory_is_found(tmp_path: Path, at: int) -> None:
    path = _image_with_config(tmp_path, at)
    s = info(path, "--deep")
    cfg = next(e for e in s["identification"] if e["source"] == "kernel config in memory")
    assert cfg["machine"] == "x86_64"
    assert cfg["config_version"] == "6.1.192"
    assert cfg["options"]["CONFIG_PGTABLE_LEVELS"] == "5"
    assert cfg["options"]["CONFIG_CC_VERSION_TEXT"].startswith("gcc-12")
    assert cfg["option_count"] == 4008
    assert int(cfg["paddr"], 16) == 0x1000 * 4096 + at
    proc = kdumptool("ikconfig", path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _config_text()


def test_damaged_kernel_config_is_not_reported(tmp_path: Path) -> None:
    path = _image_with_config(tmp_path, 8192, corrupt=True)
    s = info(path, "--deep")
    assert not [e for e in s["identification"] if e["source"] == "kernel config in memory"]
    proc = kdumptool("ikconfig", path)
    assert proc.returncode == 1
    assert b"no IKCFG_ST configuration blob" in proc.stderr


@pytest.mark.parametrize("rel", [f"{KD}/derived/c-d31.kdump", "x86_64-qemu-256m/qemu-elf.vmcore",
                                 "x86_64-kdump-320m-6.12/vmcore.elf"])
def test_deep_info_shows_the_kernels_own_utsname(rel: str) -> None:
    """The scan finds a stale utsname first ("# SMP ...": Linux 6.1+ keeps the __weak copy of
    init/version.c); init_uts_ns, at SYMBOL(init_uts_ns), is what the kernel (and
    libkdumpfile) says: "#1 SMP ...". Each line says which copy it shows."""
    from kdumptool.open import open_dump
    from kdumptool.vmcoreinfo import VmcoreInfo

    path = need_corpus_file(rel)
    version = dump_entry(rel)["libkdumpfile"]["linux.uts.version"]
    s = info(path, "--deep")
    assert s["kernel"]["version"] == version
    assert s["kernel"]["utsname_source"] == "init_uts_ns"
    items = {e["source"]: e for e in s["identification"]}
    kernel = items["init_uts_ns"]
    vmci = VmcoreInfo.parse(corpus_text(f"{rel.split('/')[0]}/vmcoreinfo.txt").encode())
    assert int(kernel["vaddr"], 16) == vmci.symbol("init_uts_ns") + vmci.offset("uts_namespace.name")
    assert kernel["version"] == version and kernel["paddr"] == s["kernel"]["utsname_paddr"]
    stale = items["utsname in memory"]
    assert stale["version"] != version and stale["copy"] == "another copy, not init_uts_ns"
    with open_dump(str(path)) as reader:  # each address holds what the item quotes
        for item in (kernel, stale):
            raw = reader.read(int(item["paddr"], 16) + 3 * 65, 65)
            assert raw.split(b"\0", 1)[0].decode() == item["version"]
    text = kdumptool("info", "--deep", path).stdout.decode().splitlines()
    assert f"version:       {version} (from init_uts_ns at {kernel['paddr']})" in text
    assert any(line.endswith(f"utsname in memory at {stale['paddr']} (another copy, not init_uts_ns): "
                             f"release {stale['release']}, version {stale['version']}, machine x86_64")
               for line in text)
