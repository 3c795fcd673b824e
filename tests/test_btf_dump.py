"""BTF read from the dumps' memory: byte for byte the guest's /sys/kernel/btf files (vmlinux and
every module), by symbols and by scanning, in every format of the corpus; the btf_modules walk
on hostile memory; the ``kdumptool btf`` command, and bpftool reading what it writes."""

from __future__ import annotations

import functools
import gzip
import json
import struct
import subprocess
from pathlib import Path

import pytest
from ours import kdumptool
from test_btf import GUEST_BTF, MODULES, bpftool_path, guest_blob, guest_vmlinux

from corpus import CORPUS_ROOT, need_corpus_file
from kdumptool.errors import BtfError, KdumpToolError, KernelDataError
from kdumptool.kernel import btf_dump
from kdumptool.kernel.btf import Btf
from kdumptool.kernel.btf_dump import (
    module_btf_blobs,
    read_kernel_btf,
    scan_vmlinux_btf,
    vmlinux_btf_blob,
)
from kdumptool.open import open_dumps

SET612 = "x86_64-kdump-320m-6.12"
DUMPS612 = (f"{SET612}/vmcore.elf", f"{SET612}/derived/c-d31.kdump", f"{SET612}/derived/F-c-d31.flat")
#: the 6.1 sets: one kernel build, so one vmlinux BTF, found by scanning in every format
DUMPS61 = ("x86_64-kdump-320m/vmcore.elf", "x86_64-qemu-256m/qemu-migrate.qevm",
           "x86_64-qemu-256m/qemu-kdump-zlib.vmcore", "x86_64-qemu-256m-novmcoreinfo/qemu-elf.vmcore")


@functools.cache
def guest_symbols(set_name: str) -> dict[str, int]:
    """The guest's own /proc/kallsyms (core kernel symbols; the first of a duplicated name)."""
    path = next((CORPUS_ROOT / set_name / "guest-info").glob("*/kallsyms.gz"))
    table: dict[str, int] = {}
    for line in gzip.open(path, "rt"):
        fields = line.split()
        if len(fields) == 3:
            table.setdefault(fields[2], int(fields[0], 16))
    return table


@pytest.mark.corpus
@pytest.mark.parametrize("rel", DUMPS612)
def test_blobs_from_the_dump_equal_the_guests(rel: str) -> None:
    symbols = guest_symbols(SET612)
    with open_dumps([str(need_corpus_file(rel))]) as reader:
        kbtf = read_kernel_btf(reader, symbol=symbols.get)
    assert (kbtf.source, kbtf.address) == ("__start_BTF", symbols["__start_BTF"])
    assert kbtf.vmlinux.data == guest_blob("vmlinux")
    assert kbtf.modules is not None and sorted(m.name for m in kbtf.modules) == sorted(MODULES)
    lsmod = (GUEST_BTF.parent / "lsmod.txt").read_text().split("\n")[1:]
    assert sorted(m.name for m in kbtf.modules) == sorted(line.split()[0] for line in lsmod if line)
    for m in kbtf.modules:
        assert m.data == guest_blob(m.name), m.name
        assert m.parse(kbtf.vmlinux).start_id == kbtf.vmlinux.nr_types + 1
    summary = kbtf.as_dict()
    assert summary["vmlinux"] == {"source": "__start_BTF", "address": hex(symbols["__start_BTF"]),
                                  "bytes": 4919552, "types": 112806, "endian": "little"}
    assert {m["name"]: m["types"] for m in summary["modules"]}["ext4"] == 3074  # type: ignore[index]


@pytest.mark.corpus
def test_without_a_lookup_the_dumps_own_symbols_are_used() -> None:
    """Called with no symbol lookup, the dump's own kallsyms find ``__start_BTF`` and the
    module list (not only the memory scan, which cannot see modules)."""
    symbols = guest_symbols(SET612)
    with open_dumps([str(need_corpus_file(DUMPS612[1]))]) as reader:
        kbtf = read_kernel_btf(reader)
        assert (kbtf.source, kbtf.address) == ("__start_BTF", symbols["__start_BTF"])
        assert sorted(m.name for m in kbtf.modules or []) == sorted(MODULES)
        lookup, why = btf_dump.symbol_lookup(reader)
        assert why is None and lookup is not None and lookup("__start_BTF") == symbols["__start_BTF"]


