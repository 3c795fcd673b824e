"""Page data read through a mapping of the input, in workers only, and a worker's death.

The parent never maps the input (a file cut while mapped raises SIGBUS); the forked workers
of ``kdumptool.parallel`` do, and when one dies the parent does its chunks again with
``pread``: the same bytes, or the error naming the file and offset.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import signal
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import builders as B
import numpy as np
import pytest

import kdumptool
from kdumptool import parallel
from kdumptool.errors import TruncatedDumpError
from kdumptool.open import open_dump
from kdumptool.parallel import CHUNK_WINDOWS, ChunkRunner
from kdumptool.transport import source
from kdumptool.transport.sink import BytesSink, FileSink
from kdumptool.transport.source import FileSource, mapped

STEP = CHUNK_WINDOWS * 1024  # PFNs per chunk for 4 KiB pages


def _elf(tmp_path: Path) -> Path:
    """An ELF dump whose pages fall in five chunks."""
    runs = [(c * STEP + 3, c * STEP + 40) for c in (0, 1, 2, 4, 6)]
    pages = B.make_pages(runs, zero=[STEP + 5], noisy=[2 * STEP + 9])
    return B.write_to(tmp_path / "in.elf", B.build_elf(pages, vmcoreinfo=B.vmcoreinfo_text()))


def test_the_parent_never_maps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mapped`` gives nothing in the process that opened the file; where allowed (a
    worker), a view of exactly the bytes ``pread`` gives, inside the file only."""
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 64)
    with FileSource(str(path)) as src:
        assert mapped(src, 100, 50) is None
        monkeypatch.setattr(source, "_MAPPING", True)
        view = mapped(src, 4097, 300)
        assert view is not None and view.readonly and bytes(view) == src.pread(4097, 300)
        assert mapped(src, src.size - 10, 11) is None and mapped(src, 0, 0) is None
    with FileSource("/dev/zero") as dev:  # not a regular file: read, never mapped
        assert mapped(dev, 0, 4096) is None


def test_workers_read_the_pages_in_place_and_give_the_same_bytes(tmp_path: Path) -> None:
    """The mapped pages (2 workers) and the copied ones (1 worker, the parent) make the same
    file; a batch read where mapping is allowed is a read-only view, not a copy."""
    src = _elf(tmp_path)
    outs = []
    for n in (1, 2):
        out = tmp_path / f"o{n}"
        kdumptool.convert(str(src), str(out), level=0, codec="lzo", threads=n)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    with open_dump(str(src)) as reader:
        copied = reader.read_batch(2 * STEP, 1024)
        source._MAPPING = True
        try:
            view = reader.read_batch(2 * STEP, 1024)
        finally:
            source._MAPPING = False
        assert copied.data.flags.writeable and not view.data.flags.writeable
        assert np.array_equal(copied.data, view.data) and np.array_equal(copied.present, view.present)


def _dies_in_a_worker(task: int, write):  # type: ignore[no-untyped-def]
    if task == 4 and source._MAPPING:  # in a worker: killed as a cut mapped file kills it
        faulthandler.disable()  # (pytest's, inherited: no stack dump in the test log)
        os.kill(os.getpid(), signal.SIGBUS)
    write(bytes([task]) * (task + 1))
    return task * 10


def test_a_dead_worker_s_chunks_are_done_again_in_the_parent(tmp_path: Path) -> None:
    tasks = list(range(9))
    outs = []
    for workers in (1, 2):
        sink = BytesSink()
        runner = ChunkRunner(_dies_in_a_worker, tasks, workers, sink, 10, str(tmp_path))
        got = list(runner.results())
        outs.append((got, sink.getvalue()))
        if workers == 1:
            assert runner.redone == 0
    assert outs[0] == outs[1] and [r for r, _, _ in outs[0][0]] == [t * 10 for t in tasks]
    assert 5 <= runner.redone <= 9  # task 4, every later one, and any earlier still running
    assert not list(tmp_path.iterdir())  # the dead pool's chunk files are gone


