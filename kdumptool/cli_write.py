"""The commands that write a dump: ``convert``, ``filter`` and ``scrub`` (with ``--split``, a
split set).  Thin like :mod:`kdumptool.cli`: the options parsed here, the work done by
:mod:`kdumptool.api.write` (level retry, writer registry, VMCOREINFO recovery, split sets),
its result printed here.  :mod:`kdumptool.cli` adds these commands to its group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from kdumptool.api.inputs import parse_levels, parse_size
from kdumptool.cli_common import VMCOREINFO_OPTION, VMLINUX_OPTION, note
from kdumptool.cli_scrub import scrub_options
from kdumptool.dump import pfn_range_text
from kdumptool.errors import OutputError, UsageError
from kdumptool.transport.compressed import WRITE_KINDS


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by ``convert``, ``filter`` and ``scrub`` (makedumpfile's names where they exist)."""
    for opt in reversed([
        click.argument("paths", metavar="IN... [OUT]", nargs=-1, required=True,
                       type=click.Path(dir_okay=False, allow_dash=True)),
        click.option("-E", "elf", is_flag=True, help="Write an ELF core file (default: kdump-compressed)."),
        click.option("-F", "flat", is_flag=True,
                     help="Write makedumpfile's flattened format (to stdout if OUT is omitted or -)."),
        click.option("-c", "codec_zlib", is_flag=True, help="Compress pages with zlib."),
        click.option("-l", "codec_lzo", is_flag=True, help="Compress pages with lzo."),
        click.option("-p", "codec_snappy", is_flag=True, help="Compress pages with snappy."),
        click.option("-z", "codec_zstd", is_flag=True, help="Compress pages with zstd."),
        click.option("--stream-compress", type=click.Choice(WRITE_KINDS), default=None,
                     help="With -F: write the flattened stream through one zstd or lz4 frame "
                     "(read back by kdumptool, or by zstd -dc / lz4 -dc | makedumpfile -R)."),
        click.option("-L", "size_limit", metavar="SIZE", default=None,
                     help="Limit the output to SIZE bytes (K, M, G suffixes): try the next level of "
                     "a -d list, else stop writing pages and mark the dump incomplete "
                     "(makedumpfile -L)."),
        click.option("--dry-run", is_flag=True, help="Print what would be excluded; write nothing."),
        click.option("--split", is_flag=True,
                     help="Write IN as a split set, one kdump-compressed part per OUT (IN OUT1 OUT2 ...), "
                     "balanced as makedumpfile --split balances them."),
        click.option("--splitblock-size", type=click.IntRange(min=1), default=None, metavar="KIB",
                     help="With --split: cut the PFNs into blocks of KIB KiB (default 1048576, 1 GiB)."),
        click.option("--threads", "--num-threads", "threads", type=click.IntRange(1, 1024), default=None,
                     help="Worker processes, each reading, filtering and compressing its own "
                     "chunks of the PFN range (default: all cores); the output is the same for any N."),
        click.option("--dask", metavar="ADDRESS", default=None,
                     help="With --split: write each part as a task on the Dask cluster of this "
                     "scheduler (tcp://host:8786; workers see IN and the OUTs at the same paths)."),
        click.option("-f", "--force", is_flag=True, help="Replace OUT if it exists."),
        click.option("-q", "--quiet", is_flag=True, help="Print nothing on success."),
        VMCOREINFO_OPTION,
        VMLINUX_OPTION,
    ]):
        func = opt(func)
    return scrub_options(func)


@click.command()
@output_options
@click.option("--level", "-d", "level_text", default="0", show_default=True, metavar="LEVEL",
              help="makedumpfile dump level 0-31: 1 zero, 2 cache, 4 private cache, 8 user, 16 free; "
              "a list (11,31) retries the next level when the disk is full.")
def convert(level_text: str, **opts: Any) -> None:
    """Convert the dump IN to OUT (kdump-compressed, ELF with -E, flattened with -F).

    Several IN files are the parts of a split set (makedumpfile --split), reassembled.
    With -F and a single path, the output goes to standard output. With --split, IN OUT1
    OUT2 ... writes a split set of one IN.
    """
    write_levels(parse_levels(level_text), **opts)


@click.command(name="filter")
@output_options
@click.option("--level", "-d", "level_text", required=True, metavar="LEVEL",
              help="makedumpfile dump level 0-31: 1 zero, 2 cache, 4 private cache, 8 user, 16 free.")
