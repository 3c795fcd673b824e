"""Real arm64 dumps (corpus/aarch64-kdump-384m): the Debian 12 arm64 kernel (4 KiB pages,
48-bit VA, KASLR) crashed in QEMU TCG; /proc/vmcore of its capture kernel, Debian's arm64
makedumpfile run inside that capture kernel, and QEMU's dump-guest-memory ELF of the same
boot taken before the crash.  The guest's own uname, /proc/kallsyms and dmesg, and
makedumpfile's outputs, are the judges.  See corpus/aarch64-kdump-384m/MANIFEST.md.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from ours import assert_peers_read, kdumptool, our_digests
from samples import dump_entry, need_sample, sample_manifest, sample_path
from test_filter import bitmap2, kept_by_selection

from kdumptool.dmesg import dmesg_text
from kdumptool.kernel.session import open_kernel
from kdumptool.open import open_dumps
from kdumptool.pipeline import Selection
from kdumptool.report import exclusion_report
from kdumptool.vmcoreinfo import VmcoreInfo
from kdumptool.vtop import translator_for

SET = "aarch64-kdump-384m"
#: every dump of the set: the kdump vmcore, makedumpfile's two -d 31 outputs, QEMU's ELF
DUMPS = ["vmcore.elf", "d31.kdump", "E-d31.elf", "qemu-elf.vmcore"]
#: makedumpfile at the single levels (the same arm64 binary, on the host: arm64-derive.sh)
LEVELS = [1, 2, 4, 8, 16]
FORMATS = {"vmcore.elf": "elf64", "d31.kdump": "kdump", "E-d31.elf": "elf64", "qemu-elf.vmcore": "elf64"}
#: dumps taken after the crash (the kdump path), whose log ends with the panic
KDUMP_DUMPS = ["vmcore.elf", "d31.kdump", "E-d31.elf"]


def dump(name: str) -> Path:
    return need_sample(SET, name)


def text(rel: str) -> str:
    return sample_path(SET, rel).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def guest_kallsyms() -> tuple[str, ...]:
    """The guest's /proc/kallsyms, read as root in the crashed kernel before the crash."""
    with gzip.open(sample_path(SET, "guest-info/kallsyms.gz"), "rt") as f:
        return tuple(f.read().splitlines())


def guest_symbol(name: str) -> int:
    return next(int(line.split()[0], 16) for line in guest_kallsyms() if line.split()[2] == name)


def test_manifest_names_every_dump_with_its_recipe() -> None:
    m = sample_manifest(SET)
    assert sorted(d["name"] for d in m["dumps"]) == sorted(DUMPS + [f"d{lv}.kdump" for lv in LEVELS])
    assert all(d["made_by"] for d in m["dumps"])
    assert (sample_path(SET, "../recipes/arm64-kdump.sh")).is_file()


@pytest.mark.parametrize("name", DUMPS)
def test_info_identifies_the_arm64_kernel(name: str) -> None:
    proc = kdumptool("info", "--json", dump(name))
    assert proc.returncode == 0, proc.stderr.decode()
    info = json.loads(proc.stdout)
    assert info["format"] == FORMATS[name]
    assert (info["arch"], info["byte_order"], info["word_size"], info["page_size"]) == \
        ("aarch64", "little", 8, 4096)
    assert info["kernel"]["release"] == text("guest-info/uname-r.txt").strip() == "6.1.0-56-arm64"
    assert info["cpus"] == 2
    # every vCPU's pc is kernel text of this boot (KASLR'd addresses from the guest's kallsyms)
    stext, etext = guest_symbol("_stext"), guest_symbol("_etext")
    assert all(stext <= int(c["pc"], 16) < etext for c in info["cpus_state"])


@pytest.mark.parametrize("name", DUMPS)
def test_vtop_of_init_uts_ns_and_stext(name: str) -> None:
    """The page-table walk (swapper_pg_dir, 4 levels) agrees with the kernel-image rule
    (vaddr - kimage_voffset), and init_uts_ns reads as the guest's uname."""
    with open_dumps([str(dump(name))], strict=False) as reader:
        vmci = reader.info.vmcoreinfo
        assert vmci is not None
        xlat = translator_for(reader)
        assert xlat.form.name == "aarch64 4K granule, 48-bit VA, 4 levels"
        assert vmci.get("NUMBER(TCR_EL1_T1SZ)") == "0x10"  # the kernel prints it as hex
        uts = vmci.symbol("init_uts_ns")
        for vaddr in (guest_symbol("_stext"), uts):
            assert xlat.translate(vaddr) == xlat.image_to_phys(vaddr)
        name_at = xlat.translate(uts + vmci.offset("uts_namespace.name"))
        fields = [reader.read(name_at + 65 * i, 65).split(b"\0")[0].decode() for i in range(6)]
    uname_a = text("guest-info/uname-a.txt").split()
    assert fields[0] == "Linux" and fields[2] == uname_a[2] and fields[4] == "aarch64"


