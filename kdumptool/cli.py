"""The ``kdumptool`` command line (click). Thin: the work is in the library.

Errors from kdumptool's hierarchy print as one line, ``kdumptool: error: ...``,
and exit with the class's code (see :mod:`kdumptool.errors`); ``--debug`` shows
the traceback instead. Option names follow makedumpfile where users know them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from kdumptool import __version__
from kdumptool.cli_common import VMLINUX_OPTION, finish_commands
from kdumptool.cli_kernel import COMMANDS as KERNEL_COMMANDS
from kdumptool.cli_scrub import scrub_options
from kdumptool.codecs import CODECS, get_codec
from kdumptool.dump import pfn_range_text, pfn_ranges_text
from kdumptool.errors import CodecUnavailableError, DumpError, KdumpToolError, OutputError, UsageError
from kdumptool.filters.levels import MAX_DUMP_LEVEL, MEM_MAP_LEVELS
from kdumptool.progress import Progress, progress_for
from kdumptool.transport.compressed import WRITE_KINDS
from kdumptool.transport.sink import LimitReached, open_output


class _Group(click.Group):
    """Turns kdumptool errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = "--debug" in sys.argv[1:]
        try:
            return super().invoke(ctx)
        except KdumpToolError as exc:
            if debug:
                raise
            click.echo(f"kdumptool: error: {_naming_input(exc)}", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            sys.exit(1)
        except MemoryError:  # a bound was too generous for this machine: still one line
            if debug:
                raise
            names = ", ".join(_OPENED_INPUTS) or "kdumptool"
            click.echo(f"kdumptool: error: {names}: out of memory (the machine's memory or "
                       "address-space limit is too small for this dump)", err=True)
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


#: The dump files the running command opened: an error line that names no file names them.
_OPENED_INPUTS: list[str] = []


def _naming_input(exc: KdumpToolError) -> str:
    """The error's text, led by the input's name when the error does not name a file itself.

    Errors found below the reader (a page table that cannot be walked, a kernel log page
    not in the dump, a VMCOREINFO key missing) know addresses but not which file they
    came from; the one-line contract wants the file named.
    """
    text = str(exc)
    if (not _OPENED_INPUTS or isinstance(exc, (OutputError, UsageError, CodecUnavailableError))
            or (isinstance(exc, DumpError) and exc.path is not None)
            or any(text.startswith(f"{p}:") for p in _OPENED_INPUTS)):
        return text
    names = ["<stdin>" if p == "-" else p for p in _OPENED_INPUTS]
    return f"{', '.join(names)}: {text}"


def _open(paths: list[str], *, strict: bool, vmcoreinfo_file: str | None) -> Any:
    from kdumptool.open import open_dumps, supply_vmcoreinfo

    _OPENED_INPUTS[:] = paths
    reader = open_dumps(paths, strict=strict)
    if vmcoreinfo_file:
        try:
            supply_vmcoreinfo(reader, vmcoreinfo_file)
        except BaseException:
            reader.close()
            raise
    return reader


_VMCOREINFO_OPTION = click.option(
    "-i", "--vmcoreinfo", "vmcoreinfo_file", type=click.Path(dir_okay=False), default=None,
    help="Use the VMCOREINFO text in this file (for a dump that lacks it or carries a wrong one).")


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the atomic-output cleanup


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kdumptool")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Convert, filter, validate and repair Linux kernel crash dumps."""
    signal.signal(signal.SIGTERM, _on_sigterm)


@main.command()
@click.argument("dump", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--pages", "--mem-usage", "pages", is_flag=True,
              help="Count pages per class (zero, cache, user, free...), as makedumpfile --mem-usage does.")
@click.option("--deep", is_flag=True, help="Scan all of memory for identification evidence.")
@_VMCOREINFO_OPTION
def info(dump: tuple[str, ...], as_json: bool, pages: bool, deep: bool,
         vmcoreinfo_file: str | None) -> None:
    """Describe DUMP: format, kernel, architecture, pages, notes.

    Give every part of a split set (makedumpfile --split) to describe the whole dump.
    """
    from kdumptool.pipeline import Selection
    from kdumptool.report import exclusion_report, format_report
    from kdumptool.summary import dump_summary, format_summary

    with _open(list(dump), strict=False, vmcoreinfo_file=vmcoreinfo_file) as reader:
        summary = dump_summary(reader, deep=deep)
        if pages:
            summary["page_classes"] = exclusion_report(Selection(reader, MAX_DUMP_LEVEL, reclassify=True))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(format_summary(summary))
        if pages:
            click.echo(format_report(summary["page_classes"]))


@main.command()
@click.argument("dump", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--scan", is_flag=True,
              help="Find the VMCOREINFO text in the dump's memory instead of its note.")
def vmcoreinfo(dump: str, scan: bool) -> None:
    """Print the VMCOREINFO text of DUMP (its note, or with --scan the copy in memory)."""
    with _open([dump], strict=False, vmcoreinfo_file=None) as reader:
        vmci = reader.info.vmcoreinfo
        if scan:
            from kdumptool.scan import scan_vmcoreinfo

            found = scan_vmcoreinfo(reader, first_only=True)
            if not found:
                raise KdumpToolError(f"{dump}: no VMCOREINFO text found in the dump's memory")
            click.echo(f"found at physical address {found[0].paddr:#x}", err=True)
            vmci = found[0].vmcoreinfo
        if vmci is None:
            raise KdumpToolError(f"{dump}: the dump has no VMCOREINFO (try --scan)")
        sys.stdout.buffer.write(vmci.raw if vmci.raw.endswith(b"\n") else vmci.raw + b"\n")


@main.command()
@click.argument("dump", type=click.Path(dir_okay=False, allow_dash=True))
def ikconfig(dump: str) -> None:
    """Print the kernel configuration embedded in DUMP's memory (CONFIG_IKCONFIG), like extract-ikconfig."""
    from kdumptool.identify import find_config

    with _open([dump], strict=False, vmcoreinfo_file=None) as reader:
        config = find_config(reader)
        if config is None:
            raise KdumpToolError(f"{dump}: no IKCFG_ST configuration blob in the dump's memory "
                                 "(the kernel was built without CONFIG_IKCONFIG=y, or the configs "
                                 "module was not loaded)")
        click.echo(f"found at physical address {config.paddr:#x}", err=True)
        sys.stdout.write(config.text)


def _parse_levels(text: str) -> list[int]:
    """``-d 31`` or makedumpfile's list form ``-d 11,31``."""
    levels = []
    for part in text.split(","):
        try:
            level = int(part)
        except ValueError:
            raise UsageError(f"dump level {part!r} is not a number from 0 to 31") from None
        if not 0 <= level <= MAX_DUMP_LEVEL:
            raise UsageError(f"dump level {level} is out of range 0..31")
        levels.append(level)
    return levels


#: errors that make the next level of a ``-d`` list worth trying (makedumpfile retries on ENOSPC,
#: and on reaching its ``-L`` limit)
_RETRY_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}

