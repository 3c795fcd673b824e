"""``kdumptool triage`` over many dumps (a fleet): options parsed and results printed
here, the work done by :mod:`kdumptool.fleet`.  :mod:`kdumptool.cli_kernel` hands the
command over when it is given directories, several dumps or a fleet option.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click

from kdumptool.errors import UsageError


def wants_fleet(dump: tuple[str, ...], opts: dict[str, Any]) -> bool:
    """Whether ``triage`` runs over a fleet rather than on one dump (or one split set)."""
    if any(opts.get(k) for k in ("out", "jobs", "dask", "resume", "signatures", "keep")):
        return True
    if not dump or "-" in dump:
        return False
    if any(os.path.isdir(p) for p in dump):
        return True
    if len(dump) == 1:
        return False
    from kdumptool.fleet.discover import discover

    return len(discover(list(dump))) != 1


def _progress_line(rec: dict[str, Any], done: int, total: int) -> str:
    crash = f"{rec.get('kind') or 'unknown'}: {rec.get('reason') or '-'}"
    status = rec["status"] if not rec["status"].startswith("unreadable") else "unreadable"
    return f"[{done}/{total}] {status:<10} {rec.get('signature') or '-':<16} {crash[:48]:<48} {rec['dump']}"


def run_fleet_command(dump: tuple[str, ...], *, out: str | None, jobs: int | None, dask: str | None,
                      retries: int, resume: bool, as_json: bool, signatures: bool,
                      keep: str | None) -> None:
    """The fleet form of ``triage`` (see :func:`kdumptool.cli_kernel.triage`)."""
    from kdumptool.fleet.groups import damaged, format_signatures, keep_one_per_signature, signature_groups
    from kdumptool.fleet.run import run_fleet, write_report
    from kdumptool.fleet.store import RESULTS_NAME, load_records

    if resume and not out:
        raise UsageError("--resume needs --out DIR (the run to continue)")
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs {jobs}: give at least 1")
    if dump:
        def show(rec: dict[str, Any], done: int, total: int) -> None:
            click.echo(json.dumps(rec, sort_keys=True) if as_json else _progress_line(rec, done, total))

        result = run_fleet(list(dump), out=out, jobs=jobs, dask=dask, resume=resume, retries=retries,
                           on_record=show)
        records = result.records
        click.echo(f"kdumptool: {result.found} dumps found, {result.triaged} triaged, {result.skipped} "
                   "already done", err=True)
    elif out:  # no PATH: the results of an earlier run
        records = load_records(os.path.join(out, RESULTS_NAME))
        if not records:
            raise UsageError(f"{os.path.join(out, RESULTS_NAME)}: no results to read (give PATHs)")
        result = None
        if not (signatures or keep):
            click.echo(f"report: {write_report(records, out)}", err=True)
    else:
        raise UsageError("give the dumps (files or directories) to triage")
    groups = signature_groups(records)
    if result is not None and result.results_path:
        click.echo(f"kdumptool: {len(groups)} signatures, {len(damaged(records))} damaged dumps; "
                   f"results: {result.results_path}, report: {result.report_path}", err=True)
    if signatures:
        unsigned = sum(1 for r in records if not r.get("signature"))
        if as_json:
            click.echo(json.dumps([g.as_dict() for g in groups], indent=1))
        else:
            click.echo(format_signatures(groups, unsigned))
    if keep:
        for sig, src, how in keep_one_per_signature(records, keep):
            click.echo(f"{sig}: {how} {src} -> {os.path.join(keep, sig, os.path.basename(src))}", err=True)


def write_split_dask(level: int, *, src: str, dsts: list[str], splitblock: int | None, codec: Any,
                     force: bool, quiet: bool, vmcoreinfo_file: str | None, address: str) -> None:
    """``convert --split --dask``: the parts written by tasks on the cluster at ``address``."""
    from kdumptool.fleet.convert import convert_split_dask

    t0 = time.monotonic()
    parts = convert_split_dask(src, dsts, level=level, codec=codec.name if codec else None,
                               address=address, splitblock=splitblock,
                               vmcoreinfo_file=vmcoreinfo_file, force=force)
    if not quiet:
        for n, (dst, ((lo, hi), stats)) in enumerate(zip(dsts, parts, strict=True), 1):
            click.echo(f"{dst}: split part {n} of {len(dsts)} (PFNs [{lo:#x}, {hi:#x})), dump level "
                       f"{level}: {stats['pages']} pages, written by a task on {address}", err=True)
        click.echo(f"{len(dsts)} files written in {time.monotonic() - t0:.1f} s", err=True)
