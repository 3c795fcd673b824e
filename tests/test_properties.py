"""Property tests: random sparse page maps round-trip losslessly through every format and codec.

Sources are built by ``builders.py`` — written with ``struct`` only, independently of
kdumptool's construct schemas — so a reader bug cannot hide behind the same bug in a
writer. Every page's content names its own PFN (``builders.page_for``).
"""

from __future__ import annotations

import random

import builders as b
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from kdumptool.codecs import CODECS
from kdumptool.formats.elf import _first_cover
from kdumptool.formats.elf_plan import (
    RegionColumns,
    _plan_in_order,
    plan_each_region,
    plan_segments,
    source_regions,
)
from kdumptool.formats.elf_writer import write_elf
from kdumptool.formats.kdump import KdumpReader, kdump_structs
from kdumptool.formats.kdump_writer import write_kdump
from kdumptool.metadata import output_metadata
from kdumptool.open import open_bytes
from kdumptool.pipeline import Selection
from kdumptool.transport.flattened import FlattenedSink
from kdumptool.transport.sink import BytesSink

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PS = 4096


@st.composite
def page_maps(draw: st.DrawFn, max_pfn: int = 1500) -> dict[int, b.PageValue]:
    """RAM runs with some pages excluded, zero, or incompressible."""
    nruns = draw(st.integers(1, 4))
    starts = sorted(draw(st.lists(st.integers(0, max_pfn - 1), min_size=nruns, max_size=nruns,
                                  unique=True)))
    ranges = []
    for i, s in enumerate(starts):
        limit = starts[i + 1] if i + 1 < len(starts) else max_pfn
        ranges.append((s, draw(st.integers(s + 1, min(limit, s + 600)))))
    pfns = [p for a, z in ranges for p in range(a, z)]
    pick = st.lists(st.sampled_from(pfns), max_size=len(pfns) // 2, unique=True)
    excluded, zero, noisy = draw(pick), draw(pick), draw(pick)
    zero = [p for p in zero if p not in excluded]
    noisy = [p for p in noisy if p not in excluded and p not in zero][:20]
    return b.make_pages(ranges, excluded=excluded, zero=zero, noisy=noisy)


def expected(pages: dict[int, b.PageValue]) -> dict[int, bytes]:
    """pfn -> content of every page that is dumped."""
    return {p: (bytes(PS) if v is b.ZERO else v) for p, v in pages.items()
            if isinstance(v, bytes) or v is b.ZERO}


def read_all(image: bytes) -> tuple[dict[int, bytes], set[int]]:
    """(pages with data, RAM pfns) as kdumptool reads them."""
    got: dict[int, bytes] = {}
    ram: set[int] = set()
    with open_bytes(image) as r:
        for batch in r.iter_batches():
            for pfn, row in zip(batch.pfns().tolist(), batch.data, strict=True):
                got[pfn] = row.tobytes()
        for start, count in r.windows():  # RAM without data lies outside the data windows
            ram.update(start + int(i) for i in np.flatnonzero(r.bitmaps(start, count)[0]))
    return got, ram


VMCI = b.vmcoreinfo_text(osrelease="6.1.0-prop")


@PROPS
@given(pages=page_maps(), layout=st.sampled_from(["64", "32pack", "32pad"]),
       endian=st.sampled_from("<>"), codec=st.sampled_from(["raw", *CODECS]),
       version=st.integers(3, 6))
def test_read_independently_built_kdump(pages: dict, layout: str, endian: str, codec: str,
                                        version: int) -> None:
    image = b.build_kdump(pages, layout=layout, endian=endian, codec=codec,
                          header_version=version, vmcoreinfo=VMCI)
    got, ram = read_all(image)
    assert got == expected(pages)
    assert ram == set(pages)
    with open_bytes(image) as r:
        assert r.info.release == "6.1.0-prop"


@PROPS
@given(pages=page_maps(), elf_class=st.sampled_from([32, 64]), endian=st.sampled_from("<>"),
       xnum=st.booleans())
def test_read_independently_built_elf(pages: dict, elf_class: int, endian: str, xnum: bool) -> None:
    image = b.build_elf(pages, elf_class=elf_class, endian=endian, use_pn_xnum=xnum,
                        vmcoreinfo=VMCI, machine=b.EM_X86_64 if elf_class == 64 else 3)
    got, _ = read_all(image)
    want = expected(pages)
    # short excluded runs inside a PT_LOAD are stored (as zeros) like makedumpfile -E does
    assert {p: got[p] for p in want} == want
    assert all(v == bytes(PS) for p, v in got.items() if p not in want)


@PROPS
@given(pages=page_maps(), seed=st.integers(0, 2**32 - 1), overlap=st.booleans())
def test_flattened_shuffled_and_overlapping_reads_like_plain(pages: dict, seed: int,
                                                             overlap: bool) -> None:
    plain = b.build_kdump(pages, codec="zlib", vmcoreinfo=VMCI)
    flat = b.flatten(plain, record_size=3000, shuffle=random.Random(seed),
                     duplicate_overlaps=overlap)
    assert read_all(flat) == read_all(plain)


def _convert(image: bytes, *, elf: bool, codec: str | None, level: int, flat: bool) -> bytes:
    with open_bytes(image) as reader:
        sel = Selection(reader, level)
        meta = output_metadata(reader, dump_level=level)
        sink = BytesSink()
        target = FlattenedSink(_Stream(sink)) if flat else sink
        if elf:
            write_elf(sel, target, meta)
        else:
            write_kdump(sel, target, meta, CODECS[codec] if codec else None, threads=2)
        target.finish()
        return sink.getvalue()


class _Stream:
    """A write-only stream over a BytesSink (for the flattened writer)."""

    def __init__(self, sink: BytesSink) -> None:
        self.sink = sink
        self.pos = 0

    def write(self, data: bytes) -> None:
        self.sink.pwrite(self.pos, data)
        self.pos += len(data)

    def flush(self) -> None:
        pass


@PROPS
@given(pages=page_maps(), codec=st.sampled_from([None, *CODECS]), flat=st.booleans(),
       level=st.sampled_from([0, 1]))
def test_roundtrip_elf_kdump_elf(pages: dict, codec: str | None, flat: bool, level: int) -> None:
    src = b.build_elf(pages, vmcoreinfo=VMCI)
    want, src_ram = read_all(src)  # proven equal to the page map by the ELF test above
    kd = _convert(src, elf=False, codec=codec, level=level, flat=flat)
    got, ram = read_all(kd)
    assert got == want
    assert ram == src_ram
    back = _convert(kd, elf=True, codec=None, level=level, flat=False)
    got2, _ = read_all(back)
    if level & 1:  # zero pages are excluded, except inside short runs (makedumpfile -E)
        nonzero = {p: v for p, v in want.items() if any(v)}
        assert {p: got2.get(p) for p in nonzero} == nonzero
        assert all(p in want and not any(v) for p, v in got2.items() if p not in nonzero)
    else:
        assert got2 == want


@PROPS
@given(pages=page_maps(), layout=st.sampled_from(["64", "32pack", "32pad"]),
       endian=st.sampled_from("<>"), codec=st.sampled_from(list(CODECS)))
def test_kdump_to_kdump_keeps_layout_and_pages(pages: dict, layout: str, endian: str,
                                               codec: str) -> None:
    src = b.build_kdump(pages, layout=layout, endian=endian, codec="raw", vmcoreinfo=VMCI)
    out = _convert(src, elf=False, codec=codec, level=0, flat=False)
    assert read_all(out) == read_all(src)
    with open_bytes(out) as r:
        assert (r.info.endian, r.info.word_size) == (endian, 8 if layout == "64" else 4)
        assert r.structs.layout == layout


@settings(max_examples=60, deadline=None)
@given(data=st.data(), layout=st.sampled_from(["64", "32pack", "32pad"]),
       endian=st.sampled_from("<>"))
def test_headers_build_and_parse_back_equal(data: st.DataObject, layout: str, endian: str) -> None:
    s = kdump_structs(layout, endian)
    w = 8 if layout == "64" else 4

    def u(bits: int) -> st.SearchStrategy[int]:
        return st.integers(0, 2**bits - 1)

    sub = {"phys_base": data.draw(u(8 * w)), "dump_level": data.draw(st.integers(0, 31)),
           "split": data.draw(st.integers(0, 1)), "start_pfn": data.draw(u(8 * w)),
           "end_pfn": data.draw(u(8 * w)), "offset_vmcoreinfo": data.draw(u(62)),
           "size_vmcoreinfo": data.draw(u(8 * w)), "offset_note": data.draw(u(62)),
           "size_note": data.draw(u(8 * w)), "offset_eraseinfo": data.draw(u(62)),
           "size_eraseinfo": data.draw(u(8 * w)), "start_pfn_64": data.draw(u(64)),
           "end_pfn_64": data.draw(u(64)), "max_mapnr_64": data.draw(u(64))}
    raw = s.KdumpSubHeader.build(sub)
    assert len(raw) == b.sub_header_size(layout, 6)
    parsed = s.KdumpSubHeader.parse(raw)
    assert {k: parsed[k] for k in sub} == sub
    # the independent struct-based layout agrees byte for byte
    assert b.pack_kdump_sub_header(sub, layout, endian) == raw


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_each_codec_stores_incompressible_pages_raw(codec: str) -> None:
    pages: dict[int, b.PageValue] = b.make_pages([(0, 64)])
    for pfn in range(0, 64, 2):  # random bytes: no codec makes them smaller than a page
        pages[pfn] = random.Random(pfn).randbytes(PS)
    src = b.build_elf(pages, vmcoreinfo=VMCI)
    out = _convert(src, elf=False, codec=codec, level=0, flat=False)
    with open_bytes(out) as r:
        descs = r._descs(0, r.num_descs)
        raw = descs[descs["flags"] == 0]
        assert len(raw) >= 1 and all(raw["size"] == PS)
    assert read_all(out)[0] == expected(pages)


@pytest.mark.parametrize("declared", [4097, 1 << 40, 1 << 62])
def test_a_zstd_frame_declaring_more_than_a_page_is_refused_before_allocating(declared: int) -> None:
    """python-zstandard allocates the content size a frame header declares: a forged size
    (found by the fuzz campaign: a MemoryError) is a page that does not decode."""
    from kdumptool.codecs import PageDecodeError

    # magic, frame header descriptor 0xe0 (8-byte content size, single segment), the size,
    # then one last raw block of 4096 bytes
    frame = (bytes.fromhex("28b52ffd") + b"\xe0" + declared.to_bytes(8, "little")
             + ((4096 << 3) | 1).to_bytes(3, "little") + bytes(4096))
    with pytest.raises(PageDecodeError, match="declares"):
        CODECS["zstd"].decompress(frame, 4096)


def test_zstd_batches_fall_back_to_one_thread_without_room_for_threads() -> None:
    """Under a tight address-space limit (ulimit -v) zstd cannot start its thread pool
    (ZstdError, found by the fuzz campaign, whose workers run under RLIMIT_AS): the pages
    are then compressed one by one, into the same frames."""
    import subprocess
    import sys

    code = """
import os, resource, zstandard
from kdumptool.codecs import CODECS, _zstd_compress_many, _zstd_objects
pages = [os.urandom(2048) + bytes(2048) for _ in range(64)]
want = [CODECS["zstd"].compress(p) for p in pages]
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (8 << 20), size + (8 << 20)))
try:
    _zstd_objects()[0].multi_compress_to_buffer(pages, threads=8)
    print("the pool started")
except zstandard.ZstdError:
    print("no pool")
print(_zstd_compress_many(pages, 8) == want)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["no", "pool", "True"]


def test_compress_pool_works_on_one_core_when_no_thread_can_start() -> None:
    """Under a tight address-space limit Python cannot start a thread ("can't start new
    thread", a RuntimeError that escaped convert as a traceback): the pool then compresses in
    the calling thread, into the same pages."""
    import subprocess
    import sys

    code = """
import os, resource
from kdumptool.codecs import CODECS
from kdumptool.pipeline import CompressPool
pages = [os.urandom(2048) + bytes(2048) for _ in range(200)]
want = [CODECS["lzo"].compress(p) for p in pages]
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (4 << 20), size + (4 << 20)))
with CompressPool(CODECS["lzo"], threads=2) as pool:
    got = [pool.submit(pages)(), pool.submit(pages)()]
