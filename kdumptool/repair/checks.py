"""``fsck`` checks: every inconsistency a dump can have, each with a severity and an offset.

Spec: SPEC.md (the structures checked) and §7 (the consistency rules kdumptool applies).
Checks read the dump tolerantly, so damage is reported rather than raised; a structure
that cannot be read at all is a ``fatal`` finding (exit code 3).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from kdumptool.codecs import CODEC_FLAG_MASK
from kdumptool.dump import DumpReader, pfn_range_text
from kdumptool.errors import DumpError, KdumpToolError, UnknownFormatError, quote
from kdumptool.formats import entry_of
from kdumptool.formats.elf import ElfReader
from kdumptool.formats.hyperv import HyperVReader
from kdumptool.formats.kdump import DUMP_DH_COMPRESSED_INCOMPLETE, KNOWN_STATUS, PAGE_DESC_SIZE, KdumpReader
from kdumptool.formats.split import SplitSetReader
from kdumptool.open import open_dumps, supply_vmcoreinfo
from kdumptool.repair.bitmap2 import Rematch, rematch_bitmap2
from kdumptool.repair.descriptors import recover_descriptors
from kdumptool.repair.findings import Report, merge_ranges, ranges_of
from kdumptool.transport.flattened import FlattenedSource
from kdumptool.vmcoreinfo import known_broken_build_id
from kdumptool.vtop.kernel_image import kernel_image_to_phys

#: Findings of one kind listed one by one; past this many, one line counts the rest.
MAX_LISTED = 20


def fsck(paths: list[str], *, deep: bool = False, vmcoreinfo_file: str | None = None) -> Report:
    """Check a dump (or a split set). Never raises on bad input: see the report (an input
    that cannot be opened or read is a ``fatal`` finding, exit code 3, like one that is not
    a dump)."""
    report = Report(", ".join(paths))
    named = len(paths) > 1  # say which part a finding is about
    try:
        reader = open_dumps(paths, strict=False)
    except UnknownFormatError as exc:
        report.add("fatal", "not-a-dump", describe(exc, named=named), exc.offset)
        return report
    except DumpError as exc:  # also a file that cannot be opened or read (missing, a directory)
        report.add("fatal", "unreadable", describe(exc, named=named), exc.offset)
        return report
    with reader:
        if vmcoreinfo_file:
            supply_vmcoreinfo(reader, vmcoreinfo_file)
        check_reader(reader, report, deep=deep, named=named)
    return report


def check_reader(reader: DumpReader, report: Report, *, deep: bool = False, named: bool = False) -> None:
    """The checks of :func:`fsck` on a dump already open (tolerantly), findings added to
    ``report``; never raises on bad input (damage found, or an I/O error, is a ``fatal``
    finding).

    :param named: findings name the part they are about (a split set)
    """
    report.facts.update(format=reader.info.format, transport=reader.info.transport,
                        max_pfn=reader.info.max_pfn, page_size=reader.info.page_size)
    try:
        validate_transport(reader, report)
        entry = entry_of(reader, of_parts=True)  # a split set: the checks of its parts' format
        check = FORMAT_CHECKS.get(entry.name) if entry is not None else None
        if check is not None:
            check(reader, report)
        validate_vmcoreinfo(reader, report)
        if deep:
            validate_pages(reader, report)
    except DumpError as exc:
        report.add("fatal", "unreadable", describe(exc, named=named), exc.offset)
    except OSError as exc:  # an I/O error while reading the input
        report.add("fatal", "unreadable", f"cannot read: {exc.strerror or exc}")


def describe(exc: DumpError, *, named: bool = False) -> str:
    """An error's message with expected/got, without its offset (and without its path
    unless ``named``)."""
    text = f"{exc.path}: {exc.message}" if named and exc.path is not None else exc.message
    if exc.expected is not None or exc.got is not None:
        text += f" (expected {exc.expected}, got {exc.got})"
    return text


def validate_transport(reader: DumpReader, report: Report) -> None:
    """Findings about the transport under the image (a compressed stream or flattened
    file cut short or damaged), added to ``report``.
    """
    src = getattr(reader.source, "wrapped", reader.source)  # (a source that restores a field)
    damage = getattr(src, "damage", None)
    if damage is not None:  # a compressed stream (or stdin) cut short or corrupt
        report.add("data-loss", "transport-damaged",
                   f"{describe(damage)}; the image stops there (its tail "
                   "is missing)", damage.offset)
    if isinstance(src, FlattenedSource) and not src.complete:
        cut = ""
        if src.partial is not None:
            at, kept, declared = src.partial
            cut = f" (the last, at {at:#x}, is cut: {kept} of its {declared} bytes kept)"
        report.add("data-loss", "flat-truncated",
                   f"flattened stream ends without its end marker after {src.records} records{cut}; "
                   "the image's tail is missing", src.inner.size)


# --- kdump -------------------------------------------------------------------------------

def _kdump_parts(reader: KdumpReader | SplitSetReader) -> list[KdumpReader]:
    """A split set's parts, or the one kdump file."""
    return getattr(reader, "parts", None) or [reader]  # type: ignore[list-item]


