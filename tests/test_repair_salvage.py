"""repair on synthetic damage (fast; the real-corpus versions are in test_repair.py): what
was lost from a header or a bitmap is rebuilt from the rest of the file, and every page
kept reads back as it was."""

from __future__ import annotations

import struct
from pathlib import Path

import builders as b
import pytest
from ours import our_digests

from kdumptool.errors import CorruptDumpError, UnknownFormatError
from kdumptool.open import open_dump
from kdumptool.repair.checks import fsck
from kdumptool.repair.salvage import repair

# --- e_phnum zeroed -------------------------------------------------------------------------


def _elf_pages() -> dict[int, bytes]:
    # three runs: three PT_LOADs with data, one more without (excluded pages)
    pfns = [*range(1, 9), *range(40, 44), *range(100, 103)]
    return {pfn: b.page_for(pfn) for pfn in pfns} | {200: b.Excluded()}


@pytest.mark.parametrize("elf_class,endian", [(64, "<"), (32, ">")])
def test_zeroed_phnum_is_rebuilt_from_the_table(tmp_path: Path, elf_class: int, endian: str) -> None:
    machine = b.EM_X86_64 if elf_class == 64 else 20  # ppc: a 32-bit big-endian machine
    image = bytearray(b.build_elf(_elf_pages(), elf_class=elf_class, endian=endian, machine=machine,
                                  vmcoreinfo=b.vmcoreinfo_text(machine=machine)))
    at = 0x38 if elf_class == 64 else 0x2C
    phnum, = struct.unpack_from(endian + "H", image, at)
    good = tmp_path / "good.elf"
    good.write_bytes(bytes(image))
    struct.pack_into(endian + "H", image, at, 0)
    broken, out = tmp_path / "phnum0.elf", tmp_path / "out.elf"
    broken.write_bytes(bytes(image))
    with pytest.raises(CorruptDumpError) as info:  # reading strictly still refuses it
        open_dump(str(broken))
    assert info.value.offset == at
    report = fsck([str(broken)])
    assert report.exit_code == 1, [str(f) for f in report.findings]
    finding, = [f for f in report.findings if f.code == "elf-phnum"]
    assert finding.offset == at and f"holds {phnum} entries" in finding.message
    result = repair([str(broken)], str(out))
    assert any("e_phnum" in a for a in result["actions"])
    assert our_digests(out) == our_digests(good) and len(our_digests(good)) == 15
    assert fsck([str(out)]).exit_code == 0


def test_phnum_is_not_invented_without_a_note_first(tmp_path: Path) -> None:
    """A table that does not open with PT_NOTE is no table: the dump stays unreadable."""
    image = bytearray(b.build_elf(_elf_pages(), vmcoreinfo=b.vmcoreinfo_text()))
    struct.pack_into("<H", image, 0x38, 0)
    struct.pack_into("<I", image, 0x40, 1)  # the PT_NOTE turned into a PT_LOAD
    path = tmp_path / "x.elf"
    path.write_bytes(bytes(image))
    report = fsck([str(path)])
    assert report.exit_code == 3 and report.findings[0].code == "unreadable"


def test_phnum_count_stops_at_the_segment_data(tmp_path: Path) -> None:
    """Entries past the table (here: the notes, and a copy of a PT_LOAD put right after the
    table, where the data begins) are not counted."""
    image = bytearray(b.build_elf(_elf_pages(), vmcoreinfo=b.vmcoreinfo_text()))
    phoff, = struct.unpack_from("<Q", image, 0x20)
    phnum, = struct.unpack_from("<H", image, 0x38)
    end = phoff + 56 * phnum
    note_off, = struct.unpack_from("<Q", image, phoff + 8)
    assert note_off == end  # the notes follow the table, as makedumpfile writes them
    struct.pack_into("<H", image, 0x38, 0)
    image[end:end + 56] = image[phoff + 56:phoff + 112]  # a valid-looking PT_LOAD in the notes
    path = tmp_path / "x.elf"
    path.write_bytes(bytes(image))
    with open_dump(str(path), strict=False) as r:
        assert r.rebuilt_phnum == phnum


# --- kdump signature damaged ----------------------------------------------------------------


def _kdump_pages() -> dict[int, object]:
    pages: dict[int, object] = {pfn: b.page_for(pfn) for pfn in range(1, 300) if pfn % 7}
    return pages | {pfn: b.Excluded() for pfn in range(7, 300, 7)}


def _kdump(tmp_path: Path, name: str, **kw: object) -> Path:
    path = tmp_path / name
    path.write_bytes(b.build_kdump(_kdump_pages(), codec="zlib", vmcoreinfo=b.vmcoreinfo_text(),
                                   **kw))  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("bad", [b"KDUMQ   ", b"\0\0\0\0\0\0\0\0", b"DISKDUMQ"])
