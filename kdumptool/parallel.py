"""Chunks of a dump's PFN range processed on every core, joined in PFN order.

A writer cuts the pages it will write into *chunks*: runs of whole data windows whose
bounds are multiples of :data:`CHUNK_WINDOWS` windows, and which hold at most about
:data:`CHUNK_PAGES` pages to do when the writer can count them. The cut depends on the dump
(and the dump level) only,
never on the number of workers, and each chunk's bytes depend on its pages only, so the
joined output is byte-identical for any number of workers.

With several workers, each chunk is a task of a pool of *forked* processes (the reader,
the selection and its exclusion bits are inherited; a task is a short list of windows,
pickled): the worker reads, selects, decodes and encodes the chunk's pages, writes the
bytes it produces to a temporary file of its own in the output's directory, and returns
the file's name and a small result (descriptors, counts). The parent takes the results in
chunk order, moves each chunk's bytes into the output with ``os.copy_file_range`` (a copy
inside the kernel; other sinks get them through ``pwrite``, as the same writes one process
would make) and removes the file. Processes, not threads: the per-page Python work and some
codecs hold the GIL. At most ``2 x workers`` chunks are in flight, so memory and temporary
space stay bounded as the dump grows.

A worker reads the input's pages through a mapping of the file where it can
(:func:`kdumptool.transport.source.allow_mapping`): no copy out of the page cache. If a
worker dies (SIGBUS: the input was cut or could not be read while mapped; or killed), its
chunk and every later one are done again in the parent, which never maps the input and
reads it with ``pread``: the same bytes, or the error naming the file and offset. The
temporary files of the dead pool are removed.

With one worker (or one chunk) everything runs in the calling process and the bytes go
straight to the output, through the same per-chunk function.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Generic, TypeVar

from kdumptool import allocator, interrupts
from kdumptool.errors import KdumpToolError, OutputError
from kdumptool.transport import source

__all__ = ["CHUNK_PAGES", "CHUNK_WINDOWS", "ChunkRunner", "chunked_windows", "default_workers"]

#: Data windows per chunk (4 MiB windows: 128 MiB of pages per chunk).
CHUNK_WINDOWS = 32
#: With a weight, a chunk ends once it holds this many pages to do (32 MiB of 4 KiB pages).
CHUNK_PAGES = 8192

T = TypeVar("T")
R = TypeVar("R")

#: The function of the pool being run, set before the workers are forked (never pickled).
_JOB: Callable[..., Any] | None = None
_END = object()


def default_workers() -> int:
    """Workers when none are asked for: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def chunked_windows(windows: Iterator[tuple[int, int]], window_pages: int,
                    span: tuple[int, int] | None = None,
                    weight: Callable[[int, int], int] | None = None) -> list[list[tuple[int, int]]]:
    """Group data windows into chunks whose bounds are multiples of
    ``CHUNK_WINDOWS * window_pages`` PFNs (windows outside ``span`` are left out); with
    ``weight``, a chunk also ends after the window that brings its pages to do up to
    :data:`CHUNK_PAGES`, so the dense parts of memory (the kernel's own pages at ``-d 31``)
    are shared by the workers instead of falling to one of them.

    :param windows: ``(start, count)`` in PFN order
    :param window_pages: the reader's window size
    :param span: only windows that overlap PFNs ``[lo, hi)``
    :param weight: the pages a window will have to handle (its kept pages), from metadata
    """
    step = CHUNK_WINDOWS * window_pages
    chunks: list[list[tuple[int, int]]] = []
    current = -1
    load = 0
    for start, count in windows:
        if span is not None and (start >= span[1] or start + count <= span[0]):
            continue
        if start // step != current or load >= CHUNK_PAGES:
            current = start // step
            chunks.append([])
            load = 0
        chunks[-1].append((start, count))
        if weight is not None:
            load += weight(start, count)
    return chunks


