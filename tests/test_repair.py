"""fsck and repair on the real corpus: intact dumps are clean, every damaged one is named with
its offset and exit code, and repair keeps every surviving page byte for byte."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest
from ours import assert_peers_read, kdumptool, our_digests
from peers import drgn_open_ok, require_tool

from corpus import corpus_path, dump_entry, need_corpus_file

KD = "x86_64-kdump-320m"
B = f"{KD}/broken"


def fsck(*args: str | Path) -> tuple[int, dict]:
    proc = kdumptool("fsck", "--json", *args)
    assert not proc.stderr, proc.stderr.decode()
    return proc.returncode, json.loads(proc.stdout)


def lost_pfns(report: dict, key: str = "lost_pfn_ranges") -> set[int]:
    return {p for a, b in report[key] for p in range(a, b)}


@pytest.mark.parametrize("rel,pages", [
    (f"{KD}/vmcore.elf", 57208), (f"{KD}/derived/c-d31.kdump", 21097),
    (f"{KD}/derived/l-d31.kdump", 21097), (f"{KD}/derived/E-d31.elf", 18514),
    (f"{KD}/derived/F-c-d31.flat", 21097), (f"{KD}/derived/z-d31.kdump", 21097),
])
def test_intact_dumps_are_clean_and_every_page_decodes(rel: str, pages: int) -> None:
    code, report = fsck("--deep", need_corpus_file(rel))
    assert code == 0 and report["findings"] == [], report["findings"]
    assert report["facts"]["pages_decoded"] == pages


def test_split_set_is_clean_and_a_missing_part_is_named() -> None:
    parts = [need_corpus_file(f"{KD}/derived/split2-c-d31.{i}") for i in (1, 2)]
    assert fsck(*parts)[0] == 0
    code, report = fsck(parts[0])
    assert code == 2 and report["findings"][0]["code"] == "split-part-missing"


#: The two real kdump sets: the 6.12 kernel's dumps were made by makedumpfile 1.7.9.
SETS = (KD, f"{KD}-6.12")


def _damage(name: str, kset: str = KD) -> dict:
    return json.loads(corpus_path(f"{kset}/broken/{name}.json").read_text())


# file, exit code, finding code, where it must point (json key or pfn-desc), needs --deep
BROKEN = [
    ("c-d31-bad-signature.kdump", 1, "kdump-signature", "patched_at", False),
    ("c-d31-bad-blocksize.kdump", 1, "header-block-size", "patched_at", False),
    ("E-d31-phnum0.elf", 1, "elf-phnum", "patched_at", False),
    ("c-d31-bad-pd-offset.kdump", 2, "bad-descriptors", "desc", False),
    ("c-d31-bad-pd-size.kdump", 2, "bad-descriptors", "desc", False),
    ("c-d31-bad-page-data.kdump", 2, "corrupt-pages", "data", True),
    ("c-d31-bad-pd-flags.kdump", 2, "corrupt-pages", "data", True),
    ("c-d31-pd-table-zeroed64.kdump", 2, "pages-lost", "patched_at", False),
    ("c-d31-bitmap2-zeroed4k.kdump", 1, "bitmap2-damaged", "patched_at", False),
    ("c-d31-trunc30.kdump", 2, "pages-lost", "truncated_at", False),
    ("c-d31-trunc60.kdump", 2, "pages-lost", "truncated_at", False),
    ("l-d31-trunc50.kdump", 2, "pages-lost", "truncated_at", False),
    ("F-c-d31-trunc50.flat", 2, "flat-truncated", "truncated_at", False),
    ("E-d31-headers-only.elf", 2, "elf-truncated", "truncated_at", False),
    ("E-d31-trunc60.elf", 2, "elf-truncated", "truncated_at", False),
    ("vmcore-trunc50.elf", 2, "elf-truncated", "truncated_at", False),
    ("E-d31-poffset-past-eof.elf", 2, "elf-bad-offset", "patched_at", False),
    ("E-d31-poffset-past-eof-mid.elf", 2, "elf-bad-offset", "patched_at", False),
]


def _each_set(cases: list) -> list:
    """``cases`` on both kdump sets, as pytest params with readable ids."""
    return [pytest.param(kset, *case, id=f"{'6.12' if kset.endswith('6.12') else '6.1'}-{case[0]}")
            for kset in SETS for case in cases]


def test_every_broken_file_is_listed() -> None:
    from corpus import dump_rels, need_corpus

    need_corpus()
    for kset in SETS:
        names = {rel.rsplit("/", 1)[1] for rel in dump_rels() if rel.startswith(f"{kset}/broken/")}
        assert names == {case[0] for case in BROKEN}, kset


@pytest.mark.corpus
@pytest.mark.parametrize("kset,name,code,finding,where,deep", _each_set(BROKEN))
def test_fsck_names_the_damage(kset: str, name: str, code: int, finding: str, where: str,
                               deep: bool) -> None:
    path = need_corpus_file(f"{kset}/broken/{name}")
    got, report = fsck(*(["--deep"] if deep else []), path)
    assert got == code, report
    hits = [f for f in report["findings"] if f["code"] == finding]
    assert hits, report["findings"]
    d = _damage(name, kset)
    expected = {"desc": lambda: d["page_desc"]["desc_file_offset"],
                "data": lambda: d["page_desc"]["offset"]}.get(where, lambda: d[where])()
    assert hits[0]["offset"] == expected
    if "pfn" in d:
        assert d["pfn"] in lost_pfns(report)


def _original(name: str, kset: str = KD) -> Path:
    return need_corpus_file(f"{kset}/{_damage(name, kset)['source']}")


REPAIRABLE = [b[:1] for b in BROKEN if b[1] in (1, 2) and b[2] != "bitmap-table-mismatch"]


@pytest.mark.corpus
@pytest.mark.peer
@pytest.mark.parametrize("kset,name", _each_set(REPAIRABLE))
def test_repair_keeps_every_surviving_page(tmp_path: Path, kset: str, name: str) -> None:
    src = need_corpus_file(f"{kset}/broken/{name}")
    out = tmp_path / "repaired"
    proc = kdumptool("repair", "--json", src, out)
    result = json.loads(proc.stdout)
    assert proc.returncode == result["exit_code"] == (1 if lost_pfns(result) else 0), proc.stderr.decode()
    original, repaired = _source_digests(_original(name, kset)), our_digests(out)
    assert all(original.get(p) == d for p, d in repaired.items())
    assert set(original) - set(repaired) == lost_pfns(result)  # the lost ranges are exact
    assert fsck(out)[0] == 0  # the repaired file is consistent (marked incomplete)
    # the peers read a sample (every page is compared with our reader above); their first
    # read looks for the kernel through page tables; where those pages were lost, that one
    # read fails (drgn: "Linux kernel text search failed")
    assert_peers_read(out, _sample(repaired), max_unread=1)


def _sample(pages: dict[int, str], n: int = 2000) -> dict[int, str]:
    """About ``n`` of ``pages``, evenly spread over their PFNs."""
    pfns = sorted(pages)
    return {p: pages[p] for p in pfns[::max(1, len(pfns) // n)]}


@pytest.mark.corpus
@pytest.mark.parametrize("kset,name", _each_set([("c-d31-bad-blocksize.kdump",),
                                                 ("c-d31-bad-signature.kdump",)]))
def test_damaged_header_field_is_rebuilt_byte_for_byte(tmp_path: Path, kset: str, name: str) -> None:
    """The sub-header's VMCOREINFO gives the page size back; a signature whose header,
    bitmaps and descriptor table agree is restored: the repaired file is the original
    makedumpfile file, byte for byte."""
    out = tmp_path / "o.kdump"
    proc = kdumptool("repair", need_corpus_file(f"{kset}/broken/{name}"), out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.read_bytes() == need_corpus_file(f"{kset}/derived/c-d31.kdump").read_bytes()


@functools.cache
def _source_digests(path: Path) -> dict[int, str]:
    return our_digests(path)


def _bitmap2_variant(src: Path, dst: Path, first_byte: int, nbytes: int, value: int = 0) -> int:
    """``src`` with ``nbytes`` bytes of its 2nd bitmap from ``first_byte`` on set to ``value``;
    returns the file offset of the first."""
    from kdumptool.open import open_dump

    with open_dump(str(src)) as r:
        at = r.bitmap2_offset + first_byte
    data = bytearray(src.read_bytes())
    data[at:at + nbytes] = bytes([value]) * nbytes
    dst.write_bytes(bytes(data))
    return at


def test_repair_refuses_what_it_cannot_undo(tmp_path: Path) -> None:
    """Extra bits in the 2nd bitmap (more pages declared than the table has descriptors): no
    page can be matched to its data."""
    import numpy as np

    from kdumptool.open import open_dump

    src = need_corpus_file(f"{KD}/derived/c-d31.kdump")
    with open_dump(str(src)) as r:
        ram, dumped = r._bitmap_bytes(1, 0, r.bitmap_len), r._bitmap_bytes(2, 0, r.bitmap_len)
    byte = int(np.flatnonzero((ram == 0xFF) & (dumped == 0))[0])  # 8 RAM pages, none dumped
    broken = tmp_path / "extra.kdump"
    _bitmap2_variant(src, broken, byte, 1, 0xFF)
    code, report = fsck(broken)
    assert code == 2 and report["findings"][0]["code"] == "bitmap-table-mismatch"
    proc = kdumptool("repair", broken, tmp_path / "o")
    assert proc.returncode == 3 and b"cannot repair" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("rel", [f"{KD}/derived/c-d31.kdump", f"{KD}/derived/F-c-d31.flat",
                                 f"{KD}/derived/E-d31.elf"])
@pytest.mark.parametrize("percent", [10, 30, 50, 70, 90])
def test_truncated_copies(tmp_path: Path, rel: str, percent: int) -> None:
    src = need_corpus_file(rel)
    size = src.stat().st_size * percent // 100
    cut = tmp_path / f"cut{percent}"
    with open(src, "rb") as f, open(cut, "wb") as g:
        g.write(f.read(size))
    code, report = fsck(cut)
    assert code == 2, report
    assert any(f["offset"] == size for f in report["findings"]), report["findings"]
    out = tmp_path / "repaired"
    proc = kdumptool("repair", "--json", cut, out)
    assert proc.returncode == 1, proc.stderr.decode()  # pages were lost
    original, repaired = our_digests(src), our_digests(out)
    assert all(original.get(p) == d for p, d in repaired.items())
    assert set(original) - set(repaired) == lost_pfns(json.loads(proc.stdout))
    assert repaired  # something survived


# (first byte of the 2nd bitmap, bytes zeroed): 4 KiB in the middle of the bitmap (pfns
# 0x8000-0xffff), and one byte whose eight pages are all dumped
BITMAP2_DAMAGE = {"4k-middle": (0x1000, 4096), "1-byte": (None, 1)}


@pytest.mark.corpus
@pytest.mark.peer
@pytest.mark.parametrize("kset", SETS)
@pytest.mark.parametrize("damage", list(BITMAP2_DAMAGE))
def test_zeroed_part_of_the_2nd_bitmap(tmp_path: Path, kset: str, damage: str) -> None:
    """Every page outside the uncertain span is kept, every page kept is the source's (ours
    and drgn's reading), and the pages left out are exactly the unmatched descriptors', all in
    the ranges reported ambiguous."""
    import numpy as np

    from kdumptool.open import open_dump

    src = need_corpus_file(f"{kset}/derived/c-d31.kdump")
    first, nbytes = BITMAP2_DAMAGE[damage]
    if first is None:
        with open_dump(str(src)) as r:
            dumped = r._bitmap_bytes(2, 0, r.bitmap_len)
        first = 0x1400 + int(np.flatnonzero(dumped[0x1400:] == 0xFF)[0])
    broken, out = tmp_path / "b2.kdump", tmp_path / "out.kdump"
    at = _bitmap2_variant(src, broken, first, nbytes)
    code, report = fsck(broken)
    hit, = [f for f in report["findings"] if f["code"] == "bitmap2-damaged"]
    facts = report["facts"]["bitmap2"]
    assert code == (2 if facts["unmatched"] else 1), report["findings"]
    assert hit["offset"] <= at and facts["missing_bits"] > 0
    proc = kdumptool("repair", "--json", broken, out)
    result = json.loads(proc.stdout)
    assert proc.returncode == result["exit_code"] == (1 if facts["unmatched"] else 0), proc.stderr
    source, kept = _source_digests(src), our_digests(out)
    assert all(source.get(p) == d for p, d in kept.items())
    missing = set(source) - set(kept)
    assert len(missing) == result["unmatched_descriptors"] == facts["unmatched"] == result["pages_lost"]
    assert missing - lost_pfns(result) <= lost_pfns(result, "ambiguous_pfn_ranges")
    lo, hi = facts["pfn_range"]
    assert {p for p in source if p < lo or p >= hi} <= set(kept)
    assert_peers_read(out, _sample(kept), ("drgn",), max_unread=1)


def _flat_records(stream: Path) -> list[tuple[int, int, int]]:
    """(image offset, bytes the file holds, file offset of the data) of each record, the last
    one as far as the file goes (parsed here, independently of kdumptool)."""
    import struct

    data, pos, out = stream.read_bytes(), 4096, []
    while pos + 16 <= len(data):
        offset, size = struct.unpack_from(">qq", data, pos)
        if offset < 0:
            break
        out.append((offset, min(size, len(data) - pos - 16), pos + 16))
        pos += 16 + size
    return out


def _kept_by_records(original_flat: Path, cut: Path) -> set[int]:
    """The pages whose descriptor and whole data the records of ``cut`` still hold."""
    from kdumptool.open import open_dump
    from kdumptool.repair.checks import _iter_descs

    held: list[list[int]] = []  # image ranges the records hold, adjacent ones merged
    for a, b in sorted((o, o + n) for o, n, _ in _flat_records(cut)):
        if held and a <= held[-1][1]:
            held[-1][1] = max(held[-1][1], b)
        else:
            held.append([a, b])

    def covered(lo: int, hi: int) -> bool:
        return any(a <= lo and hi <= b for a, b in held)

    out = set()
    with open_dump(str(original_flat)) as r:
        for pfns, descs, pos in _iter_descs(r):
            for pfn, at, off, size in zip(pfns.tolist(), pos.tolist(), descs["offset"].tolist(),
                                          descs["size"].tolist(), strict=True):
                if covered(at, at + 24) and covered(off, off + size):
                    out.add(pfn)
    return out


@pytest.mark.corpus
@pytest.mark.parametrize("kset", SETS)
@pytest.mark.parametrize("where", ["corpus-trunc50", "mid-data-record"])
def test_flattened_stream_cut_inside_a_record(tmp_path: Path, kset: str, where: str) -> None:
    """The complete pages inside the last, partial record are kept too."""
    original = need_corpus_file(f"{kset}/derived/F-c-d31.flat")
    if where == "corpus-trunc50":
        cut = need_corpus_file(f"{kset}/broken/F-c-d31-trunc50.flat")
    else:  # the biggest record of page data, cut in its middle
        from kdumptool.open import open_dump

        with open_dump(str(original)) as r:
            data_start = r.desc_end
        _, size, at = max((r for r in _flat_records(original) if r[0] >= data_start),
                          key=lambda r: r[1])
        cut = tmp_path / "cut.flat"
        cut.write_bytes(original.read_bytes()[:at + size // 2])
    last_offset, last_kept, last_at = _flat_records(cut)[-1]
    assert last_at + last_kept == cut.stat().st_size  # the file ends inside that record
    expected = _kept_by_records(original, cut)
    out = tmp_path / "repaired"
    proc = kdumptool("repair", "--json", cut, out)
    assert proc.returncode == 1, proc.stderr.decode()  # pages were lost
    source, repaired = _source_digests(original), our_digests(out)
    assert set(repaired) == expected and all(source[p] == d for p, d in repaired.items())
    assert lost_pfns(json.loads(proc.stdout)) == set(source) - expected


def test_zero_fill_and_in_place(tmp_path: Path) -> None:
    src = tmp_path / "t.kdump"
    shutil.copyfile(need_corpus_file(f"{B}/c-d31-trunc30.kdump"), src)
    before = src.read_bytes()
    proc = kdumptool("repair", "--json", "--zero-fill", "--in-place", src)
    assert proc.returncode == 1, proc.stderr.decode()  # pages were lost, written as zeros
    result = json.loads(proc.stdout)
    filled = lost_pfns(result, "zero_filled_pfn_ranges")
    assert filled and (tmp_path / "t.kdump.bak").read_bytes() == before
    pages = our_digests(src)
    zero = our_digests(need_corpus_file(f"{KD}/derived/c-d31.kdump"))
    assert set(pages) == set(zero)  # nothing missing any more
    import hashlib

    z = hashlib.sha1(bytes(4096)).hexdigest()
    assert all(pages[p] == z for p in filled)
    assert fsck(src)[0] == 0


def test_qemu_dumps_are_repaired_into_files_drgn_opens(tmp_path: Path) -> None:
    require_tool("drgn")
    for rel, finding in (("x86_64-qemu-256m/qemu-kdump-zlib.vmcore", "empty-utsname"),
                         ("x86_64-qemu-256m-novmcoreinfo/qemu-elf.vmcore", "no-vmcoreinfo")):
        src = need_corpus_file(rel)
        code, report = fsck(src)
        assert code == 1 and report["findings"][0]["code"] == finding
        assert not drgn_open_ok(src, isolate=True)[0]
        out = tmp_path / (Path(rel).name + ".fixed")
        proc = kdumptool("repair", src, out)
        assert proc.returncode == 0, proc.stderr.decode()
        assert fsck(out)[0] == 0
        ok, release = drgn_open_ok(out, isolate=True)
        assert ok and release == dump_entry("x86_64-qemu-256m/qemu-elf.vmcore")["osrelease_in_file"]
        assert b"6.1.0-56-amd64" in kdumptool("info", out).stdout


REGRESSIONS = sorted((Path(__file__).resolve().parent.parent / "fuzz" / "regressions").glob("*.bin"))


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.stem for p in REGRESSIONS])
def test_fsck_and_repair_survive_hostile_inputs(tmp_path: Path, path: Path) -> None:
    """Every input a fuzz campaign ever broke: fsck reports, repair repairs or refuses."""
    from kdumptool.errors import KdumpToolError
    from kdumptool.repair.checks import fsck as run_fsck
    from kdumptool.repair.salvage import repair

    report = run_fsck([str(path)], deep=True)
    assert 0 <= report.exit_code <= 3
    try:
        repair([str(path)], str(tmp_path / "out"))
    except KdumpToolError:
        assert not (tmp_path / "out").exists()


def _zero_descriptors(src: Path, dst: Path, first: int, count: int) -> None:
    from kdumptool.formats.kdump import KdumpReader
    from kdumptool.transport.source import FileSource

    with KdumpReader(FileSource(str(src))) as r:
        at = r.desc_offset + 24 * first
    data = bytearray(src.read_bytes())
    data[at:at + 24 * count] = bytes(24 * count)
    dst.write_bytes(bytes(data))


def test_emptied_descriptors_are_rebuilt_from_page_data(tmp_path: Path) -> None:
    """makedumpfile's page data is in PFN order: descriptors 3008-3011 of the real c-d31 file
    (four compressed pages) come back from the data between their neighbours."""
    src = need_corpus_file(f"{KD}/derived/c-d31.kdump")
    broken, out = tmp_path / "b.kdump", tmp_path / "o.kdump"
    _zero_descriptors(src, broken, 3008, 4)
    code, report = fsck(broken)
    assert code == 1 and report["findings"][0]["code"] == "descriptors-recoverable"
    proc = kdumptool("repair", "--json", broken, out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert lost_pfns(json.loads(proc.stdout)) == set()
    assert out.read_bytes() == src.read_bytes()  # the same file, byte for byte


def test_emptied_zero_page_descriptors_stay_lost(tmp_path: Path) -> None:
    """3003-3009 hold shared zero pages, which leave no data: guessing would invent pages."""
    src = need_corpus_file(f"{KD}/derived/c-d31.kdump")
    broken, out = tmp_path / "b.kdump", tmp_path / "o.kdump"
    _zero_descriptors(src, broken, 3003, 7)
    code, report = fsck(broken)
    assert code == 2 and "descriptors-recoverable" not in [f["code"] for f in report["findings"]]
    proc = kdumptool("repair", "--json", broken, out)
    assert proc.returncode == 1, proc.stderr.decode()
    assert len(lost_pfns(json.loads(proc.stdout))) == 7


def test_fabricated_vmcoreinfo_is_detected_and_replaced(tmp_path: Path) -> None:
    """A VMCOREINFO note that names another kernel (as some hypervisors fabricate one): fsck
    sees memory disagree; repair swaps in the kernel's own copy found in memory."""
    src = need_corpus_file(f"{KD}/derived/c-d31.kdump")
    fake = tmp_path / "fake.txt"
    text = corpus_path(f"{KD}/vmcoreinfo.txt").read_text().replace("OSRELEASE=6.1.0-56-amd64",
                                                                     "OSRELEASE=9.9.9-fake")
    fake.write_text(text)
    faked = tmp_path / "faked.kdump"
    assert kdumptool("convert", "-q", "-c", "-i", fake, src, faked).returncode == 0
    code, report = fsck(faked)
    assert "vmcoreinfo-mismatch" in [f["code"] for f in report["findings"]]
    out = tmp_path / "o.kdump"
    proc = kdumptool("repair", faked, out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"kernel's own copy" in proc.stdout
    assert b"OSRELEASE=6.1.0-56-amd64" in kdumptool("vmcoreinfo", out).stdout
    assert fsck(out)[0] == 0


def test_repair_exit_status_says_whether_pages_were_lost(tmp_path: Path) -> None:
    """A headers-only ELF (cut right before the first PT_LOAD's data): the output holds no page,
    which repair says, with exit status 1; an intact dump repairs with 0. "pages written" is
    what info counts in the output (an ELF's overlapping PT_LOADs hold some pages twice)."""
    kd = "x86_64-kdump-320m-6.12"
    src = need_corpus_file(f"{kd}/broken/E-d31-headers-only.elf")
    damage = json.loads(corpus_path(f"{kd}/broken/E-d31-headers-only.elf.json").read_text())
    assert src.stat().st_size == damage["truncated_at"]
    declared = our_digests(need_corpus_file(f"{kd}/{damage['source']}"))
    out = tmp_path / "o.elf"
    proc = kdumptool("repair", src, out)
    assert proc.returncode == 1, proc.stderr.decode()
    assert proc.stdout.decode().splitlines()[-1] == \
        f"{out}: ELF, 0 pages written, {len(declared)} pages lost (marked missing)"
    result = json.loads(kdumptool("repair", "--json", "--force", src, out).stdout)
    assert (result["exit_code"], result["pages_written"], result["pages_lost"]) == (1, 0, len(declared))
    assert lost_pfns(result) == set(declared)
    intact = need_corpus_file(f"{kd}/{damage['source']}")
    proc = kdumptool("repair", "--json", intact, tmp_path / "whole.elf")
    result = json.loads(proc.stdout)
    assert proc.returncode == result["exit_code"] == 0 and result["pages_lost"] == 0
    info = json.loads(kdumptool("info", "--json", tmp_path / "whole.elf").stdout)
    assert result["pages_written"] == info["pages"]["present"] == len(declared)


def test_the_registry_tells_each_reader_its_format_and_hooks() -> None:
    from kdumptool.formats import READERS, entry_of
    from kdumptool.open import open_dumps
    from kdumptool.repair.checks import FORMAT_CHECKS

    assert set(FORMAT_CHECKS) <= {e.name for e in READERS}  # checks of registered formats only
    parts = [str(need_corpus_file(f"{KD}/derived/split2-c-d31.{i}")) for i in (1, 2)]
    for paths, name, of_parts, repair_as in [
        ([str(need_corpus_file(f"{KD}/derived/c-d31.kdump"))], "kdump", "kdump", "kdump"),
        ([str(need_corpus_file(f"{KD}/derived/E-d31.elf"))], "elf", "elf", "elf"),
        (parts, None, "kdump", None),  # a split set is no registered format; its parts are
    ]:
        with open_dumps(paths, strict=False) as reader:
            entry = entry_of(reader)
            assert (entry.name if entry else None) == name
            assert entry_of(reader, of_parts=True).name == of_parts  # type: ignore[union-attr]
            if entry is not None:
                assert entry.repair_as == repair_as
                assert entry.lost_pages is not None and entry.lost_pages(reader) == 0


@pytest.mark.corpus
def test_repair_writes_elf_on_every_core_with_the_same_bytes(tmp_path: Path) -> None:
    """repair writes through the writer registry, so an ELF repair uses ``--threads`` like a
    conversion (issue 21): one worker and two give the same bytes and every page survives."""
    src = need_corpus_file(f"{KD}/derived/E-d31.elf")
    broken = tmp_path / "phnum0.elf"
    image = bytearray(src.read_bytes())
    image[0x38:0x3A] = b"\0\0"  # e_phnum of an ELF64 header
    broken.write_bytes(bytes(image))
    outs = []
    for threads in ("1", "2"):
        out = tmp_path / f"out-{threads}.elf"
        proc = kdumptool("repair", "--threads", threads, str(broken), str(out))
        assert proc.returncode == 0, proc.stderr
        outs.append(out)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert our_digests(outs[0]) == our_digests(src)