@pytest.mark.corpus
def test_only_the_modules_asked_for_are_read() -> None:
    symbols = guest_symbols(SET612)
    with open_dumps([str(need_corpus_file(DUMPS612[1]))]) as reader:
        kbtf = read_kernel_btf(reader, symbol=symbols.get, modules=["jbd2", "nothing"])
        assert [m.name for m in kbtf.modules or []] == ["jbd2"]
        assert kbtf.module("jbd2").data == guest_blob("jbd2")
        with pytest.raises(KdumpToolError, match="no loaded module 'ext4' has BTF"):
            kbtf.module("ext4")
        without = read_kernel_btf(reader, symbol=symbols.get, modules=False)
        assert without.modules is None and without.modules_note is None


@pytest.mark.corpus
@pytest.mark.parametrize("rel", (DUMPS612[1], *DUMPS61))
def test_scan_finds_the_blob_the_symbols_bound(rel: str) -> None:
    set_name = rel.split("/")[0]
    symbols = guest_symbols(set_name)
    with open_dumps([str(need_corpus_file(rel))]) as reader:
        found = scan_vmlinux_btf(reader)
        assert found is not None and found.source == "scan"
        if reader.info.vmcoreinfo is not None:  # the virtual read needs VMCOREINFO
            from kdumptool.vtop import read_virtual

            assert found.data == vmlinux_btf_blob(lambda a, n: read_virtual(reader, a, n), symbols.get)
        if set_name == SET612:  # the library's fallback when no symbol table is available
            scanned = read_kernel_btf(reader, symbol=lambda name: None)
            assert scanned.source == "scan" and scanned.vmlinux.data == found.data
            assert scanned.modules is None and "btf_modules" in (scanned.modules_note or "")
    assert len(found.data) == symbols["__stop_BTF"] - symbols["__start_BTF"]
    if set_name == SET612:
        assert found.data == guest_blob("vmlinux")
    assert Btf.parse(found.data).find("task_struct").kind == "struct"


# ---- the btf_modules walk on hostile memory ------------------------------------------------------


class FakeMemory:
    """Kernel virtual memory made of a few blocks; a read outside them fails like a hole."""

    def __init__(self) -> None:
        self.blocks: dict[int, bytes] = {}

    def put(self, addr: int, data: bytes) -> None:
        self.blocks[addr] = data

    def read(self, addr: int, size: int) -> bytes:
        for start, data in self.blocks.items():
            if start <= addr and addr + size <= start + len(data):
                return data[addr - start:addr - start + size]
        raise KdumpToolError(f"{addr:#x} is not in the fake dump")


HEAD, ENTRY, MODULE, BTF_OBJ, DATA = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000


def _memory(*, next_of_entry: int = HEAD, data_size: int = 90) -> FakeMemory:
    v = guest_vmlinux()
    mem = FakeMemory()
    mem.put(HEAD, struct.pack("<QQ", ENTRY + v.offsetof("btf_module", "list"), ENTRY))
    entry = bytearray(v.sizeof(v.find("btf_module")))
    struct.pack_into("<Q", entry, v.offsetof("btf_module", "list"), next_of_entry)
    struct.pack_into("<Q", entry, v.offsetof("btf_module", "module"), MODULE)
    struct.pack_into("<Q", entry, v.offsetof("btf_module", "btf"), BTF_OBJ)
    mem.put(ENTRY, bytes(entry))
    module = bytearray(v.offsetof("module", "name") + 56)
    at = v.offsetof("module", "name")
    module[at:at + 6] = b"crc16\0"
    mem.put(MODULE, bytes(module))
    obj = bytearray(v.offsetof("btf", "data_size") + 4)
    struct.pack_into("<Q", obj, v.offsetof("btf", "data"), DATA)
    struct.pack_into("<I", obj, v.offsetof("btf", "data_size"), data_size)
    mem.put(BTF_OBJ, bytes(obj))
    mem.put(DATA, guest_blob("crc16"))
    return mem