class _Failure:
    """An exception raised in a worker, carried back without pickling its class's
    ``__init__`` arguments (ours take keyword-only ones)."""

    def __init__(self, exc: BaseException) -> None:
        self.cls = type(exc)
        self.args = exc.args
        self.state = dict(getattr(exc, "__dict__", {}))
        self.text = str(exc)

    def rebuild(self) -> BaseException:
        try:
            exc = self.cls.__new__(self.cls)
            exc.args = self.args
            exc.__dict__.update(self.state)
            str(exc)  # the rebuilt error must still print
        except Exception:  # a class that cannot be rebuilt: keep its message
            return KdumpToolError(self.text)
        return exc


def _worker_start() -> None:
    """In each forked worker, before its first task: page data may be read from a mapping."""
    source.allow_mapping()


def _chunk_prefix(token: str) -> str:
    return f".kdumptool-chunk-{token}-"


def _run_task(task: Any, tmpdir: str | None, token: str) -> tuple[str | None, list[int], Any]:
    """In a worker: one task of the job, its bytes written to a temporary file of its own in
    ``tmpdir`` (named after the pool's ``token``); returns that file's name (the parent copies
    it out and removes it) and the length of each write, so that the parent repeats the same
    writes."""
    assert _JOB is not None
    lengths: list[int] = []
    fd, path = -1, None

    def write(data: bytes | memoryview) -> None:
        nonlocal fd, path
        lengths.append(len(data))
        view = memoryview(data)
        try:
            if fd < 0:
                fd, path = tempfile.mkstemp(prefix=_chunk_prefix(token), dir=tmpdir)
            while len(view):
                n = os.write(fd, view)
                view = view[n:]
        except OSError as exc:
            raise OutputError(f"{tmpdir or tempfile.gettempdir()}: cannot write a worker's temporary "
                              f"file: {exc.strerror or exc}", errno=exc.errno) from None

    try:
        result = _JOB(task, write)
    except BaseException as exc:  # noqa: BLE001 - carried to the parent, raised there
        if path is not None:
            os.unlink(path)
        return None, [], _Failure(exc)
    finally:
        if fd >= 0:
            os.close(fd)
    return path, lengths, result


