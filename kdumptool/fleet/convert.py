"""One huge dump converted by a cluster: ``convert --split ... --dask ADDRESS``.

The client chooses the parts' PFN ranges as a local ``--split`` does
(:func:`kdumptool.formats.split.split_ranges`: a metadata pass) and creates the parts'
temporary files next to their destinations (:func:`kdumptool.transport.sink.open_outputs`);
each part is then one Dask task (:func:`write_part`) that opens the source itself, selects
the same pages at the same dump level and writes its part with the one kdump writer
(``write_kdump(..., part=range)``) into its temporary file.  When every task succeeded the
files are renamed over their destinations, all or nothing.  Each part depends only on the
source, the level, the codec and its range, so the set is byte-identical to the local one
(with a deterministic codec: ISA-L's zlib is not reproducible run to run, see
``tests/conftest.py``).  Workers and client must see the source and the outputs at the same
paths (shared storage).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from kdumptool.errors import KdumpToolError, OutputError


@dataclass(frozen=True)
class PartJob:
    """One part of a split set to write: everything a worker needs."""

    src: str
    out: str  # the part's temporary file (exists, empty)
    level: int
    codec: str | None
    span: tuple[int, int]
    vmcoreinfo_file: str | None = None
    threads: int | None = 1


def open_source(src: str, level: int, vmcoreinfo_file: str | None) -> tuple[Any, Any]:
    """``(reader, selection)`` of ``src`` at ``level``, as the local ``convert`` opens it:
    strictly, VMCOREINFO from ``vmcoreinfo_file`` or, for a mem_map level, found in memory."""
    from kdumptool.filters.levels import MEM_MAP_LEVELS
    from kdumptool.open import open_dumps, recover_vmcoreinfo, supply_vmcoreinfo
    from kdumptool.pipeline import Selection

    reader = open_dumps([src], strict=True)
    try:
        if vmcoreinfo_file:
            supply_vmcoreinfo(reader, vmcoreinfo_file)
        if level & MEM_MAP_LEVELS and reader.info.vmcoreinfo is None:
            recover_vmcoreinfo(reader)
        return reader, Selection(reader, level)
    except BaseException:
        reader.close()
        raise


def write_part(job: PartJob) -> dict[str, int]:
    """Write one part (a Dask task): the writer's counts for it."""
    from kdumptool.codecs import get_codec
    from kdumptool.formats.kdump_writer import write_kdump
    from kdumptool.metadata import output_metadata
    from kdumptool.transport.sink import FileSink

    reader, selection = open_source(job.src, job.level, job.vmcoreinfo_file)
    with reader:
        meta = output_metadata(reader, dump_level=job.level)
        if job.span[0] != 0:  # the ERASEINFO text goes into the first part only, as locally
            meta.eraseinfo = b""
        codec = get_codec(job.codec) if job.codec else None
        try:
            fd = os.open(job.out, os.O_WRONLY)
        except OSError as exc:
            raise OutputError(f"{job.out}: cannot open the part's file: {exc.strerror}") from None
        try:
            sink = FileSink(fd, job.out)
            stats = write_kdump(selection, sink, meta, codec, threads=job.threads, part=job.span)
            sink.finish()
        finally:
            os.close(fd)
    return stats


def convert_split_dask(src: str, dsts: list[str], *, level: int, codec: str | None, address: str,
                       splitblock: int | None = None, vmcoreinfo_file: str | None = None,
                       force: bool = False, retries: int = 2) -> list[tuple[tuple[int, int], dict[str, int]]]:
    """Write the split set ``dsts`` of ``src`` with one task per part on the Dask cluster at
    ``address``: ``[(PFN range, counts)]`` per part.

    :raises OutputError: an output cannot be written (none is left then)
    :raises KdumpToolError: a part's task failed (its error, after ``retries``)
    """
    from distributed import Client, as_completed

    from kdumptool.formats.split import DEFAULT_SPLITBLOCK_SIZE, split_ranges
    from kdumptool.transport.sink import open_outputs

    reader, selection = open_source(src, level, vmcoreinfo_file)
    with reader:
        ranges = split_ranges(selection, len(dsts), splitblock or DEFAULT_SPLITBLOCK_SIZE)
    results: dict[int, dict[str, int]] = {}
    with open_outputs(dsts, inputs=[src], force=force) as sinks, \
            Client(address, set_as_default=False) as client:
        jobs = [PartJob(src, sink.path, level, codec, span, vmcoreinfo_file)
                for sink, span in zip(sinks, ranges, strict=True)]
        futures = {client.submit(write_part, job, retries=retries, pure=False): i
                   for i, job in enumerate(jobs)}
        for fut in as_completed(list(futures), loop=client.loop):
            exc = fut.exception()
            if exc is not None:
                for other in futures:
                    other.cancel()
                if isinstance(exc, KdumpToolError):
                    raise exc
                raise KdumpToolError(f"{dsts[futures[fut]]}: the part's task failed on the cluster: "
                                     f"{type(exc).__name__}: {exc}")
            results[futures[fut]] = fut.result()
    return [(ranges[i], results[i]) for i in range(len(dsts))]