def filter_cmd(level_text: str, **opts: Any) -> None:
    """Drop the pages of the classes of LEVEL from IN, writing OUT (as convert does).

    Pages are classified exactly as makedumpfile 1.7 does, from VMCOREINFO and the
    kernel's struct page array; pages the input already lacks stay excluded. With --split,
    IN OUT1 OUT2 ... writes a split set.
    """
    write_levels(parse_levels(level_text), **opts)


@click.command()
@output_options
@click.option("-d", "level_text", default="0", show_default=True, metavar="LEVEL",
              help="makedumpfile dump level 0-31 (profiles files/user/free add 4/8/16).")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the ranges as JSON.")
def scrub(level_text: str, **opts: Any) -> None:
    """Take secrets out of IN, writing OUT: erase what a makedumpfile filter configuration
    (--config) or built-in profiles (--scrub) name, by symbol and type from the dump's own
    kallsyms and BTF (no vmlinux). Otherwise as convert (-E, -F, -c/-l/-p/-z, -d...).

    Every symbol, member and type is checked before anything is written; --dry-run lists
    every range (virtual and physical address, size, rule).

    \b
    Profiles (--scrub, combinable, or all):
      hostname  nodename and domainname of init_uts_ns and of every task's UTS
                namespace, and of the kdump header's utsname
      dmesg     the kernel log's text (every printk ring's data, __log_buf)
      keys      the payload of every key in the key tree (user, logon,
                dns_resolver, encrypted, trusted, big_key)
      files     page-cache pages (as dump level 4)
      user      user-space pages (as dump level 8)
      free      free pages (as dump level 16) and those on the per-CPU free
                lists, which level 16 keeps

    Erased bytes become 'X' (0x58), 'nullify' writes zeros, as makedumpfile --config does;
    what was erased is recorded as makedumpfile's ERASEINFO (kdump header v5+
    offset_eraseinfo, ELF note ERASEINFO), appended to the input's, shown by 'info'.
    """
    if not opts["config"] and not opts["profiles"]:
        raise UsageError("scrub needs --config FILE or --scrub PROFILE (or both)")
    write_levels(parse_levels(level_text), **opts)


def chosen_codec(zlib_: bool, lzo: bool, snappy: bool, zstd: bool) -> str | None:
    """The codec of the -c/-l/-p/-z flags (at most one, and installed), or None."""
    from kdumptool.codecs import get_codec

    chosen = [n for n, on in (("zlib", zlib_), ("lzo", lzo), ("snappy", snappy), ("zstd", zstd)) if on]
    if len(chosen) > 1:
        raise UsageError("choose at most one of -c, -l, -p, -z")
    return get_codec(chosen[0]).name if chosen else None


def _inputs_and_output(paths: tuple[str, ...], dry_run: bool) -> tuple[list[str], str | None]:
    """``IN... [OUT]``: with ``--dry-run``, a list of the parts of a split set has no OUT."""
    if len(paths) == 1:
        return list(paths), None
    if dry_run:
        from kdumptool.open import split_part_kind

        if split_part_kind(paths[-1]) == "part" and split_part_kind(paths[0]) == "part":
            return list(paths), None
    return list(paths[:-1]), paths[-1]


def write_levels(levels: list[int], *, paths: tuple[str, ...], size_limit: str | None, split: bool,
                 splitblock_size: int | None, dask: str | None, elf: bool, flat: bool,
                 stream_compress: str | None, codec_zlib: bool, codec_lzo: bool, codec_snappy: bool,
                 codec_zstd: bool, quiet: bool, dry_run: bool, as_json: bool = False, **opts: Any) -> None:
    """Check the options, call :func:`kdumptool.api.convert` (or ``split``), print the result."""
    from kdumptool import api

    codecs = (codec_zlib, codec_lzo, codec_snappy, codec_zstd)
    common = {"notify": None if quiet else note, "on_retry": _retrying, "progress": not quiet,
              "page_classes": not quiet, "dry_run": dry_run, **opts}
    if split or splitblock_size is not None:
        if not split:
            raise UsageError("--splitblock-size needs --split")
        for bad, name in ((elf, "-E"), (flat, "-F"), (stream_compress, "--stream-compress"),
                          (size_limit, "-L")):
            if bad:
                raise UsageError(f"--split writes kdump-compressed files only: drop {name}")
        if len(paths) < 3 and not dry_run:
            raise UsageError("--split needs IN and at least 2 output files (IN OUT1 OUT2 ...)")
        if dask and not dry_run and (opts["config"] or opts["profiles"]):
            raise UsageError("--dask does not scrub yet: drop --config/--scrub or --dask")
        result = api.split(paths[0], paths[1:], level=levels, codec=chosen_codec(*codecs), dask=dask,
                           splitblock_size=(splitblock_size << 10) if splitblock_size else None, **common)
        print_split(result, quiet=quiet, as_json=as_json)
        return
    if dask:
        raise UsageError("--dask converts the parts of a split set on a cluster: it needs --split")
    limit = parse_size(size_limit) if size_limit is not None else None
    codec = chosen_codec(*codecs)
    srcs, dst = _inputs_and_output(paths, dry_run)
    result = api.convert(srcs, dst, level=levels, elf=elf, flattened=flat, codec=codec,
                         stream_compress=stream_compress, size_limit=limit, **common)
    print_convert(result, quiet=quiet, as_json=as_json)


