"""One dump of a fleet, triaged: a pure task (paths in, a JSON-ready record out).

:func:`triage_paths` is what every engine runs, in a local worker process or on a Dask
worker: it opens the dump (or split set) once, tolerantly, and puts together

* the dump's facts (``kdumptool info``: format, transport, size, dump level, pages),
* its health (the ``fsck`` checks, :func:`kdumptool.repair.checks.check_reader`),
* the page-class breakdown (``info --pages``: the mem_map classes of dump level 31;
  zero pages are counted only with ``zero_pages=True``, as that reads every page),
* the kernel's triage (:func:`kdumptool.kernel.triage.triage`: reason, task, CPU, trace,
  taint, modules, signature).

It never raises: a dump that cannot be opened is a record whose ``status`` is
``"unreadable: <why>"``; a part that cannot be read is in ``errors``.  Every field is a
function of the files alone (no times, hosts or temporary names), so two runs, on one
machine or a cluster, give the same records.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

from kdumptool.errors import KdumpToolError

#: Trace frames kept in a record (the signature uses the first few reliable ones).
MAX_TRACE = 32
#: Stack-scan frames kept in a record.
MAX_STACK = 16
#: fsck findings kept in a record.
MAX_FINDINGS = 20
#: Record layout version (bump when fields change meaning).
RECORD_VERSION = 1


def iso_time(seconds: int | None) -> str | None:
    """``2026-11-22T04:25:41Z`` for seconds since the epoch; None for none or nonsense."""
    if not seconds or seconds <= 0:
        return None
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None


def _size(paths: Sequence[str]) -> int | None:
    try:
        return sum(os.path.getsize(p) for p in paths)
    except OSError:
        return None


def base_record(key: str, paths: Sequence[str]) -> dict[str, Any]:
    """The fields every record has, before anything is read."""
    return {"v": RECORD_VERSION, "dump": key, "paths": list(paths), "size": _size(paths),
            "status": "unreadable", "format": None, "transport": None, "arch": None,
            "release": None, "build_id": None, "crash_time": None, "crash_time_iso": None,
            "dump_level": None, "incomplete": None, "pages": None, "page_classes": None,
            "health": None, "kind": None, "reason": None, "cpu": None, "pid": None, "comm": None,
            "pc": None, "trace": [], "stack": [], "taint": None, "modules": [], "uptime": None,
            "signature": None, "signature_input": [], "errors": {}}


def _health(reader: Any) -> dict[str, Any]:
    from kdumptool.repair.checks import check_reader
    from kdumptool.repair.findings import Report

    report = Report(reader.info.path)
    check_reader(reader, report)
    verdict = {0: "clean", 1: "repairable", 2: "data lost", 3: "unreadable"}.get(report.exit_code, "?")
    return {"verdict": verdict, "exit_code": report.exit_code,
            "findings": [str(f) for f in report.findings][:MAX_FINDINGS]}


def _page_classes(reader: Any, zero_pages: bool) -> dict[str, Any]:
    from kdumptool.filters.levels import MAX_DUMP_LEVEL
    from kdumptool.pipeline import Selection
    from kdumptool.report import exclusion_report

    level = MAX_DUMP_LEVEL if zero_pages else MAX_DUMP_LEVEL & ~1
    report = exclusion_report(Selection(reader, level, reclassify=True))
    report.pop("warnings", None)
    return report


def _facts(rec: dict[str, Any], reader: Any) -> None:
    from kdumptool.summary import dump_summary

    s = dump_summary(reader)
    rec.update(format=s["format"], transport=s["transport"], arch=s["arch"],
               release=s["kernel"]["release"], dump_level=s["dump_level"],
               incomplete=s["incomplete"], pages=s["pages"],
               build_id=s["vmcoreinfo"]["build_id"])
    if s["crash_time"]:
        rec["crash_time_iso"] = s["crash_time"][:19] + "Z"


def _kernel(rec: dict[str, Any], reader: Any) -> None:
    from kdumptool.kernel.session import Kernel, ensure_vmcoreinfo
    from kdumptool.kernel.triage import triage

    origin = ensure_vmcoreinfo(reader)
    report = triage(Kernel(reader, origin), health=False).as_dict()
    for name in ("release", "build_id"):
        if report.get(name) is None:
            report.pop(name)
    for name in ("path", "format", "headlines", "health", "dump_level", "incomplete"):
        report.pop(name, None)
    report["trace"] = report["trace"][:MAX_TRACE]
    report["stack"] = report["stack"][:MAX_STACK]
    rec["errors"].update(report.pop("errors"))
    rec.update(report)
    if rec["crash_time"]:
        rec["crash_time_iso"] = iso_time(rec["crash_time"])


def _part(rec: dict[str, Any], what: str, func: Any) -> Any:
    """``func()``; an error of any kind is recorded in ``errors`` (the task never raises)."""
    try:
        return func()
    except KdumpToolError as exc:
        rec["errors"][what] = str(exc)
    except Exception as exc:  # noqa: BLE001 - a bug on one dump must not end a fleet run
        rec["errors"][what] = f"internal error: {type(exc).__name__}: {exc}"
    return None


def triage_paths(key: str, paths: Sequence[str], *, zero_pages: bool = False) -> dict[str, Any]:
    """The record of one dump (see the module docstring); never raises.

    :param key: the dump's name in the results (:attr:`DumpItem.key`)
    :param paths: its file, or the parts of its split set
    :param zero_pages: count zero pages in the page-class breakdown (reads every page)
    """
    from kdumptool.open import open_dumps

    rec = base_record(key, paths)
    try:
        reader = open_dumps(list(paths), strict=False)
    except KdumpToolError as exc:
        rec["status"] = f"unreadable: {exc}"
        rec["health"] = {"verdict": "unreadable", "exit_code": 3, "findings": [f"fatal: {exc}"]}
        return rec
    except Exception as exc:  # noqa: BLE001
        rec["status"] = f"unreadable: internal error: {type(exc).__name__}: {exc}"
        return rec
    with reader:
        _part(rec, "info", lambda: _facts(rec, reader))
        rec["health"] = _part(rec, "health", lambda: _health(reader))
        rec["page_classes"] = _part(rec, "page_classes", lambda: _page_classes(reader, zero_pages))
        _part(rec, "kernel", lambda: _kernel(rec, reader))
    rec["status"] = "ok" if not rec["errors"] else "partial"
    return rec


def triage_item(item: Any, zero_pages: bool = False) -> dict[str, Any]:
    """:func:`triage_paths` of a :class:`~kdumptool.fleet.discover.DumpItem` (what engines run)."""
    return triage_paths(item.key, item.paths, zero_pages=zero_pages)
