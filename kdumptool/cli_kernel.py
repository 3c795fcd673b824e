"""Command-line commands about the kernel inside a dump: ``symbols``, ``btf`` (and the
commands built on symbols and BTF).  Thin like :mod:`kdumptool.cli`: parse, call the library
(:mod:`kdumptool.kernel`), print.  :mod:`kdumptool.cli` adds these commands to its group.
"""

from __future__ import annotations

import json
import re
from typing import Any

import click

from kdumptool.cli_common import note
from kdumptool.errors import KernelDataMissingError, UsageError

_HEX_ADDRESS = re.compile(r"(0x[0-9a-fA-F]+|[0-9a-fA-F]{16})")

_SYMBOLS_EPILOG = """\b
Examples:
  kdumptool symbols vmcore > kallsyms.txt        # like the guest's /proc/kallsyms
  kdumptool symbols vmcore schedule init_task    # symbol -> address
  kdumptool symbols vmcore 0xffffffff952ee204    # address -> schedule+0x34/0xc0
"""


def _open_kernel(dump: tuple[str, ...], vmcoreinfo_file: str | None, scan: bool) -> Any:
    from kdumptool.api.reading import open_kernel_noting

    return open_kernel_noting(dump, vmcoreinfo_file, note, scan=scan)


def parse_query(text: str) -> int | str:
    """An address (``0x...``, or 16 hex digits as ``/proc/kallsyms`` prints them) or a name."""
    if _HEX_ADDRESS.fullmatch(text):
        return int(text, 16)
    return text


def _symbol_dict(sym: Any) -> dict[str, Any]:
    return {"address": f"{sym.address:#x}", "type": sym.type, "name": sym.name,
            "module": sym.module}


def _lookup(table: Any, query: int | str) -> tuple[list[str], list[dict[str, Any]], bool]:
    """Lines, JSON records and whether ``query`` was found."""
    if isinstance(query, int):
        found = table.symbolize(query)
        if found is None:
            return [f"{query:#x} (no symbol)"], [{"query": f"{query:#x}", "symbol": None}], False
        sym, off, size = found
        text = table.format_address(query)
        return ([f"{query:#x} {text}"],
                [{"query": f"{query:#x}", "symbol": _symbol_dict(sym), "offset": off, "size": size,
                  "text": text}], True)
    syms = table.lookup(query)
    if not syms:
        return [f"{query}: no such symbol"], [{"query": query, "symbol": None}], False
    return ([s.kallsyms_line() for s in syms],
            [{"query": query, "symbol": _symbol_dict(s)} for s in syms], True)


