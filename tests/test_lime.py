"""LiME memory images (SPEC.md "LiME memory images").

No LiME file of a real machine is here (LiME is a kernel module, not built on this machine):
the real-memory tests read an image written by ``tests/builders_lime.py`` from the RAM of the
corpus's real ``/proc/vmcore`` (the image LiME would have written of that guest), and judge
it page for page against that dump, and by makedumpfile's own ``dmesg.txt``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders_lime import PS, fuzz_seed, header, lime_from_dump, lime_image
from ours import kdumptool, our_digests

from corpus import corpus_bytes, corpus_path, need_corpus_file
from kdumptool.errors import CorruptDumpError, TruncatedDumpError, UnknownFormatError
from kdumptool.formats import find_reader
from kdumptool.formats.lime import LimeReader, probe
from kdumptool.open import open_bytes, open_dump

VMCORE = "x86_64-kdump-320m/vmcore.elf"


def _page(pfn: int) -> bytes:
    return pfn.to_bytes(8, "little") * (PS // 8)


def _pages(first: int, n: int) -> bytes:
    return b"".join(_page(first + k) for k in range(n))


@pytest.fixture(scope="module")
def real_lime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lime") / "vmcore.lime"
    with open_dump(str(need_corpus_file(VMCORE))) as reader, open(out, "wb") as f:
        ranges = lime_from_dump(reader, f)
    assert len(ranges) >= 2
    return out


def test_probe_and_registry() -> None:
    img = lime_image([(0x1000, _pages(1, 2))])
    assert img[:4] == b"EMiL" and probe(img[:4096]) and find_reader(img[:4096]).name == "lime"
    assert find_reader(lime_image([(0, _pages(0, 1))], endian=">")[:4096]).name == "lime"
    assert not probe(b"\x7fELF\x02\x01\x01\0") and not probe(b"EMi")


def test_real_memory_page_for_page(real_lime: Path) -> None:
    theirs = our_digests(need_corpus_file(VMCORE))
    ours = our_digests(real_lime)
    assert len(ours) > 50000 and ours == theirs


def test_info_and_vmcoreinfo_found_in_memory(real_lime: Path) -> None:
    info = json.loads(kdumptool("info", "--json", real_lime).stdout)
    # the format names no architecture: info finds the kernel's own utsname in memory
    assert info["format"] == "lime" and info["arch"] == "x86_64"
    kernel = info["kernel"]
    assert kernel["release"] == "6.1.0-56-amd64" and kernel["utsname_source"] == "utsname in memory"
    scan = kdumptool("vmcoreinfo", "--scan", real_lime)
    assert scan.returncode == 0 and b"OSRELEASE=6.1.0-56-amd64\n" in scan.stdout


def test_dmesg_with_vmcoreinfo_is_makedumpfiles(real_lime: Path) -> None:
    vmci = corpus_path("x86_64-kdump-320m/vmcoreinfo.txt")
    proc = kdumptool("dmesg", "-i", vmci, real_lime)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == corpus_bytes("x86_64-kdump-320m/derived/dmesg.txt")


def test_filtered_conversion_keeps_the_pages_of_the_real_dump(real_lime: Path, tmp_path: Path) -> None:
    vmci = corpus_path("x86_64-kdump-320m/vmcoreinfo.txt")
    a, b = tmp_path / "from-lime.kdump", tmp_path / "from-elf.kdump"
    for src, out in ((real_lime, a), (need_corpus_file(VMCORE), b)):
        proc = kdumptool("convert", "-q", "-l", "-d", "31", "-i", vmci, src, out)
        assert proc.returncode == 0, proc.stderr
    assert our_digests(a) == our_digests(b)


def test_partial_pages_and_shared_pages() -> None:
    # 0x1000-0x9fbff as LiME writes it (a partial last page), then a range sharing that page
    low = _pages(1, 0x9F)[:0x9EC00]
    img = lime_image([(0x1000, low), (0x9FC00, b"\xAB" * 0x400), (0x100000, _pages(0x100, 3))])
    r = open_bytes(img)
    assert isinstance(r, LimeReader) and r.max_pfn == 0x103 and r.count_pages() == (0x9F + 3, 0x9F + 3)
    assert r.read_page(0x50) == _page(0x50)
    assert r.read_page(0x9F) == _page(0x9F)[:0xC00] + b"\xAB" * 0x400
    assert r.read_page(0x102) == _page(0x102)
    ram, present = r.bitmaps(0, 0x200)
    assert not ram[0] and ram[1:0xA0].all() and not ram[0xA0:0x100].any() and present[0x100:0x103].all()


def test_big_endian_header() -> None:
    r = open_bytes(lime_image([(0x2000, _pages(2, 2))], endian=">"))
    assert r.info.endian == ">" and r.read_page(3) == _page(3)


def test_truncated_image() -> None:
    img = lime_image([(0, _pages(0, 4)), (0x10000, _pages(0x10, 4))])
    cut = img[:len(img) - 100]
    with pytest.raises(TruncatedDumpError) as e:
        open_bytes(cut)
    assert e.value.offset == len(cut)
    r = open_bytes(cut, strict=False)
    assert r.info.incomplete and r.max_pfn == 4 and r.read_page(3) == _page(3)
    with pytest.raises(TruncatedDumpError):
        open_bytes(img[:HEADER_CUT])


HEADER_CUT = 32 + 4 * PS + 20  # inside the second header


def test_bad_second_header() -> None:
    first = lime_image([(0, _pages(0, 1))])
    for bad, cls, off in [
        (header(0x10000, 0x10FFF, magic=0x12345678), CorruptDumpError, len(first)),
        (header(0x10000, 0x10FFF, version=2), CorruptDumpError, len(first) + 4),
        (header(0x20000, 0x1FFFF), CorruptDumpError, len(first) + 8),  # end before start
        (header(0, 0xFFF), CorruptDumpError, len(first) + 8),  # overlaps the first range
    ]:
        with pytest.raises(cls) as e:
            open_bytes(first + bad + _pages(0x10, 1))
        assert e.value.offset == off, bad


def test_avml_is_refused_by_name() -> None:
    avml = header(0x1000, 0x1FFF, magic=0x4C4D5641, version=2)  # "AVML"
    assert avml[:4] == b"AVML"
    with pytest.raises(UnknownFormatError, match="AVML"):
        open_bytes(avml + b"\0" * 64)


def test_fuzz_seed_opens() -> None:
    r = open_bytes(fuzz_seed())
    assert r.info.format == "lime" and r.read_page(0x100) == _page(0x100)
