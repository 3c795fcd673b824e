"""``repair``: salvage every page that still decodes into a valid dump of the same kind.

Policy (the tolerant readers report damage per page; this module decides what to do):

* pages that decode are copied byte for byte;
* pages that are lost (cut off, empty descriptor) or corrupt (do not decode) become
  *missing* — an all-zero descriptor and the incomplete flag in kdump output
  (``DUMP_DH_COMPRESSED_INCOMPLETE``), holes and ``e_flags`` bit 0 in ELF output — or,
  with ``zero_fill``, pages of zeros;
* a missing VMCOREINFO is supplied (``-i FILE``) or recovered from memory; QEMU's empty
  utsname is filled (the writers always do both);
* a flattened input is rebuilt as a plain file of its inner format, its tail marked lost.

The input is never modified; ``in_place`` replaces it atomically and keeps a backup.

Exit codes of ``kdumptool repair`` (stable, documented in the README):

====  ==============================================================
 0    every page the input declares is in the output as it was
 1    the output was written, but pages were lost: marked missing (the output is marked
      incomplete) or, with ``zero_fill``, written as zeros; the report lists them
 3    cannot repair: not a dump, unreadable, or damage that cannot be undone
====  ==============================================================
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from kdumptool.codecs import get_codec
from kdumptool.dump import DumpReader, PageBatch, pfn_range_text
from kdumptool.errors import OutputError, RepairError
from kdumptool.formats import entry_of
from kdumptool.formats.writers import get_writer
from kdumptool.metadata import output_metadata
from kdumptool.open import adopt_vmcoreinfo, open_dumps, supply_vmcoreinfo
from kdumptool.pipeline import Selection
from kdumptool.repair.bitmap2 import Rematch, rematch_bitmap2
from kdumptool.repair.checks import check_uts_in_memory, fsck
from kdumptool.repair.descriptors import recover_descriptors
from kdumptool.repair.findings import Report, ranges_of
from kdumptool.scan import scan_vmcoreinfo
from kdumptool.transport.sink import open_output

#: Damage to a header field that the reader worked around and the writer writes anew.
REWRITE_FIXES = {
    "elf-phnum": "e_phnum restored (the program headers were counted in their table)",
    "kdump-signature": "kdump signature restored",
}


class ZeroFillReader(DumpReader):
    """A tolerant reader whose lost and corrupt pages read as zeros."""

    def __init__(self, inner: DumpReader) -> None:
        super().__init__(inner.source, strict=False)
        self.inner = inner
        self.info = inner.info

    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The inner reader's bits."""
        return self.inner.bitmaps(start, count)

    def data_windows(self, window: int | None = None) -> Iterator[tuple[int, int]]:
        """The inner reader's windows."""
        return self.inner.data_windows(window)

    def read_batch(self, start: int, count: int) -> PageBatch:
        """The inner reader's batch, its lost and corrupt pages present as pages of zeros."""
        b = self.inner.read_batch(start, count)
        fill = b.lost.copy()
        for pfn in b.corrupt:
            fill[pfn - start] = True
        if not fill.any():
            return b
        full = np.zeros((count, self.page_size), dtype=np.uint8)
        full[b.present] = b.data
        present = b.present | fill
        return PageBatch(start, count, b.ram, present, full[present],
                         np.zeros(count, dtype=bool), {})

    def close(self) -> None:
        """Close the inner reader."""
        self.inner.close()


def unreadable_pages(reader: DumpReader) -> list[tuple[int, int]]:
    """PFN ranges the dump declares but cannot deliver (lost or corrupt)."""
    pfns: list[np.ndarray] = []
    for b in reader.iter_batches():
        bad = b.lost.copy()
        for pfn in b.corrupt:
            bad[pfn - b.start] = True
        if bad.any():
            pfns.append(np.flatnonzero(bad) + b.start)
    return ranges_of(np.concatenate(pfns)) if pfns else []


def repair(paths: list[str], out: str, *, zero_fill: bool = False,
           vmcoreinfo_file: str | None = None, force: bool = False, elf: bool | None = None,
           flat: bool = False, codec_name: str | None = None, threads: int | None = None,
           in_place: bool = False) -> dict[str, Any]:
    """Repair ``paths`` into ``out``; return the report (findings, actions, lost ranges, and
    ``exit_code``: 0 nothing lost, 1 pages lost or zero-filled, or left out because their
    descriptor could not be matched: ``unmatched_descriptors``, ``ambiguous_pfn_ranges``).

    :raises RepairError: the input is not a readable dump, or its pages cannot be matched
        to their data (a 2nd bitmap that disagrees with the descriptor table beyond repair)
    """
    before: Report = fsck(paths, vmcoreinfo_file=vmcoreinfo_file)
    fatal = [f for f in before.findings if f.severity == "fatal"]
    if fatal:
        raise RepairError(f"{before.path}: cannot repair: {fatal[0]}")
    mismatch = [f for f in before.findings if f.code == "bitmap-table-mismatch"]
    if mismatch:
        raise RepairError(f"{before.path}: cannot repair: {mismatch[0]}")
    actions = [REWRITE_FIXES[f.code] for f in before.findings if f.code in REWRITE_FIXES]
    reader: DumpReader = open_dumps(paths, strict=False)
    try:
        _fix_vmcoreinfo(reader, before, vmcoreinfo_file, actions)
        rematched = _fix_kdump_parts(reader, actions)
        unmatched = sum(m.unmatched for m in rematched)
        # (unmatched descriptors whose page is declared are among the unreadable pages below)
        unplaced = unmatched - sum(b - a for m in rematched for a, b in m.lost)
        lost = unreadable_pages(reader)
        nlost = sum(b - a for a, b in lost)
        entry = entry_of(reader)  # the format's repair policy: ELF stays ELF
        is_elf = (entry is not None and entry.repair_as == "elf") if elf is None else elf
        if nlost and zero_fill:
            reader = ZeroFillReader(reader)
            actions.append(f"{nlost} unreadable pages written as zero pages")
        elif nlost:
            how = "holes and e_flags bit 0" if is_elf else "empty descriptors and the incomplete flag"
            actions.append(f"{nlost} unreadable pages marked missing ({how})")
        if "flattened" in reader.info.transport:
            actions.append("flattened stream rebuilt as a plain file")
        meta = output_metadata(reader)
        if (nlost and not zero_fill) or unmatched:
            meta = dataclasses.replace(meta, incomplete=True)
        codec = None
        if not is_elf:
            codec = get_codec(codec_name or (sorted(reader.info.codecs)[0] if reader.info.codecs else "zlib"))
        stats = _write(reader, paths, out, meta, codec, is_elf=is_elf, flat=flat, force=force,
                       threads=threads, in_place=in_place, actions=actions)
    finally:
        reader.close()
    return {
        "input": before.as_dict(),
        "output": out,
        "format": "ELF" if is_elf else f"kdump-compressed ({codec.name if codec else 'raw'})",
        "actions": actions,
        "exit_code": 1 if nlost or unplaced else 0,
        "pages_written": stats.get("in_file", stats["pages"]),  # ELF: once per PFN, as info counts
        "pages_lost": nlost + unplaced,
        "lost_pfn_ranges": [list(r) for r in (lost if not zero_fill else [])],
        "zero_filled_pfn_ranges": [list(r) for r in (lost if zero_fill else [])],
        "unmatched_descriptors": unmatched,
        "ambiguous_pfn_ranges": [list(r) for m in rematched for r in m.ambiguous],
    }