@click.command(epilog=_SYMBOLS_EPILOG)
@click.argument("dump", nargs=1, type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("queries", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--scan", is_flag=True,
              help="Find the tables by scanning memory even when VMCOREINFO names them.")
@click.option("-i", "--vmcoreinfo", "vmcoreinfo_file", type=click.Path(dir_okay=False), default=None,
              help="Use the VMCOREINFO text in this file.")
def symbols(dump: str, queries: tuple[str, ...], as_json: bool, scan: bool,
            vmcoreinfo_file: str | None) -> None:
    """The kernel's symbol table (kallsyms) read from DUMP's memory, no vmlinux needed.

    Without QUERIES, every symbol as /proc/kallsyms prints it.  Each QUERY is a symbol name
    (every symbol of that name is printed) or an address (0x..., or 16 hex digits), printed
    as name+offset/size.  Exit status 1 when a query is not found.
    """
    with _open_kernel((dump,), vmcoreinfo_file, scan) as kernel:
        table = kernel.symbols
        if not queries:
            if as_json:
                click.echo(json.dumps([_symbol_dict(s) for s in table], indent=1))
            else:
                out = click.get_text_stream("stdout")
                for sym in table:
                    out.write(sym.kallsyms_line() + "\n")
            return
        lines: list[str] = []
        records: list[dict[str, Any]] = []
        missing = []
        for q in queries:
            got_lines, got_records, ok = _lookup(table, parse_query(q))
            lines += got_lines
            records += got_records
            if not ok:
                missing.append(q)
        click.echo(json.dumps(records, indent=1) if as_json else "\n".join(lines))
        if missing:
            raise KernelDataMissingError(f"{dump}: not found: {', '.join(missing)}")


_BTF_EPILOG = """\b
Examples:
  kdumptool btf vmcore                             # where vmlinux's BTF is, and the modules'
  kdumptool btf vmcore -o vmlinux.btf              # then: bpftool btf dump file vmlinux.btf
  kdumptool btf vmcore --module ext4 -o ext4.btf   # split BTF: bpftool ... --base-btf vmlinux.btf
  kdumptool btf vmcore --list                      # vmlinux and each module: types, bytes
"""


@click.command(epilog=_BTF_EPILOG)
@click.argument("dump", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Write the raw BTF blob (vmlinux's, or --module's) to OUT ('-': standard output).")
@click.option("--module", "module", metavar="NAME", default=None,
              help="The BTF of loaded module NAME (split BTF on vmlinux's) instead of vmlinux's.")
@click.option("--list", "list_", is_flag=True, help="List vmlinux and every module with BTF.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-f", "--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("-i", "--vmcoreinfo", "vmcoreinfo_file", type=click.Path(dir_okay=False), default=None,
              help="Use the VMCOREINFO text in this file.")
def btf(dump: tuple[str, ...], out: str | None, module: str | None, list_: bool, as_json: bool,
        force: bool, vmcoreinfo_file: str | None) -> None:
    """The kernel's BTF type information read from DUMP's memory, validated.

    vmlinux's blob is read from __start_BTF..__stop_BTF (found by a memory scan when the
    kernel's symbols cannot be read); each module's from the kernel's btf_modules list.
    """
    from kdumptool.kernel.btf_dump import format_btf
    from kdumptool.kernel.session import Kernel, ensure_vmcoreinfo
    from kdumptool.open import open_dumps
    from kdumptool.transport.sink import open_output

    if out == "-" and (list_ or as_json):
        raise UsageError("-o - writes the blob to standard output: it cannot go with --list or --json")
    with open_dumps(list(dump), strict=False) as reader:
        try:  # without VMCOREINFO there are no symbols, but the scan still finds vmlinux's BTF
            origin = ensure_vmcoreinfo(reader, vmcoreinfo_file)
        except KernelDataMissingError:
            origin = None
        if origin is not None and origin.source == "memory":
            click.echo(f"kdumptool: note: the dump has no VMCOREINFO; using the copy found in memory "
                       f"at {origin.paddr:#x}", err=True)
        kernel = Kernel(reader, origin)
        wanted: bool | list[str] = True if list_ or out is None else [module] if module else False
        kbtf = kernel.read_btf(modules=wanted)
        chosen = kbtf.module(module).parse(kbtf.vmlinux) if module else kbtf.vmlinux
    if out == "-":
        click.get_binary_stream("stdout").write(chosen.data)
    elif out is not None:
        with open_output(out, inputs=list(dump), force=force) as sink:
            sink.pwrite(0, chosen.data)
        click.echo(f"{out}: {chosen.name}, {len(chosen.data)} bytes, {chosen.nr_types} types", err=True)
    if out is not None and not list_:
        return
    if as_json:
        click.echo(json.dumps(kbtf.as_dict(), indent=2))
    else:
        click.echo(format_btf(kbtf, None if list_ else chosen))


_PS_EPILOG = """\b
Examples:
  kdumptool ps vmcore              # every task, '>' marks the ones running on a CPU
  kdumptool ps --json vmcore.zst   # for scripts
"""


@click.command(epilog=_PS_EPILOG)
@click.argument("dump", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-i", "--vmcoreinfo", "vmcoreinfo_file", type=click.Path(dir_okay=False), default=None,
              help="Use the VMCOREINFO text in this file.")
def ps(dump: tuple[str, ...], as_json: bool, vmcoreinfo_file: str | None) -> None:
    """Every task of the kernel in DUMP (or the parts of a split set), read with the dump's
    own symbols and BTF: PID, parent, CPU, state, task_struct address, command."""
    with _open_kernel(dump, vmcoreinfo_file, False) as kernel:
        tasks = kernel.tasks()
    if as_json:
        click.echo(json.dumps([t.as_dict() for t in tasks], indent=1))
        return
    click.echo("   PID    PPID  CPU ST TASK              COMM")
    for t in tasks:
        mark = ">" if t.running else " "
        click.echo(f"{mark}{t.pid:>6} {t.ppid:>7} {t.cpu:>4} {t.state:<2} {t.address:016x}  {t.comm}")


_MODULES_EPILOG = """\b
Examples:
  kdumptool modules vmcore          # like lsmod, with base address and taint
  kdumptool modules --json vmcore
"""


@click.command(epilog=_MODULES_EPILOG)
@click.argument("dump", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-i", "--vmcoreinfo", "vmcoreinfo_file", type=click.Path(dir_okay=False), default=None,
              help="Use the VMCOREINFO text in this file.")
def modules(dump: tuple[str, ...], as_json: bool, vmcoreinfo_file: str | None) -> None:
    """The modules loaded in the kernel of DUMP: name, size, base address, taint."""
    with _open_kernel(dump, vmcoreinfo_file, False) as kernel:
        mods = kernel.modules()
        taint = kernel.taint()
    if as_json:
        click.echo(json.dumps({"modules": [m.as_dict() for m in mods], "taint": taint.text,
                               "tainted_mask": taint.mask}, indent=1))
        return
    click.echo(f"{'Module':<24}{'Size':>9}  {'Base':<18}Taint")
    for m in mods:
        click.echo(f"{m.name:<24}{m.size:>9}  {m.base:016x}  {m.taint}")
    click.echo(f"kernel: {taint.text}")


_TRIAGE_EPILOG = """\b
Examples:
  kdumptool triage vmcore               # what crashed, where, in which task
  kdumptool triage --json vmcore.zst    # the same for scripts
  kdumptool triage part1 part2          # a split set
  kdumptool triage /srv/crash --out run # a fleet: run/triage.jsonl and run/report.html
  kdumptool triage /srv/crash --out run --resume        # continue an interrupted run
  kdumptool triage /srv/crash --out run --dask tcp://sched:8786   # on a Dask cluster
  kdumptool triage --out run --signatures               # the signature table of a run
  kdumptool triage /srv/crash --keep-one-per-signature keep/
"""


@click.command(epilog=_TRIAGE_EPILOG)
@click.argument("dump", nargs=-1, type=click.Path(allow_dash=True))
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (a fleet: one record per line as results arrive).")
@click.option("-i", "--vmcoreinfo", "vmcoreinfo_file", type=click.Path(dir_okay=False), default=None,
              help="Use the VMCOREINFO text in this file (one dump only).")
@click.option("-j", "--jobs", type=int, default=None, help="Local worker processes (default: all cores).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Append each dump's record to OUT/triage.jsonl and write OUT/report.html.")
@click.option("--resume", is_flag=True, help="Skip the dumps already in OUT/triage.jsonl.")
@click.option("--dask", metavar="ADDRESS", default=None,
              help="Run each dump as a task on the Dask cluster of this scheduler (tcp://host:8786).")
@click.option("--retries", type=int, default=2, show_default=True,
              help="With --dask: times a failed task is run again.")
@click.option("--signatures", is_flag=True, help="Print the table of crash signatures.")
@click.option("--keep-one-per-signature", "keep", type=click.Path(file_okay=False), default=None,
              help="Hard-link (or copy) one dump per signature into this directory.")
def triage(dump: tuple[str, ...], as_json: bool, vmcoreinfo_file: str | None, jobs: int | None,
           out: str | None, resume: bool, dask: str | None, retries: int, signatures: bool,
           keep: str | None) -> None:
    """The crash report of DUMP (or the parts of a split set), without vmlinux: kernel,
    reason, crashing CPU and task, registers, call trace, taint, modules, uptime, dump
    health and a crash signature equal for the same bug on other boots.

    Given directories (walked recursively), several dumps or a fleet option, every dump
    found (split sets grouped, .zst/.xz recognised) is triaged in parallel; a broken dump
    is a result ("unreadable: ..."), never the end of the run.
    """
    from kdumptool.cli_fleet import run_fleet_command, wants_fleet

    opts = {"out": out, "jobs": jobs, "dask": dask, "resume": resume, "signatures": signatures,
            "keep": keep}
    if wants_fleet(dump, opts):
        if vmcoreinfo_file:
            raise UsageError("-i/--vmcoreinfo applies to one dump, not to a fleet")
        run_fleet_command(dump, out=out, jobs=jobs, dask=dask, retries=retries, resume=resume,
                          as_json=as_json, signatures=signatures, keep=keep)
        return
    if not dump:
        raise UsageError("give the dump to triage")
    from kdumptool.api import triage as run_triage

    report = run_triage(dump, vmcoreinfo_file=vmcoreinfo_file, notify=note)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=1))
        return
    click.echo(format_triage(report))


