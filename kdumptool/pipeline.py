"""The streaming pipeline: reader -> page selection (filters) -> codec pool -> writer.

Work moves in PFN windows (:data:`~kdumptool.dump.WINDOW_BYTES` of pages): bitmaps
and masks are NumPy arrays, zero-page detection is one vectorised test per
window, and only the pages that are kept are handled one by one, to compress
them, in a thread pool while the next window is read (lzo, snappy, the standard zlib and
kdumptool's page encoder release the GIL while compressing, ISA-L's zlib does not; zstd uses
its own batch API).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import numpy as np

from kdumptool import allocator, interrupts
from kdumptool.codecs import Codec
from kdumptool.dump import METADATA_WINDOW, DumpReader, PageBatch
from kdumptool.errors import KdumpToolError
from kdumptool.filters.levels import DL_EXCLUDE_ZERO, MAX_DUMP_LEVEL, MEM_MAP_LEVELS
from kdumptool.progress import Progress

__all__ = ["MAX_DUMP_LEVEL", "READ_GAP", "CompressPool", "Selection", "zero_rows"]

#: Excluded pages between two kept runs of a window from which the runs are read apart
#: (256 KiB of 4 KiB pages: at -d 31, most of a window's bytes are free pages).
READ_GAP = 64

def zero_rows(data: np.ndarray) -> np.ndarray:
    """Bool per row of ``data`` (pages): True where the page is all zero bytes."""
    if not len(data):
        return np.zeros(0, dtype=bool)
    words = data.view(np.uint64) if data.shape[1] % 8 == 0 else data
    return np.bitwise_or.reduce(words, axis=1) == 0  # twice as fast as any(): no bool casts


class Selection:
    """Which pages of a dump go to the output.

    ``keep`` (metadata only) is the source's present pages minus those the dump level's
    mem_map classes exclude (levels 2, 4, 8, 16, and at every level the hwpoisoned and
    offline pages, as makedumpfile does when VMCOREINFO has ``NUMBER(PG_hwpoison)``:
    :class:`~kdumptool.filters.exclusion.PageClassExclusion`). Classes the
    source already excluded (its own dump level) stay excluded without a new sweep.
    Zero pages (level 1) need the page contents: each writer applies them as its format
    requires (kdump: one shared zero page; ELF: excluded).

    :param reader: the source
    :param dump_level: makedumpfile dump level 0..31
    :param reclassify: classify pages even if the source's own level says its classes
        are already gone (to count them, as ``info --pages`` does)
    :param workers: processes for the mem_map sweep (default: all cores)
    """

    def __init__(self, reader: DumpReader, dump_level: int = 0, *, reclassify: bool = False,
                 workers: int | None = None) -> None:
        self.reader = reader
        self.dump_level = dump_level
        self.exclusion = None
        self.warnings: list[str] = []
        self.progress: Progress | None = None  # set by the command line on a terminal
        #: a codec flag: :meth:`batches` also gives the stored streams of the pages stored
        #: with it (a kdump source only; the kdump writer copies them, writing that codec)
        self.keep_stored = 0
        allocator.tune()  # page buffers reused, not faulted in again (the sweep and the windows)
        already = 0 if reclassify else (reader.info.dump_level or 0)
        from kdumptool.filters.exclusion import PageClassExclusion

        if dump_level & MEM_MAP_LEVELS & ~already:
            self.exclusion = PageClassExclusion(reader, dump_level, workers)
        elif reader.info.vmcoreinfo is not None and reader.info.vmcoreinfo.has("NUMBER(PG_hwpoison)"):
            # makedumpfile sweeps mem_map at every level when the kernel reports PG_hwpoison:
            # hwpoisoned and offline pages are always excluded
            try:
                self.exclusion = PageClassExclusion(reader, dump_level & ~MEM_MAP_LEVELS, workers)
            except KdumpToolError as exc:
                self.warnings.append(f"hwpoison and offline pages not checked: {exc}")

    @property
    def exclude_zero(self) -> bool:
        """Whether the dump level drops zero pages (bit 1)."""
        return bool(self.dump_level & DL_EXCLUDE_ZERO)

    def masks(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ram, keep)`` for a window, from metadata only."""
        ram, present = self.reader.bitmaps(start, count)
        if self.exclusion is not None:
            present = present & ~self.exclusion.excluded(start, count)
        return ram, present

    def windows(self) -> Iterator[tuple[int, int]]:
        """Windows for metadata-only passes (large: bitmaps cost a byte per page)."""
        return self.reader.ram_windows(METADATA_WINDOW)

    def batches(self, span: tuple[int, int] | None = None,
                windows: Iterable[tuple[int, int]] | None = None) -> Iterator[tuple[PageBatch, np.ndarray]]:
        """``(batch, keep)`` for every run of kept pages of every window: its data, read only
        from its first to its last kept page (at -d 31 most windows of a large machine are free
        pages: never read; kept runs more than :data:`READ_GAP` pages apart are separate
        batches), and which of the batch's pages are kept. Each window counts on
        :attr:`progress` once the caller is done with it.

        :param span: only the pages of PFNs ``[lo, hi)`` (one part of a split set)
        :param windows: these data windows only (a chunk of them: :mod:`kdumptool.parallel`)
        """
        reader = self.reader
        lo, hi = span if span is not None else (0, reader.max_pfn)
        for start, count in reader.data_windows() if windows is None else windows:
            interrupts.check()
            if start >= hi or start + count <= lo:
                continue
            _, present = reader.bitmaps(start, count)
            if lo > start or hi < start + count:  # a window across the part's edge
                present = present.copy()
                present[:max(0, lo - start)] = False
                present[max(0, hi - start):] = False
            keep = present
            if self.exclusion is not None:
                keep = present & ~self.exclusion.excluded(start, count)
            idx = np.flatnonzero(keep)
            if idx.size:  # runs of kept pages far apart are read apart
                cut = np.flatnonzero(np.diff(idx) > READ_GAP) + 1
                for a, b in zip([0, *cut.tolist()], [*cut.tolist(), idx.size], strict=True):
                    first, last = int(idx[a]), int(idx[b - 1]) + 1
                    if self.keep_stored:
                        batch = reader.read_batch(start + first, last - first,  # type: ignore[call-arg]
                                                  keep_stored=self.keep_stored)
                    else:
                        batch = reader.read_batch(start + first, last - first)
                    yield batch, keep[first:last]
            if self.progress is not None:
                self.progress.advance(int(present.sum()))