class ChunkRunner(Generic[T, R]):
    """Run ``fn(task, write)`` for each task, in parallel; lay the tasks' bytes out one
    after the other in ``sink`` from offset ``base``, in task order.

    ``fn`` writes the task's bytes with ``write`` (in order) and returns a small, picklable
    result. :meth:`results` gives, for each task in order, ``(result, offset, nbytes)`` once
    its bytes are in the sink at ``offset``.

    :param fn: the per-task function (inherited by the forked workers, never pickled)
    :param tasks: the tasks (small: each is pickled to its worker), taken as they are needed
    :param workers: processes; 1 runs every task here, writing straight into ``sink``
    :param sink: has ``pwrite(offset, data)``; a plain file's ``fd`` is copied into in the kernel
    :param base: where the first task's bytes go
    :param tmpdir: where the workers' temporary files go (the output's directory keeps
        ``copy_file_range`` on one file system)
    """

    def __init__(self, fn: Callable[[T, Callable[[bytes | memoryview], None]], R], tasks: Iterable[T],
                 workers: int, sink: Any, base: int, tmpdir: str | None = None) -> None:
        self.fn = fn
        self.tasks = tasks
        if isinstance(tasks, list):
            workers = min(workers, len(tasks))
        self.workers = max(1, workers)
        self.sink = sink
        self.pos = base
        self.tmpdir = tmpdir
        #: tasks done again in this process after a worker died (0: none)
        self.redone = 0

    def results(self) -> Iterator[tuple[R, int, int]]:
        """See the class doc."""
        allocator.tune()
        if (self.workers == 1 or "fork" not in multiprocessing.get_all_start_methods()
                or multiprocessing.current_process().daemon):  # a daemon may not have children
            yield from self._serial(self.tasks)
        else:
            yield from self._parallel()

    def _serial(self, tasks: Iterable[T]) -> Iterator[tuple[R, int, int]]:
        for task in tasks:
            interrupts.check()
            start = self.pos

            def write(data: bytes | memoryview) -> None:
                self.sink.pwrite(self.pos, data)
                if hasattr(self.sink, "wrote"):
                    self.sink.wrote(self.pos, len(data))
                self.pos += len(data)

            result = self.fn(task, write)
            yield result, start, self.pos - start

    def _parallel(self) -> Iterator[tuple[R, int, int]]:
        global _JOB
        _JOB = self.fn
        tasks = iter(self.tasks)
        token = f"{os.getpid()}-{os.urandom(4).hex()}"
        more = True
        pending: deque[tuple[T, Future[tuple[str | None, list[int], Any]]]] = deque()
        left: list[T] | None = None  # after a worker died: the tasks to do here
        try:
            with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                     initializer=_worker_start) as pool:
                while True:
                    while more and len(pending) < 2 * self.workers:
                        task = next(tasks, _END)
                        if task is _END:
                            more = False
                        else:
                            pending.append((task, pool.submit(_run_task, task, self.tmpdir, token)))
                    if not pending:
                        break
                    try:
                        path, lengths, result = pending[0][1].result()
                    except BrokenProcessPool:
                        left = [t for t, _ in pending]
                        pending.clear()
                        break
                    except BaseException:
                        _cancel(pending)
                        raise
                    pending.popleft()
                    try:
                        interrupts.check()
                        if isinstance(result, _Failure):
                            raise result.rebuild()
                        nbytes = sum(lengths)
                        if path is not None:
                            _take(path, lengths, self.sink, self.pos)
                        self.pos += nbytes
                        yield result, self.pos - nbytes, nbytes
                    except BaseException:
                        _cancel(pending)
                        raise
        finally:
            _JOB = None
            for _, f in pending:  # after an error: the chunks still running leave files
                if not f.cancel():
                    with contextlib.suppress(BaseException):
                        path = f.result()[0]
                        if path is not None:
                            os.unlink(path)
        if left is not None:  # the pool is gone: its files removed, the rest done here
            _remove_files(self.tmpdir, token)
            for item in self._serial(itertools.chain(left, tasks)):
                self.redone += 1
                yield item


def _cancel(pending: deque[tuple[Any, Future[Any]]]) -> None:
    for _, f in pending:  # not started: never run
        f.cancel()


def _remove_files(tmpdir: str | None, token: str) -> None:
    """Remove what the workers of the pool named by ``token`` left in ``tmpdir``."""
    folder = tmpdir or tempfile.gettempdir()
    prefix = _chunk_prefix(token)
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(prefix):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _take(path: str, lengths: list[int], sink: Any, offset: int) -> None:
    """Move a worker's chunk file into ``sink`` at ``offset``, then remove it."""
    try:
        src = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise OutputError(f"{path}: a worker's temporary file cannot be read: {exc.strerror}") from None
    try:
        os.unlink(path)
        _copy(src, 0, lengths, sink, offset)
    finally:
        os.close(src)


def _copy(src: int, start: int, lengths: list[int], sink: Any, offset: int) -> None:
    """The bytes a worker wrote (``lengths``, from ``start`` of file ``src``) into ``sink`` at
    ``offset``: inside the kernel for a plain file, else as the same writes that one process
    makes (a flattened stream records each write)."""
    nbytes = sum(lengths)
    fd = getattr(sink, "fd", None)
    if fd is not None and hasattr(os, "copy_file_range"):
        done = 0
        try:
            while done < nbytes:
                n = os.copy_file_range(src, fd, nbytes - done, start + done, offset + done)
                if n == 0:
                    break
                done += n
        except OSError:  # not between these file systems: copy through memory
            pass
        if done == nbytes:
            if hasattr(sink, "wrote"):
                sink.wrote(offset, nbytes)
            return
    for length in lengths:
        piece = os.pread(src, length, start)
        if len(piece) != length:
            raise OutputError(f"a worker's temporary file ends early ({len(piece)} of {length} bytes)")
        sink.pwrite(offset, piece)
        start += length
        offset += length
