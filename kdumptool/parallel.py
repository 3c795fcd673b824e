"""Chunks of a dump's PFN range processed on every core, joined in PFN order.

A writer cuts the pages it will write into *chunks*: runs of whole data windows whose
bounds are multiples of :data:`CHUNK_WINDOWS` windows, and which hold at most about
:data:`CHUNK_PAGES` pages to do when the writer can count them. The cut depends on the dump
(and the dump level) only,
never on the number of workers, and each chunk's bytes depend on its pages only, so the
joined output is byte-identical for any number of workers.

With several workers, each chunk is a task of a pool of *forked* processes (the reader,
the selection and its exclusion bits are inherited; a task is a short list of windows,
pickled): the worker reads, selects, decodes and encodes the chunk's pages and returns a
small result (descriptors, counts). Where the chunk's bytes go: when the output is a plain
file and every earlier chunk has ended (their ends are shared with the workers, in a shared
mapping made before the fork), the worker writes them in place; else into a temporary file of
its own in the output's directory, which the parent moves into the output with
``os.copy_file_range`` (a copy inside the kernel; other sinks get them through ``pwrite``, as
the same writes one process would make) before telling the workers where that chunk ended.
The parent takes the results in chunk order. Processes, not threads: the per-page Python work
and some codecs hold the GIL. At most ``IN_FLIGHT x workers`` chunks are in flight, so memory
and temporary space stay bounded as the dump grows.

A worker reads the input's pages through a mapping of the file where it can
(:func:`kdumptool.transport.source.allow_mapping`): no copy out of the page cache. If a
worker dies (SIGBUS: the input was cut or could not be read while mapped; or killed) or a
system call of a worker finds a mapped page gone (EFAULT), every chunk not yet delivered
(that one, any earlier one still running, every later one) is done in the parent, which
never maps the input and reads it with ``pread``: the same bytes, or the error naming the
file and offset. The temporary files of the pool are removed whatever ends it.

With one worker (or one chunk) everything runs in the calling process and the bytes go
straight to the output, through the same per-chunk function.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import mmap
import multiprocessing
import os
import resource
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
#: The most steps (of ``CHUNK_WINDOWS`` windows: 2 GiB of 4 KiB pages) a chunk with little
#: to do runs on for (:func:`chunked_windows`).
LIGHT_STEPS = 16
#: The most bytes a worker holds for a chunk, to write them in place once the chunk's start is
#: known, before it puts them in its temporary file instead.
HOLD_BYTES = 32 << 20

#: Chunks in flight per worker: a worker goes on with the next ones while the chunk the
#: parent waits for is still running (those done wait in their files or in place).
IN_FLIGHT = 4

T = TypeVar("T")
R = TypeVar("R")

#: The function of the pool being run, set before the workers are forked (never pickled).
_JOB: Callable[..., Any] | None = None


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
    are shared by the workers instead of falling to one of them, and a chunk with under a
    quarter of that to do goes on past a multiple of the step, for at most
    :data:`LIGHT_STEPS` steps (at ``-d 31`` most of memory has nothing to do: a stretch of
    empty chunks would fill the pool's queue, leaving a worker idle behind one busy chunk;
    the bound keeps the windows of a huge, sparse machine on every core).

    :param windows: ``(start, count)`` in PFN order
    :param window_pages: the reader's window size
    :param span: only windows that overlap PFNs ``[lo, hi)``
    :param weight: the pages a window will have to handle (its kept pages), from metadata
    """
    step = CHUNK_WINDOWS * window_pages
    chunks: list[list[tuple[int, int]]] = []
    current = first = -1
    load = 0
    for start, count in windows:
        if span is not None and (start >= span[1] or start + count <= span[0]):
            continue
        boundary = start // step != current and (
            weight is None or load >= CHUNK_PAGES // 4 or start // step - first >= LIGHT_STEPS)
        current = start // step
        if not chunks or boundary or load >= CHUNK_PAGES:
            chunks.append([])
            load, first = 0, current
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
        self.names = (getattr(exc, "filename", None), getattr(exc, "filename2", None))

    def rebuild(self) -> BaseException:
        try:
            if issubclass(self.cls, OSError) and len(self.args) == 2:  # errno, strerror (, names)
                exc = self.cls(*self.args, self.names[0], None, self.names[1])
                exc.__dict__.update(self.state)
                return exc
            exc = self.cls.__new__(self.cls)
            exc.args = self.args
            exc.__dict__.update(self.state)
            str(exc)  # the rebuilt error must still print
        except Exception:  # a class that cannot be rebuilt: keep its message
            return KdumpToolError(self.text)
        return exc


def _worker_start() -> None:
    """In each forked worker, before its first task: page data may be read from a mapping;
    a worker killed by SIGBUS (its mapped input cut) leaves no core file of dump memory."""
    source.allow_mapping()
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))


