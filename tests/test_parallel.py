"""Chunks of the PFN range on worker processes (kdumptool.parallel): the output is
byte-identical for any number of workers, and a worker's error is the serial run's error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import builders as B
import pytest
from ours import kdumptool, read_all_pages

from corpus import need_corpus_file
from kdumptool.codecs import CODECS
from kdumptool.formats.kdump_writer import write_kdump
from kdumptool.metadata import output_metadata
from kdumptool.open import open_bytes
from kdumptool.parallel import CHUNK_PAGES, CHUNK_WINDOWS, LIGHT_STEPS, ChunkRunner, chunked_windows
from kdumptool.pipeline import Selection
from kdumptool.transport.sink import BytesSink

STEP = CHUNK_WINDOWS * 1024  # PFNs per chunk for 4 KiB pages


def _sparse_pages() -> dict[int, B.PageValue]:
    """Pages in five chunks, with zero, lost and noisy (incompressible) pages among them."""
    runs = [(c * STEP + 3, c * STEP + 40) for c in (0, 1, 2, 4, 6)]
    return B.make_pages(runs, zero=[STEP + 5, 4 * STEP + 7], noisy=[2 * STEP + 9, 6 * STEP + 30],
                        lost=[4 * STEP + 11])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _converted_digests(src: Path, args: list[str], workers: tuple[int, ...], tmp_path: Path) -> set[str]:
    """The digests of ``convert ARGS SRC`` written with each number of ``workers``."""
    digests = set()
    for n in workers:
        out = tmp_path / f"out-{n}"
        proc = kdumptool("convert", *args, "--threads", str(n), src, out, "-q",
                         env={"KDUMPTOOL_ZLIB": "zlib"})
        assert proc.returncode == 0, proc.stderr
        digests.add(_digest(out))
    return digests


def test_chunks_depend_on_the_dump_only() -> None:
    windows = [(w * 1024, 1024) for w in range(200)]
    chunks = chunked_windows(iter(windows), 1024)
    assert [c[0][0] for c in chunks] == [0, STEP, 2 * STEP, 3 * STEP, 4 * STEP, 5 * STEP, 6 * STEP]
    assert sum(len(c) for c in chunks) == 200
    part = chunked_windows(iter(windows), 1024, (STEP + 1, 2 * STEP + 1))
    assert [w for c in part for w in c] == windows[32:65]


def test_dense_windows_are_cut_into_smaller_chunks() -> None:
    """At -d 31 the kept pages crowd into a few windows (the kernel's own); cut by the pages
    to do, they are shared among the workers instead of making one chunk the run's tail."""
    windows = [(w * 1024, 1024) for w in range(64)]
    n = CHUNK_PAGES // 1024  # windows of pages to do per chunk
    dense = set(range(40, 40 + 2 * n))  # full windows in the second block, nothing elsewhere

    def weight(start: int, count: int) -> int:
        return count if start // 1024 in dense else 0

    chunks = chunked_windows(iter(windows), 1024, weight=weight)
    # the empty first block runs on into the dense windows (a chunk with under a quarter of
    # CHUNK_PAGES to do does not end at a block's end); each CHUNK_PAGES pages end a chunk
    assert [c[0][0] for c in chunks] == [0, (40 + n) * 1024, (40 + 2 * n) * 1024]
    assert all(sum(weight(*w) for w in c) <= CHUNK_PAGES for c in chunks)
    assert [w for c in chunks for w in c] == windows
    assert chunked_windows(iter(windows), 1024, weight=weight) == chunks  # the dump's alone


def test_a_light_chunk_runs_on_for_a_bounded_span() -> None:
    """Windows with nothing to do (most of memory at -d 31) make one chunk per LIGHT_STEPS
    steps, not one per step (they would crowd the pool's queue) nor one for all (a huge,
    sparse machine's windows would fall to one worker)."""
    steps = 2 * LIGHT_STEPS + 3
    windows = [(w * 1024, 1024) for w in range(steps * CHUNK_WINDOWS)]
    chunks = chunked_windows(iter(windows), 1024, weight=lambda start, count: 0)
    assert [c[0][0] for c in chunks] == [0, LIGHT_STEPS * STEP, 2 * LIGHT_STEPS * STEP]
    assert [w for c in chunks for w in c] == windows
    some = chunked_windows(iter(windows), 1024, weight=lambda start, count: CHUNK_PAGES // 4 // 31)
    assert [c[0][0] for c in some][:3] == [0, STEP, 2 * STEP]  # a quarter to do in each step


@pytest.mark.parametrize("args", [["-l", "-d", "1"], ["-c", "-d", "0"], ["-p", "-d", "0"],
                                  ["-z", "-d", "1"], ["-F", "-l", "-d", "0"], ["-E", "-d", "1"],
                                  ["-E", "-d", "0"], ["-F", "-E", "-d", "1"]])
def test_synthetic_output_is_the_same_for_any_number_of_workers(tmp_path: Path, args: list[str]) -> None:
    src = tmp_path / "in.kdump"
    src.write_bytes(B.build_kdump(_sparse_pages(), codec="zlib", dump_level=0,
                                  vmcoreinfo=B.vmcoreinfo_text(), incomplete_after=4 * STEP + 10))
    digests = _converted_digests(src, args, (1, 2, 3), tmp_path)
    assert len(digests) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # chunk files removed


@pytest.mark.parametrize("endian", ["<", ">"])
def test_library_writer_in_memory_matches_across_workers(endian: str) -> None:
    """In memory too (no file for copy_file_range), and big-endian: the descriptors the
    parent joins keep the file's byte order (NumPy's concatenate makes it native)."""
    image = B.build_kdump(_sparse_pages(), codec="raw", dump_level=0, vmcoreinfo=B.vmcoreinfo_text(),
                          incomplete_after=4 * STEP + 10, endian=endian)
    outs = []
    for workers in (1, 2):
        with open_bytes(image) as reader:
            sink = BytesSink()
            stats = write_kdump(Selection(reader, 1), sink, output_metadata(reader, dump_level=1),
                                CODECS["lzo"], threads=workers)
            outs.append((sink.getvalue(), stats))
    assert outs[0] == outs[1]
    assert outs[0][1]["lost"] == 1 and outs[0][1]["zero"] == 2
    with open_bytes(image) as src, open_bytes(outs[0][0]) as out:
        assert read_all_pages(out) == read_all_pages(src)


def test_a_corrupt_page_in_a_later_chunk_is_the_same_error_with_workers(tmp_path: Path) -> None:
    """A damaged descriptor in the fifth chunk: the worker's CorruptPageError reaches the
    command line as the serial run gives it (one line, exit 4)."""
    pages = _sparse_pages()
    bad = 6 * STEP + 20
    src = tmp_path / "bad.kdump"
    src.write_bytes(B.build_kdump(pages, codec="zlib", dump_level=0, vmcoreinfo=B.vmcoreinfo_text(),
                                  incomplete_after=4 * STEP + 10,
                                  desc_overrides={bad: {"size": 5000}}))
    results = []
    for workers in (1, 2):
        proc = kdumptool("convert", "-l", "--threads", str(workers), src, tmp_path / f"o{workers}")
        results.append((proc.returncode, proc.stderr.decode().strip().splitlines()[-1]))
    assert results[0] == results[1]
    assert results[0][0] == 4 and "invalid size" in results[0][1], results[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.kdump"]  # no chunk file left


class _Recording(BytesSink):
    """A sink that records each write (offset, length), as a flattened stream would."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[int, int]] = []

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        self.writes.append((offset, len(data)))
        super().pwrite(offset, data)


def _task(task: int, write):  # type: ignore[no-untyped-def]
    for i in range(task % 3 + 1):
        write(bytes([task]) * (task + i + 1))
    return task * 10


def test_runner_keeps_task_order_and_the_same_writes() -> None:
    """Three workers give the results in task order, and the sink sees the very writes
    (offsets and lengths) that one process makes: a flattened stream comes out the same."""
    tasks = list(range(9))
    runs = []
    for workers in (1, 3):
        sink = _Recording()
        got = list(ChunkRunner(_task, tasks, workers, sink, 100).results())
        runs.append((got, sink.writes, sink.getvalue()))
    assert runs[0] == runs[1]
    got, writes, data = runs[0]
    assert [r for r, _, _ in got] == [t * 10 for t in tasks]
    assert [o for o, _ in writes] == sorted(o for o, _ in writes) and writes[0][0] == 100
    assert data[100:].startswith(b"\x00" + b"\x01\x01" + b"\x01\x01\x01")


@pytest.mark.parametrize("args", [["-l", "-d", "1"], ["-c", "-d", "31"], ["-E", "-d", "31"]])
def test_real_dump_is_the_same_for_one_and_two_workers(tmp_path: Path, args: list[str]) -> None:
    vmcore = need_corpus_file("x86_64-kdump-320m/vmcore.elf")
    digests = _converted_digests(vmcore, args, (1, 2), tmp_path)
    assert len(digests) == 1
    ref = {"-c": "c-d31.kdump", "-E": "E-d31.elf"}.get(args[0])  # makedumpfile's own bytes
    if ref is not None:
        assert digests == {_digest(Path(need_corpus_file(f"x86_64-kdump-320m/derived/{ref}")))}


def _streams(path: Path) -> dict[int, tuple[int, bytes]]:
    """pfn -> (flags, stored bytes) of every page of a kdump file."""
    import numpy as np

    from kdumptool.open import open_dump

    out = {}
    with open_dump(str(path)) as r:
        for s, c in r.data_windows():
            idx = np.flatnonzero(r.bitmaps(s, c)[1])
            if idx.size:
                d = r._descs(r.rank(s), idx.size)
                for j, pfn in enumerate((s + idx).tolist()):
                    out[pfn] = (int(d["flags"][j]), r.source.pread(int(d["offset"][j]), int(d["size"][j])))
    return out


def test_refiltering_c_to_c_copies_the_stored_pages(tmp_path: Path) -> None:
    """Pages already stored with the output's codec are copied, not decoded and compressed
    again: with another deflate (zlib-ng) every long stream of the source is in the output as
    it was; short ones (zero pages) are decoded, to find the zero pages; the pages read the
    same, and the output is the same for one worker and two."""
    import random

    rnd = random.Random(5)
    pages: dict[int, B.PageValue] = {}
    for c in (0, 2, 5):
        for pfn in range(c * STEP, c * STEP + 30):
            pages[pfn] = bytes(rnd.choice(b"abcd") for _ in range(4096))  # ~1.5 KiB compressed
        pages[c * STEP + 30] = B.ZERO
    src = tmp_path / "in.kdump"
    src.write_bytes(B.build_kdump(pages, codec="zlib", dump_level=0, vmcoreinfo=B.vmcoreinfo_text()))
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        proc = kdumptool("convert", "-c", "-d", "1", "--threads", str(workers), src, out, "-q",
                         env={"KDUMPTOOL_ZLIB": "zlib-ng"})
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    before, after = _streams(src), _streams(tmp_path / "out1")
    long = [p for p, (f, raw) in before.items() if f == 1 and len(raw) > 128]
    assert len(long) == 90
    assert all(after[p] == before[p] for p in long)
    zeros = [p for p in before if pages[p] is B.ZERO]
    assert len({after[p][1] for p in zeros}) == 1 and len(after[zeros[0]][1]) == 4096  # shared zero page
    with open_bytes(src.read_bytes()) as a, open_bytes(outs[0]) as b:
        assert read_all_pages(a) == read_all_pages(b)


def test_a_damaged_page_of_the_same_codec_is_not_copied(tmp_path: Path) -> None:
    """A stored stream is copied only once it decodes to a page: a damaged one stops a strict
    convert -c with the reader's error (exit 4), as when pages are compressed again."""
    import random

    rnd = random.Random(7)
    pages = {pfn: bytes(rnd.choice(b"abcd") for _ in range(4096)) for pfn in range(40)}
    src = tmp_path / "in.kdump"
    image = bytearray(B.build_kdump(pages, codec="zlib", dump_level=0, vmcoreinfo=B.vmcoreinfo_text()))
    where = _streams_at(bytes(image))[17]
    image[where + 40] ^= 0xFF  # inside the deflate data of pfn 17
    src.write_bytes(bytes(image))
    proc = kdumptool("convert", "-c", "-d", "0", src, tmp_path / "out", "-q")
    assert proc.returncode == 4, proc.stderr
    assert b"pfn 0x11" in proc.stderr


def _streams_at(image: bytes) -> dict[int, int]:
    """pfn -> file offset of its stored data."""
    import numpy as np

    out = {}
    with open_bytes(image) as r:
        for s, c in r.data_windows():
            idx = np.flatnonzero(r.bitmaps(s, c)[1])
            if idx.size:
                d = r._descs(r.rank(s), idx.size)
                out.update(zip((s + idx).tolist(), d["offset"].tolist(), strict=True))
    return out
