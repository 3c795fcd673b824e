"""Windows complete memory dumps (QEMU ``dump-guest-memory -w``, ``win-dmp``).

No Windows guest runs here, so the files are built from QEMU's own definitions
(``include/qemu/win_dump_defs.h`` ``WinDumpHeader64``: 8 KiB header, the physical memory
descriptor at 0x88, runs stored back to back after the header), around real pages.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from builders_windows import build_win_dmp64
from ours import kdumptool, our_digests, read_all_pages

from kdumptool.errors import CorruptDumpError, TruncatedDumpError
from kdumptool.open import open_bytes, open_dump

PS = 4096
BUNDLED = Path(__file__).resolve().parent.parent / "corpus" / "x86_64-kdump-320m-c-d31.kdump"


@pytest.fixture(scope="module")
def real_pages() -> dict[int, bytes]:
    with open_dump(str(BUNDLED)) as r:
        return read_all_pages(r, limit=600)


def _page(pages: dict[int, bytes]):  # type: ignore[no-untyped-def]
    return lambda pfn: pages.get(pfn, struct.pack("<Q", pfn) * (PS // 8))


RUNS = [(1, 0x9E), (0x100, 0x200), (0x1000, 0x40)]  # like a PC: a hole below 1 MiB and above


def test_reads_runs_page_for_page(real_pages: dict[int, bytes]) -> None:
    page = _page(real_pages)
    r = open_bytes(build_win_dmp64(RUNS, page))
    assert r.info.format == "windows-dmp" and r.info.machine == "x86_64"
    assert r.count_pages() == (0x9E + 0x200 + 0x40,) * 2
    for b, c in RUNS:
        for pfn in (b, b + c // 2, b + c - 1):
            assert r.read_page(pfn) == page(pfn)
    assert read_all_pages(r) == {b + i: page(b + i) for b, c in RUNS for i in range(c)}


def test_runs_out_of_order_are_stored_in_header_order(real_pages: dict[int, bytes]) -> None:
    page = _page(real_pages)
    runs = [(0x1000, 8), (2, 4)]
    r = open_bytes(build_win_dmp64(runs, page))
    assert [r.read_page(p) for p in (2, 5, 0x1000, 0x1007)] == [page(p) for p in (2, 5, 0x1000, 0x1007)]


def test_info_says_windows_and_convert_keeps_every_page(tmp_path: Path, real_pages: dict[int, bytes]) -> None:
    src = tmp_path / "win.dmp"
    src.write_bytes(build_win_dmp64(RUNS, _page(real_pages)))
    s = json.loads(kdumptool("info", "--json", src).stdout)
    assert s["format"] == "windows-dmp" and s["details"]["os"] == "Windows"
    assert any("not a Linux kernel" in e.get("text", "") for e in s["identification"])
    assert b"Windows x64 complete memory dump" in kdumptool("info", src).stdout
    want = our_digests(src)
    for args, name in ((["-l"], "o.kdump"), (["-E"], "o.elf")):
        out = tmp_path / name
        proc = kdumptool("convert", "-q", *args, src, out)
        assert proc.returncode == 0, proc.stderr.decode()
        assert our_digests(out) == want


def test_damage_is_reported_with_offsets(real_pages: dict[int, bytes]) -> None:
    good = build_win_dmp64(RUNS, _page(real_pages))
    with pytest.raises(TruncatedDumpError, match="inside the memory runs"):
        open_bytes(good[:-PS * 3])
    r = open_bytes(good[:-PS * 3 - 100], strict=False)
    batch = r.read_batch(0x1000, 0x40)
    assert int(batch.lost.sum()) == 4 and int(batch.present.sum()) == 0x40 - 4
    with pytest.raises(TruncatedDumpError, match="offset 0x1000"):
        open_bytes(good[:0x1000])
    with pytest.raises(CorruptDumpError, match="too many physical memory runs"):
        open_bytes(build_win_dmp64(RUNS, _page(real_pages), nruns=44))
    with pytest.raises(CorruptDumpError, match="do not add up"):
        open_bytes(build_win_dmp64(RUNS, _page(real_pages), npages=5))
    with pytest.raises(CorruptDumpError, match="overlap"):
        open_bytes(build_win_dmp64([(0, 8), (4, 8)], _page(real_pages)))
    with pytest.raises(CorruptDumpError, match="past 64 TiB"):
        open_bytes(build_win_dmp64([(1 << 34, 1)], _page(real_pages)))
    # the largest address space accepted, nearly all a hole: counted and converted without a walk
    far = build_win_dmp64([(0, 8), ((1 << 34) - 16, 16)], _page(real_pages))
    r = open_bytes(far)
    assert r.max_pfn == 1 << 34 and r.count_pages() == (24, 24)
    assert len(list(r.ram_windows(1 << 16))) == 2