def validate_kdump(reader: KdumpReader | SplitSetReader, report: Report) -> None:
    """Findings about a kdump-compressed dump or split set (missing parts, then each part's
    headers, bitmaps and page descriptors), added to ``report``.
    """
    if getattr(reader, "parts", None):  # a split set
        for lo, hi in reader.gaps:  # type: ignore[union-attr]
            declared = ranges_of(np.flatnonzero(reader.parts[0]._bits(2, lo, hi - lo)) + lo)
            report.add("data-loss", "split-part-missing",
                       f"the split set has no part for PFNs {pfn_range_text(lo, hi)}", None, declared)
    parts = _kdump_parts(reader)
    for part in parts:
        _validate_kdump_part(part, report, f"{part.path}: " if len(parts) > 1 else "")


def _validate_kdump_part(r: KdumpReader, report: Report, path: str) -> None:
    _validate_kdump_header(r, report, path)
    if _validate_kdump_table(r, report, path):
        _validate_descriptors(r, report, path)


def _validate_kdump_header(r: KdumpReader, report: Report, path: str) -> None:
    """The header fields, and the 2nd bitmap within the 1st."""
    h = r.header
    if r.damaged_signature is not None:
        report.add("repairable", "kdump-signature",
                   f"{path}kdump-compressed, signature damaged: {r.damaged_signature!r} instead of "
                   f"{h.signature!r} (the header, sub-header, bitmaps and page descriptor table agree)", 0)
    if r.rebuilt:
        report.add("repairable", "header-block-size",
                   f"{path}disk_dump_header.block_size is damaged: {r.rebuilt}",
                   r.structs.DiskDumpHeader.sizeof() - 36)
    if not 1 <= h.header_version <= 6:
        report.add("notice", "header-version", f"{path}unusual header_version {h.header_version}", 8)
    if h.status & ~KNOWN_STATUS:
        report.add("notice", "status-bits", f"{path}unknown status bits {h.status & ~KNOWN_STATUS:#x}")
    vmci = r.info.vmcoreinfo
    if vmci is not None and vmci.page_size and vmci.page_size != h.block_size:
        report.add("data-loss", "block-size", f"{path}block_size {h.block_size} differs from "
                   f"VMCOREINFO PAGESIZE {vmci.page_size}")
    outside = 0
    for start, count in r.windows(1 << 16):
        ram, present = r.bitmaps(start, count)
        outside += int((present & ~ram).sum())
    if outside:
        report.add("repairable", "bitmap2-not-in-bitmap1",
                   f"{path}{outside} pages are in the 2nd bitmap but not in the 1st", r.bitmap2_offset)


