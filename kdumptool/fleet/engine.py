"""Where the tasks of a fleet run: a local process pool, or an existing Dask cluster.

Both engines take :class:`~kdumptool.fleet.discover.DumpItem` values and yield one record
(:func:`kdumptool.fleet.task.triage_item`) per item, in the order they finish.  Neither
lets one dump end the run:

* :func:`run_local` — a :class:`concurrent.futures.ProcessPoolExecutor` (``forkserver``
  workers, each replaced after :data:`TASKS_PER_CHILD` dumps so memory stays flat).  When
  a worker process dies (a crash in a C extension, the out-of-memory killer), the pool
  is rebuilt and the dumps in flight are run again; a dump that kills a worker when it
  runs alone is reported as unreadable.
* :func:`run_dask` — a ``distributed.Client`` on an existing scheduler: every dump is a
  task (``retries`` for errors, the scheduler's own rescheduling when a worker is lost),
  at most ``window`` tasks submitted at once, results taken with
  ``distributed.as_completed`` as they finish.  A task that fails for good (e.g.
  ``KilledWorker``) is a record, not an exception.  The workers must be able to import
  kdumptool and read the dumps at the same paths as the client (shared storage).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from kdumptool.fleet.discover import DumpItem
from kdumptool.fleet.task import base_record, triage_item

Record = dict[str, Any]
Task = Callable[[DumpItem], Record]

#: Dumps a local worker process triages before it is replaced (bounds leaks and caches).
TASKS_PER_CHILD = 64
#: Times a dump is run again after its worker process died, before it runs alone.
POOL_RETRIES = 2


def failed_record(item: DumpItem, why: str) -> Record:
    """The record of a dump whose task did not finish (``status`` ``"unreadable: ..."``)."""
    rec = base_record(item.key, item.paths)
    rec["status"] = f"unreadable: {why}"
    return rec


def default_jobs() -> int:
    """All the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _pool(jobs: int) -> ProcessPoolExecutor:
    ctx = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, max_tasks_per_child=TASKS_PER_CHILD)


def _run_pool(items: list[DumpItem], jobs: int, task: Task) -> Iterator[tuple[DumpItem, Record | None]]:
    """Run ``items`` in one pool: ``(item, record)``, or ``(item, None)`` for the dumps
    that were lost with a dead worker process."""
    with _pool(jobs) as pool:
        futures: dict[Future[Record], DumpItem] = {pool.submit(task, it): it for it in items}
        try:
            todo = set(futures)
            while todo:
                done, todo = wait(todo, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = futures[fut]
                    try:
                        yield item, fut.result()
                    except BrokenProcessPool:
                        yield item, None
                    except Exception as exc:  # noqa: BLE001 - the task itself never raises
                        yield item, failed_record(item, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            for fut in futures:
                fut.cancel()


def run_local(items: Iterable[DumpItem], jobs: int | None = None, *,
              task: Task = triage_item) -> Iterator[Record]:
    """Triage ``items`` in a local process pool of ``jobs`` workers (default: all cores),
    yielding records as they finish (see the module docstring)."""
    jobs = jobs or default_jobs()
    pending = list(items)
    lost: Counter[DumpItem] = Counter()
    while pending:
        alone = [it for it in pending if lost[it] > POOL_RETRIES]
        batch = [it for it in pending if lost[it] <= POOL_RETRIES]
        pending = []
        for item in alone:  # suspected of killing its worker: one pool of its own
            for _, rec in _run_pool([item], 1, task):
                yield rec if rec is not None else failed_record(
                    item, "the worker process died while triaging this dump")
        if not batch:
            continue
        for item, rec in _run_pool(batch, min(jobs, len(batch)), task):
            if rec is None:
                lost[item] += 1
                pending.append(item)
            else:
                yield rec


def run_dask(items: Iterable[DumpItem], address: str, *, retries: int = 2, window: int = 1000,
             task: Task = triage_item) -> Iterator[Record]:
    """Triage ``items`` as tasks of the Dask cluster whose scheduler is at ``address``,
    yielding records as they finish (see the module docstring).

    :param retries: times a task that raised is run again (worker loss is handled by the
        scheduler: ``distributed.scheduler.allowed-failures``)
    :param window: tasks submitted at once (more are submitted as results come back)
    """
    from distributed import Client, as_completed

    todo = iter(items)
    with Client(address, set_as_default=False) as client:
        owner: dict[Any, DumpItem] = {}

        def submit(n: int) -> list[Any]:
            out = []
            for item in todo:
                fut = client.submit(task, item, retries=retries, pure=False)
                owner[fut] = item
                out.append(fut)
                if len(out) >= n:
                    break
            return out

        stream = as_completed(submit(window), loop=client.loop)
        for fut in stream:
            item = owner.pop(fut)
            try:
                rec = fut.result()
            except Exception as exc:  # noqa: BLE001 - a task lost for good is a result
                rec = failed_record(item, f"task failed on the cluster: {type(exc).__name__}: {exc}")
            fut.release()
            yield rec
            for new in submit(1):
                stream.add(new)