_SIZE_SUFFIXES = "KMGTPE"


def parse_size(text: str) -> int:
    """makedumpfile's ``-L`` size (its ``memparse``): a number (``0x`` hex, leading-``0``
    octal, else decimal) and an optional suffix K, M, G, T, P or E (powers of 1024).

    :raises UsageError: not a size, or zero
    """
    body, shift = text.strip(), 0
    if body and body[-1].upper() in _SIZE_SUFFIXES:
        shift = 10 * (_SIZE_SUFFIXES.index(body[-1].upper()) + 1)
        body = body[:-1]
    try:
        if body.lower().startswith("0x"):
            value = int(body[2:], 16)
        elif len(body) > 1 and body.startswith("0"):
            value = int(body[1:], 8)
        else:
            value = int(body, 10)
    except ValueError:
        value = -1
    if value <= 0 or not body.isalnum():
        raise UsageError(f"size limit {text!r} is invalid (a number of bytes, with K, M or G)")
    return value << shift


def _output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by ``convert`` and ``filter`` (makedumpfile's names where they exist)."""
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
        _VMCOREINFO_OPTION,
        VMLINUX_OPTION,
    ]):
        func = opt(func)
    return scrub_options(func)


@main.command()
@_output_options
@click.option("--level", "-d", "level_text", default="0", show_default=True, metavar="LEVEL",
              help="makedumpfile dump level 0-31: 1 zero, 2 cache, 4 private cache, 8 user, 16 free; "
              "a list (11,31) retries the next level when the disk is full.")