print(pool._inline, got == [want, want])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]


def test_a_page_stored_once_decodes_by_its_own_flags() -> None:
    """Two descriptors on the same bytes (the shared zero page) with other flags: the reader
    kept decoded pages by offset and size only, so a page flagged snappy there read as the zero
    page, while every other reader finds it corrupt (found by the campaign, through reassemble)."""
    data = b.build_kdump({0: b.ZERO, 1: b.ZERO, 2: b"\x11" * 4096}, dump_level=1,
                         desc_overrides={1: {"flags": 0x4}})
    with open_bytes(data, strict=False) as reader:
        batch = reader.read_batch(0, 3)
        assert batch.present.tolist() == [True, False, True]
        assert 1 in batch.corrupt and "snappy" in batch.corrupt[1]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5000), level=st.sampled_from([0, 1]))
def test_elf_of_a_fragmented_map_reads_each_window_once(seed: int, n: int, level: int) -> None:
    """A memory map cut into many short runs (RAM, excluded, zero, lost pages mixed page by
    page) gives one PT_LOAD per run, but the writer reads each window of pages once, not once
    per segment; every page reads back as the source has it."""
    rng = random.Random(seed)
    weights = [rng.random() + 0.01 for _ in range(5)]
    pages: dict[int, b.PageValue] = {}
    for pfn in range(n):
        kind = rng.choices("-xzdl", weights)[0]
        if kind != "-":
            pages[pfn] = {"x": b.EXCLUDED, "z": b.ZERO, "d": b.page_for(pfn), "l": b.LOST}[kind]
    if not pages:
        pages[0] = b.page_for(0)
    # (marked incomplete, as a dump with lost pages is; no descriptor past the last is zeroed)
    src = b.build_kdump(pages, codec="zlib", vmcoreinfo=VMCI, incomplete_after=len(pages))
    with open_bytes(src) as reader:
        reads: list[tuple[int, int]] = []
        read_batch = reader.read_batch
        reader.read_batch = lambda start, count: reads.append((start, count)) or read_batch(start, count)
        sink = BytesSink()
        stats = write_elf(Selection(reader, level), sink, output_metadata(reader, dump_level=level))
        windows = -(-n // reader.window_pages)
    # planning reads each data window at most once (for zero pages at level 1), writing too
    assert len(reads) <= 2 * windows, (len(reads), stats["segments"])
    got, _ = read_all(sink.getvalue())
    for pfn in range(n):
        v = pages.get(pfn)
        if isinstance(v, bytes) or (v is b.ZERO and level == 0):
            assert got.get(pfn) == (v if isinstance(v, bytes) else bytes(PS)), hex(pfn)
        elif v is b.LOST:
            assert pfn not in got  # a page without data splits the segment: never zeros
        else:  # excluded, zero at level 1, not RAM: left out, or zeros inside a short run
            assert got.get(pfn, bytes(PS)) == bytes(PS), hex(pfn)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6000), level=st.sampled_from([0, 1]),
       elf=st.booleans(), strict=st.booleans())
