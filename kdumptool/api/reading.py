"""Reading a dump without writing one: ``info``, ``fsck``, ``triage``, the kernel log, the
VMCOREINFO and configuration texts, address translation; and the two commands that write from
whole files: ``repair`` and ``reassemble``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kdumptool.api.inputs import Notify, as_paths, naming_inputs, opened, recover_vmcoreinfo
from kdumptool.api.results import InfoResult, ReassembleResult, RepairResult, VtopResult, WalkStep
from kdumptool.errors import KdumpToolError, UsageError


def info(dump: str | Sequence[str], *, deep: bool = False, pages: bool = False,
         vmcoreinfo_file: str | None = None) -> InfoResult:
    """Describe a dump (or the parts of a split set): format, kernel, architecture, pages, notes.

    :param deep: scan all of memory for identification evidence
    :param pages: count the pages per class, as ``makedumpfile --mem-usage`` does
    """
    from kdumptool import summary as summaries
    from kdumptool.filters.levels import MAX_DUMP_LEVEL
    from kdumptool.pipeline import Selection
    from kdumptool.report import exclusion_report

    with opened(as_paths(dump), strict=False, vmcoreinfo_file=vmcoreinfo_file) as reader:
        summary = summaries.dump_summary(reader, deep=deep)
        classes = (exclusion_report(Selection(reader, MAX_DUMP_LEVEL, reclassify=True))
                   if pages else None)
    return InfoResult(summary, classes)


def fsck(dump: str | Sequence[str], *, deep: bool = False, vmcoreinfo_file: str | None = None) -> Any:
    """Check a dump (or the parts of a split set) for every inconsistency.

    :param deep: also decode every page
    :return: the :class:`kdumptool.repair.findings.Report` (findings; its ``exit_code``:
        0 clean, 1 problems repair can fix, 2 damage that loses data, 3 not a dump)
    """
    from kdumptool.repair.checks import fsck as run_fsck

    return run_fsck(as_paths(dump), deep=deep, vmcoreinfo_file=vmcoreinfo_file)


def repair(inputs: str | Sequence[str], output: str | None = None, *, in_place: bool = False,
           zero_fill: bool = False, elf: bool | None = None, flattened: bool = False,
           codec: str | None = None, force: bool = False,
           vmcoreinfo_file: str | None = None, threads: int | None = None) -> RepairResult:
    """Salvage every page of ``inputs`` that still decodes into a valid dump ``output``.

    :param in_place: replace the (one) input atomically, keeping ``IN.bak``; no ``output``
    :param zero_fill: write unreadable pages as zero pages instead of missing
    :param elf: write ELF (True), kdump-compressed (False), or the input's kind (None)
    :param threads: worker processes writing the output (default: all cores; same bytes for any)
    :raises UsageError: ``in_place`` with several inputs, or no ``output`` without it
    :raises RepairError: not a dump, or damage that cannot be undone
    """
    from kdumptool.repair.salvage import repair as run_repair

    srcs = as_paths(inputs)
    if in_place:
        if len(srcs) != 1 or output is not None:
            raise UsageError("--in-place takes exactly one input and no OUT")
        output = srcs[0]
    elif output is None:
        raise UsageError("missing OUT (or use --in-place)")
    return RepairResult.of(run_repair(srcs, output, zero_fill=zero_fill, vmcoreinfo_file=vmcoreinfo_file,
                                      force=force, elf=elf, flat=flattened, codec_name=codec,
                                      in_place=in_place, threads=threads))


def reassemble(parts: Sequence[str], output: str, *, force: bool = False) -> ReassembleResult:
    """Merge the parts of a split set into one kdump-compressed file, as ``makedumpfile
    --reassemble`` does (pages copied as stored).

    :raises UsageError: ``output`` is standard output
    :raises KdumpToolError: a part is not kdump-compressed
    """
    from kdumptool.formats import entry_of
    from kdumptool.formats.split import reassemble as run_reassemble
    from kdumptool.open import open_dump
    from kdumptool.transport.sink import open_output

    if output == "-":
        raise UsageError("reassemble writes a file, not standard output")
    srcs = list(parts)
    t0 = time.monotonic()
    readers: list[Any] = []
    try:
        for path in srcs:
            readers.append(open_dump(path))
            entry = entry_of(readers[-1])
            if entry is None or entry.name != "kdump":
                raise KdumpToolError(f"{path}: not a kdump-compressed file "
                                     f"({readers[-1].info.format}): not a part of a split set")
        with open_output(output, inputs=srcs, force=force) as sink:
            stats = run_reassemble(readers, sink)
    finally:
        for r in readers:
            r.close()
    return ReassembleResult(tuple(srcs), output, stats["pages"], stats.get("zero", 0),
                            stats.get("lost", 0), time.monotonic() - t0)


def triage(dump: Any, *, vmcoreinfo_file: str | None = None, notify: Notify | None = None,
           paths: Sequence[str] | None = None, health: bool = True) -> Any:
    """The crash report of a dump: kernel, reason, crashing CPU and task, registers, call
    trace, taint, modules, uptime, health and a crash signature.

    :param dump: an open :class:`kdumptool.Kernel` (or an object with its interface), or the
        dump's path (several: a split set)
    :param notify: told when the VMCOREINFO is the copy found in memory
    :param paths: with an open kernel: its files, for the ``fsck`` health check (skipped
        without them)
    :param health: run the ``fsck`` health check
    :return: the :class:`kdumptool.kernel.triage.TriageReport`
    """
    from kdumptool.kernel.triage import triage as run_triage

    if not isinstance(dump, str | os.PathLike | list | tuple):  # an open kernel
        return run_triage(dump, paths=list(paths) if paths is not None else None, health=health)
    names = as_paths(dump)
    with open_kernel_noting(names, vmcoreinfo_file, notify) as kernel:
        return run_triage(kernel, paths=names, health=health)  # "-": the copy of stdin again


def open_kernel_noting(paths: Sequence[str], vmcoreinfo_file: str | None, notify: Notify | None,
                       scan: bool = False) -> Any:
    """:func:`kdumptool.open_kernel`, telling ``notify`` when the VMCOREINFO is the copy found in
    memory."""
    from kdumptool.kernel.session import open_kernel

    kernel = open_kernel(list(paths), vmcoreinfo_file=vmcoreinfo_file, scan=scan)
    if kernel.origin.source == "memory" and notify is not None:
        notify(f"note: the dump has no VMCOREINFO; using the copy found in memory at "
               f"{kernel.origin.paddr:#x}")
    return kernel


def dmesg(dump: str | Sequence[str], *, partial: bool = False, caller: bool = False,
          vmcoreinfo_file: str | None = None, notify: Notify | None = None) -> bytes:
    """The kernel log held in a dump, as ``makedumpfile --dump-dmesg`` writes it (VMCOREINFO
    recovered from memory when the dump lacks it).

    :param partial: only what is after the last ``dmesg -c``
    :param caller: each record's caller id (``[  T42]``)
    :raises DmesgError: the log is inconsistent (its ``partial`` holds what was read before)
    """
    from kdumptool.dmesg import dmesg_text

    with opened(as_paths(dump), strict=False, vmcoreinfo_file=vmcoreinfo_file) as reader:
        if reader.info.vmcoreinfo is None:
            recover_vmcoreinfo(reader, notify)
        return dmesg_text(reader, partial=partial, caller=caller)


def dmesg_log_records(dump: str | Sequence[str], *, partial: bool = False,
                      vmcoreinfo_file: str | None = None, notify: Notify | None = None) -> list[dict]:
    """The kernel log's records (``dmesg --json``; see :func:`kdumptool.dmesg.dmesg_records`)."""
    from kdumptool.dmesg import dmesg_records

    with opened(as_paths(dump), strict=False, vmcoreinfo_file=vmcoreinfo_file) as reader:
        if reader.info.vmcoreinfo is None:
            recover_vmcoreinfo(reader, notify)
        return dmesg_records(reader, partial=partial)