def convert(level_text: str, **opts: Any) -> None:
    """Convert the dump IN to OUT (kdump-compressed, ELF with -E, flattened with -F).

    Several IN files are the parts of a split set (makedumpfile --split), reassembled.
    With -F and a single path, the output goes to standard output. With --split, IN OUT1
    OUT2 ... writes a split set of one IN.
    """
    _write_levels(_parse_levels(level_text), **opts)


@main.command(name="filter")
@_output_options
@click.option("--level", "-d", "level_text", required=True, metavar="LEVEL",
              help="makedumpfile dump level 0-31: 1 zero, 2 cache, 4 private cache, 8 user, 16 free.")
def filter_cmd(level_text: str, **opts: Any) -> None:
    """Drop the pages of the classes of LEVEL from IN, writing OUT (as convert does).

    Pages are classified exactly as makedumpfile 1.7 does, from VMCOREINFO and the
    kernel's struct page array; pages the input already lacks stay excluded. With --split,
    IN OUT1 OUT2 ... writes a split set.
    """
    _write_levels(_parse_levels(level_text), **opts)


@main.command()
@_output_options
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
    _write_levels(_parse_levels(level_text), **opts)


@contextlib.contextmanager
def _selection(srcs: list[str], level: int, *, vmcoreinfo_file: str | None, quiet: bool,
               config: str | None = None, profiles: tuple[str, ...] = ()) -> Any:
    """Open the input and choose its pages for ``level`` (the page classes need VMCOREINFO:
    recovered from memory when the dump lacks it); yields ``(reader, selection, scrub)``.

    With ``config``/``profiles`` the scrub is resolved first (every error before any output
    exists), its dump-level bits join ``level``, and the selection reads through the
    scrubbing reader (``scrub`` is its :class:`~kdumptool.scrub.ScrubSetup`, else None).
    """
    from kdumptool.pipeline import Selection

    with _open(srcs, strict=True, vmcoreinfo_file=vmcoreinfo_file) as reader:
        setup, source = None, reader
        if config or profiles:
            from kdumptool.cli_scrub import prepare

            setup = prepare(reader, config=config, profiles=profiles, quiet=quiet)
            level |= setup.dump_level
            source = setup.reader(reader)
        if level & MEM_MAP_LEVELS and reader.info.vmcoreinfo is None:
            _recover_vmcoreinfo(reader, quiet=quiet)
        selection = Selection(source, level)
        if setup is not None:
            setup.attach(selection)
        if not quiet:
            for warning in selection.warnings:
                click.echo(f"kdumptool: warning: {warning}", err=True)
        yield reader, selection, setup


def _chosen_codec(zlib_: bool, lzo: bool, snappy: bool, zstd: bool) -> Any:
    """The codec of the -c/-l/-p/-z flags (at most one), or None."""
    chosen = [n for n, on in (("zlib", zlib_), ("lzo", lzo), ("snappy", snappy), ("zstd", zstd)) if on]
    if len(chosen) > 1:
        raise UsageError("choose at most one of -c, -l, -p, -z")
    return get_codec(chosen[0]) if chosen else None


@contextlib.contextmanager
def _closing_progress(progress: Progress | None) -> Any:
    """Erase the progress line however the block ends (an error prints on a clean line)."""
    try:
        yield
    finally:
        if progress is not None:
            progress.close()