def _fix_vmcoreinfo(reader: DumpReader, before: Report, vmcoreinfo_file: str | None,
                    actions: list[str]) -> None:
    """VMCOREINFO from ``-i``, else the copy found in memory when the dump has none or one
    that memory contradicts."""
    if vmcoreinfo_file:
        supply_vmcoreinfo(reader, vmcoreinfo_file)
        actions.append(f"VMCOREINFO taken from {vmcoreinfo_file}")
    elif reader.info.vmcoreinfo is None:
        found = scan_vmcoreinfo(reader, first_only=True)
        if found:
            adopt_vmcoreinfo(reader, found[0].vmcoreinfo)
            actions.append(f"VMCOREINFO recovered from memory at {found[0].paddr:#x}")
    elif any(f.code == "vmcoreinfo-mismatch" for f in before.findings):
        # the note disagrees with memory (a fabricated VMCOREINFO): use the kernel's own
        # copy, if one in memory agrees with init_uts_ns
        for cand in scan_vmcoreinfo(reader):
            probe = Report(before.path)
            original = reader.info.vmcoreinfo
            reader.info.vmcoreinfo = cand.vmcoreinfo
            check_uts_in_memory(reader, probe)
            if not probe.findings and cand.vmcoreinfo.lines != original.lines:  # type: ignore[union-attr]
                actions.append("VMCOREINFO replaced by the kernel's own copy found in memory "
                               f"at {cand.paddr:#x} (the dump's did not match memory)")
                adopt_vmcoreinfo(reader, cand.vmcoreinfo)
                break
            reader.info.vmcoreinfo = original


def _fix_kdump_parts(reader: DumpReader, actions: list[str]) -> list[Rematch]:
    """A zeroed part of the 2nd bitmap rebuilt, emptied descriptors rebuilt from page data."""
    rematched = []
    for part in getattr(reader, "parts", None) or [reader]:  # a split set's parts, or the file
        entry = entry_of(part)
        if entry is None or entry.name != "kdump":  # the tools below fix kdump tables only
            continue
        found = rematch_bitmap2(part)
        if found is not None:
            rematched.append(found)
            (a, b), n = found.span, found.descriptors
            actions.append(f"2nd bitmap rebuilt over PFNs {pfn_range_text(a, b)}: {found.matched} of {n} "
                           f"page descriptors matched to their pages ({found.by_data} by their data)"
                           + (f"; {found.unmatched} could not be (their pages are left out)"
                              if found.unmatched else ""))
        runs = recover_descriptors(part)
        rebuilt = sum(n for _, _, n in runs)
        if rebuilt:
            actions.append(f"{rebuilt} of {sum(c for _, c, _ in runs)} emptied page "
                           "descriptors rebuilt by scanning the page data")
    return rematched


def _write(reader: DumpReader, paths: list[str], out: str, meta: Any, codec: Any, *, is_elf: bool,
           flat: bool, force: bool, threads: int | None, in_place: bool,
           actions: list[str]) -> dict[str, Any]:
    """Write the repaired dump (``in_place``: over the input, keeping ``IN.bak``)."""
    backup = None
    if in_place:
        backup = paths[0] + ".bak"
        if os.path.lexists(backup) and not force:
            raise OutputError(f"{backup}: backup exists (use --force to replace it)")
        if os.path.lexists(backup):
            os.unlink(backup)
        os.link(paths[0], backup)
    try:
        with open_output(out, inputs=[] if in_place else paths, force=force or in_place,
                         flattened=flat) as sink:
            writer = get_writer("elf" if is_elf else "kdump")  # both on every core (--threads)
            stats: dict[str, Any] = writer.write(Selection(reader, 0, workers=threads), sink, meta,
                                                 None if is_elf else codec, threads)
    except BaseException:
        if backup:
            os.unlink(backup)
        raise
    if backup:
        actions.append(f"{paths[0]} replaced; the original is kept as {backup}")
    return stats
