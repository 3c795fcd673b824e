"""Hyper-V saved state (``.vmrs``) reader.

No real ``.vmrs`` / ``.vsv`` file is public (searched: GitHub file index by extension, the
string ``HyperVStorage``, MemProcFS / volatility / LiveCloudKd / hvlib test data), so every
file here is made by ``tests/builders_hyperv.py`` from openvmm's published description. Guest
memory is real: pages of the corpus QEMU dump of a Debian 6.1.0-56-amd64 guest, read with
kdumptool's ELF reader, and the VP registers are that dump's QEMU CPU state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builders_hyperv import (
    BLOCK,
    FILE_HEADER,
    KEY_ENTRY,
    KEY_TABLE_HEADER,
    OBJECT_ENTRY,
    Key,
    Layout,
    build_vmrs,
    compress_block,
    field_offset,
    linux_guest_os_id,
    partition_state,
    xpress_compress,
)
from ours import kdumptool, our_digests

from corpus import corpus_path, need_corpus_file
from kdumptool.codecs.xpress import XpressError, decompress
from kdumptool.errors import (
    CorruptDumpError,
    CorruptPageError,
    KdumpToolError,
    TruncatedDumpError,
    UnknownFormatError,
)
from kdumptool.formats import find_reader
from kdumptool.formats.hyperv import HyperVReader, decode_compressed_block
from kdumptool.formats.hyperv_state import describe_guest_os_id
from kdumptool.formats.notes import parse_qemu_cpu_state
from kdumptool.open import open_bytes, open_dump
from kdumptool.summary import dump_summary

QEMU = "x86_64-qemu-256m/qemu-elf.vmcore"
#: Guest RAM put in the test file: low memory, 1-48 MiB, and 176-224 MiB (the kernel).
RANGES = [(0, 0xA0000), (0x100000, 0x2F00000), (0xB000000, 0x3000000)]
#: RamBlocks stored compressed: low memory, a zero block, the banner's and utsname's blocks.
COMPRESSED = [0, 10, 56, 60, 68]
OS_ID = linux_guest_os_id(6, 1, 192)


def _pfns(ranges: list[tuple[int, int]]) -> list[int]:
    return [p for gpa, size in ranges for p in range(gpa // 4096, (gpa + size) // 4096)]


@pytest.fixture(scope="module")
def elf() -> Any:
    reader = open_dump(str(need_corpus_file(QEMU)))
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def qemu_vps(elf: Any) -> list[dict[str, int]]:
    vps = []
    for k, note in enumerate(n for n in elf.info.notes if n.name == b"QEMU"):
        st = parse_qemu_cpu_state(note.desc)
        regs = {n: st[n] for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9",
                                   "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")}
        for seg in ("cs", "ds", "es", "fs", "gs", "ss"):
            regs[seg] = st[seg].selector
            regs[f"{seg}_base"] = st[seg].base
        regs.update(cr0=st.cr[0], cr2=st.cr[2], cr3=st.cr[3], cr4=st.cr[4], idtr_base=st.idt.base,
                    idtr_limit=st.idt.limit, gdtr_base=st.gdt.base, gdtr_limit=st.gdt.limit,
                    vp_index=k)
        vps.append(regs)
    assert len(vps) == 2
    return vps


@pytest.fixture(scope="module")
def vmrs(tmp_path_factory: pytest.TempPathFactory, elf: Any, qemu_vps: list[dict[str, int]]
         ) -> tuple[Path, Layout]:
    path = tmp_path_factory.mktemp("hyperv") / "guest.vmrs"
    layout = build_vmrs(path, RANGES, elf.read, vps=qemu_vps, os_id=OS_ID, compress=COMPRESSED)
    return path, layout


@pytest.fixture(scope="module")
def elf_digests(elf: Any) -> dict[int, str]:
    out = {}
    for pfn in _pfns(RANGES):
        out[pfn] = hashlib.sha1(elf.read_page(pfn)).hexdigest()
    return out


def info_json(path: Path, *args: str) -> dict[str, Any]:
    proc = kdumptool("info", "--json", *args, path)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


# --- real guest memory -----------------------------------------------------------------------

def test_probe(vmrs: tuple[Path, Layout]) -> None:
    head = vmrs[0].read_bytes()[:4096]
    entry = find_reader(head)
    assert entry is not None and entry.name == "hyperv"
    assert find_reader(need_corpus_file(QEMU).read_bytes()[:4096]).name == "elf"
    assert find_reader(bytes(4096)) is None


def test_pages_match_the_source_dump(vmrs: tuple[Path, Layout], elf_digests: dict[int, str]) -> None:
    ours = our_digests(vmrs[0])
    assert ours == elf_digests  # every page of the three ranges, nothing else
    with open_dump(str(vmrs[0])) as r:
        assert r.info.format == "hyperv-vmrs" and r.info.max_pfn == 0xE000
        assert r.count_pages() == (len(elf_digests), len(elf_digests))
        ram, present = r.bitmaps(0x9E, 4)  # end of low memory: 0xa0 is a hole
        assert ram.tolist() == [True, True, False, False] and present.tolist() == ram.tolist()
        assert r.info.details["compressed_ram_blocks"] == len(COMPRESSED)


def test_info_identifies_the_kernel_and_the_cpus(vmrs: tuple[Path, Layout],
                                                  qemu_vps: list[dict[str, int]]) -> None:
    s = info_json(vmrs[0])
    assert s["format"] == "hyperv-vmrs" and s["arch"] == "x86_64"
    assert s["kernel"]["release"] == "6.1.0-56-amd64"
    assert s["kernel"]["release_source"] in ("banner in memory", "utsname in memory")
    gos = [e for e in s["identification"] if e["source"] == "hyper-v guest os id"]
    assert gos == [{"source": "hyper-v guest os id", "guest_os_id": f"{OS_ID:#018x}", "os": "Linux",
                    "kernel_version": "6.1.192", "text": "Linux, kernel 6.1.192"}]
    assert s["cpus"] == 2
    assert [c["pc"] for c in s["cpus_state"]] == [f"{vp['rip']:#x}" for vp in qemu_vps]
    assert [c["sp"] for c in s["cpus_state"]] == [f"{vp['rsp']:#x}" for vp in qemu_vps]
    vps = s["details"]["vps"]
    assert [v["cr3"] for v in vps] == [f"{vp['cr3']:#x}" for vp in qemu_vps]
    assert [v["idtr_base"] for v in vps] == [f"{vp['idtr_base']:#x}" for vp in qemu_vps]
    assert s["details"]["vm_version"] == "10.0" and s["details"]["replay_log"] == "empty"
    assert s["details"]["guest_os"] == "Linux, kernel 6.1.192"
    text = kdumptool("info", vmrs[0]).stdout.decode()
    assert "evidence:      hyper-v guest os id: Linux, kernel 6.1.192" in text
    assert "kernel:        6.1.0-56-amd64" in text


def test_guest_os_id_alone_does_not_stop_the_memory_scan(vmrs: tuple[Path, Layout]) -> None:
    with open_dump(str(vmrs[0])) as r:
        s = dump_summary(r)
    sources = [e["source"] for e in s["identification"]]
    assert sources[0] == "hyper-v guest os id" and len(sources) >= 2


@pytest.mark.parametrize("elf_out", [False, True], ids=["kdump", "elf"])
def test_convert_reopens_page_for_page(vmrs: tuple[Path, Layout], elf_digests: dict[int, str],
                                       tmp_path: Path, elf_out: bool) -> None:
    out = tmp_path / ("out.elf" if elf_out else "out.kdump")
    proc = kdumptool("convert", *(["-E"] if elf_out else ["-c"]), vmrs[0], out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert our_digests(out) == elf_digests
    s = info_json(out)
    assert s["format"] == ("elf64" if elf_out else "kdump")
    assert s["kernel"]["release"] == "6.1.0-56-amd64"
    assert s["notes"].get("CORE/NT_PRSTATUS") == 2


@pytest.mark.peer
def test_drgn_opens_the_converted_dump(vmrs: tuple[Path, Layout], tmp_path: Path) -> None:
    from peers import drgn_open_ok, require_tool

    require_tool("drgn")
    out = tmp_path / "out.kdump"
    vmci = corpus_path("x86_64-qemu-256m/vmcoreinfo.txt")
    proc = kdumptool("convert", "-i", vmci, vmrs[0], out)
    assert proc.returncode == 0, proc.stderr.decode()
    ok, message = drgn_open_ok(out, isolate=True)
    assert ok, message
    assert message == "6.1.0-56-amd64"


# --- XPRESS and compressed blocks ----------------------------------------------------------

def test_xpress_ms_xca_examples() -> None:
    """[MS-XCA] §3.1 "Plain LZ77" examples."""
    alphabet = bytes(range(ord("a"), ord("z") + 1))
    assert decompress(bytes.fromhex("3f000000") + alphabet, 26) == alphabet
    assert decompress(bytes.fromhex("ffffff1f6162631700 0fff2601".replace(" ", "")), 300) == b"abc" * 100


def test_xpress_round_trip_and_damage() -> None:
    rng = np.random.default_rng(5)
    for data in [bytes(4096), rng.integers(0, 4, 4096, dtype=np.uint8).tobytes(),
                 (b"x" * 70000), bytes(rng.integers(0, 256, 4096, dtype=np.uint8))]:
        assert decompress(xpress_compress(data), len(data)) == data
    packed = xpress_compress(b"hello hello hello hello")
    with pytest.raises(XpressError, match="stream ends"):
        decompress(packed[:-3], 23)
    with pytest.raises(XpressError, match="before the start"):
        decompress(bytes.fromhex("00000080") + struct.pack("<H", 5 << 3), 8)


def test_compressed_block_records() -> None:
    rng = np.random.default_rng(1)
    block = bytearray(BLOCK)
    block[4096:8192] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()  # incompressible
    block[8192:12288] = b"0123456789abcdef" * 256
    block[12288:16384 + 4096 * 10] = b"\xaa\xbb\xcc\xdd\x11\x22\x33\x44" * (4096 * 11 // 8)  # fill run
    for sized in (False, True):
        pages, decoded, problem = decode_compressed_block(compress_block(bytes(block), sized_records=sized))
        assert problem == "" and decoded.all() and pages.tobytes() == bytes(block)
    data = bytearray(compress_block(bytes(block)))
    data[12 + 4 + 100] ^= 0xFF  # inside the raw page: still decodes
    pages, decoded, problem = decode_compressed_block(bytes(data))
    assert decoded.all()
    cut = compress_block(bytes(block))[:4000]  # inside the record of page 1
    pages, decoded, problem = decode_compressed_block(cut)
    assert decoded.tolist() == [True] + [False] * 255 and "page record" in problem


def test_corrupt_compressed_block(tmp_path: Path) -> None:
    def gpa(addr: int, size: int) -> bytes:
        return b"".join(f"page {p:08x} ".encode().ljust(4096, b"-") for p in range(addr // 4096,
                                                                                     (addr + size) // 4096))
    good = compress_block(gpa(0, BLOCK))
    second = 4 + struct.unpack_from("<I", good)[0]  # the record of page 1
    bad = good[:second] + struct.pack("<I", 4000) + good[second + 4:]  # a size that does not decode
    path = tmp_path / "c.vmrs"
    build_vmrs(path, [(0, BLOCK)], gpa, block_data={0: bad})
    with open_dump(str(path)) as r, pytest.raises(CorruptPageError, match="RamBlock0 does not decode"):
        r.read_batch(0, 256)
    with open_dump(str(path), strict=False) as r:
        batch = r.read_batch(0, 256)
        assert batch.present[0] and batch.data[0].tobytes() == gpa(0, 4096)
        # the damaged record may still yield a (wrong) page 1; every page after it is corrupt
        assert sorted(batch.corrupt) == list(range(256 - len(batch.corrupt), 256))
        assert len(batch.corrupt) >= 254 and not batch.lost.any()


# --- container structure and damage -------------------------------------------------------


def _pages(addr: int, size: int) -> bytes:
    return b"".join(struct.pack("<Q", p) * 512 if p % 3 else f"P{p}".encode().ljust(4096, b"\0")
                    for p in range(addr // 4096, (addr + size) // 4096))


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Layout]:
    path = tmp_path / "small.vmrs"
    layout = build_vmrs(path, [(0, 4 * BLOCK), (0x10000000, 2 * BLOCK)], _pages, os_id=OS_ID,
                        vps=[{"vp_index": 0, "rip": 0x1000, "rsp": 0x2000, "cr3": 0x3000}])
    return path, layout


def _patch(path: Path, offset: int, data: bytes) -> Path:
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))
    return path


def _expect(path: Path, exc: type[Exception], offset: int | None, match: str, **kw: Any) -> None:
    with pytest.raises(exc, match=match) as info:
        open_dump(str(path), **kw).close()
    if offset is not None:
        assert info.value.offset == offset
        assert f"offset {offset:#x}" in str(info.value)


def test_small_reads(small: tuple[Path, Layout]) -> None:
    with open_dump(str(small[0])) as r:
        assert r.read(0x10001000, 4096) == _pages(0x10001000, 4096)
        assert r.count_pages() == (1536, 1536)
        assert r.info.details["memory_blocks"] == 2 and r.info.details["ram_blocks"] == 6


def test_header_copy_fallback_and_damage(small: tuple[Path, Layout]) -> None:
    path = small[0]
    crc0 = field_offset(FILE_HEADER, "checksum")
    _patch(path, crc0, b"\0\0\0\0")
    with open_dump(str(path)) as r:
        assert r.info.details["header_copy"] == 1
        assert any("copy 0 is invalid" in n for n in r.info.details["notices"])
    _patch(path, 4096 + crc0, b"\0\0\0\0")
    _expect(path, CorruptDumpError, 4, "both HyperVStorage file headers fail their CRC-32")
    with open_dump(str(path), strict=False) as r:
        assert r.count_pages()[1] == 1536
    _patch(path, 0, b"XXXX")
    proc = kdumptool("info", path)
    assert proc.returncode == 3


def test_bad_alignment(tmp_path: Path) -> None:
    path = tmp_path / "a.vmrs"
    bad = {"data_alignment": 3000}
    build_vmrs(path, [(0, BLOCK)], _pages, finish={"headers": (bad, bad)})
    _expect(path, CorruptDumpError, field_offset(FILE_HEADER, "data_alignment"), "DataAlignmentInBytes")


def test_object_entry_crc(tmp_path: Path) -> None:
    path = tmp_path / "o.vmrs"
    layout = build_vmrs(path, [(0, BLOCK)], _pages, finish={"object_entries": {1: {"checksum": 7}}})
    entry = layout.object_entries[1][0]
    _expect(path, CorruptDumpError, entry + field_offset(OBJECT_ENTRY, "checksum"),
            "object table entry CRC-32 mismatch")
    with open_dump(str(path), strict=False) as r:  # a file object's entry: only the check is lost
        assert r.count_pages() == (256, 256)


def test_key_table_header_crc(tmp_path: Path) -> None:
    path = tmp_path / "k.vmrs"
    layout = build_vmrs(path, [(0, BLOCK)], _pages, finish={"key_tables": {0: {"checksum": 1}}})
    _expect(path, CorruptDumpError, layout.key_tables[0] + field_offset(KEY_TABLE_HEADER, "checksum"),
            "key table header CRC-32 mismatch")


def test_key_entry_crc_loses_its_block(small: tuple[Path, Layout]) -> None:
    path, layout = small
    at = layout.entries["/savedstate/RamBlock2"] + field_offset(KEY_ENTRY, "checksum")
    _patch(path, at, b"\x11\x22\x33\x44")
    _expect(path, CorruptDumpError, at, "key entry CRC-32 mismatch")
    with open_dump(str(path), strict=False) as r:
        assert r.count_pages() == (1536, 1536) and r.lost_pages() == 256
        batch = r.read_batch(0x200, 256)
        assert batch.lost.all() and not batch.present.any()
        assert any("CRC-32" in n for n in r.info.details["notices"])
    s = info_json(path)  # info opens tolerant
    assert s["pages"] == {"ram": 1536, "present": 1536, "excluded": 0, "lost": 256}


def test_missing_block(tmp_path: Path) -> None:
    path = tmp_path / "m.vmrs"
    build_vmrs(path, [(0, 4 * BLOCK)], _pages, omit_blocks=[3])
    _expect(path, CorruptDumpError, None, r"RamBlock3 \(guest pfn 0x300\) is missing")
    with open_dump(str(path), strict=False) as r:
        assert r.count_pages() == (1024, 1024) and r.lost_pages() == 256
        assert r.read_batch(0x300, 256).lost.all()


@pytest.mark.parametrize("cut", ["ram", "keys", "header"])
def test_truncated(tmp_path: Path, cut: str) -> None:
    path = tmp_path / "t.vmrs"
    layout = build_vmrs(path, [(0, 4 * BLOCK)], _pages, writer={"reserve_key_tables": 2})
    ram2 = layout.file_objects["/savedstate/RamBlock2"][0]
    size = {"ram": ram2 + 5 * 4096 + 100, "keys": layout.key_tables[0] + 700, "header": 30}[cut]
    with open(path, "r+b") as f:
        f.truncate(size)
    _expect(path, TruncatedDumpError, size, "truncated|file ends")
    if cut == "ram":
        with open_dump(str(path), strict=False) as r:
            assert r.lost_pages() == 1024 - 512 - 5  # kept: blocks 0-1, the whole pages of block 2
            batch = r.read_batch(0x200, 256)
            assert batch.present[:5].all() and batch.lost[5:].all()
            assert batch.data[4].tobytes() == _pages(0x204000, 4096)
        s = info_json(path)
        assert s["pages"]["lost"] == 507
        fsck = kdumptool("fsck", "--json", path)
        assert fsck.returncode == 2
        report = json.loads(fsck.stdout)
        assert report["lost_pfn_ranges"] == [[0x205, 0x400]]
        assert any(f["code"] == "hyperv-damage" and f["offset"] == size for f in report["findings"])
        rep = tmp_path / "repaired.kdump"
        assert kdumptool("repair", path, rep).returncode == 1  # written, 507 pages lost
        assert info_json(rep)["incomplete"] and info_json(rep)["pages"]["lost"] == 507
        proc = kdumptool("convert", path, tmp_path / "out.kdump")  # convert reads strictly
        assert proc.returncode == 4 and f"offset {size:#x}: file is truncated".encode() in proc.stderr


def test_replay_log_is_reported_not_applied(tmp_path: Path) -> None:
    path = tmp_path / "r.vmrs"
    build_vmrs(path, [(0, BLOCK)], _pages, finish={"replay_log": {"current_entries_count": 3}})
    with open_dump(str(path)) as r:
        assert r.info.details["replay_log"] == "3 pending entries, not applied"
        assert any("does not apply" in n for n in r.info.details["notices"])


def test_many_file_objects_chain_object_tables(tmp_path: Path) -> None:
    path = tmp_path / "many.vmrs"
    extra = [Key(f"/savedstate/blob{k}", "array", bytes([k % 256]) * 2048) for k in range(300)]
    layout = build_vmrs(path, [(0, BLOCK)], _pages, extra_keys=extra)
    assert len(layout.object_tables) == 2
    with open_dump(str(path)) as r:
        assert r.count_pages() == (256, 256)
        key = r.store.keys["/savedstate/blob299"]
        assert r.store.value(key) == bytes([299 % 256]) * 2048


def test_impossible_metadata(tmp_path: Path) -> None:
    path = tmp_path / "i.vmrs"
    build_vmrs(path, [(0, BLOCK), (BLOCK, BLOCK)], _pages, meta={1: {"page_count_total": 1 << 40}})
    _expect(path, CorruptDumpError, None, "RamMemoryBlock1 describes impossible memory")
    with open_dump(str(path), strict=False) as r:
        assert r.count_pages() == (256, 256)


def test_overlapping_metadata(tmp_path: Path) -> None:
    path = tmp_path / "ov.vmrs"
    build_vmrs(path, [(0, 2 * BLOCK), (BLOCK, BLOCK)], _pages)
    _expect(path, CorruptDumpError, None, "cover the same guest pages")


def test_without_memory_and_vsv(tmp_path: Path) -> None:
    path = tmp_path / "cfg.vmcx"
    build_vmrs(path, [], _pages)
    _expect(path, UnknownFormatError, 0, "without guest RAM")
    vsv = tmp_path / "state.vsv"
    shutil.copy(path, vsv)
    _expect(vsv, UnknownFormatError, 0, r"\.vsv saved state without guest RAM keys")
    (tmp_path / "state.bin").write_bytes(bytes(4096))
    _expect(vsv, UnknownFormatError, 0, r"RAM is in .*state\.bin: the \.bin layout is not published")
    proc = kdumptool("info", vsv)
    assert proc.returncode == 3 and b"state.bin" in proc.stderr


def test_vsv_with_ram_keys_reads(tmp_path: Path) -> None:
    path = tmp_path / "state.vsv"
    build_vmrs(path, [(0, BLOCK)], _pages)
    with open_dump(str(path)) as r:
        assert r.info.format == "hyperv-vsv" and r.count_pages() == (256, 256)


def test_pre_v5_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.vmrs"
    build_vmrs(path, [(0, BLOCK)], _pages, prefix="", vm_version=0x0500)
    _expect(path, UnknownFormatError, None, "pre-v5.0 key layout")


def test_aarch64_partition_state(tmp_path: Path) -> None:
    path = tmp_path / "arm.vmrs"
    blob = partition_state([{"vp_index": 0, "elr_el2": 0xFFFF800008001234, "spsr_el2": 0x3C5,
                             "sp_el1": 0xFFFF80000A000000, "x0": 7, "ttbr1_el1": 0x41000000}],
                           arm64=True, os_id=linux_guest_os_id(6, 12, 300))
    build_vmrs(path, [(0x40000000, BLOCK)], _pages, partition=blob)
    with open_dump(str(path)) as r:
        assert r.info.machine == "aarch64"
        s = dump_summary(r)
    assert s["cpus_state"][0]["pc"] == "0xffff800008001234"
    assert s["cpus_state"][0]["sp"] == "0xffff80000a000000"
    assert s["details"]["vps"][0]["ttbr1_el1"] == "0x41000000"
    assert s["details"]["guest_os"] == "Linux, kernel 6.12.255"


def test_guest_os_id_decoding() -> None:
    assert describe_guest_os_id(0x8100_0006_01C0_0000)["text"] == "Linux, kernel 6.1.192"
    win = 1 << 48 | 4 << 40 | 10 << 32 | 0 << 24 | 19041
    assert describe_guest_os_id(win)["text"] == "Windows NT 10.0 build 19041"
    assert describe_guest_os_id(0xB16B00B5_00000000)["os"] == "Linux"
    assert describe_guest_os_id(0x8200_0000_0D00_0000)["text"].startswith("FreeBSD")
    assert describe_guest_os_id(0)["text"].startswith("not reported")


def test_mutations_raise_only_our_errors(small: tuple[Path, Layout]) -> None:
    """Damage anywhere in the metadata: our errors (or success), never a bare exception."""
    base = small[0].read_bytes()
    layout = small[1]
    spots = [0, 8, 22, 26, 4096 + 10, 8192, 8196, 8200] + [o for o, _, _ in layout.object_entries]
    spots += list(layout.entries.values()) + layout.key_tables
    rng = np.random.default_rng(7)
    for k in range(400):
        data = bytearray(base)
        at = int(spots[k % len(spots)]) + int(rng.integers(0, 24))
        data[at:at + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        data = bytes(data)
        for strict in (True, False):
            try:
                with open_bytes(data, strict=strict) as r:
                    for _batch in r.iter_batches():
                        pass
                    r.count_pages()
                    dump_summary(r)
            except KdumpToolError:
                pass


def test_header_crc_is_zlib_crc32(small: tuple[Path, Layout]) -> None:
    raw = small[0].read_bytes()[:46]
    assert zlib.crc32(raw[:4] + bytes(4) + raw[8:]) == struct.unpack_from("<I", raw, 4)[0]


def test_reader_class_directly(small: tuple[Path, Layout]) -> None:
    from kdumptool.transport.source import FileSource

    src = FileSource(os.fspath(small[0]))
    with HyperVReader(src) as r:
        assert r.info.nr_cpus == 1 and r.read_page(0x100)[:8] == struct.pack("<Q", 0x100)


def test_cuts_anywhere_raise_only_our_errors(tmp_path: Path) -> None:
    """openvmm's layout (key tables after the RAM): a cut file loses its keys, in both modes."""
    path = tmp_path / "cut.vmrs"
    layout = build_vmrs(path, [(0, 2 * BLOCK)], _pages, compress=[1])
    base = path.read_bytes()
    cuts = sorted({0, 10, 46, 4096, 8192, 8200, 8192 + 4096, layout.key_tables[0] + 5,
                   layout.replay_log + 20, *range(8192, layout.replay_log, 65537)})
    for cut in cuts:
        for strict in (True, False):
            if cut > layout.replay_log and not strict:
                with open_bytes(base[:cut], strict=False) as r:  # the replay log is not needed
                    assert r.count_pages() == (512, 512)
                    assert any("replay log" in n for n in r.info.details["notices"])
                continue
            with pytest.raises((TruncatedDumpError, UnknownFormatError)) as info:
                open_bytes(base[:cut], strict=strict).close()
            if cut > 10:
                assert isinstance(info.value, TruncatedDumpError)
            if 8192 + 4096 < cut:
                assert info.value.offset == cut
    with open_bytes(base[:layout.replay_log + 40]) as r:  # only the replay log's padding is cut
        assert r.count_pages() == (512, 512)