def _write_levels(levels: list[int], *, size_limit: str | None, split: bool = False,
                  splitblock_size: int | None = None, dask: str | None = None, **opts: Any) -> None:
    """Write with the first level; when the disk (or a file size limit, or the ``-L`` limit)
    is full, retry the next level of the list, as makedumpfile does with ``-d 11,31``.

    When the ``-L`` limit is reached at the last level, the dump is kept, incomplete (pages
    left out, marked so in its header), and the exit status is 1, as with makedumpfile.
    """
    if split or splitblock_size is not None:
        _write_split_levels(levels, size_limit=size_limit, splitblock_kib=splitblock_size,
                            split=split, dask=dask, **opts)
        return
    if dask:
        raise UsageError("--dask converts the parts of a split set on a cluster: it needs --split")
    limit = parse_size(size_limit) if size_limit is not None else None
    to_stdout = len(opts["paths"]) == 1 or opts["paths"][-1] == "-"
    for i, level in enumerate(levels):
        last = i == len(levels) - 1 or to_stdout
        try:
            _write(level, limit=limit, keep_cut=last, **opts)
            return
        except OutputError as exc:
            if exc.errno not in _RETRY_ERRNOS or last:
                raise
            click.echo(f"kdumptool: {exc}; retrying with dump level {levels[i + 1]}", err=True)


def _inputs_and_output(paths: tuple[str, ...], *, dry_run: bool, flat: bool) -> tuple[list[str], str | None]:
    """``IN... [OUT]`` of convert and filter: the inputs, and the output (``-`` for standard
    output; None with ``--dry-run``, which takes an OUT as makedumpfile's does and writes nothing).

    Several inputs are the parts of one split set; a name among them that is no such part is
    most likely an output meant for ``--split``, and the error says so.
    """
    from kdumptool.open import split_part_kind

    if len(paths) == 1:
        if not (dry_run or flat):
            raise UsageError("missing OUT (or use -F to write to standard output)")
        return list(paths), None if dry_run else "-"
    srcs, dst = list(paths[:-1]), paths[-1]
    if dry_run and split_part_kind(dst) == "part" and split_part_kind(srcs[0]) == "part":
        return list(paths), None  # the parts of a split set, without OUT
    if len(srcs) > 1:
        for path in srcs[1:] + srcs[:1]:  # an extra name first: the likelier mistake
            kind = split_part_kind(path)
            if kind != "part":
                raise UsageError(f"{path}: {kind}: several IN are the parts of one split set, and "
                                 "several outputs need --split (IN OUT1 OUT2 ...)")
    return srcs, None if dry_run else dst