class CompressPool:
    """Compress many pages with one codec, using all cores: pages in chunks on a thread pool,
    or the codec's own batch API where it has one (zstd).

    :param codec: the codec, or None to store pages raw
    :param threads: worker threads (default: CPU count)
    """

    CHUNK = 64  # pages per task

    def __init__(self, codec: Codec | None, threads: int | None = None) -> None:
        self.codec = codec
        self.threads = threads or os.cpu_count() or 1
        # with one thread too: compressing overlaps with reading the next window
        self._pool: Executor | None = ThreadPoolExecutor(self.threads) if codec is not None else None
        self._inline = False  # set when the pool cannot start a thread

    def _chunk(self, pages: list[bytes]) -> list[bytes]:
        assert self.codec is not None
        return [self.codec.compress(p) for p in pages]

    def submit(self, pages: list[bytes]) -> Callable[[], list[bytes]]:
        """Start compressing ``pages`` in the pool and return at once: the caller reads the
        next window meanwhile. The returned function waits and gives the results in order."""
        if self.codec is None:
            return lambda: pages
        if self._pool is None or self._inline:
            return lambda: self._chunk(pages)
        if self.codec.batches:  # one call: the library spreads the pages over its threads
            whole = self._start(self.codec.compress_many, pages, self.threads)
            return whole.result
        futures = [self._start(self._chunk, pages[i:i + self.CHUNK])
                   for i in range(0, len(pages), self.CHUNK)]
        return lambda: [c for f in futures for c in f.result()]

    def _start(self, fn: Callable[..., list[bytes]], *args: object) -> Future[list[bytes]]:
        """``fn(*args)`` on the pool; here and now when no thread can be started (an address
        space limit, ``ulimit -v``), and so from then on: the same output, one core."""
        if not self._inline:
            assert self._pool is not None
            try:
                return self._pool.submit(fn, *args)
            except RuntimeError:  # "can't start new thread"
                self._inline = True
        done: Future[list[bytes]] = Future()
        done.set_result(fn(*args))
        return done

    def close(self) -> None:
        """Shut the worker threads down (waits for what is queued)."""
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> CompressPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
