"""The ``kdumptool`` command line (click). Thin: the work is in the library.

Errors from kdumptool's hierarchy print as one line, ``kdumptool: error: ...``,
and exit with the class's code (see :mod:`kdumptool.errors`); ``--debug`` shows
the traceback instead. Option names follow makedumpfile where users know them.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from kdumptool import __version__
from kdumptool.codecs import CODECS, get_codec
from kdumptool.errors import KdumpToolError, UsageError
from kdumptool.metadata import output_metadata
from kdumptool.open import open_dump, open_dumps
from kdumptool.pipeline import MAX_DUMP_LEVEL, Selection
from kdumptool.summary import dump_summary, format_summary
from kdumptool.transport.sink import open_output


class _Group(click.Group):
    """Turns kdumptool errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = "--debug" in sys.argv[1:]
        try:
            return super().invoke(ctx)
        except KdumpToolError as exc:
            if debug:
                raise
            click.echo(f"kdumptool: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:
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


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the atomic-output cleanup


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="kdumptool")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Convert, filter, validate and repair Linux kernel crash dumps."""
    signal.signal(signal.SIGTERM, _on_sigterm)


@main.command()
@click.argument("dump", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(dump: tuple[str, ...], as_json: bool) -> None:
    """Describe DUMP: format, kernel, architecture, pages, notes.

    Give every part of a split set (makedumpfile --split) to describe the whole dump.
    """
    with open_dumps(list(dump), strict=False) as reader:
        summary = dump_summary(reader)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(format_summary(summary))


@main.command()
@click.argument("dump", type=click.Path(dir_okay=False, allow_dash=True))
def vmcoreinfo(dump: str) -> None:
    """Print the VMCOREINFO text of DUMP."""
    with open_dump(dump, strict=False) as reader:
        vmci = reader.info.vmcoreinfo
        if vmci is None:
            raise KdumpToolError(f"{dump}: the dump has no VMCOREINFO")
        sys.stdout.buffer.write(vmci.raw if vmci.raw.endswith(b"\n") else vmci.raw + b"\n")


def _parse_level(text: str) -> int:
    try:
        level = int(text)
    except ValueError:
        raise UsageError(f"dump level {text!r} is not a number from 0 to 31 "
                         "(lists such as 11,31 are not supported yet)") from None
    if not 0 <= level <= MAX_DUMP_LEVEL:
        raise UsageError(f"dump level {level} is out of range 0..31")
    return level


def _codec_option(name: str, letter: str) -> Callable[[Any], Any]:
    return click.option(letter, f"codec_{name}", is_flag=True,
                        help=f"Compress pages with {name} (kdump-compressed output).")


@main.command()
@click.argument("paths", metavar="IN... [OUT]", nargs=-1, required=True,
                type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-E", "elf", is_flag=True, help="Write an ELF core file (default: kdump-compressed).")
@click.option("-F", "flat", is_flag=True, help="Write makedumpfile's flattened format (to stdout if "
              "OUT is omitted or -).")
@_codec_option("zlib", "-c")
@_codec_option("lzo", "-l")
@_codec_option("snappy", "-p")
@_codec_option("zstd", "-z")
@click.option("-d", "level_text", default="0", show_default=True, metavar="LEVEL",
              help="makedumpfile dump level (0-31); 1 = exclude zero pages.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Compression threads (default: all cores).")
@click.option("-f", "--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def convert(paths: tuple[str, ...], elf: bool, flat: bool, codec_zlib: bool, codec_lzo: bool,
            codec_snappy: bool, codec_zstd: bool, level_text: str, threads: int | None,
            force: bool, quiet: bool) -> None:
    """Convert the dump IN to OUT (kdump-compressed, ELF with -E, flattened with -F).

    Several IN files are the parts of a split set (makedumpfile --split), reassembled.
    With -F and a single path, the output goes to standard output.
    """
    if len(paths) == 1 and not flat:
        raise UsageError("missing OUT (or use -F to write to standard output)")
    srcs, dst = (list(paths), "-") if len(paths) == 1 else (list(paths[:-1]), paths[-1])
    chosen = [n for n, on in (("zlib", codec_zlib), ("lzo", codec_lzo), ("snappy", codec_snappy),
                              ("zstd", codec_zstd)) if on]
    if len(chosen) > 1:
        raise UsageError("choose at most one of -c, -l, -p, -z")
    if elf and chosen:
        raise UsageError("ELF output (-E) is not compressed; drop -c/-l/-p/-z")
    codec = get_codec(chosen[0]) if chosen else None
    level = _parse_level(level_text)
    if dst == "-":
        flat = True
    t0 = time.monotonic()
    with open_dumps(srcs, strict=True) as reader:
        _check_level(reader, level)
        selection = Selection(reader, level)
        meta = output_metadata(reader, dump_level=level)
        with open_output(dst, inputs=srcs, force=force, flattened=flat) as sink:
            if elf:
                from kdumptool.formats.elf_writer import write_elf

                stats = write_elf(selection, sink, meta)
            else:
                from kdumptool.formats.kdump_writer import write_kdump

                stats = write_kdump(selection, sink, meta, codec, threads=threads)
    if not quiet and dst != "-":
        kind = "ELF" if elf else f"kdump-compressed ({codec.name if codec else 'uncompressed'})"
        click.echo(f"{dst}: {kind}{', flattened' if flat else ''}: {stats['pages']} pages written "
                   f"in {time.monotonic() - t0:.1f} s", err=True)


def _check_level(reader: Any, level: int) -> None:
    """Levels 2-16 need mem_map page classes, which this version cannot compute."""
    already = reader.info.dump_level or 0
    missing = level & ~already & ~1
    if missing:
        raise UsageError(
            f"dump level {level} asks to exclude page classes {missing} (cache/user/free pages), "
            "which needs mem_map classification; this version filters zero pages (level 1) only"
        )


__all__ = ["main", "CODECS"]
