"""Xen ``xl dump-core`` (xc_core ELF) files.

Evidence: no public sample file exists (see ``tests/builders_xen.py``); files are built from
Xen's ``dump-core-format.txt`` / ``xg_core.{c,h}`` by ``builders_xen.build_xc_core``, whose
layout is checked against the ``readelf -S`` listing of a real HVM dump-core file, and which
python3-libkdumpfile (a reader written from the same upstream code, ``elfdump.c``) reads
page for page. The realistic image holds real guest memory (``xen_corpus``).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
from builders import build_elf, page_for
from builders_xen import (
    EM_386,
    EM_ARM,
    INVALID,
    build_xc_core,
    legacy_xc_core,
    vcpu_context_x86_64,
    xen_version_desc,
)
from ours import kdumptool, our_digests, read_all_pages
from xen_corpus import RELEASE, VMCOREINFO, corpus_pages

from corpus import corpus_path
from kdumptool.errors import CorruptDumpError, TruncatedDumpError, UnknownFormatError
from kdumptool.formats import elf, find_reader, xen_core
from kdumptool.formats.notes import parse_prstatus
from kdumptool.open import open_bytes, open_dump

HOLE = set(range(0xA0, 0xC0))  # xc_core_arch_gpfn_may_present leaves out the VGA hole
PAGES = {p: page_for(p) for p in range(0x180) if p not in HOLE}
RIP, RSP = 0xFFFFFFFF81E0A4C2, 0xFFFFFFFF82603E48
GS_KERNEL, GS_USER = 0xFFFF88800F600000, 0x7F0011223000


def _ctx(cs: int = 0x10, cr3: int = 0x2A0C000) -> bytes:
    return vcpu_context_x86_64({"rip": RIP, "rsp": RSP, "rax": 7, "r15": 15, "cs": cs, "ss": 0x18},
                               ctrlreg=[0x80050033, 0, 0, cr3, 0x3506F0], fs_base=0x1000,
                               gs_base_kernel=GS_KERNEL, gs_base_user=GS_USER)


def _sha(pages: dict[int, bytes]) -> dict[int, str]:
    return {p: hashlib.sha1(d).hexdigest() for p, d in pages.items()}


# --- probe and registry -----------------------------------------------------------------------


def test_probe_takes_xc_core_before_the_elf_reader() -> None:
    img = build_xc_core(PAGES, vcpus=[_ctx()])
    assert xen_core.probe(img[:4096]) and elf.probe(img[:4096])
    assert find_reader(img[:4096]).name == "xen-core"
    vmcore = build_elf({p: page_for(p) for p in range(16)})
    assert not xen_core.probe(vmcore[:4096]) and find_reader(vmcore[:4096]).name == "elf"
    for junk in (b"", b"\x7fELF", bytes(4096), b"\x7fELF\x02\x01" + bytes(4090)):
        assert not xen_core.probe(junk)


def test_probe_without_the_section_table_in_the_head_defers_to_the_reader() -> None:
    img = build_xc_core(PAGES, vcpus=[_ctx()])
    head = bytearray(img[:4096])
    struct.pack_into("<Q", head, 0x28, 1 << 20)  # e_shoff beyond the head
    assert xen_core.probe(bytes(head))


# --- layout against the real file's readelf listing ------------------------------------------


def test_layout_matches_a_real_dump_core_file() -> None:
    """A real 1-vCPU HVM dump written by a 32-bit tool (readelf -S quoted in a volatility Xen
    address space): .note.Xen 0x200+0x564, .xen_prstatus 0x764+0x1430, .xen_shared_info at
    0x1b94, .xen_pages at 0x3000, then .xen_pfn, .shstrtab last."""
    img = build_xc_core(PAGES, vcpus=[_ctx()], xen_version=xen_version_desc(word=4))
    r = open_bytes(img)
    where = {name: (sh.sh_offset, sh.sh_size) for name, sh in r.sections if name}
    assert where[".note.Xen"] == (0x200, 0x564)
    assert where[".xen_prstatus"] == (0x764, 0x1430)
    assert where[".xen_shared_info"][0] == 0x1B94
    assert where[".xen_pages"][0] == 0x3000
    assert where[".xen_pfn"][0] == 0x3000 + len(PAGES) * 4096
    assert where[".shstrtab"][0] > where[".xen_pfn"][0]
    assert r.info.details["xen_version"] == "4.17.3"  # 1276-byte descriptor decoded


# --- reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("hvm", [True, False])
def test_pages_read_back_page_for_page(hvm: bool) -> None:
    r = open_bytes(build_xc_core(PAGES, hvm=hvm, vcpus=[_ctx(), _ctx()], invalid_slots=3))
    info = r.info
    assert info.format == "xen-core" and info.machine == "x86_64" and info.page_size == 4096
    assert info.max_pfn == max(PAGES) + 1
    assert read_all_pages(r) == PAGES
    assert r.count_pages() == (len(PAGES), len(PAGES))
    ram, present = r.bitmaps(0x90, 0x40)
    assert ram.tolist() == [p in PAGES for p in range(0x90, 0xD0)] == present.tolist()
    d = info.details
    assert d["xen_domain"] == ("HVM" if hvm else "PV") and d["invalid_entries"] == 3
    assert ("pseudo-physical" in d["pfn_space"]) is not hvm
    assert d["nr_vcpus"] == 2 and d["dumpcore_format"] == "0.1"


def test_last_copy_of_a_pfn_wins_and_order_is_free() -> None:
    a, b = page_for(1), page_for(9999)
    r = open_bytes(build_xc_core([(5, page_for(5)), (1, a), (1, b), (3, page_for(3))]))
    assert read_all_pages(r) == {1: b, 3: page_for(3), 5: page_for(5)}
    assert r.info.details["duplicate_pfns"] == 1 and r.info.details["pfns_unordered"]


def test_vcpu_contexts_become_prstatus_notes() -> None:
    r = open_bytes(build_xc_core(PAGES, vcpus=[_ctx(), _ctx(cs=0x33, cr3=0x5000)]))
    info = r.info
    prs = [n for n in info.notes if n.name == b"CORE"]
    assert len(prs) == 2 and info.nr_cpus == 2
    k0, k1 = (parse_prstatus(n.desc, "x86_64", "<") for n in prs)
    assert (k0.pr_pid, k1.pr_pid) == (1, 2)
    assert k0.pr_reg.rip == RIP and k0.pr_reg.rsp == RSP and k0.pr_reg.rax == 7
    assert k0.pr_reg.r15 == 15 and k0.pr_reg.cs == 0x10 and k0.pr_reg.fs_base == 0x1000
    assert k0.pr_reg.gs_base == GS_KERNEL and k1.pr_reg.gs_base == GS_USER  # ring 0 vs 3
    assert info.details["vcpu_cr3"] == ["0x2a0c000", "0x5000"]
    xen = [n.type for n in info.notes if n.name == b"Xen"]
    assert xen == [0x2000000, 0x2000001, 0x2000002, 0x2000003]


def test_32bit_pv_guest_and_arm_keep_their_machine() -> None:
    r = open_bytes(build_xc_core(PAGES, hvm=False, machine=EM_386, vcpus=[bytes(5168)]))
    assert r.info.machine == "i386" and r.info.word_size == 4
    assert [n.name for n in r.info.notes].count(b"CORE") == 1
    r = open_bytes(build_xc_core(PAGES, machine=EM_ARM, vcpus=[bytes(5168)]))
    assert r.info.machine == "arm" and not [n for n in r.info.notes if n.name == b"CORE"]
    assert "not converted" in r.info.details["cpu_state"]


@pytest.mark.parametrize("hvm", [True, False])
def test_libkdumpfile_reads_the_built_file_alike(tmp_path: Path, hvm: bool) -> None:
    """python3-libkdumpfile reads xc_core ELF itself (elfdump.c): the builder and our reader
    agree with it page for page."""
    from peers import lkdf_page_digests, require_tool

    require_tool("libkdumpfile")
    path = tmp_path / "guest.core"
    path.write_bytes(build_xc_core(PAGES, hvm=hvm, vcpus=[_ctx()], invalid_slots=1))
    theirs = lkdf_page_digests(path, sorted(PAGES) + [0xA5])
    assert {p: d for p, d in theirs.items() if d is not None} == _sha(PAGES)
    assert our_digests(path) == _sha(PAGES)


# --- damaged files ------------------------------------------------------------------------------


def _err(img: bytes, cls: type[Exception] = CorruptDumpError, strict: bool = True) -> Exception:
    with pytest.raises(cls) as e:
        open_bytes(img, strict=strict)
    return e.value


def test_legacy_formats_are_refused_by_name() -> None:
    e = _err(legacy_xc_core(), UnknownFormatError)
    assert e.offset == 0 and "unsupported (legacy Xen" in str(e) and "<memory>" in str(e)
    img = build_xc_core(PAGES)
    e = _err(img.replace(b".note.Xen\0", b".note.Xyz\0"), UnknownFormatError)
    assert "legacy Xen dump-core format without .note.Xen" in str(e) and e.offset == 0


def test_elf_without_program_headers_or_xen_sections_is_corrupt() -> None:
    img = bytearray(build_xc_core(PAGES))
    for name in (b".note.Xen\0", b".xen_pages\0"):
        at = img.rfind(name)
        img[at:at + 2] = b".z"
    e = _err(bytes(img))
    assert e.offset == 0x38 and "no program headers" in str(e)


def test_truncated_file_names_the_lost_structure() -> None:
    img = build_xc_core(PAGES, vcpus=[_ctx()])
    for cut in (len(img) - 5, 0x3000 + 10 * 4096, 0x300):
        e = _err(img[:cut], TruncatedDumpError)
        assert "section name table" in str(e) or "section header" in str(e)
        assert e.offset is not None and e.offset <= len(img)
    e = _err(img[:40], TruncatedDumpError)
    assert "offset 0x28" in str(e)


def test_corrupt_headers_are_named_with_their_offset() -> None:
    e = _err(build_xc_core(PAGES, header={"xch_magic": 0x12345678}))
    assert e.offset == 0x200 + 16 + 16 and "magic" in str(e)  # after the NONE note and a note header
    e = _err(build_xc_core(PAGES, header={"xch_page_size": 3000}))
    assert "page size" in str(e) and e.offset == 0x220 + 24
    e = _err(build_xc_core(PAGES, header={"xch_nr_pages": len(PAGES) + 1}))
    assert ".xen_pfn is smaller" in str(e) and e.offset == 0x40 + 6 * 64 + 0x20
    e = _err(build_xc_core(PAGES, ehdr={"e_shentsize": 60}))
    assert e.offset == 0x3A and "section header size" in str(e)
    e = _err(build_xc_core(PAGES, ehdr={"e_shstrndx": 99}))
    assert e.offset == 0x3E
    e = _err(build_xc_core(PAGES, format_version=(2 << 32) | 1), UnknownFormatError)
    assert "format major version" in str(e)
    e = _err(build_xc_core([(1 << 40, page_for(0))]))
    assert "impossible frame" in str(e)
    e = _err(build_xc_core(PAGES, shdr={".xen_pages": {"sh_offset": 0x3001}}))
    assert "page aligned" in str(e)
    img = build_xc_core({p: page_for(p) for p in range(4)})
    assert len(read_all_pages(open_bytes(build_xc_core([(INVALID, bytes(4096))] + [(0, page_for(0))])))) == 1
    assert open_bytes(img).read_page(3) == page_for(3)


def test_pages_past_the_end_are_lost_when_tolerant() -> None:
    img = build_xc_core({p: page_for(p) for p in range(8)})
    # move .xen_pages so that its last pages lie past the end of the file
    moved = build_xc_core({p: page_for(p) for p in range(8)},
                          shdr={".xen_pages": {"sh_offset": len(img) - 5 * 4096 - len(img) % 4096}})
    e = _err(moved, TruncatedDumpError)
    assert ".xen_pages ends past the end" in str(e)
    tolerant = open_bytes(moved, strict=False)
    batch = tolerant.read_batch(0, 8)
    assert batch.ram.all() and batch.lost.sum() >= 3 and not (batch.present & batch.lost).any()
    assert batch.present.sum() + batch.lost.sum() == 8
    assert tolerant.lost_pages() == batch.lost.sum()


# --- a realistic image: real guest memory --------------------------------------------------------


@pytest.fixture(scope="module")
def real_core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pages = corpus_pages()
    path = tmp_path_factory.mktemp("xen") / "guest.core"
    path.write_bytes(build_xc_core(pages, vcpus=[_ctx(), _ctx(cs=0x33)], invalid_slots=2))
    return path


def _info(path: Path, *args: str) -> dict:
    proc = kdumptool("info", "--json", *args, path)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def test_info_identifies_the_kernel_and_the_hypervisor(real_core: Path) -> None:
    s = _info(real_core)
    assert s["format"] == "xen-core" and s["arch"] == "x86_64"
    assert s["kernel"]["release"] == RELEASE
    assert s["kernel"]["release_source"] in ("banner in memory", "utsname in memory")
    assert s["xen"]["version"] == "4.17.3" and s["xen"]["domain"] == "HVM"
    sources = {e["source"] for e in s["identification"]}
    assert "xen version note" in sources
    assert s["cpus"] == 2 and s["cpus_state"][0]["pc"] == f"{RIP:#x}"
    text = kdumptool("info", real_core).stdout.decode()
    assert "xen:           4.17.3 (from xen version note), HVM guest" in text
    assert f"kernel:        {RELEASE}" in text


@pytest.mark.parametrize("fmt", [[], ["-E"], ["-c"]])
def test_convert_keeps_pages_cpu_state_and_xen_notes(real_core: Path, tmp_path: Path,
                                                     fmt: list[str]) -> None:
    out = tmp_path / "out"
    proc = kdumptool("convert", "-q", *fmt, real_core, out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert our_digests(out) == our_digests(real_core) == _sha(corpus_pages())
    s = _info(out)
    assert s["format"] == ("elf64" if fmt == ["-E"] else "kdump")
    assert s["kernel"]["release"] == RELEASE and s["cpus"] == 2
    assert s["notes"]["Xen/XEN_ELFNOTE_DUMPCORE_XEN_VERSION"] == 1
    assert s["xen"]["version"] == "4.17.3"
    assert s["cpus_state"][1]["pc"] == f"{RIP:#x}"


def test_converted_with_vmcoreinfo_opens_in_peers(real_core: Path, tmp_path: Path) -> None:
    """With the guest's VMCOREINFO supplied (-i), the kdump output is a Linux dump that drgn and
    libkdumpfile read page for page."""
    from ours import assert_peers_read

    out = tmp_path / "out.kdump"
    vmci = corpus_path(VMCOREINFO)  # a small text file of the corpus, read where it is
    proc = kdumptool("convert", "-q", "-i", vmci, real_core, out)
    assert proc.returncode == 0, proc.stderr.decode()
    pages = _sha(corpus_pages())
    sample = {p: pages[p] for p in list(pages)[::97]}
    assert_peers_read(out, sample)
    with open_dump(str(out)) as r:
        assert r.info.release == RELEASE


# --- PV page tables hold machine frames ---------------------------------------------------------


def test_pv_page_tables_are_walked_through_the_p2m() -> None:
    """A PV guest's page tables hold machine frames (real dump-core files: see
    test_real_xen.py); the walker maps each table and the final frame back through .xen_p2m
    (the builder's p2m: gmfn = pfn + 0x100000)."""
    from kdumptool.vtop.walker import TranslationError, Walker
    from kdumptool.vtop.x86_64 import FOUR_LEVEL, decoder

    machine = 0x100000
    va = 0xFFFF888000123000
    pages = dict(PAGES)
    for level, pfn in enumerate((1, 2, 3, 4)):
        table = bytearray(4096)
        nxt = pfn + 1 if level < 3 else 0x77
        struct.pack_into("<Q", table, ((va >> (39 - 9 * level)) & 511) * 8,
                         ((nxt + machine) << 12) | 0x67)
        pages[pfn] = bytes(table)
    r = open_bytes(build_xc_core(pages, hvm=False))
    assert r.frame_map is not None
    walker = Walker(FOUR_LEVEL, decoder(), 1 << 12, r.read, frame_map=r.frame_map)
    assert walker.translate(va + 0x10) == 0x77010
    assert r.read(walker.translate(va), 4096) == PAGES[0x77]
    with pytest.raises(TranslationError, match=r"pgd\[273\].* is not present|cannot be read"):
        Walker(FOUR_LEVEL, decoder(), 1 << 12, r.read).translate(va)  # tables read as pfns
    pages[4] = struct.pack("<Q", (0x5555 << 12) | 0x67) * 512  # a frame that is not the guest's
    r = open_bytes(build_xc_core(pages, hvm=False))
    walker = Walker(FOUR_LEVEL, decoder(), 1 << 12, r.read, frame_map=r.frame_map)
    with pytest.raises(TranslationError, match="machine frame 0x5555, which is not one of the guest's"):
        walker.translate(va)
    assert open_bytes(build_xc_core(PAGES, hvm=True)).frame_map is None  # HVM: guest frames