def test_damaged_kdump_signature_is_restored(tmp_path: Path, bad: bytes) -> None:
    good = _kdump(tmp_path, "good.kdump")
    broken, out = tmp_path / "sig.kdump", tmp_path / "out.kdump"
    broken.write_bytes(bad + good.read_bytes()[8:])
    with pytest.raises(UnknownFormatError) as info:  # strictly: refused, with a hint
        open_dump(str(broken))
    assert "signature is damaged" in info.value.message
    report = fsck([str(broken)])
    assert report.exit_code == 1, [str(f) for f in report.findings]
    finding, = report.findings
    assert finding.code == "kdump-signature" and finding.offset == 0
    assert "kdump-compressed, signature damaged" in finding.message
    result = repair([str(broken)], str(out))
    assert "kdump signature restored" in result["actions"]
    assert out.read_bytes()[:8] == b"KDUMP   " and our_digests(out) == our_digests(good)
    assert fsck([str(out)]).exit_code == 0


def test_a_signature_is_not_restored_when_the_rest_disagrees(tmp_path: Path) -> None:
    """Damage elsewhere too (a zeroed 2nd-bitmap byte): the file is not taken for a kdump."""
    good = _kdump(tmp_path, "good.kdump")
    with open_dump(str(good)) as r:
        at = r.bitmap2_offset + 4  # pfns 32-39, all dumped
    data = bytearray(good.read_bytes())
    data[:8] = b"KDUMQ   "
    data[at] = 0
    broken = tmp_path / "x.kdump"
    broken.write_bytes(bytes(data))
    report = fsck([str(broken)])
    assert report.exit_code == 3 and report.findings[0].code == "not-a-dump"
    junk = tmp_path / "junk"
    junk.write_bytes(b"KDUMQ   " + bytes(8192))
    assert fsck([str(junk)]).findings[0].code == "not-a-dump"


# --- flattened stream cut inside a record -----------------------------------------------------


def _data_spans(image: bytes) -> dict[int, tuple[int, int]]:
    """pfn -> [start, end) of its page data in a kdump image."""
    from kdumptool.formats.kdump import KdumpReader
    from kdumptool.repair.checks import _iter_descs
    from kdumptool.transport.source import BytesSource

    out: dict[int, tuple[int, int]] = {}
    with KdumpReader(BytesSource(image)) as r:
        for pfns, descs, _ in _iter_descs(r):
            offs, sizes = descs["offset"].tolist(), descs["size"].tolist()
            out.update((pfn, (off, off + size)) for pfn, off, size in zip(pfns.tolist(), offs, sizes,
                                                                          strict=True))
    return out