@pytest.mark.corpus
def test_module_walk_on_fake_memory_and_its_guards() -> None:
    symbols = {"btf_modules": HEAD}.get
    mods = module_btf_blobs(_memory().read, symbols, guest_vmlinux())
    assert [(m.name, m.data_address, m.data) for m in mods] == [("crc16", DATA, guest_blob("crc16"))]
    with pytest.raises(KernelDataError, match="seen twice"):
        module_btf_blobs(_memory(next_of_entry=ENTRY).read, symbols, guest_vmlinux())
    with pytest.raises(KernelDataError, match="implausible data_size"):
        module_btf_blobs(_memory(data_size=1 << 31).read, symbols, guest_vmlinux())
    with pytest.raises(KdumpToolError, match="no btf_modules symbol"):
        module_btf_blobs(_memory().read, {}.get, guest_vmlinux())
    with pytest.raises(KdumpToolError, match="no __start_BTF"):
        vmlinux_btf_blob(_memory().read, {}.get)
    with pytest.raises(BtfError, match="not a plausible BTF blob"):
        vmlinux_btf_blob(_memory().read, {"__start_BTF": 0x10, "__stop_BTF": 0x8}.get)


@pytest.mark.corpus
def test_module_walk_stops_on_a_list_that_never_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    v = guest_vmlinux()
    size = v.sizeof(v.find("btf_module"))
    mem = _memory()

    def read(addr: int, n: int) -> bytes:  # every entry points to a new one
        if addr >= 0x10_0000 and n == size:
            raw = bytearray(mem.read(ENTRY, size))
            struct.pack_into("<Q", raw, 0, addr + size)
            return bytes(raw)
        return mem.read(addr, n)

    mem.put(HEAD, struct.pack("<QQ", 0x10_0000, 0x10_0000))
    monkeypatch.setattr(btf_dump, "MAX_MODULES", 50)
    with pytest.raises(KernelDataError, match="more than 50 entries"):
        module_btf_blobs(read, {"btf_modules": HEAD}.get, v)


# ---- the command ---------------------------------------------------------------------------------


