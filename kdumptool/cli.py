"""The ``kdumptool`` command line (click). Thin: the work is in the library.

Errors from kdumptool's hierarchy print as one line, ``kdumptool: error: ...``,
and exit with the class's code (see :mod:`kdumptool.errors`); ``--debug`` shows
the traceback instead. Option names follow makedumpfile where users know them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

import click

from kdumptool import __version__, cli_env, interrupts  # noqa: F401 - cli_env: before NumPy loads
from kdumptool.api.inputs import error_text, memory_error_text
from kdumptool.cli_common import VMCOREINFO_OPTION, VMLINUX_OPTION, finish_commands, note
from kdumptool.cli_kernel import COMMANDS as KERNEL_COMMANDS
from kdumptool.cli_write import COMMANDS as WRITE_COMMANDS
from kdumptool.codecs import CODECS
from kdumptool.dump import pfn_ranges_text
from kdumptool.errors import KdumpToolError, UsageError


class _Group(click.Group):
    """Turns kdumptool errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = "--debug" in sys.argv[1:]
        try:
            return super().invoke(ctx)
        except KdumpToolError as exc:
            if debug:
                raise
            click.echo(f"kdumptool: error: {error_text(exc)}", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            sys.exit(1)
        except MemoryError as exc:  # a bound was too generous for this machine: still one line
            if debug:
                raise
            click.echo(f"kdumptool: error: {memory_error_text(exc)}", err=True)
            sys.exit(1)
        except OSError as exc:
            if debug:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"kdumptool: error: {where}{exc.strerror or exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("kdumptool: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kdumptool")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Convert, filter, validate and repair Linux kernel crash dumps."""
    interrupts.install()  # SIGINT/SIGTERM unwind through the atomic-output cleanup


@main.command()
@click.argument("dump", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--pages", "--mem-usage", "pages", is_flag=True,
              help="Count pages per class (zero, cache, user, free...), as makedumpfile --mem-usage does.")
@click.option("--deep", is_flag=True, help="Scan all of memory for identification evidence.")
@VMCOREINFO_OPTION
def info(dump: tuple[str, ...], as_json: bool, pages: bool, deep: bool,
         vmcoreinfo_file: str | None) -> None:
    """Describe DUMP: format, kernel, architecture, pages, notes.

    Give every part of a split set (makedumpfile --split) to describe the whole dump.
    """
    from kdumptool.api import info as run_info
    from kdumptool.report import format_report
    from kdumptool.summary import format_summary

    result = run_info(dump, deep=deep, pages=pages, vmcoreinfo_file=vmcoreinfo_file)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(format_summary(result.as_dict()))
        if result.page_classes is not None:
            click.echo(format_report(result.page_classes))

@main.command()
@click.argument("dump", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--scan", is_flag=True,
              help="Find the VMCOREINFO text in the dump's memory instead of its note.")
def vmcoreinfo(dump: str, scan: bool) -> None:
    """Print the VMCOREINFO text of DUMP (its note, or with --scan the copy in memory)."""
    from kdumptool.api import vmcoreinfo as read_vmcoreinfo

    found = read_vmcoreinfo(dump, scan=scan)
    if found.paddr is not None:
        click.echo(f"found at physical address {found.paddr:#x}", err=True)
    raw = bytes(found.text)  # type: ignore[arg-type]
    sys.stdout.buffer.write(raw if raw.endswith(b"\n") else raw + b"\n")

@main.command()
@click.argument("dump", type=click.Path(dir_okay=False, allow_dash=True))
def ikconfig(dump: str) -> None:
    """Print the kernel configuration embedded in DUMP's memory (CONFIG_IKCONFIG), like extract-ikconfig."""
    from kdumptool.api import ikconfig as read_ikconfig

    found = read_ikconfig(dump)
    click.echo(f"found at physical address {found.paddr:#x}", err=True)
    sys.stdout.write(str(found.text))

@main.command()
@click.argument("paths", metavar="PART... OUT", nargs=-1, required=True,
                type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-f", "--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def reassemble(paths: tuple[str, ...], force: bool, quiet: bool) -> None:
    """Merge the parts of a split set (makedumpfile --split) into one kdump-compressed file OUT.

    Like makedumpfile --reassemble: pages are copied as stored (not recompressed), and the
    result is the file an unsplit run would have written.
    """
    from kdumptool.api import reassemble as run_reassemble

    if len(paths) < 2:
        raise UsageError("give the parts of the split set and OUT (PART... OUT)")
    result = run_reassemble(paths[:-1], paths[-1], force=force)
    if not quiet:
        click.echo(f"{result.output}: kdump-compressed, {len(result.parts)} parts reassembled: "
                   f"{result.pages} pages in {result.seconds:.1f} s", err=True)

@main.command()
@click.argument("dump", nargs=-1, required=True, type=click.Path(allow_dash=True))  # unreadable: exit 3
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--deep", is_flag=True, help="Also decode every page.")
@VMCOREINFO_OPTION
def fsck(dump: tuple[str, ...], as_json: bool, deep: bool, vmcoreinfo_file: str | None) -> None:
    """Check DUMP (or the parts of a split set) for every inconsistency.

    Exit status: 0 clean, 1 problems repair can fix, 2 damage that loses data,
    3 not a dump / cannot be read.
    """
    from kdumptool.api import fsck as run_fsck

    report = run_fsck(dump, deep=deep, vmcoreinfo_file=vmcoreinfo_file)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for finding in report.findings:
            click.echo(f"{report.path}: {finding}")
        lost = report.lost_ranges()
        if lost:
            click.echo(f"{report.path}: lost PFN ranges: {pfn_ranges_text(lost)}")
        if deep and "pages_decoded" in report.facts:
            click.echo(f"{report.path}: {report.facts['pages_decoded']} pages decoded")
        if report.exit_code == 0:  # nothing above a notice: say how far the check went
            click.echo(f"{report.path}: clean" if deep else
                       f"{report.path}: metadata clean (pages not decoded; --deep decodes them)")
    sys.exit(report.exit_code)


@main.command()
@click.argument("paths", metavar="IN... [OUT]", nargs=-1, required=True,
                type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--zero-fill", is_flag=True, help="Write unreadable pages as zero pages instead of missing.")
@click.option("--in-place", is_flag=True, help="Replace IN atomically, keeping IN.bak.")
@click.option("-E", "elf", flag_value=True, default=None, help="Write ELF (default: the input's kind).")
@click.option("-F", "flat", is_flag=True, help="Write the flattened format.")
@click.option("-c", "codec", flag_value="zlib", default=None, help="kdump pages with zlib.")
@click.option("-l", "codec", flag_value="lzo", help="kdump pages with lzo.")
@click.option("-p", "codec", flag_value="snappy", help="kdump pages with snappy.")
@click.option("-z", "codec", flag_value="zstd", help="kdump pages with zstd.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-f", "--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing when no page was lost.")
@click.option("--threads", "--num-threads", "threads", type=click.IntRange(1, 1024), default=None,
              help="Worker processes writing OUT (default: all cores); the output is the same for any N.")
@VMCOREINFO_OPTION
def repair(paths: tuple[str, ...], zero_fill: bool, in_place: bool, elf: bool | None, flat: bool,
           codec: str | None, as_json: bool, force: bool, quiet: bool, threads: int | None,
           vmcoreinfo_file: str | None) -> None:
    """Salvage every page of IN that still decodes into a valid dump OUT (IN is never changed).

    Lost and corrupt pages become missing pages (or zeros with --zero-fill); VMCOREINFO is
    supplied with -i or recovered from memory; QEMU's empty utsname is filled.

    Exit status: 0 nothing lost, 1 OUT written but pages lost (missing or zero-filled),
    3 cannot repair (not a dump, unreadable, or damage that cannot be undone).
    """
    from kdumptool.api import repair as run_repair

    if not in_place and len(paths) < 2:
        raise UsageError("missing OUT (or use --in-place)")
    srcs, dst = (paths, None) if in_place else (paths[:-1], paths[-1])
    result = run_repair(srcs, dst, in_place=in_place, zero_fill=zero_fill, elf=elf, flattened=flat,
                        codec=codec, force=force, vmcoreinfo_file=vmcoreinfo_file, threads=threads)
    if as_json:
        click.echo(json.dumps(result.report, indent=2))
        sys.exit(result.exit_code)
    if quiet and result.exit_code == 0:
        return  # nothing lost: nothing to say (a loss is still reported)
    for finding in result.findings:
        click.echo(f"found: {finding['severity']}: "
                   + (f"offset {finding['offset']:#x}: " if finding["offset"] is not None else "")
                   + finding["message"])
    for action in result.actions:
        click.echo(f"done:  {action}")
    ranges = result.lost_pfn_ranges or result.zero_filled_pfn_ranges
    if ranges:
        label = "lost" if result.lost_pfn_ranges else "zero-filled"
        click.echo(f"{label} PFN ranges: {pfn_ranges_text(list(ranges))}")
    if result.ambiguous_pfn_ranges:
        click.echo(f"{result.unmatched_descriptors} page descriptors not matched (those pages left out);"
                   f" their pages are among PFN ranges: {pfn_ranges_text(list(result.ambiguous_pfn_ranges))}")
    lost, how = result.pages_lost, "written as zeros" if zero_fill else "marked missing"
    click.echo(f"{result.output}: {result.format}, {result.pages_written} pages written"
               + (f", {lost} pages lost ({how})" if lost else ""))
    sys.exit(result.exit_code)

@main.command()
@click.argument("dump", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@click.option("--partial", "--partial-dmesg", "partial", is_flag=True,
              help="Only what is after the last 'dmesg -c' (makedumpfile --partial-dmesg).")
@click.option("--caller", is_flag=True, help="Print each record's caller id ([  T42]).")
@VMCOREINFO_OPTION
@VMLINUX_OPTION
def dmesg(dump: tuple[str, ...], as_json: bool, partial: bool, caller: bool,
          vmcoreinfo_file: str | None) -> None:
    """Print the kernel log held in DUMP, as makedumpfile --dump-dmesg does.

    The log format (lockless ring buffer 5.10+, printk_log records 3.5-5.9, plain log_buf)
    is chosen by VMCOREINFO keys.
    """
    from kdumptool import api
    from kdumptool.errors import DmesgError

    if as_json:
        records = api.dmesg_log_records(dump, partial=partial, vmcoreinfo_file=vmcoreinfo_file, notify=note)
        click.echo(json.dumps(records, indent=1))
        return
    try:
        sys.stdout.buffer.write(api.dmesg(dump, partial=partial, caller=caller,
                                          vmcoreinfo_file=vmcoreinfo_file, notify=note))
    except DmesgError as exc:  # like makedumpfile: what was read, then the error
        sys.stdout.buffer.write(exc.partial)
        sys.stdout.buffer.flush()
        raise

@main.command()
@click.argument("dump", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("address")
@VMCOREINFO_OPTION
def vtop(dump: str, address: str, vmcoreinfo_file: str | None) -> None:
    """Translate the kernel virtual ADDRESS of DUMP, printing every level of the walk.

    ADDRESS is hexadecimal, with or without 0x (as VMCOREINFO prints addresses).
    """
    from kdumptool.api import vtop as translate

    try:
        result = translate(dump, address, vmcoreinfo_file=vmcoreinfo_file, notify=note)
    except KdumpToolError as exc:
        partial = getattr(exc, "partial_result", None)
        if partial is not None:
            _print_walk(partial)
        raise
    _print_walk(result)


def _print_walk(r: Any) -> None:
    """The lines of ``vtop`` for a (possibly partial: no walk) translation."""
    click.echo(f"{r.form}, page tables at {r.root:#x}")
    if r.image_paddr is not None:
        click.echo(f"{r.vaddr:#x} is in the kernel image: paddr {r.image_paddr:#x} "
                   "without page tables; the walk:")
    for step in r.steps:
        click.echo(f"  {step.level:4} [{step.index:3}] table {step.table:#014x} "
                   f"entry {step.entry:#018x}")
    if r.paddr is not None:
        click.echo(f"{r.vaddr:#x} -> {r.paddr:#x} ({r.page_size >> 10} KiB page)")

for _command in [*WRITE_COMMANDS, *KERNEL_COMMANDS]:
    main.add_command(_command)
finish_commands(main)


def run() -> None:
    """The ``kdumptool`` program (console script and ``python -m kdumptool``): :func:`main`,
    and after an interrupt (SIGINT/SIGTERM, cleaned up and reported by :class:`_Group`) an
    immediate exit with status 130.

    Why not a plain ``sys.exit(130)``: CPython remembers an interrupt that escaped code run by
    ``exec`` of a string (dataclasses and namedtuples build their methods so, e.g. during a
    lazy import) even when the program caught it later, and at exit kills itself with SIGINT
    instead (status -2; the interruption tests caught this about one run in twenty)."""
    try:
        main()
    except SystemExit as exc:
        if exc.code == 130:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(130)
        raise


__all__ = ["main", "run", "CODECS"]
