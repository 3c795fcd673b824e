"""VMCOREINFO: parsing, typed accessors, -i to supply it, and recovery from memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from ours import kdumptool, our_digests
from peers import drgn_open_ok, require_tool

from corpus import corpus_text, need_corpus_file
from kdumptool.errors import VmcoreInfoKeyError
from kdumptool.open import open_dumps
from kdumptool.scan import scan_vmcoreinfo
from kdumptool.vmcoreinfo import VmcoreInfo

NOVMCI = "x86_64-qemu-256m-novmcoreinfo/qemu-elf.vmcore"


def test_typed_accessors_and_missing_keys() -> None:
    v = VmcoreInfo.parse(corpus_text("x86_64-kdump-320m/vmcoreinfo.txt").encode())
    assert v.osrelease == "6.1.0-56-amd64" and v.page_size == 4096
    assert v.symbol("swapper_pg_dir") == 0xFFFFFFFF99A10000
    assert v.number("phys_base") == -245366784  # decimal, signed
    assert v.size("page") == 64 and v.offset("page._mapcount") == 48
    assert v.length("zone.free_area") == 11 and v.kernel_offset == 0x17000000
    assert v.crash_time == 1795321541
    with pytest.raises(VmcoreInfoKeyError) as info:
        v.number("PG_buddy")
    assert str(info.value) == "VMCOREINFO has no NUMBER(PG_buddy)"


def test_number_reads_the_hex_values_arm64_prints() -> None:
    """arm64 prints NUMBER(kimage_voffset), NUMBER(PHYS_OFFSET), NUMBER(TCR_EL1_T1SZ) and
    NUMBER(KERNELPACMASK) as 0x%llx (values from the real arm64 dump in corpus/); other
    NUMBERs are decimal, possibly negative."""
    v = VmcoreInfo.parse(b"NUMBER(kimage_voffset)=0xffffa42695e00000\nNUMBER(TCR_EL1_T1SZ)=0x10\n"
                         b"NUMBER(VA_BITS)=48\nNUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\n")
    assert v.number("kimage_voffset") == 0xFFFFA42695E00000
    assert v.number("TCR_EL1_T1SZ") == 16
    assert v.number("VA_BITS") == 48
    assert v.number("PAGE_BUDDY_MAPCOUNT_VALUE") == -129


@pytest.mark.parametrize("rel", ["x86_64-kdump-320m/vmcore.elf", "x86_64-qemu-256m/qemu-elf.vmcore"])
def test_scan_finds_the_text_the_note_carries(rel: str) -> None:
    with open_dumps([str(need_corpus_file(rel))]) as reader:
        found = scan_vmcoreinfo(reader)
        note = reader.info.vmcoreinfo
    assert found and note is not None
    # at a crash the kernel appends CRASHTIME to a safe copy (in the crash kernel's reserved
    # memory, not in the dump); the page in memory has everything else
    want = {k: v for k, v in note.lines.items() if k != "CRASHTIME"}
    assert any(f.vmcoreinfo.lines == want for f in found)


def test_dump_without_vmcoreinfo_is_repaired_with_scan_and_i(tmp_path: Path) -> None:
    """drgn refuses QEMU's dump made without -device vmcoreinfo; the VMCOREINFO found in the
    guest's memory, given back with -i, makes a file drgn opens and info names."""
    src = need_corpus_file(NOVMCI)
    assert b"vmcoreinfo:    no" in kdumptool("info", src).stdout
    scanned = kdumptool("vmcoreinfo", "--scan", src)
    assert scanned.returncode == 0, scanned.stderr.decode()
    text = tmp_path / "vmcoreinfo.txt"
    text.write_bytes(scanned.stdout)
    assert b"OSRELEASE=6.1.0-56-amd64\n" in scanned.stdout
    assert kdumptool("vmcoreinfo", src).returncode == 1
    out_k, out_e = tmp_path / "o.kdump", tmp_path / "o.elf"
    for args, out in ((["-c"], out_k), (["-E"], out_e)):
        proc = kdumptool("convert", "-q", *args, "-i", text, src, out)
        assert proc.returncode == 0, proc.stderr.decode()
        info = kdumptool("info", out).stdout.decode()
        assert "kernel:        6.1.0-56-amd64" in info
        assert "version:       #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2" in info
    assert our_digests(out_k) == our_digests(src)
    require_tool("drgn")
    assert not drgn_open_ok(src, isolate=True)[0]
    for out in (out_k, out_e):
        ok, release = drgn_open_ok(out, isolate=True)
        assert ok and release == "6.1.0-56-amd64", release


def test_i_rejects_a_file_that_is_not_vmcoreinfo(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("hello\n")
    proc = kdumptool("info", "-i", bad, need_corpus_file(NOVMCI))
    assert proc.returncode == 1 and b"no OSRELEASE" in proc.stderr