def _write(level: int, *, paths: tuple[str, ...], elf: bool, flat: bool, codec_zlib: bool,
           codec_lzo: bool, codec_snappy: bool, codec_zstd: bool, dry_run: bool,
           threads: int | None, force: bool, quiet: bool, vmcoreinfo_file: str | None,
           stream_compress: str | None = None, limit: int | None = None, keep_cut: bool = True,
           config: str | None = None, profiles: tuple[str, ...] = (), as_json: bool = False) -> None:
    from kdumptool.metadata import output_metadata
    from kdumptool.report import exclusion_report, format_report

    codec = _chosen_codec(codec_zlib, codec_lzo, codec_snappy, codec_zstd)
    if elf and codec is not None:
        raise UsageError("ELF output (-E) is not compressed; drop -c/-l/-p/-z")
    srcs, dst = _inputs_and_output(paths, dry_run=dry_run, flat=flat)
    flat = flat or dst == "-"
    if stream_compress and not flat:
        raise UsageError("--stream-compress needs -F: the kdump and ELF writers go back to fill in "
                         "headers and tables, which a compressed stream cannot take")
    t0 = time.monotonic()
    with _selection(srcs, level, vmcoreinfo_file=vmcoreinfo_file, quiet=quiet, config=config,
                    profiles=profiles) as (reader, selection, scrub):
        level = selection.dump_level
        if dry_run:
            from kdumptool.cli_scrub import dry_run_report

            click.echo(dry_run_report(scrub, selection, as_json) if scrub is not None or as_json
                       else format_report(exclusion_report(selection)))
            return
        assert dst is not None
        meta = output_metadata(selection.reader, dump_level=level)
        outcome = scrub.finish(meta, selection) if scrub is not None else None
        selection.progress = progress_for(lambda: reader.count_pages()[1], reader.page_size,
                                          os.path.basename(dst) if dst != "-" else "stdout", quiet=quiet)
        with _closing_progress(selection.progress), \
                open_output(dst, inputs=srcs, force=force, flattened=flat, compress=stream_compress,
                            limit=limit) as sink:
            if elf:
                from kdumptool.formats.elf_writer import write_elf

                stats = write_elf(selection, sink, meta, threads=threads)
            else:
                from kdumptool.formats.kdump_writer import write_kdump

                stats = write_kdump(selection, sink, meta, codec, threads=threads)
            if stats.get("cut") and not keep_cut:  # discard it: the next level may fit
                raise LimitReached(f"{dst}: the size limit of {limit} bytes is reached at dump level "
                                   f"{meta.dump_level}")
        if not quiet and dst != "-":
            kind = "ELF" if elf else f"kdump-compressed ({codec.name if codec else 'uncompressed'})"
            click.echo(f"{dst}: {kind}{', flattened' if flat else ''}"
                       f"{f', {stream_compress} stream' if stream_compress else ''}, dump level "
                       f"{meta.dump_level}: {_pages_written(stats)} in {time.monotonic() - t0:.1f} s",
                       err=True)
            if level > 1:
                report = exclusion_report(selection, zero=stats.get("zero"))
                click.echo(format_report(report), err=True)
                if elf and stats["in_file"] != report["remaining"]:
                    click.echo(f"  {'In the ELF file':<26} : {stats['in_file']} (zero pages left out; "
                               "the excluded pages of gaps shorter than 256 pages inside a PT_LOAD "
                               "written, as makedumpfile -E does)", err=True)
            if outcome is not None:
                from kdumptool.cli_scrub import summary

                click.echo(summary(scrub, outcome), err=True)
    if stats.get("cut"):
        raise OutputError(f"{dst}: the size limit of {limit} bytes is reached at dump level "
                          f"{meta.dump_level}: the dump is incomplete ({stats['lost']} pages left out "
                          "or lost) and marked so in its header, but may still be analysed")


def _pages_written(stats: dict[str, int]) -> str:
    """How many pages the output holds, counted as ``info`` counts them (once per PFN): an
    ELF file's PT_LOADs that overlap, as the input's do, hold some pages twice."""
    if "in_file" not in stats or stats["cut"]:  # kdump: one page descriptor per PFN
        return f"{stats['pages']} pages written"
    twice = stats["copies"] - stats["in_file"]
    return f"{stats['in_file']} pages written" + (
        f", {twice} of them twice (in PT_LOADs that overlap, as the input's do)" if twice > 0 else "")


def _write_split_levels(levels: list[int], *, size_limit: str | None, splitblock_kib: int | None,
                        split: bool, paths: tuple[str, ...], elf: bool, flat: bool,
                        stream_compress: str | None, **opts: Any) -> None:
    """``--split``: the options it refuses, then each level of the list in turn (a full disk
    tries the next), as :func:`_write_levels`."""
    if not split:
        raise UsageError("--splitblock-size needs --split")
    for bad, name in ((elf, "-E"), (flat, "-F"), (stream_compress, "--stream-compress"),
                      (size_limit, "-L")):
        if bad:
            raise UsageError(f"--split writes kdump-compressed files only: drop {name}")
    if len(paths) < 3 and not opts["dry_run"]:
        raise UsageError("--split needs IN and at least 2 output files (IN OUT1 OUT2 ...)")
    for i, level in enumerate(levels):
        try:
            _write_split(level, src=paths[0], dsts=list(paths[1:]),
                         splitblock=(splitblock_kib << 10) if splitblock_kib else None, **opts)
            return
        except OutputError as exc:
            if exc.errno not in _RETRY_ERRNOS or i == len(levels) - 1:
                raise
            click.echo(f"kdumptool: {exc}; retrying with dump level {levels[i + 1]}", err=True)