def _rewrite_entry(path: Path, at: int, name: bytes, data: bytes) -> None:
    """Replace a key entry's value bytes and fix its CRC (a well-formed but hostile entry)."""
    raw = bytearray(path.read_bytes())
    start = at + 21 + len(name)
    raw[start:start + len(data)] = data
    raw[at + 12:at + 16] = bytes(4)
    crc = zlib.crc32(bytes(raw[at:start + len(data)]))
    raw[at + 12:at + 16] = struct.pack("<I", crc)
    path.write_bytes(bytes(raw))


def test_hostile_values_are_our_errors(tmp_path: Path) -> None:
    path = tmp_path / "h.vmrs"
    layout = build_vmrs(path, [(0, 2 * BLOCK)], _pages)
    _rewrite_entry(path, layout.entries["/savedstate/RamBlock1"], b"RamBlock1\0",
                   struct.pack("<IQ", BLOCK, (1 << 64) - 1))  # file object at 2**64 - 1
    _expect(path, TruncatedDumpError, path.stat().st_size, "RamBlock1 ends past the end of the file")
    with open_dump(str(path), strict=False) as r:
        assert r.lost_pages() == 256 and r.read_batch(0, 512).present.sum() == 256
    blob = bytearray(partition_state([{"vp_index": 0, "rip": 1}]))
    vp = blob.find(struct.pack("<I", 0x30001000))
    blob[vp + 16:vp + 20] = struct.pack("<I", 0xFFFFFFFF)  # the largest VP index
    path2 = tmp_path / "vp.vmrs"
    build_vmrs(path2, [(0, BLOCK)], _pages, partition=bytes(blob))
    with open_dump(str(path2)) as r:
        assert r.info.details["vps"][0]["vp"] == 0xFFFFFFFF and r.info.nr_cpus == 1