def test_segment_planner_in_order_equals_region_by_region(seed: int, n: int, level: int, elf: bool,
                                                          strict: bool) -> None:
    """The planner for disjoint regions (all windows at once) makes exactly the segments of
    the region-by-region rule, on maps with excluded, zero and lost pages, with the regions in
    address order or not."""
    rng = random.Random(seed)
    weights = [rng.random() + 0.01 for _ in range(5)]
    pages: dict[int, b.PageValue] = {}
    for pfn in range(n):
        kind = rng.choices("-xzdl", weights)[0]
        if kind != "-" and not (elf and kind == "l"):
            pages[pfn] = {"x": b.EXCLUDED, "z": b.ZERO, "d": b.page_for(pfn), "l": b.LOST}[kind]
    if not pages:
        pages[0] = b.page_for(0)
    src = (b.build_elf(pages, vmcoreinfo=VMCI) if elf
           else b.build_kdump(pages, codec="zlib", vmcoreinfo=VMCI, incomplete_after=len(pages)))
    with open_bytes(src, strict=strict) as reader:
        columns = source_regions(reader)
        regions = columns.regions()
        assert (columns.start[1:] >= columns.end[:-1]).all()
        fast, _ = _plan_in_order(Selection(reader, level), columns, PS)
        assert fast == plan_each_region(Selection(reader, level), regions, PS)
        assert plan_segments(Selection(reader, level), regions, PS) == fast
        assert RegionColumns.of(regions) == columns
        rng.shuffle(regions)  # disjoint regions out of address order: sorted, then put back
        assert plan_segments(Selection(reader, level), regions, PS) == plan_each_region(
            Selection(reader, level), regions, PS)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pages=page_maps(max_pfn=6000), seed=st.integers(0, 2**32 - 1))