def _chunk_prefix(token: str) -> str:
    return f".kdumptool-chunk-{token}-"


class _Ends:
    """Where each chunk ends in the output, shared by the parent and its forked workers (an
    anonymous shared mapping made before the fork, and a lock): cell ``index % cells`` holds
    ``(index, end offset)`` of the last chunk that ended there, so a chunk's start is known
    once the cell of the chunk before it holds that chunk's index.

    The lock is only ever waited for a bounded time: a process killed while holding it (a
    worker of a broken pool) costs the chunks after it their in-place writes, never a hang.

    :param cells: more than the chunks in flight
    :param base: where chunk 0 starts
    :param fd: the output file, written in place by the worker of a chunk whose start is known
    """

    #: Seconds to wait for the lock (held for a few instructions by a live process).
    WAIT = 2.0

    def __init__(self, cells: int, base: int, fd: int) -> None:
        self.fd = fd
        self.cells = cells
        self._area = mmap.mmap(-1, cells * 16)
        self._words = memoryview(self._area).cast("q")
        for i in range(cells):
            self._words[2 * i] = -2  # no chunk's index (-1 is the one before chunk 0)
        self._lock = multiprocessing.get_context("fork").Lock()
        self.record(-1, base)

    def _put(self, index: int, end: int) -> None:
        i = 2 * (index % self.cells)
        self._words[i], self._words[i + 1] = index, end

    def record(self, index: int, end: int) -> None:
        """Chunk ``index`` ends at ``end`` (not recorded if the lock is not had: the chunks
        after it then go through files)."""
        if self._lock.acquire(timeout=self.WAIT):
            try:
                self._put(index, end)
            finally:
                self._lock.release()

    def claim(self, index: int, nbytes: int) -> int | None:
        """Where chunk ``index`` starts when the chunk before it has ended (recording that this
        one, of ``nbytes``, ends after it), else None."""
        if not self._lock.acquire(timeout=self.WAIT):
            return None
        try:
            i = 2 * ((index - 1) % self.cells)
            if self._words[i] != index - 1:
                return None
            start = self._words[i + 1]
            self._put(index, start + nbytes)
            return start
        finally:
            self._lock.release()


#: The workers' view of the running pool's chunk ends: set before they are forked when the
#: output is a plain file (never pickled; the parent uses its runner's own).
_ENDS: _Ends | None = None


class _Redo:
    """A worker's task result: it could not read its input (EFAULT: a mapped page of the input
    went away under a system call), so the parent does this task and the rest itself."""


