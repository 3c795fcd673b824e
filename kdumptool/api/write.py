"""Writing a dump: ``convert``, ``filter`` and ``scrub`` (one output), ``split`` (a split set).

The policy the command line used to hold lives here: the dump-level list (``-d 11,31``: when
the output does not fit -- a full disk, a file size limit, the ``-L`` limit -- the next level
is tried, as makedumpfile does), the writer chosen from the registry
(:data:`kdumptool.formats.writers.WRITERS`), VMCOREINFO recovered from memory when the page
classes need it, and the scrub resolved before any output exists.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from kdumptool.api.inputs import (
    Notify,
    as_paths,
    notifier,
    opened,
    parse_levels,
    parse_size,
    recover_vmcoreinfo,
)
from kdumptool.api.results import ConvertResult, Retry, SplitPart, SplitResult
from kdumptool.errors import OutputError, UsageError
from kdumptool.filters.levels import MEM_MAP_LEVELS

if TYPE_CHECKING:
    from kdumptool.pipeline import Selection

#: errors that make the next level of a ``-d`` list worth trying (makedumpfile retries on ENOSPC,
#: and on reaching its ``-L`` limit)
RETRY_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})

Levels = int | str | Sequence[int]


@contextlib.contextmanager
def selected(srcs: Sequence[str], level: int, *, vmcoreinfo_file: str | None, notify: Notify | None,
             config: str | None = None, profiles: Sequence[str] = (),
             workers: int | None = None) -> Iterator[tuple[Any, Selection, Any]]:
    """Open the input and choose its pages for ``level`` (the page classes need VMCOREINFO:
    recovered from memory when the dump lacks it); yields ``(reader, selection, scrub)``.

    With ``config``/``profiles`` the scrub is resolved first (every error before any output
    exists), its dump-level bits join ``level``, and the selection reads through the
    scrubbing reader (``scrub`` is its :class:`~kdumptool.scrub.ScrubSetup`, else None).
    """
    from kdumptool.pipeline import Selection

    tell = notifier(notify)
    with opened(srcs, strict=True, vmcoreinfo_file=vmcoreinfo_file) as reader:
        setup, source = None, reader
        if config or profiles:
            from kdumptool.scrub import prepare_scrub

            had_vmcoreinfo = reader.info.vmcoreinfo is not None
            setup = prepare_scrub(reader, profiles=tuple(profiles), config_path=config)
            if not had_vmcoreinfo:
                tell("note: the dump has no VMCOREINFO; using the copy found in its memory")
            for note in setup.notes:
                tell(f"warning: scrub: {note}")
            level |= setup.dump_level
            source = setup.reader(reader)
        if level & MEM_MAP_LEVELS and reader.info.vmcoreinfo is None:
            recover_vmcoreinfo(reader, notify)
        selection = Selection(source, level, workers=workers)
        if setup is not None:
            setup.attach(selection)
        for warning in selection.warnings:
            tell(f"warning: {warning}")
        yield reader, selection, setup


@contextlib.contextmanager
def _progress(enabled: bool, reader: Any, selection: Selection, label: str) -> Iterator[None]:
    """A progress line while the block runs (on a terminal, when enabled), erased however it ends."""
    from kdumptool.progress import progress_for

    selection.progress = progress_for(lambda: reader.count_pages()[1], reader.page_size, label,
                                      quiet=not enabled)
    try:
        yield
    finally:
        if selection.progress is not None:
            selection.progress.close()


def check_inputs(srcs: Sequence[str]) -> None:
    """Several inputs are the parts of one split set; a name among them that is no such part is
    most likely an output meant for ``--split``, and the error says so.

    :raises UsageError: an input that is not a part of a split set
    """
    from kdumptool.open import split_part_kind

    if len(srcs) > 1:
        for path in list(srcs[1:]) + list(srcs[:1]):  # an extra name first: the likelier mistake
            kind = split_part_kind(path)
            if kind != "part":
                raise UsageError(f"{path}: {kind}: several IN are the parts of one split set, and "
                                 "several outputs need --split (IN OUT1 OUT2 ...)")


#: Told when a level of a list is given up: the :class:`Retry` and the next level.
OnRetry = Callable[[Retry, int], None]


def _retrying(levels: list[int], attempt: Any, on_retry: OnRetry | None, *, last_only: bool = False) -> Any:
    """``attempt(level, last, retried)`` for each level in turn until one fits: an output error
    of :data:`RETRY_ERRNOS` moves to the next level (told to ``on_retry``). With ``last_only``
    every attempt is the last (standard output cannot be taken back)."""
    retried: list[Retry] = []
    for i, level in enumerate(levels):
        last = i == len(levels) - 1 or last_only
        try:
            return attempt(level, last, tuple(retried))
        except OutputError as exc:
            if exc.errno not in RETRY_ERRNOS or last:
                raise
            retried.append(Retry(level, str(exc)))
            if on_retry is not None:
                on_retry(retried[-1], levels[i + 1])
    raise AssertionError("unreachable")


def convert(inputs: str | Sequence[str], output: str | None = None, *, level: Levels = 0,
            elf: bool = False, flattened: bool = False, codec: str | None = None,
            stream_compress: str | None = None, size_limit: int | str | None = None,
            threads: int | None = None, force: bool = False, vmcoreinfo_file: str | None = None,
            config: str | None = None, profiles: Sequence[str] = (), dry_run: bool = False,
            page_classes: bool = True, progress: bool = False, notify: Notify | None = None,
            on_retry: OnRetry | None = None) -> ConvertResult:
    """Write the dump ``inputs`` (several: the parts of a split set) as ``output``.

    :param output: the file; ``"-"`` or None with ``flattened``: standard output; ignored with
        ``dry_run``
    :param level: the dump level, or a list (``"11,31"``): when the output does not fit, the next
        level is tried (:attr:`ConvertResult.retried`); at the last, the ``-L`` limit keeps the
        output incomplete (:attr:`ConvertResult.cut`)
    :param elf: write an ELF core file (the writer ``elf``), else kdump-compressed
    :param codec: the kdump page codec (``zlib``, ``lzo``, ``snappy``, ``zstd``), or None
    :param stream_compress: with ``flattened``: one zstd or lz4 frame around the stream
    :param size_limit: bytes (or makedumpfile's ``-L`` text, ``"10M"``)
    :param config: a makedumpfile filter configuration to scrub by; ``profiles``: scrub profiles
    :param page_classes: count the pages per class excluded (:attr:`ConvertResult.page_classes`)
    :param progress: show a progress line on a terminal
    :param notify: told warnings and notes as they happen (:data:`Notify`)
    :param on_retry: told each level of a list given up, and the next (:data:`OnRetry`)
    :raises UsageError: options that contradict each other or the inputs
    :raises OutputError: the output cannot be written (at the last level of a list)
    """
    srcs = as_paths(inputs)
    output = os.fspath(output) if output is not None else None
    levels = parse_levels(level)
    limit = parse_size(size_limit) if isinstance(size_limit, str) else size_limit
    from kdumptool.formats.writers import get_writer

    writer = get_writer("elf" if elf else "kdump")
    if codec is not None and not writer.compresses:
        raise UsageError("ELF output (-E) is not compressed; drop -c/-l/-p/-z")
    if output is None and not (dry_run or flattened):
        raise UsageError("missing OUT (or use -F to write to standard output)")
    check_inputs(srcs)
    dst = None if dry_run else (output or "-")
    flat = flattened or dst == "-"
    if stream_compress and not flat:
        raise UsageError("--stream-compress needs -F: the kdump and ELF writers go back to fill in "
                         "headers and tables, which a compressed stream cannot take")

    def attempt(lvl: int, last: bool, retried: tuple[Retry, ...]) -> ConvertResult:
        job = _Job(srcs, dst, writer, codec, flat=flat, stream_compress=stream_compress, limit=limit,
                   threads=threads, force=force, vmcoreinfo_file=vmcoreinfo_file, config=config,
                   profiles=profiles, page_classes=page_classes, progress=progress, notify=notify)
        return job.run(lvl, keep_cut=last, retried=retried)

    return _retrying(levels, attempt, on_retry, last_only=dst in (None, "-"))


def filter(inputs: str | Sequence[str], output: str | None = None, *, level: Levels,  # noqa: A001
           **options: Any) -> ConvertResult:
    """Drop the pages of the classes of ``level`` (makedumpfile's dump level: 1 zero, 2 cache,
    4 private cache, 8 user, 16 free) from ``inputs``, writing ``output``: :func:`convert`
    with a level that must be given (same options)."""
    return convert(inputs, output, level=level, **options)


def scrub(inputs: str | Sequence[str], output: str | None = None, *, config: str | None = None,
          profiles: Sequence[str] = (), **options: Any) -> ConvertResult:
    """Take secrets out of ``inputs``, writing ``output``: erase what a makedumpfile filter
    configuration or scrub profiles name (:mod:`kdumptool.scrub`), then as :func:`convert`.

    :raises UsageError: neither ``config`` nor ``profiles``
    """
    if not config and not profiles:
        raise UsageError("scrub needs --config FILE or --scrub PROFILE (or both)")
    return convert(inputs, output, config=config, profiles=profiles, **options)


class _Job:
    """One attempt of :func:`convert` at one dump level."""

    def __init__(self, srcs: list[str], dst: str | None, writer: Any, codec: str | None, *, flat: bool,
                 stream_compress: str | None, limit: int | None, threads: int | None, force: bool,
                 vmcoreinfo_file: str | None, config: str | None, profiles: Sequence[str],
                 page_classes: bool, progress: bool, notify: Notify | None) -> None:
        from kdumptool.codecs import get_codec

        self.srcs, self.dst, self.writer, self.flat = srcs, dst, writer, flat
        self.codec = get_codec(codec) if codec is not None else None
        self.stream_compress, self.limit, self.threads, self.force = stream_compress, limit, threads, force
        self.vmcoreinfo_file, self.config, self.profiles = vmcoreinfo_file, config, tuple(profiles)
        self.page_classes, self.progress, self.notify = page_classes, progress, notify

    def result(self, **fields: Any) -> ConvertResult:
        """A result with this job's settings."""
        return ConvertResult(inputs=tuple(self.srcs), output=self.dst, format=self.writer.name,
                             kind=self.writer.kind(self.codec),
                             codec=self.codec.name if self.codec else None, flattened=self.flat,
                             stream_compress=self.stream_compress, size_limit=self.limit, **fields)

    def run(self, level: int, *, keep_cut: bool, retried: tuple[Retry, ...]) -> ConvertResult:
        """Write at ``level``; a cut output is discarded (:class:`LimitReached`) unless ``keep_cut``."""
        from kdumptool.metadata import output_metadata
        from kdumptool.report import exclusion_report
        from kdumptool.transport.sink import LimitReached, open_output

        t0 = time.monotonic()
        with selected(self.srcs, level, vmcoreinfo_file=self.vmcoreinfo_file, notify=self.notify,
                      config=self.config, profiles=self.profiles,
                      workers=self.threads) as (reader, selection, scrub):
            level = selection.dump_level
            if self.dst is None:
                outcome = scrub.plan.outcome(selection) if scrub is not None else None
                return self.result(dump_level=level, retried=retried, dry_run=True, scrub=scrub,
                                   scrub_outcome=outcome, page_classes=exclusion_report(selection))
            meta = output_metadata(selection.reader, dump_level=level)
            outcome = scrub.finish(meta, selection) if scrub is not None else None
            label = os.path.basename(self.dst) if self.dst != "-" else "stdout"
            with _progress(self.progress, reader, selection, label), \
                    open_output(self.dst, inputs=self.srcs, force=self.force, flattened=self.flat,
                                compress=self.stream_compress, limit=self.limit) as sink:
                stats = self.writer.write(selection, sink, meta, self.codec, self.threads)
                if stats.get("cut") and not keep_cut:  # discard it: the next level may fit
                    raise LimitReached(f"{self.dst}: the size limit of {self.limit} bytes is reached at "
                                       f"dump level {meta.dump_level}")
            classes = (exclusion_report(selection, zero=stats.get("zero"))
                       if self.page_classes and level > 1 else None)
        return self.result(dump_level=meta.dump_level, retried=retried, pages=stats["pages"],
                           zero=stats.get("zero"), lost=stats.get("lost", 0), cut=bool(stats.get("cut")),
                           in_file=stats.get("in_file"), copies=stats.get("copies"),
                           seconds=time.monotonic() - t0, page_classes=classes, scrub=scrub,
                           scrub_outcome=outcome, counts=dict(stats))


def split(input: str, outputs: Sequence[str], *, level: Levels = 0, codec: str | None = None,  # noqa: A002
          splitblock_size: int | None = None, threads: int | None = None, force: bool = False,
          vmcoreinfo_file: str | None = None, config: str | None = None, profiles: Sequence[str] = (),
          dry_run: bool = False, dask: str | None = None, page_classes: bool = True,
          progress: bool = False, notify: Notify | None = None,
          on_retry: OnRetry | None = None) -> SplitResult:
    """Write ``input`` as a split set, one kdump-compressed part per file of ``outputs``,
    balanced as ``makedumpfile --split`` balances them.

    :param splitblock_size: bytes per block of PFNs (default 1 GiB), a multiple of the page size
    :param dask: the address of a Dask scheduler: each part is a task on that cluster
        (:mod:`kdumptool.fleet.convert`)
    :param level: a level or a list, as :func:`convert` (the other options too)
    :raises UsageError: fewer than 2 outputs (unless ``dry_run``), or ``dask`` with a scrub
    """
    levels = parse_levels(level)
    dsts = as_paths(outputs)
    input = os.fspath(input)  # noqa: A001
    if len(dsts) < 2 and not dry_run:
        raise UsageError("--split needs IN and at least 2 output files (IN OUT1 OUT2 ...)")
    if dask and not dry_run and (config or profiles):
        raise UsageError("--dask does not scrub yet: drop --config/--scrub or --dask")
    from kdumptool.codecs import get_codec
    from kdumptool.formats.writers import WRITERS

    chosen = get_codec(codec) if codec is not None else None
    kind = next(w for w in WRITERS.values() if w.splits).kind(chosen)

    def attempt(lvl: int, last: bool, retried: tuple[Retry, ...]) -> SplitResult:
        base = SplitResult(input=input, parts=(), kind=kind, codec=codec, retried=retried)
        if dask and not dry_run:
            return _split_dask(base, lvl, dsts, splitblock_size, force, vmcoreinfo_file, dask)
        return _split_here(base, lvl, dsts, chosen, splitblock=splitblock_size, threads=threads,
                           force=force, vmcoreinfo_file=vmcoreinfo_file, config=config,
                           profiles=profiles, dry_run=dry_run, page_classes=page_classes,
                           progress=progress, notify=notify)

    return _retrying(levels, attempt, on_retry)


def _split_dask(base: SplitResult, level: int, dsts: list[str], splitblock: int | None, force: bool,
                vmcoreinfo_file: str | None, address: str) -> SplitResult:
    """The parts written by tasks on the cluster at ``address``."""
    import dataclasses

    from kdumptool.fleet.convert import convert_split_dask

    t0 = time.monotonic()
    done = convert_split_dask(base.input, dsts, level=level, codec=base.codec, address=address,
                              splitblock=splitblock, vmcoreinfo_file=vmcoreinfo_file, force=force)
    parts = tuple(SplitPart(dst, span, stats["pages"], stats.get("zero", 0))
                  for dst, (span, stats) in zip(dsts, done, strict=True))
    return dataclasses.replace(base, parts=parts, dump_level=level, dask=address,
                               seconds=time.monotonic() - t0)


def _split_here(base: SplitResult, level: int, dsts: list[str], codec: Any, *, splitblock: int | None,
                threads: int | None, force: bool, vmcoreinfo_file: str | None, config: str | None,
                profiles: Sequence[str], dry_run: bool, page_classes: bool, progress: bool,
                notify: Notify | None) -> SplitResult:
    """The parts written on this machine (or with ``dry_run`` planned)."""
    import dataclasses

    from kdumptool.formats.split import DEFAULT_SPLITBLOCK_SIZE, split_ranges, write_split
    from kdumptool.metadata import output_metadata
    from kdumptool.report import exclusion_report
    from kdumptool.transport.sink import open_outputs

    t0 = time.monotonic()
    block = splitblock or DEFAULT_SPLITBLOCK_SIZE
    with selected([base.input], level, vmcoreinfo_file=vmcoreinfo_file, notify=notify, config=config,
                  profiles=profiles, workers=threads) as (reader, selection, scrub):
        level = selection.dump_level
        if dry_run:
            outcome = scrub.plan.outcome(selection) if scrub is not None else None
            classes = exclusion_report(selection)
            parts, error = (), None
            try:
                if len(dsts) >= 2:
                    ranges = split_ranges(selection, len(dsts), block)
                    parts = tuple(SplitPart(dst, span) for dst, span in zip(dsts, ranges, strict=True))
            except UsageError as exc:
                error = exc
            return dataclasses.replace(base, parts=parts, dump_level=level, dry_run=True, scrub=scrub,
                                       scrub_outcome=outcome, page_classes=classes, split_error=error)
        ranges = split_ranges(selection, len(dsts), block)
        meta = output_metadata(selection.reader, dump_level=level)
        outcome = scrub.finish(meta, selection) if scrub is not None else None
        with _progress(progress, reader, selection, f"{len(dsts)} parts"), \
                open_outputs(dsts, inputs=[base.input], force=force) as sinks:
            results = write_split(selection, sinks, meta, codec, ranges, threads=threads)
        seconds = time.monotonic() - t0
        zero = sum(r["zero"] for r in results)
        classes = exclusion_report(selection, zero=zero) if page_classes and level > 1 else None
    parts = tuple(SplitPart(dst, span, r["pages"], r["zero"])
                  for dst, span, r in zip(dsts, ranges, results, strict=True))
    return dataclasses.replace(base, parts=parts, dump_level=meta.dump_level, seconds=seconds,
                               page_classes=classes, scrub=scrub, scrub_outcome=outcome)
