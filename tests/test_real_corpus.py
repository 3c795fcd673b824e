"""Every real dump of the shared corpus reads page for page as drgn and libkdumpfile read it.

The corpus (see ../shared/corpus/MANIFEST.md) holds the kernel's own /proc/vmcore,
makedumpfile 1.7.2 outputs (kdump-compressed with zlib/lzo/snappy/zstd, flattened, ELF,
split), and QEMU 7.2 dumps of a real Debian 6.1 kernel.
"""

from __future__ import annotations

import pytest
from ours import our_digests
from peers import drgn_page_digests, lkdf_page_digests, require_tool

from corpus import dump_entry, need_corpus_file
from kdumptool.open import open_dumps

KDUMP = "x86_64-kdump-320m"
QEMU = "x86_64-qemu-256m"

# (file, peers that can open it)
GOOD_DUMPS = [
    (f"{KDUMP}/vmcore.elf", ("drgn", "libkdumpfile")),
    (f"{KDUMP}/derived/E-d31.elf", ("drgn", "libkdumpfile")),
    (f"{KDUMP}/derived/c-d0.kdump", ("drgn", "libkdumpfile")),
    (f"{KDUMP}/derived/c-d1.kdump", ("drgn", "libkdumpfile")),
    (f"{KDUMP}/derived/c-d31.kdump", ("drgn", "libkdumpfile")),
    (f"{KDUMP}/derived/l-d31.kdump", ("drgn", "libkdumpfile")),
    (f"{KDUMP}/derived/p-d31.kdump", ("drgn", "libkdumpfile")),
    (f"{KDUMP}/derived/z-d31.kdump", ("drgn", "libkdumpfile")),
    (f"{KDUMP}/derived/F-c-d31.flat", ("drgn",)),  # libkdumpfile 0.5.1 cannot open flattened
    (f"{KDUMP}/derived/F-l-d0.flat", ("drgn",)),
    (f"{KDUMP}/capture-kernel/capture-l-d31.kdump", ("libkdumpfile",)),
    (f"{QEMU}/qemu-elf.vmcore", ("drgn", "libkdumpfile")),
]


@pytest.mark.parametrize("rel,peers", GOOD_DUMPS, ids=[r for r, _ in GOOD_DUMPS])
def test_pages_equal_peers(rel: str, peers: tuple[str, ...]) -> None:
    path = need_corpus_file(rel)
    ours = our_digests(path)
    assert ours, "kdumptool read no page at all"
    entry = dump_entry(rel)
    expected = (entry.get("pages_in_file") or {}).get("dumpable_pages_in_bitmap")
    if expected is not None:
        assert len(ours) == expected
    for peer in peers:
        require_tool(peer)
        if peer == "drgn":
            theirs = drgn_page_digests(path, ours.keys())
        else:
            theirs = lkdf_page_digests(path, ours.keys())
        differ = [pfn for pfn, d in ours.items() if theirs.get(pfn) != d]
        assert not differ, f"{peer} reads {len(differ)} pages differently, first pfn {differ[0]:#x}"


@pytest.mark.parametrize("rel,peers", GOOD_DUMPS, ids=[r for r, _ in GOOD_DUMPS])
def test_release_matches_manifest(rel: str, peers: tuple[str, ...]) -> None:
    path = need_corpus_file(rel)
    with open_dumps([str(path)]) as reader:
        assert reader.info.release == dump_entry(rel)["osrelease_in_file"]


def test_excluded_pages_are_excluded_for_libkdumpfile_too() -> None:
    """Pages we report absent in a -d 31 file are absent for libkdumpfile as well."""
    require_tool("libkdumpfile")
    path = need_corpus_file(f"{KDUMP}/derived/c-d31.kdump")
    ours = our_digests(path)
    theirs = lkdf_page_digests(path)
    readable = {pfn for pfn, d in theirs.items() if d is not None}
    assert readable == set(ours)


def test_qemu_kdump_equals_qemu_elf() -> None:
    """QEMU wrote its ELF and kdump-zlib (flattened) dumps of the same stopped guest:
    the pages must agree; drgn judges the ELF side (it cannot open QEMU's kdump)."""
    require_tool("drgn")
    kdump = our_digests(need_corpus_file(f"{QEMU}/qemu-kdump-zlib.vmcore"))
    elf_path = need_corpus_file(f"{QEMU}/qemu-elf.vmcore")
    theirs = drgn_page_digests(elf_path, kdump.keys())
    differ = [pfn for pfn, d in kdump.items() if theirs.get(pfn) != d]
    assert not differ, f"{len(differ)} pages differ, first {differ[:1]}"
    assert len(kdump) == len(our_digests(elf_path))


def test_split_set_reads_as_the_whole_dump() -> None:
    parts = [need_corpus_file(f"{KDUMP}/derived/split2-c-d31.{i}") for i in (1, 2)]
    whole = our_digests(need_corpus_file(f"{KDUMP}/derived/c-d31.kdump"))
    assert our_digests(*reversed(parts)) == whole
    with open_dumps([str(p) for p in parts]) as reader:
        assert reader.info.release == "6.1.0-56-amd64"