def _validate_kdump_table(r: KdumpReader, report: Report, path: str) -> bool:
    """The 2nd bitmap against the descriptor table (rebuilt where part of it was zeroed),
    and emptied descriptors that the page data gives back. False: pages cannot be matched."""
    try:
        r._check_table_start()
    except DumpError as exc:
        found = rematch_bitmap2(r)  # (the reader reads through the rebuilt bitmap from now on)
        if found is None:
            report.add("data-loss", "bitmap-table-mismatch",
                       f"{path}{exc.message} ({exc.expected} vs {exc.got}); pages cannot be matched "
                       "to their data", exc.offset)
            return False
        report_rematch(found, report, path)
    runs = recover_descriptors(r)
    rebuilt = sum(n for _, _, n in runs)
    if rebuilt:
        first = min(i for i, _, n in runs if n)
        report.add("repairable", "descriptors-recoverable",
                   f"{path}{rebuilt} emptied page descriptors can be rebuilt from the page data",
                   r.desc_offset + first * PAGE_DESC_SIZE)
    return True


def report_rematch(found: Rematch, report: Report, path: str = "") -> None:
    """The finding for a zeroed part of the 2nd bitmap, and what repair makes of it."""
    (a, b), n = found.span, found.descriptors
    head = (f"{path}the 2nd bitmap lost {found.missing} set bits in PFNs {pfn_range_text(a, b)} (the "
            f"page data starts {found.missing} descriptors after the table it declares): ")
    report.facts["bitmap2"] = found.as_dict()
    if not found.unmatched:
        report.add("repairable", "bitmap2-damaged",
                   f"{head}all {n} page descriptors there are matched to their pages ({found.by_data} "
                   "proven by their data)", found.offset)
        return
    places = sum(z - y for y, z in found.ambiguous)
    report.add("data-loss", "bitmap2-damaged",
               f"{head}{found.matched} of the {n} page descriptors there are matched to their pages "
               f"({found.by_data} proven by their data); {found.unmatched} are not: their pages are "
               f"{found.unmatched} of the {places} pages of {len(found.ambiguous)} PFN ranges "
               "(facts.bitmap2.ambiguous_pfn_ranges)", found.offset, found.lost)


def _validate_descriptors(r: KdumpReader, report: Report, path: str) -> None:
    """Every descriptor: lost pages, invalid descriptors, page data that overlaps."""
    h = r.header
    lost_pfns: list[np.ndarray] = []
    corrupt_pfns: list[np.ndarray] = []
    first_bad = None
    first_empty = None  # file offset of the first all-zero descriptor
    overlap_at = None
    last_end = -1
    data_end = -1
    size = r.source.size
    zero_page = None
    for pfns, descs, pos in _iter_descs(r):
        offs = descs["offset"].astype(np.int64)
        sizes = descs["size"].astype(np.int64)
        flags = descs["flags"].astype(np.int64)
        lost = (offs == 0) | (pos + PAGE_DESC_SIZE > size)
        bits = flags & CODEC_FLAG_MASK
        bad = ~lost & (((flags & ~CODEC_FLAG_MASK) != 0) | ((bits & (bits - 1)) != 0) | (sizes == 0)
                       | (sizes > r.block_size) | ((bits == 0) & (sizes != r.block_size))
                       | (offs < r.data_offset))
        past = ~lost & ~bad & (offs + sizes > size)
        # data cut off by the end of the file (it starts before the end, or right where the
        # data of the pages before it ends) is lost; an offset that jumps past the end is corrupt
        ends = np.where(~lost & ~bad & (offs != (zero_page if zero_page is not None else -1)),
                        offs + sizes, -1)
        prev_end = np.maximum.accumulate(np.concatenate(([data_end], ends)))[:-1]
        data_end = int(max(data_end, ends.max(initial=-1)))
        cut = past & ((offs <= size) | (offs == prev_end))
        bad |= past & ~cut
        lost |= cut
        empty = np.flatnonzero(offs == 0)
        if first_empty is None and empty.size:
            first_empty = int(pos[empty[0]])
        lost_pfns.append(pfns[lost])
        corrupt_pfns.append(pfns[bad])
        if first_bad is None and bad.any():
            first_bad = int(pos[np.flatnonzero(bad)[0]])
        ok = ~lost & ~bad
        if zero_page is None and ok.any():
            zero_page = int(offs[ok].min())
        seq = ok & (offs != zero_page)
        o, z = offs[seq], sizes[seq]
        if overlap_at is None and len(o):
            ends_before = np.concatenate(([last_end], (o + z)[:-1]))
            clash = np.flatnonzero(o < np.maximum.accumulate(ends_before)) if len(o) > 1 else []
            if (len(o) and o[0] < last_end) or len(clash):
                overlap_at = int(o[clash[0]] if len(clash) else o[0])
        if len(o):
            last_end = max(last_end, int((o + z).max()))
    lost_all = np.concatenate(lost_pfns) if lost_pfns else np.empty(0, np.int64)
    corrupt_all = np.concatenate(corrupt_pfns) if corrupt_pfns else np.empty(0, np.int64)
    if len(lost_all):
        incomplete = bool(h.status & DUMP_DH_COMPRESSED_INCOMPLETE)
        if incomplete:  # a consistent dump that was cut short when it was made
            report.add("notice", "incomplete",
                       f"{path}the dump is marked incomplete: {len(lost_all)} pages were not "
                       "written", 424, ranges_of(lost_all))
        else:
            report.add("data-loss", "pages-lost",
                       f"{path}{len(lost_all)} pages have no data in the file (empty descriptors "
                       "or data past the end); the dump is not marked incomplete",
                       first_empty if first_empty is not None else size, ranges_of(lost_all))
        if not incomplete:
            report.add("repairable", "incomplete-flag",
                       f"{path}lost pages but the incomplete flag (status 0x8) is not set", 424)
    if len(corrupt_all):
        report.add("data-loss", "bad-descriptors",
                   f"{path}{len(corrupt_all)} page descriptors are invalid (flags, size or offset)",
                   first_bad, ranges_of(corrupt_all))
    if overlap_at is not None:
        report.add("data-loss", "data-overlap",
                   f"{path}page data overlaps or goes backwards at file offset {overlap_at:#x}",
                   overlap_at)


