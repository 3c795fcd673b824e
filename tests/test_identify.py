"""Which kernel is this? Identified from every source a dump holds, VMCOREINFO or not."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from ours import kdumptool

from corpus import dump_entry, need_corpus_file

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


def test_qemu_dump_made_without_vmcoreinfo_is_identified() -> None:
    s = info(need_corpus_file("x86_64-qemu-256m-novmcoreinfo/qemu-elf.vmcore"))
    assert s["kernel"]["release"] == "6.1.0-56-amd64"
    assert s["kernel"]["release_source"] != "vmcoreinfo"