def format_triage(r: Any) -> str:
    """The text form of a :class:`~kdumptool.kernel.triage.TriageReport`."""
    lines = [f"dump:      {r.path} ({r.format}{', incomplete' if r.incomplete else ''})",
             f"kernel:    {r.release or '?'}" + (f" (build-id {r.build_id})" if r.build_id else "")]
    if r.uptime is not None:
        lines.append(f"uptime:    {r.uptime} s")
    lines.append(f"reason:    {r.kind or '?'}: {r.reason or 'not found in the log'}")
    cpu = "?" if r.cpu is None else r.cpu
    pid = "?" if r.pid is None else r.pid
    lines.append(f"crashed:   CPU {cpu}, PID {pid}" + (f" ({r.comm})" if r.comm else ""))
    if r.pc:
        lines.append(f"pc:        {r.pc}")
    if r.trace:
        lines.append("call trace (the kernel's log):")
        lines += [f"  {f}" for f in r.trace]
    if r.stack:
        lines.append("return addresses on the stack:")
        lines += [f"  {f}" for f in r.stack[:24]]
    lines.append(f"taint:     {r.taint or '?'}")
    lines.append(f"modules:   {' '.join(r.modules) or '-'}")
    if r.health:
        lines.append(f"health:    {r.health.get('verdict')} (fsck exit {r.health.get('exit_code')})")
    lines.append(f"signature: {r.signature}")
    for what, err in r.errors.items():
        lines.append(f"not read:  {what}: {err}")
    return "\n".join(lines)


COMMANDS = [symbols, btf, ps, modules, triage]