def _iter_descs(r: KdumpReader) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(pfns, descriptors, descriptor file offsets) in PFN order, window by window."""
    rank = 0
    for start, count in r.windows(1 << 16):
        _, present = r.bitmaps(start, count)
        idx = np.flatnonzero(present)
        if not idx.size:
            continue
        descs = r._descs(rank, idx.size)
        pos = r.desc_offset + (rank + np.arange(idx.size, dtype=np.int64)) * PAGE_DESC_SIZE
        yield idx.astype(np.int64) + start, descs, pos
        rank += idx.size


# --- ELF ----------------------------------------------------------------------------------

def validate_elf(r: ElfReader, report: Report) -> None:
    """Findings about an ELF dump's headers and segments (a rebuilt ``e_phnum``, the
    incomplete flag, implausible or missing segment data), added to ``report``.
    """
    size, ps = r.source.size, r.page_size
    if r.rebuilt_phnum:
        report.add("repairable", "elf-phnum",
                   f"e_phnum is 0, but the program header table at e_phoff {r.ehdr.e_phoff:#x} holds "
                   f"{r.rebuilt_phnum} entries (a PT_NOTE, then PT_LOADs up to the segment data)",
                   0x38 if r.elf_class == 2 else 0x2C)
    if r.ehdr.e_flags & 1:
        report.add("notice", "elf-incomplete", "e_flags says the dump is incomplete (bit 0)",
                   0x30 if r.elf_class == 2 else 0x24)
    implausible = set(r.info.details.get("implausible_filesz", []))  # type: ignore[call-overload]
    for seg in r.segments if implausible else []:
        if seg.index in implausible:
            report.add("data-loss", "elf-bad-filesz",
                       f"PT_LOAD (program header {seg.index}) p_filesz runs far past the end of "
                       "the file; only the data in the file is used", r.field_offset(seg, "p_filesz"))
    kind, bad = r.out_of_file()
    if kind:  # pages no other segment provides are lost
        lost_pfns = [np.flatnonzero(r.lost_mask(s, c)) + s for s, c in r.data_windows()]
        lost = ranges_of(np.concatenate(lost_pfns)) if lost_pfns else []
    if kind == "truncated":
        report.add("data-loss", "elf-truncated",
                   f"the file is truncated: {len(bad)} PT_LOAD segments end past its end "
                   f"(the first at program header {bad[0].index})", size, lost)
    for seg in bad if kind == "bad-offset" else []:
        first, end = seg.paddr // ps, -(-(seg.paddr + seg.filesz) // ps)
        report.add("data-loss", "elf-bad-offset",
                   f"PT_LOAD (program header {seg.index}, paddr {seg.paddr:#x}) p_offset "
                   f"{seg.offset:#x} points past the end of the file", r.field_offset(seg, "p_offset"),
                   [(max(a, first), min(b, end)) for a, b in lost if a < end and b > first])
    spans = sorted((seg.offset, seg.offset + seg.filesz, seg.index) for seg in r.segments if seg.filesz)
    shared = [(b0, ai, bi) for (_, a1, ai), (b0, _, bi) in zip(spans, spans[1:], strict=False) if b0 < a1]
    for b0, ai, bi in shared[:MAX_LISTED]:
        report.add("notice", "elf-file-overlap", f"PT_LOAD {ai} and {bi} share file bytes at {b0:#x}", b0)
    if len(shared) > MAX_LISTED:  # one line for the rest: a crafted file may have a million
        report.add("notice", "elf-file-overlap", f"{len(shared) - MAX_LISTED} more pairs of PT_LOADs "
                   "share file bytes", shared[MAX_LISTED][0])


def validate_hyperv(r: HyperVReader, report: Report) -> None:
    """What the tolerant Hyper-V reader skipped (CRC, structure, truncation) and the pages lost."""
    for exc in r.store.damage:
        report.add("repairable", "hyperv-damage", exc.message
                   + (f" (expected {exc.expected}, got {exc.got})" if exc.got is not None else ""),
                   exc.offset)
    pfns = [m for m in r.lost_pfns() if len(m)]
    if pfns:
        lost = ranges_of(np.concatenate(pfns))
        report.add("data-loss", "hyperv-lost-pages",
                   "guest RAM pages whose RamBlock is missing or cut off", None, lost)
    if r.store.replay_log.get("entries"):
        report.add("notice", "hyperv-replay-log",
                   f"replay log holds {r.store.replay_log['entries']} uncommitted entries (not applied)",
                   int(str(r.store.replay_log["offset"])))


#: The ``fsck`` checks of each format, by its registry name (:func:`kdumptool.formats.entry_of`;
#: a split set's are its parts'): here, not on the format's entry, because they use the repair
#: tools and page classes, which sit above :mod:`kdumptool.formats`.
FORMAT_CHECKS: dict[str, Callable[[Any, Report], None]] = {
    "kdump": validate_kdump,
    "elf": validate_elf,
    "hyperv": validate_hyperv,
}


# --- VMCOREINFO ---------------------------------------------------------------------------

def validate_vmcoreinfo(reader: DumpReader, report: Report) -> None:
    """Findings about VMCOREINFO (missing, without OSRELEASE, a ``PAGESIZE`` other than the
    dump's, ...), added to ``report``.
    """
    info = reader.info
    vmci = info.vmcoreinfo
    if vmci is None:
        report.add("repairable", "no-vmcoreinfo",
                   "the dump has no VMCOREINFO (repair adds one with -i FILE, or the copy "
                   "found in memory)")
        return
    if not vmci.osrelease:
        report.add("repairable", "vmcoreinfo-no-osrelease", "VMCOREINFO has no OSRELEASE")
    if vmci.page_size and vmci.page_size != info.page_size:
        report.add("notice", "vmcoreinfo-pagesize",
                   f"VMCOREINFO PAGESIZE {vmci.page_size} differs from the dump's {info.page_size}")
    uts = info.utsname
    if info.format in ("kdump", "diskdump") and uts is not None:
        if not uts.release:
            report.add("repairable", "empty-utsname",
                       "the header's utsname is empty (as QEMU writes it): drgn refuses such files; "
                       "repair fills it from memory and VMCOREINFO", 12)
        elif vmci.osrelease and uts.release != vmci.osrelease:
            report.add("notice", "utsname-mismatch",
                       f"header utsname release {quote(uts.release)} differs from OSRELEASE "
                       f"{quote(vmci.osrelease)}", 12 + 2 * 65)
    check_uts_in_memory(reader, report)
    build_id = vmci.build_id
    if build_id is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{2,64}", build_id):
            report.add("notice", "build-id", f"BUILD-ID {quote(build_id, 80)} is not hexadecimal")
        elif vmci.osrelease and known_broken_build_id(vmci.osrelease):
            report.add("notice", "build-id-broken",
                       f"kernel {vmci.osrelease} is known to report a wrong BUILD-ID in VMCOREINFO")


def check_uts_in_memory(reader: DumpReader, report: Report) -> None:
    """OSRELEASE must be what ``init_uts_ns`` holds in memory (else VMCOREINFO is not this kernel's)."""
    info, vmci = reader.info, reader.info.vmcoreinfo
    if vmci is None or not vmci.has("SYMBOL(init_uts_ns)") or info.machine not in ("x86_64", "aarch64"):
        return
    try:
        vaddr = vmci.symbol("init_uts_ns") + (vmci.offset("uts_namespace.name")
                                              if vmci.has("OFFSET(uts_namespace.name)") else 0)
        paddr = kernel_image_to_phys(vmci, info.machine, vaddr, info.phys_base)
        raw = reader.read(paddr + 2 * 65, 65)
    except (KdumpToolError, ValueError):
        return  # the page is not in the dump: nothing to compare
    release = raw.split(b"\0", 1)[0]
    if release.decode("latin-1") != vmci.osrelease:
        report.add("notice", "vmcoreinfo-mismatch",
                   f"init_uts_ns in memory says release {quote(release)}, VMCOREINFO says "
                   f"{quote(vmci.osrelease)}: VMCOREINFO may belong to another kernel (fabricated)")


# --- pages (--deep) -----------------------------------------------------------------------

def _decode_chunk(reader: DumpReader, windows: list[tuple[int, int]],
                  write: object) -> tuple[int, dict[int, str]]:
    """Pages with data, and the pages that do not decode, of a chunk of windows."""
    read = 0
    corrupt: dict[int, str] = {}
    for start, count in windows:
        batch = reader.read_batch(start, count)
        read += int(batch.present.sum())
        corrupt.update(batch.corrupt)
    return read, corrupt


def validate_pages(reader: DumpReader, report: Report) -> None:
    """Decode every page; report pages that do not decode to exactly one page."""
    from functools import partial

    from kdumptool.parallel import ChunkRunner, chunked_windows, default_workers

    corrupt: list[int] = []
    first_msg = None
    read = 0
    chunks = chunked_windows(reader.data_windows(), reader.window_pages,
                             weight=lambda start, count: int(reader.bitmaps(start, count)[1].sum()))
    # the chunks decode on every core; they write nothing
    runner = ChunkRunner(partial(_decode_chunk, reader), chunks, default_workers(), None, 0)
    for (present, bad), _, _ in runner.results():
        read += present
        if bad:
            corrupt.extend(bad)
            first_msg = first_msg or next(iter(bad.values()))
    report.facts["pages_decoded"] = read
    known = {p for f in report.findings if f.code == "bad-descriptors" for a, b in f.lost
             for p in range(a, b)}
    new = sorted(set(corrupt) - known)
    if new:
        entry = entry_of(reader)
        offset = None
        if entry is not None and entry.page_data_offset is not None:
            offset = entry.page_data_offset(reader, new[0])
        report.add("data-loss", "corrupt-pages",
                   f"{len(new)} pages do not decode (first: pfn {new[0]:#x}: {first_msg})", offset,
                   merge_ranges(ranges_of(np.array(new, dtype=np.int64))))