def _write_split(level: int, *, src: str, dsts: list[str], splitblock: int | None, codec_zlib: bool,
                 codec_lzo: bool, codec_snappy: bool, codec_zstd: bool, dry_run: bool,
                 threads: int | None, force: bool, quiet: bool, vmcoreinfo_file: str | None,
                 dask: str | None = None, config: str | None = None,
                 profiles: tuple[str, ...] = (), as_json: bool = False) -> None:
    """Write the split set ``dsts`` of ``src`` (like ``makedumpfile --split``); with ``dask``,
    each part is a task on that cluster (:mod:`kdumptool.fleet.convert`)."""
    if dask and not dry_run:
        if config or profiles:
            raise UsageError("--dask does not scrub yet: drop --config/--scrub or --dask")
        from kdumptool.cli_fleet import write_split_dask

        write_split_dask(level, src=src, dsts=dsts, splitblock=splitblock, force=force, quiet=quiet,
                         codec=_chosen_codec(codec_zlib, codec_lzo, codec_snappy, codec_zstd),
                         vmcoreinfo_file=vmcoreinfo_file, address=dask)
        return
    from kdumptool.formats.split import DEFAULT_SPLITBLOCK_SIZE, split_ranges, write_split
    from kdumptool.metadata import output_metadata
    from kdumptool.report import exclusion_report, format_report
    from kdumptool.transport.sink import open_outputs

    codec = _chosen_codec(codec_zlib, codec_lzo, codec_snappy, codec_zstd)
    t0 = time.monotonic()
    with _selection([src], level, vmcoreinfo_file=vmcoreinfo_file, quiet=quiet, config=config,
                    profiles=profiles) as (reader, selection, scrub):
        level = selection.dump_level
        if dry_run:
            from kdumptool.cli_scrub import dry_run_report

            click.echo(dry_run_report(scrub, selection, as_json) if scrub is not None or as_json
                       else format_report(exclusion_report(selection)))
            if len(dsts) >= 2 and not as_json:
                ranges = split_ranges(selection, len(dsts), splitblock or DEFAULT_SPLITBLOCK_SIZE)
                for dst, (lo, hi) in zip(dsts, ranges, strict=True):
                    click.echo(f"{dst}: PFNs {pfn_range_text(lo, hi)}")
            return
        ranges = split_ranges(selection, len(dsts), splitblock or DEFAULT_SPLITBLOCK_SIZE)
        meta = output_metadata(selection.reader, dump_level=level)
        if scrub is not None:
            scrub.finish(meta, selection)
        selection.progress = progress_for(lambda: reader.count_pages()[1], reader.page_size,
                                          f"{len(dsts)} parts", quiet=quiet)
        with _closing_progress(selection.progress), \
                open_outputs(dsts, inputs=[src], force=force) as sinks:
            results = write_split(selection, sinks, meta, codec, ranges, threads=threads)
        if not quiet:
            kind = f"kdump-compressed ({codec.name if codec else 'uncompressed'})"
            for n, (dst, (lo, hi), stats) in enumerate(zip(dsts, ranges, results, strict=True), 1):
                click.echo(f"{dst}: {kind}, split part {n} of {len(dsts)} (PFNs {pfn_range_text(lo, hi)}), "
                           f"dump level {meta.dump_level}: {stats['pages']} pages", err=True)
            click.echo(f"{len(dsts)} files written in {time.monotonic() - t0:.1f} s", err=True)
            if level > 1:
                zero = sum(r["zero"] for r in results)
                click.echo(format_report(exclusion_report(selection, zero=zero)), err=True)


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
    from kdumptool.formats.kdump import KdumpReader
    from kdumptool.formats.split import reassemble as run_reassemble
    from kdumptool.open import open_dump

    if len(paths) < 2:
        raise UsageError("give the parts of the split set and OUT (PART... OUT)")
    srcs, dst = list(paths[:-1]), paths[-1]
    if dst == "-":
        raise UsageError("reassemble writes a file, not standard output")
    t0 = time.monotonic()
    readers: list[Any] = []
    try:
        for path in srcs:
            readers.append(open_dump(path))
            if not isinstance(readers[-1], KdumpReader):
                raise KdumpToolError(f"{path}: not a kdump-compressed file "
                                     f"({readers[-1].info.format}): not a part of a split set")
        with open_output(dst, inputs=srcs, force=force) as sink:
            stats = run_reassemble(readers, sink)
    finally:
        for r in readers:
            r.close()
    if not quiet:
        click.echo(f"{dst}: kdump-compressed, {len(srcs)} parts reassembled: {stats['pages']} pages "
                   f"in {time.monotonic() - t0:.1f} s", err=True)