def test_flattened_stream_cut_inside_a_record_keeps_its_whole_pages(tmp_path: Path) -> None:
    image = _kdump(tmp_path, "good.kdump").read_bytes()
    stream = b.flatten(image, record_size=16384)
    spans = _data_spans(image)
    # cut inside the record that holds the data of pfn 200, a few pages into it
    rec = 4096 + spans[200][0] // 16384 * (16384 + 16)  # its header (records in image order)
    assert struct.unpack_from(">q", stream, rec)[0] == spans[200][0] // 16384 * 16384
    cut = rec + 16 + spans[200][1] % 16384 + 5
    path = tmp_path / "cut.flat"
    path.write_bytes(stream[:cut])
    kept_end = spans[200][0] // 16384 * 16384 + cut - (rec + 16)  # image bytes the file still has
    whole = {pfn for pfn, (_, end) in spans.items() if end <= kept_end}
    in_partial = {pfn for pfn in whole if spans[pfn][0] >= spans[200][0] // 16384 * 16384}
    assert 200 in in_partial and len(in_partial) > 2
    report = fsck([str(path)])
    assert "is cut" in report.findings[0].message
    result = repair([str(path)], str(tmp_path / "out.kdump"))
    kept = our_digests(tmp_path / "out.kdump")
    good = our_digests(_kdump(tmp_path, "good2.kdump"))
    assert set(kept) == whole and all(good[p] == d for p, d in kept.items())
    lost = {p for a, z in result["lost_pfn_ranges"] for p in range(a, z)}
    assert lost == set(good) - whole


# --- part of the 2nd bitmap zeroed -----------------------------------------------------------

DIRECT_MAP = 0xFFFF888000000000  # x86_64's page_offset_base without KASLR


def _listhead_page(pfn: int) -> bytes:
    """A page of ``pfn`` holding an empty ``struct list_head`` at 0x40 (two pointers to itself,
    as INIT_LIST_HEAD leaves them), the rest naming the PFN as ``page_for`` does."""
    page = bytearray(b.page_for(pfn))
    struct.pack_into("<QQ", page, 0x40, DIRECT_MAP + pfn * 4096 + 0x40, DIRECT_MAP + pfn * 4096 + 0x40)
    return bytes(page)


def _zero_bitmap2(good: Path, out: Path, first_pfn: int, nbytes: int) -> int:
    """Zero ``nbytes`` bytes of the 2nd bitmap from ``first_pfn`` (a multiple of 8) on; return
    the file offset of the first."""
    with open_dump(str(good)) as r:
        at = r.bitmap2_offset + first_pfn // 8
    data = bytearray(good.read_bytes())
    data[at:at + nbytes] = bytes(nbytes)
    out.write_bytes(bytes(data))
    return at


def _bitmap2_case(tmp_path: Path, pages: dict[int, object], first_pfn: int, nbytes: int = 1) -> tuple:
    good, broken, out = tmp_path / "good.kdump", tmp_path / "b2.kdump", tmp_path / "out.kdump"
    good.write_bytes(b.build_kdump(pages, codec="zlib", vmcoreinfo=b.vmcoreinfo_text()))  # type: ignore[arg-type]
    at = _zero_bitmap2(good, broken, first_pfn, nbytes)
    return good, broken, out, at


def test_zeroed_bitmap2_byte_is_matched_by_count(tmp_path: Path) -> None:
    """One zero byte of the 2nd bitmap where the 1st has RAM, and no other: its RAM pages are
    as many as the descriptors the table has in excess, so each is matched."""
    pages: dict[int, object] = {pfn: b.page_for(pfn) for pfn in range(1, 400)}
    pages |= {pfn: b.Excluded() for pfn in range(3, 400, 16)}  # never a whole byte excluded
    good, broken, out, at = _bitmap2_case(tmp_path, pages, 88)  # pfns 88-95, all dumped
    report = fsck([str(broken)])
    assert report.exit_code == 1, [str(f) for f in report.findings]
    finding, = report.findings
    assert finding.code == "bitmap2-damaged" and finding.offset == at
    assert "all 8 page descriptors there are matched" in finding.message
    result = repair([str(broken)], str(out))
    assert result["unmatched_descriptors"] == 0 and result["lost_pfn_ranges"] == []
    assert our_digests(out) == our_digests(good)
    assert fsck([str(out)]).exit_code == 0


def test_zeroed_bitmap2_is_matched_by_page_data(tmp_path: Path) -> None:
    """Several runs could hold the lost bits (free areas); pages holding an empty list head
    name their own address, and the pages before the damage teach the direct map's offset:
    every page is matched, the free areas stay excluded."""
    pages: dict[int, object] = {pfn: _listhead_page(pfn) for pfn in range(1, 600)}
    pages |= {pfn: b.Excluded() for pfn in [*range(200, 300), *range(420, 500)]}
    good, broken, out, at = _bitmap2_case(tmp_path, pages, 320, 2)  # pfns 320-335
    report = fsck([str(broken)])
    assert report.exit_code == 1, [str(f) for f in report.findings]
    assert report.facts["bitmap2"]["missing_bits"] == 16
    assert report.facts["bitmap2"]["matched_by_page_data"] > 0
    repair([str(broken)], str(out))
    assert our_digests(out) == our_digests(good)


def test_zeroed_bitmap2_ambiguity_is_reported_exactly(tmp_path: Path) -> None:
    """Without anything in the pages to tell them apart, 16 descriptors that may belong to the
    zeroed byte or to a free area after it (and the pages between) cannot be matched: every
    page outside is kept, those are reported, and none is guessed."""
    pages: dict[int, object] = {pfn: b.page_for(pfn) for pfn in range(1, 600)}
    pages |= {pfn: b.Excluded() for pfn in range(400, 480)}
    good, broken, out, at = _bitmap2_case(tmp_path, pages, 320, 2)
    report = fsck([str(broken)])
    assert report.exit_code == 2, [str(f) for f in report.findings]
    facts = report.facts["bitmap2"]
    assert facts["missing_bits"] == 16 and facts["unmatched"] > 0
    result = repair([str(broken)], str(out))
    source, kept = our_digests(good), our_digests(out)
    assert all(source[p] == d for p, d in kept.items())
    ambiguous = {p for a, z in result["ambiguous_pfn_ranges"] for p in range(a, z)}
    assert set(source) - set(kept) <= ambiguous
    assert len(set(source) - set(kept)) == result["unmatched_descriptors"] == facts["unmatched"]
    assert {p for p in source if p < 320 or p >= 480} <= set(kept)
    with open_dump(str(out)) as r:
        assert r.info.incomplete  # pages are missing: the output says so