class _ChunkOut:
    """A worker's bytes for one chunk: held in memory (up to :data:`HOLD_BYTES`) to be
    written in place once the chunk's start is known, else (or beyond that) in a temporary
    file of its own in ``tmpdir``, named after the pool's ``token``."""

    def __init__(self, tmpdir: str | None, token: str) -> None:
        self.tmpdir, self.token = tmpdir, token
        self.lengths: list[int] = []
        self.held: list[bytes] = []
        self.nheld = 0
        self.fd, self.path = -1, None

    def write(self, data: bytes | memoryview) -> None:
        """The chunk's next bytes."""
        self.lengths.append(len(data))
        if self.fd < 0 and _ENDS is not None and self.nheld + len(data) <= HOLD_BYTES:
            self.held.append(data if isinstance(data, bytes) else bytes(data))
            self.nheld += len(data)
            return
        self._spill()
        self._to_file(data)

    def place(self, index: int) -> int:
        """At the chunk's end: write its bytes in place if its start is known (returned);
        else keep them in the temporary file (-1)."""
        if self.fd < 0 and _ENDS is not None:
            start = _ENDS.claim(index, self.nheld)
            if start is not None:
                _pwrite_all(_ENDS.fd, self.held, start)
                return start
        self._spill()
        return -1

    def discard(self) -> None:
        """After an error: no file left behind."""
        self.close()
        if self.path is not None:
            os.unlink(self.path)

    def close(self) -> None:
        """Close the temporary file (the parent opens it by name)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _spill(self) -> None:
        held, self.held, self.nheld = self.held, [], 0
        for piece in held:
            self._to_file(piece)

    def _to_file(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            if self.fd < 0:
                self.fd, self.path = tempfile.mkstemp(prefix=_chunk_prefix(self.token), dir=self.tmpdir)
            while len(view):
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as exc:
            if exc.errno == errno.EFAULT:  # the data was a mapped input page that went away
                raise
            raise OutputError(f"{self.tmpdir or tempfile.gettempdir()}: cannot write a worker's "
                              f"temporary file: {exc.strerror or exc}", errno=exc.errno) from None


def _pwrite_all(fd: int, pieces: list[bytes], offset: int) -> None:
    for piece in pieces:
        view = memoryview(piece)
        while len(view):
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n


def _run_task(task: Any, tmpdir: str | None, token: str,
              index: int) -> tuple[str | None, list[int], Any, int]:
    """In a worker: task ``index`` of the job. Its bytes go straight to their place in the
    output when the chunks before it have ended, else to a temporary file (the parent copies it
    out and removes it). Returns that file's name, the length of each write (so that the
    parent repeats the same writes), the result, and where the bytes were placed (-1: not)."""
    assert _JOB is not None
    out = _ChunkOut(tmpdir, token)
    try:
        result = _JOB(task, out.write)
        placed = out.place(index)
    except BaseException as exc:  # noqa: BLE001 - carried to the parent, raised there
        out.discard()
        if isinstance(exc, OSError) and exc.errno == errno.EFAULT:
            return None, [], _Redo(), -1
        return None, [], _Failure(exc), -1
    finally:
        out.close()
    return out.path, out.lengths, result, placed


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
        #: tasks done in this process after a worker died or lost its input (those not yet
        #: delivered, started or not; 0: none)
        self.redone = 0
        #: tasks whose bytes their worker wrote in place (the others: through a file)
        self.placed = 0
        self._ends: _Ends | None = None

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
        global _JOB, _ENDS
        saved = _JOB, _ENDS
        fd = getattr(self.sink, "fd", None)  # a plain file: workers may write in place
        self._ends = _Ends(2 * IN_FLIGHT * self.workers + 4, self.pos, fd) if isinstance(fd, int) else None
        _JOB, _ENDS = self.fn, self._ends
        tasks = enumerate(self.tasks)
        token = f"{os.getpid()}-{os.urandom(4).hex()}"
        pending: deque[tuple[int, T, Future[tuple[str | None, list[int], Any, int]]]] = deque()
        left: list[T] | None = None  # after a worker died: the tasks to do here
        ended = False  # every task delivered: no worker file can be left
        try:
            with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                     initializer=_worker_start) as pool:
                while left is None:
                    left = self._fill(pool, pending, tasks, token)
                    if left is not None or not pending:
                        ended = left is None
                        break
                    try:
                        done = pending[0][2].result()
                    except BrokenProcessPool:  # a worker died (SIGBUS: its mapped input was cut)
                        done = (None, [], _Redo(), -1)
                    except BaseException:
                        _cancel(pending)
                        raise
                    if isinstance(done[2], _Redo):
                        left = [t for _, t, _ in pending]
                        _cancel(pending)
                        break
                    index = pending.popleft()[0]
                    try:
                        yield self._deliver(index, *done)
                    except BaseException:
                        _cancel(pending)
                        raise
        finally:
            _JOB, _ENDS = saved
            for _, _, f in pending:  # after an error: the chunks still running leave files
                if not f.cancel():
                    with contextlib.suppress(BaseException):
                        path = f.result()[0]
                        if path is not None:
                            os.unlink(path)
            if not ended:  # a dead or interrupted worker's files, if any
                _remove_files(self.tmpdir, token)
        if left is not None:  # the pool is gone: the tasks not delivered are done here
            for item in self._serial(itertools.chain(left, (t for _, t in tasks))):
                self.redone += 1
                yield item

    def _fill(self, pool: ProcessPoolExecutor, pending: deque[tuple[int, T, Future[Any]]],
              tasks: Iterator[tuple[int, T]], token: str) -> list[T] | None:
        """Submit tasks until ``IN_FLIGHT x workers`` are in flight; if the pool broke meanwhile, the
        tasks to do here instead (those in flight and the one that could not be submitted)."""
        while len(pending) < IN_FLIGHT * self.workers:
            item = next(tasks, None)
            if item is None:
                return None
            index, task = item
            try:
                future = pool.submit(_run_task, task, self.tmpdir, token, index)
            except BrokenProcessPool:
                _cancel(pending)
                return [t for _, t, _ in pending] + [task]
            pending.append((index, task, future))
        return None

    def _deliver(self, index: int, path: str | None, lengths: list[int], result: Any,
                 placed: int) -> tuple[R, int, int]:
        """Task ``index``'s outcome, its bytes in the sink: written in place by its worker
        (``placed``), or copied from the worker's file here, after which the chunk's end is
        known to the workers."""
        interrupts.check()
        if isinstance(result, _Failure):
            raise result.rebuild()
        nbytes = sum(lengths)
        start = self.pos
        if placed >= 0:
            if placed != start:
                raise KdumpToolError(f"a chunk was written at {placed:#x} instead of {start:#x}")
            if hasattr(self.sink, "wrote"):
                self.sink.wrote(start, nbytes)
            self.placed += 1
        else:
            if path is not None:
                _take(path, lengths, self.sink, start)
            if self._ends is not None:
                self._ends.record(index, start + nbytes)
        self.pos += nbytes
        return result, start, nbytes


def _cancel(pending: deque[tuple[int, Any, Future[Any]]]) -> None:
    for _, _, f in pending:  # not started: never run
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