@pytest.mark.parametrize("name", KDUMP_DUMPS)
def test_dmesg_equals_makedumpfile_in_the_capture_kernel(name: str) -> None:
    with open_dumps([str(dump(name))]) as reader:
        ours = dmesg_text(reader).decode()
    assert ours == text("dmesg.txt")
    assert "Kernel panic - not syncing: sysrq triggered crash" in ours


def test_dmesg_of_the_qemu_dump_is_the_log_before_the_crash() -> None:
    """QEMU dumped the running guest 40 s (guest time) before it crashed: its log is the
    guest's own dmesg (read just before) plus what came after, and a prefix of the kdump's."""
    with open_dumps([str(dump("qemu-elf.vmcore"))]) as reader:
        ours = dmesg_text(reader).decode().splitlines()
    before = text("guest-info/dmesg-precrash.txt").splitlines()
    after = text("dmesg.txt").splitlines()
    assert ours[:len(before)] == before
    assert ours == after[:len(ours)] and len(after) > len(ours)


def test_filtering_equals_makedumpfile_on_the_arm64_vmcore() -> None:
    """Level 31 of /proc/vmcore keeps exactly the pages Debian's arm64 makedumpfile kept
    (both of its outputs), and counts each excluded class as it printed."""
    ours = kept_by_selection(dump("vmcore.elf"), 31)
    theirs = bitmap2(dump("d31.kdump"))
    assert np.array_equal(ours, theirs)
    report = sample_manifest(SET)["makedumpfile_report_d31"]
    with open_dumps([str(dump("vmcore.elf"))]) as reader:
        counts = exclusion_report(Selection(reader, 31))
    assert counts["zero"] == report["Pages filled with zero"]
    assert counts["cache"] == report["Non-private cache pages"]
    assert counts["cache_private"] == report["Private cache pages"]
    assert counts["user"] == report["User process data pages"]
    assert counts["free"] == report["Free pages"]
    assert counts["remaining"] == int(theirs.sum())


@pytest.mark.parametrize("level", LEVELS)
def test_filtering_equals_makedumpfile_at_each_level(level: int) -> None:
    """Zero pages (1), page cache (2, 4), user data (8), free pages (16) of the arm64 vmcore:
    the same pages as Debian's arm64 makedumpfile keeps at that level."""
    ours = kept_by_selection(dump("vmcore.elf"), level)
    theirs = bitmap2(dump(f"d{level}.kdump"))
    assert np.array_equal(ours, theirs)
    assert int(theirs.sum()) < 65536 or level == 1  # every level but 1 drops some RAM here


def test_kept_pages_hold_the_vmcore_bytes() -> None:
    """Every page makedumpfile kept (kdump and ELF output) is the vmcore's page, byte for byte."""
    whole = our_digests(dump("vmcore.elf"))
    for name in ("d31.kdump", "E-d31.elf"):
        kept = our_digests(dump(name))
        assert len(kept) > 10000
        assert {pfn: whole[pfn] for pfn in kept} == kept


def test_libkdumpfile_reads_the_makedumpfile_output_as_we_do() -> None:
    path = dump("d31.kdump")
    assert_peers_read(path, our_digests(path), peers=("libkdumpfile",))


@pytest.mark.parametrize("name", ["vmcore.elf", "d31.kdump", "qemu-elf.vmcore"])
def test_symbols_equal_the_guest_kallsyms(name: str) -> None:
    guest = [line for line in guest_kallsyms() if "[" not in line]
    with open_kernel([str(dump(name))]) as kernel:
        ours = [s.kallsyms_line() for s in kernel.core_symbols]
    assert len(ours) == len(guest) > 40000
    assert ours == guest


def test_vmcoreinfo_text_is_the_notes() -> None:
    with open_dumps([str(dump("vmcore.elf"))]) as reader:
        assert reader.info.vmcoreinfo is not None
        assert reader.info.vmcoreinfo.raw.decode() == text("vmcoreinfo.txt")
    v = VmcoreInfo.parse(text("vmcoreinfo.txt").encode())
    assert v.number("kimage_voffset") == int(v.require("NUMBER(kimage_voffset)"), 16)
    assert dump_entry(SET, "vmcore.elf")["patch_from"] is None