@pytest.mark.corpus
def test_cli_writes_the_blob_refuses_to_overwrite_and_bpftool_reads_it(tmp_path: Path) -> None:
    src = need_corpus_file(DUMPS612[1])
    out = tmp_path / "vmlinux.btf"
    proc = kdumptool("btf", src, "-o", out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.read_bytes() == guest_blob("vmlinux") and b"112806 types" in proc.stderr
    again = kdumptool("btf", src, "-o", out)
    assert again.returncode == 1 and b"--force" in again.stderr
    assert kdumptool("btf", src, "-o", out, "--force").returncode == 0
    stdout = kdumptool("btf", src, "-o", "-")
    assert stdout.returncode == 0 and stdout.stdout == guest_blob("vmlinux")
    mixed = kdumptool("btf", src, "-o", "-", "--list")
    assert mixed.returncode == 2 and b"cannot go with --list" in mixed.stderr
    dumped = subprocess.run([bpftool_path(), "btf", "dump", "file", str(out)], capture_output=True,
                            text=True, timeout=300, check=False)
    assert dumped.returncode == 0, dumped.stderr
    assert sum(line.startswith("[") for line in dumped.stdout.splitlines()) == 112806
    summary = kdumptool("btf", src, "--json")
    assert json.loads(summary.stdout)["vmlinux"]["types"] == 112806
    text = kdumptool("btf", src).stdout.decode()
    assert text.startswith("vmlinux BTF: 112806 types, 4919552 bytes, little-endian")


@pytest.mark.corpus
def test_cli_module_and_list_through_kallsyms(tmp_path: Path) -> None:
    src = need_corpus_file(DUMPS612[1])
    listed = kdumptool("btf", src, "--list")
    assert listed.returncode == 0, listed.stderr.decode()
    rows = {line.split()[0]: line.split()[1:] for line in listed.stdout.decode().splitlines()[1:]}
    assert rows["vmlinux"] == ["112806", "4919552", "1"] and rows["ext4"] == ["3074", "149345", "112807"]
    assert set(rows) == {"vmlinux", *MODULES}
    summary = kdumptool("btf", src).stdout.decode()
    assert f"__start_BTF at {guest_symbols(SET612)['__start_BTF']:#x}" in summary
    assert "8 modules with BTF: " in summary
    out, base = tmp_path / "ext4.btf", tmp_path / "vmlinux.btf"
    written = kdumptool("btf", src, "--module", "ext4", "-o", out)
    assert written.returncode == 0, written.stderr.decode()
    assert out.read_bytes() == guest_blob("ext4")
    base.write_bytes(guest_blob("vmlinux"))
    dumped = subprocess.run([bpftool_path(), "btf", "dump", "file", str(out), "--base-btf", str(base)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert dumped.returncode == 0 and dumped.stdout.startswith("[112807] TYPEDEF 'tid_t'"), dumped.stderr
    missing = kdumptool("btf", src, "--module", "nothing")
    assert missing.returncode == 1 and b"no loaded module 'nothing' has BTF" in missing.stderr


@pytest.mark.corpus
def test_kernel_session_gives_btf_by_symbols_or_by_scan() -> None:
    from kdumptool.kernel.session import Kernel, open_kernel

    with open_kernel(str(need_corpus_file(DUMPS612[1]))) as kernel:
        assert kernel.btf.data == guest_blob("vmlinux") and kernel.btf is kernel.btf
        assert kernel.btf.offsetof("task_struct", "pid") == 2432
        assert kernel.read_btf(modules=["mbcache"]).module("mbcache").data == guest_blob("mbcache")
    rel = "x86_64-qemu-256m-novmcoreinfo/qemu-elf.vmcore"
    with open_dumps([str(need_corpus_file(rel))]) as reader:  # no VMCOREINFO: no symbols
        kbtf = Kernel(reader).read_btf()
    assert kbtf.source == "scan" and kbtf.modules is None
    assert "VMCOREINFO" in (kbtf.modules_note or "") and kbtf.vmlinux.find("task_struct").size > 0


@functools.cache
def _blobs_61(rel: str) -> tuple[bytes, dict[str, bytes]]:
    from kdumptool.kernel.session import open_kernel

    with open_kernel(str(need_corpus_file(rel))) as kernel:
        kbtf = kernel.read_btf()
    assert kbtf.source == "__start_BTF" and kbtf.modules is not None
    return kbtf.vmlinux.data, {m.name: m.data for m in kbtf.modules}


@pytest.mark.corpus
@pytest.mark.parametrize("rel", DUMPS61)
def test_61_sets_module_btf_for_every_lsmod_module(rel: str) -> None:
    """The 6.1 sets have no saved /sys/kernel/btf: every module lsmod lists has BTF in the
    dump that parses as split BTF on vmlinux's, and one kernel build gives one vmlinux blob
    (and the same module blobs) in every format and on every boot."""
    vmlinux, modules = _blobs_61(rel)
    lsmod = next((CORPUS_ROOT / rel.split("/")[0] / "guest-info").glob("*/lsmod.txt")).read_text()
    assert sorted(modules) == sorted(line.split()[0] for line in lsmod.splitlines()[1:] if line)
    base = Btf.parse(vmlinux)
    assert base.nr_types == 100750
    for name, data in modules.items():
        assert Btf.parse(data, base=base, name=name).start_id == 100751
    assert (vmlinux, modules) == _blobs_61(DUMPS61[0])