def test_kdump_pages_read_in_any_order(pages: dict, seed: int) -> None:
    """Reads that go forward, back and jump (the descriptor index of a page is counted on
    from the last read when it can be) give every page its own data."""
    image = b.build_kdump(pages, codec="zlib", vmcoreinfo=VMCI)
    want = expected(pages)
    rng = random.Random(seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(KdumpReader, "RANK_CHUNK", 512)  # many chunks in a small dump
        with open_bytes(image) as r:
            for _ in range(40):
                start = rng.randrange(r.max_pfn)
                count = rng.randint(1, min(700, r.max_pfn - start))
                batch = r.read_batch(start, count)
                got = {p: row.tobytes() for p, row in zip(batch.pfns().tolist(), batch.data, strict=True)}
                assert got == {p: v for p, v in want.items() if start <= p < start + count}


@settings(max_examples=60, deadline=None)
@given(count=st.integers(1, 300),
       ranges=st.lists(st.tuples(st.integers(-50, 350), st.integers(-50, 350)), min_size=1, max_size=60))
def test_first_cover_is_the_least_segment_over_each_page(count: int, ranges: list[tuple[int, int]]) -> None:
    """The page owner of overlapping PT_LOADs (many of them): for each page the first segment
    covering it, as a plain loop over the segments finds it."""
    lo = np.array([a for a, _ in ranges], dtype=np.int64)
    hi = np.array([z for _, z in ranges], dtype=np.int64)
    ks = np.arange(len(ranges), dtype=np.int64) * 3 + 1  # segment numbers, increasing
    want = np.full(count, -1, dtype=np.int64)
    for a, z, k in zip(lo.tolist(), hi.tolist(), ks.tolist(), strict=True):
        span = want[max(a, 0):max(min(z, count), 0)]
        span[span == -1] = k
    assert _first_cover(count, lo, hi, ks).tolist() == want.tolist()
