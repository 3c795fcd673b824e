"""A fleet run: find the dumps, skip those already done, triage the rest on an engine,
append each record to ``triage.jsonl`` as it arrives, and write ``report.html``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kdumptool.fleet.discover import DumpItem, discover
from kdumptool.fleet.engine import run_dask, run_local
from kdumptool.fleet.store import ResultsFile

Record = dict[str, Any]
REPORT_NAME = "report.html"


@dataclass
class FleetResult:
    """What a run did: every record (old ones too, with ``--resume``) and the counts."""

    records: list[Record] = field(default_factory=list)
    found: int = 0
    skipped: int = 0
    triaged: int = 0
    results_path: str | None = None
    report_path: str | None = None


def _engine(items: list[DumpItem], jobs: int | None, dask: str | None, retries: int) -> Iterator[Record]:
    if dask:
        return run_dask(items, dask, retries=retries)
    return run_local(items, jobs)


def run_fleet(paths: list[str], *, out: str | None = None, jobs: int | None = None,
              dask: str | None = None, resume: bool = False, retries: int = 2,
              report: bool = True, on_record: Callable[[Record, int, int], None] | None = None
              ) -> FleetResult:
    """Triage every dump under ``paths``.

    :param out: the run's directory (``triage.jsonl``, ``report.html``); None: nothing written
    :param jobs: local worker processes (default all cores); ignored with ``dask``
    :param dask: the address of a Dask scheduler to run the tasks on
    :param resume: skip the dumps whose records ``out/triage.jsonl`` already has
    :param retries: (Dask) times a failed task is run again
    :param report: write ``out/report.html`` at the end
    :param on_record: called with ``(record, done, total)`` as each record arrives
    :raises UsageError: a path does not exist; results exist and ``resume`` is false
    """
    result = FleetResult()
    store = ResultsFile(out, resume=resume) if out else None
    items = discover(paths, exclude=[out] if out else [])
    result.found = len(items)
    if store is not None:
        result.results_path = store.path
        todo = [it for it in items if it.key not in store.done]
        result.skipped = len(items) - len(todo)
    else:
        todo = items
    new: list[Record] = []
    try:
        for rec in _engine(todo, jobs, dask, retries) if todo else iter(()):
            if store is not None:
                store.append(rec)
            new.append(rec)
            if on_record is not None:
                on_record(rec, len(new), len(todo))
    finally:
        if store is not None:
            store.close()
    result.triaged = len(new)
    result.records = store.records if store is not None else new
    if store is not None and out and report:
        result.report_path = write_report(result.records, out)
    return result


def write_report(records: list[Record], out: str) -> str:
    """Write ``out/report.html`` for ``records`` (atomically) and return its path."""
    from kdumptool.fleet.report import render_report

    path = os.path.join(out, REPORT_NAME)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render_report(records))
    os.replace(tmp, path)
    return path