def vtop(dump: str, address: int | str, *, vmcoreinfo_file: str | None = None,
         notify: Notify | None = None) -> VtopResult:
    """Translate a kernel virtual address through the dump's page tables, every level kept.

    :param address: a number, or hexadecimal text with or without ``0x``
    :raises TranslationError: the walk stops at an entry that maps nothing (its
        ``partial_result``: the translation without the walk)
    """
    from kdumptool.vtop import parse_address, translator_for

    vaddr = parse_address(address) if isinstance(address, str) else address
    with opened([dump], strict=False, vmcoreinfo_file=vmcoreinfo_file) as reader:
        if reader.info.vmcoreinfo is None:
            recover_vmcoreinfo(reader, notify)
        xlat = translator_for(reader)
        image = None
        try:
            image = xlat.image_to_phys(vaddr) if xlat.in_image(vaddr) else None
            walk = xlat.walker.walk(vaddr)
        except KdumpToolError as exc:  # what is known so far, for a caller that shows it
            exc.partial_result = VtopResult(vaddr, None, xlat.form.name, xlat.walker.root,  # type: ignore[attr-defined]
                                            image, (), None)
            raise
        steps = tuple(WalkStep(s.level, s.index, s.table, s.entry) for s in walk.steps)
        return VtopResult(vaddr, walk.paddr, xlat.form.name, xlat.walker.root, image, steps,
                          walk.page_size)


@dataclass(frozen=True)
class FoundText:
    """A text read from a dump (bytes, or str for a kernel configuration) and the physical
    address where it was found (None: the dump's note)."""

    text: bytes | str
    paddr: int | None


def vmcoreinfo(dump: str, *, scan: bool = False) -> FoundText:
    """The dump's VMCOREINFO text: its note, or with ``scan`` the copy in its memory.

    :raises KdumpToolError: none found
    """
    with opened([dump], strict=False) as reader:
        vmci, paddr = reader.info.vmcoreinfo, None
        if scan:
            from kdumptool.scan import scan_vmcoreinfo

            found = scan_vmcoreinfo(reader, first_only=True)
            if not found:
                raise KdumpToolError(f"{dump}: no VMCOREINFO text found in the dump's memory")
            vmci, paddr = found[0].vmcoreinfo, found[0].paddr
        if vmci is None:
            raise KdumpToolError(f"{dump}: the dump has no VMCOREINFO (try --scan)")
        return FoundText(vmci.raw, paddr)


def ikconfig(dump: str) -> FoundText:
    """The kernel configuration embedded in the dump's memory (``CONFIG_IKCONFIG``).

    :raises KdumpToolError: no configuration blob in memory
    """
    from kdumptool.identify import find_config

    with opened([dump], strict=False) as reader:
        config = find_config(reader)
        if config is None:
            raise KdumpToolError(f"{dump}: no IKCFG_ST configuration blob in the dump's memory "
                                 "(the kernel was built without CONFIG_IKCONFIG=y, or the configs "
                                 "module was not loaded)")
        return FoundText(config.text, config.paddr)


__all__ = ["info", "fsck", "repair", "reassemble", "triage", "dmesg", "dmesg_log_records", "vtop",
           "vmcoreinfo", "ikconfig", "FoundText", "naming_inputs"]