def _retrying(retry: Any, level: int) -> None:
    """Say that a level of a ``-d`` list did not fit (even with ``-q``, as before)."""
    note(f"{retry.reason}; retrying with dump level {level}")


def print_convert(r: Any, *, quiet: bool, as_json: bool) -> None:
    """What ``convert`` prints of a :class:`~kdumptool.api.ConvertResult` (the dry run's
    report on standard output, the summary on standard error)."""
    from kdumptool.report import format_report

    if r.dry_run:
        from kdumptool.cli_scrub import dry_run_report

        click.echo(dry_run_report(r.page_classes, r.scrub, r.scrub_outcome, as_json)
                   if r.scrub is not None or as_json else format_report(r.page_classes))
        return
    if not quiet and r.output != "-":
        click.echo(f"{r.output}: {r.kind}{', flattened' if r.flattened else ''}"
                   f"{f', {r.stream_compress} stream' if r.stream_compress else ''}, dump level "
                   f"{r.dump_level}: {_pages_written(r)} in {r.seconds:.1f} s", err=True)
        if r.page_classes is not None:
            click.echo(format_report(r.page_classes), err=True)
            if r.in_file is not None and r.in_file != r.page_classes["remaining"]:
                click.echo(f"  {'In the ELF file':<26} : {r.in_file} (zero pages left out; "
                           "the excluded pages of gaps shorter than 256 pages inside a PT_LOAD "
                           "written, as makedumpfile -E does)", err=True)
        if r.scrub_outcome is not None:
            from kdumptool.cli_scrub import summary

            click.echo(summary(r.scrub, r.scrub_outcome), err=True)
    if r.cut:
        raise OutputError(f"{r.output}: the size limit of {r.size_limit} bytes is reached at dump level "
                          f"{r.dump_level}: the dump is incomplete ({r.lost} pages left out "
                          "or lost) and marked so in its header, but may still be analysed")


def _pages_written(r: Any) -> str:
    """How many pages the output holds, counted as ``info`` counts them (once per PFN): an
    ELF file's PT_LOADs that overlap, as the input's do, hold some pages twice."""
    if r.in_file is None or r.cut:
        return f"{r.pages} pages written"
    twice = r.copies - r.in_file
    return f"{r.in_file} pages written" + (
        f", {twice} of them twice (in PT_LOADs that overlap, as the input's do)" if twice > 0 else "")


def print_split(r: Any, *, quiet: bool, as_json: bool) -> None:
    """What ``convert --split`` prints of a :class:`~kdumptool.api.SplitResult`."""
    from kdumptool.report import format_report

    n = len(r.parts)
    if r.dry_run:
        from kdumptool.cli_scrub import dry_run_report

        click.echo(dry_run_report(r.page_classes, r.scrub, r.scrub_outcome, as_json)
                   if r.scrub is not None or as_json else format_report(r.page_classes))
        if r.split_error is not None and not as_json:
            raise r.split_error
        if not as_json:
            for part in r.parts:
                click.echo(f"{part.path}: PFNs {pfn_range_text(*part.pfns)}")
        return
    if quiet:
        return
    for i, part in enumerate(r.parts, 1):
        if r.dask:
            lo, hi = part.pfns
            click.echo(f"{part.path}: split part {i} of {n} (PFNs [{lo:#x}, {hi:#x})), dump level "
                       f"{r.dump_level}: {part.pages} pages, written by a task on {r.dask}", err=True)
        else:
            click.echo(f"{part.path}: {r.kind}, split part {i} of {n} (PFNs {pfn_range_text(*part.pfns)}), "
                       f"dump level {r.dump_level}: {part.pages} pages", err=True)
    click.echo(f"{n} files written in {r.seconds:.1f} s", err=True)
    if r.page_classes is not None and not r.dask:
        click.echo(format_report(r.page_classes), err=True)


COMMANDS = [convert, filter_cmd, scrub]