@main.command()
@click.argument("dump", nargs=-1, required=True, type=click.Path(allow_dash=True))  # unreadable: exit 3
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--deep", is_flag=True, help="Also decode every page.")
@_VMCOREINFO_OPTION
def fsck(dump: tuple[str, ...], as_json: bool, deep: bool, vmcoreinfo_file: str | None) -> None:
    """Check DUMP (or the parts of a split set) for every inconsistency.

    Exit status: 0 clean, 1 problems repair can fix, 2 damage that loses data,
    3 not a dump / cannot be read.
    """
    from kdumptool.repair.checks import fsck as run_fsck

    report = run_fsck(list(dump), deep=deep, vmcoreinfo_file=vmcoreinfo_file)
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
@_VMCOREINFO_OPTION
def repair(paths: tuple[str, ...], zero_fill: bool, in_place: bool, elf: bool | None, flat: bool,
           codec: str | None, as_json: bool, force: bool, quiet: bool, vmcoreinfo_file: str | None) -> None:
    """Salvage every page of IN that still decodes into a valid dump OUT (IN is never changed).

    Lost and corrupt pages become missing pages (or zeros with --zero-fill); VMCOREINFO is
    supplied with -i or recovered from memory; QEMU's empty utsname is filled.

    Exit status: 0 nothing lost, 1 OUT written but pages lost (missing or zero-filled),
    3 cannot repair (not a dump, unreadable, or damage that cannot be undone).
    """
    from kdumptool.repair.salvage import repair as run_repair

    if in_place:
        if len(paths) != 1:
            raise UsageError("--in-place takes exactly one input and no OUT")
        srcs, dst = list(paths), paths[0]
    elif len(paths) < 2:
        raise UsageError("missing OUT (or use --in-place)")
    else:
        srcs, dst = list(paths[:-1]), paths[-1]
    result = run_repair(srcs, dst, zero_fill=zero_fill, vmcoreinfo_file=vmcoreinfo_file,
                        force=force, elf=elf, flat=flat, codec_name=codec, in_place=in_place)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        sys.exit(result["exit_code"])
    if quiet and result["exit_code"] == 0:
        return  # nothing lost: nothing to say (a loss is still reported)
    for finding in result["input"]["findings"]:
        click.echo(f"found: {finding['severity']}: "
                   + (f"offset {finding['offset']:#x}: " if finding["offset"] is not None else "")
                   + finding["message"])
    for action in result["actions"]:
        click.echo(f"done:  {action}")
    ranges = result["lost_pfn_ranges"] or result["zero_filled_pfn_ranges"]
    if ranges:
        label = "lost" if result["lost_pfn_ranges"] else "zero-filled"
        click.echo(f"{label} PFN ranges: {pfn_ranges_text(ranges)}")
    if result["ambiguous_pfn_ranges"]:
        click.echo(f"{result['unmatched_descriptors']} page descriptors not matched (those pages left out);"
                   f" their pages are among PFN ranges: {pfn_ranges_text(result['ambiguous_pfn_ranges'])}")
    lost, how = result["pages_lost"], "written as zeros" if zero_fill else "marked missing"
    click.echo(f"{dst}: {result['format']}, {result['pages_written']} pages written"
               + (f", {lost} pages lost ({how})" if lost else ""))
    sys.exit(result["exit_code"])