def _cut_when_mapped(monkeypatch: pytest.MonkeyPatch, src: Path) -> list[int]:
    """In a worker, the input is cut right after the first chunk's first mapping, to the
    start of the mapped range: its pages are then read (SIGBUS) or handed to a system call
    (EFAULT) with nothing behind them. Returns the list the fallback's runs are noted in."""
    view = FileSource.view
    first = min(int(o) for o in open_dump(str(src))._seg_off)  # type: ignore[attr-defined]

    def cut(self, offset, length):  # type: ignore[no-untyped-def]
        got = view(self, offset, length)
        if got is not None and offset <= first < offset + length:
            faulthandler.disable()  # (pytest's, inherited: no stack dump in the test log)
            os.truncate(src, offset)
        return got

    monkeypatch.setattr(FileSource, "view", cut)
    fallbacks: list[int] = []
    serial = ChunkRunner._serial

    def spy(self, tasks):  # type: ignore[no-untyped-def]
        if self.workers > 1:  # only the fallback of a parallel run comes here
            fallbacks.append(self.workers)
        return serial(self, tasks)

    monkeypatch.setattr(ChunkRunner, "_serial", spy)
    return fallbacks


@pytest.mark.parametrize("elf", [False, True])
def test_an_input_cut_while_mapped_is_the_parent_s_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         elf: bool) -> None:
    """The input is cut while a worker holds it mapped: the kdump writer's worker reads the
    pages and dies of a real SIGBUS; the ELF writer's hands them to ``pwrite``, which fails
    with EFAULT, and the worker gives the task back. Either way the parent does the chunks
    with ``pread`` and raises the error naming the file and offset; no output, no chunk file."""
    src = _elf(tmp_path)
    size = src.stat().st_size
    monkeypatch.setattr(parallel, "CHUNK_PAGES", 64)  # the kdump writer's chunks: light ones merge
    fallbacks = _cut_when_mapped(monkeypatch, src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(TruncatedDumpError) as err:
        kdumptool.convert(str(src), str(out_dir / "o"), level=0, codec=None if elf else "lzo", elf=elf,
                          threads=2)
    cut = src.stat().st_size
    assert cut < size and err.value.path == str(src) and err.value.offset >= cut
    assert fallbacks  # the worker's failure was taken over by the parent
    assert not list(out_dir.iterdir())


def _sized(task: int, write):  # type: ignore[no-untyped-def]
    if task == 3:
        time.sleep(0.3)  # the later chunks end first: their start is not known yet
    for i in range(0 if task == 5 else 3):
        write(bytes([task]) * (task * 700 + i))
    return task


def test_workers_write_in_place_once_the_start_is_known(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Into a plain file, a chunk whose earlier chunks have ended is written in place by its
    worker; the others (start unknown, or more than HOLD_BYTES) go through a file; an empty
    chunk passes its start on. The file is the one a single process writes."""
    monkeypatch.setattr(parallel, "HOLD_BYTES", 15000)  # tasks 8 and up hold more
    tasks = list(range(12))
    files = []
    for workers in (1, 2):
        path = tmp_path / f"out{workers}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        try:
            runner = ChunkRunner(_sized, tasks, workers, FileSink(fd, str(path)), 64, str(tmp_path))
            got = list(runner.results())
        finally:
            os.close(fd)
        files.append(path.read_bytes())
        assert [r for r, _, _ in got] == tasks
        assert [o for _, o, _ in got] == sorted(o for _, o, _ in got)
    assert files[0] == files[1] and len(files[0]) == 64 + sum(3 * t * 700 + 3 for t in tasks if t != 5)
    assert 0 < runner.placed < len(tasks)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out1", "out2"]


def test_a_pool_found_broken_when_submitting_gives_its_tasks_back() -> None:
    """The pool can break between two submissions: the tasks in flight and the one not
    submitted come back to be done here, none lost."""
    runner = ChunkRunner(_sized, [], 2, BytesSink(), 0)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        dead = pool.submit(os._exit, 3)
        assert isinstance(dead.exception(timeout=60), BrokenProcessPool)
        left = runner._fill(pool, deque([(0, "a", dead)]), iter([(1, "b"), (2, "c")]), "t")
    assert left == ["a", "b"]