@main.command()
@click.argument("dump", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@click.option("--partial", "--partial-dmesg", "partial", is_flag=True,
              help="Only what is after the last 'dmesg -c' (makedumpfile --partial-dmesg).")
@click.option("--caller", is_flag=True, help="Print each record's caller id ([  T42]).")
@_VMCOREINFO_OPTION
@VMLINUX_OPTION
def dmesg(dump: tuple[str, ...], as_json: bool, partial: bool, caller: bool,
          vmcoreinfo_file: str | None) -> None:
    """Print the kernel log held in DUMP, as makedumpfile --dump-dmesg does.

    The log format (lockless ring buffer 5.10+, printk_log records 3.5-5.9, plain log_buf)
    is chosen by VMCOREINFO keys.
    """
    from kdumptool.dmesg import DmesgError, dmesg_records, dmesg_text

    with _open(list(dump), strict=False, vmcoreinfo_file=vmcoreinfo_file) as reader:
        if reader.info.vmcoreinfo is None:
            _recover_vmcoreinfo(reader)
        if as_json:
            click.echo(json.dumps(dmesg_records(reader, partial=partial), indent=1))
            return
        try:
            sys.stdout.buffer.write(dmesg_text(reader, partial=partial, caller=caller))
        except DmesgError as exc:  # like makedumpfile: what was read, then the error
            sys.stdout.buffer.write(exc.partial)
            sys.stdout.buffer.flush()
            raise


def _recover_vmcoreinfo(reader: Any, *, quiet: bool = False) -> None:
    """Use the VMCOREINFO text found in memory for a dump that carries none (or fail clearly)."""
    from kdumptool.scan import scan_vmcoreinfo

    found = scan_vmcoreinfo(reader, first_only=True)
    if not found:
        raise KdumpToolError(f"{reader.info.path}: the dump has no VMCOREINFO and none was found in its "
                             "memory (supply it with -i FILE)")
    from kdumptool.open import adopt_vmcoreinfo

    adopt_vmcoreinfo(reader, found[0].vmcoreinfo)
    if not quiet:
        click.echo(f"kdumptool: note: the dump has no VMCOREINFO; using the copy found in memory at "
                   f"{found[0].paddr:#x}", err=True)


@main.command()
@click.argument("dump", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("address")
@_VMCOREINFO_OPTION
def vtop(dump: str, address: str, vmcoreinfo_file: str | None) -> None:
    """Translate the kernel virtual ADDRESS of DUMP, printing every level of the walk.

    ADDRESS is hexadecimal, with or without 0x (as VMCOREINFO prints addresses).
    """
    from kdumptool.vtop import parse_address, translator_for

    vaddr = parse_address(address)
    with _open([dump], strict=False, vmcoreinfo_file=vmcoreinfo_file) as reader:
        if reader.info.vmcoreinfo is None:
            _recover_vmcoreinfo(reader)
        xlat = translator_for(reader)
        click.echo(f"{xlat.form.name}, page tables at {xlat.walker.root:#x}")
        if xlat.in_image(vaddr):
            click.echo(f"{vaddr:#x} is in the kernel image: paddr {xlat.image_to_phys(vaddr):#x} "
                       "without page tables; the walk:")
        walk = xlat.walker.walk(vaddr)
        for step in walk.steps:
            click.echo(f"  {step.level:4} [{step.index:3}] table {step.table:#014x} "
                       f"entry {step.entry:#018x}")
        click.echo(f"{vaddr:#x} -> {walk.paddr:#x} ({walk.page_size >> 10} KiB page)")


for _command in KERNEL_COMMANDS:
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
