"""The typed results of the library commands (:mod:`kdumptool.api`): frozen dataclasses a
script reads by attribute, and the command line prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Retry:
    """A dump level of a list (``-d 11,31``) given up because its output did not fit.

    :ivar level: the level given up
    :ivar reason: the error that ended it (a full disk, a file size limit, the ``-L`` limit)
    """

    level: int
    reason: str


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`kdumptool.convert` (or ``filter``, ``scrub``) wrote, or with ``dry_run``
    would write.

    :ivar inputs: the input (several: the parts of one split set)
    :ivar output: the file written, ``"-"`` for standard output, None for a dry run
    :ivar format: the writer's name (:data:`kdumptool.formats.writers.WRITERS`)
    :ivar kind: how messages name the output (``ELF``, ``kdump-compressed (lzo)``)
    :ivar codec: the page codec's name, or None
    :ivar dump_level: the level written: the one of a list that fit, with a scrub's bits
    :ivar retried: the levels of a list given up before it, in order
    :ivar pages: pages written with data (ELF: a page in two PT_LOADs counts twice)
    :ivar zero: zero pages (kdump: written once and shared; None when the writer does not count)
    :ivar lost: pages left out: unreadable, or after the size limit was reached
    :ivar cut: the size limit (``-L``) stopped the writing: the dump is incomplete, marked so
    :ivar in_file: ELF: the file's pages counted once per PFN (None for kdump)
    :ivar copies: ELF: the file's pages counted once per PT_LOAD (None for kdump)
    :ivar size_limit: the ``-L`` limit in bytes, or None
    :ivar page_classes: pages per class excluded (:func:`kdumptool.report.exclusion_report`);
        None when not asked for, or at dump level 0 or 1 after a write
    :ivar scrub: the resolved scrub (:class:`kdumptool.scrub.ScrubSetup`), or None
    :ivar scrub_outcome: what the output holds of the scrub's plan, or None
    :ivar counts: the writer's own counts, as it returned them
    """

    inputs: tuple[str, ...]
    output: str | None
    format: str
    kind: str
    codec: str | None
    flattened: bool = False
    stream_compress: str | None = None
    dump_level: int = 0
    retried: tuple[Retry, ...] = ()
    pages: int = 0
    zero: int | None = None
    lost: int = 0
    cut: bool = False
    in_file: int | None = None
    copies: int | None = None
    size_limit: int | None = None
    seconds: float = 0.0
    dry_run: bool = False
    page_classes: Mapping[str, Any] | None = None
    scrub: Any = None
    scrub_outcome: Any = None
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def pages_once(self) -> int:
        """Pages the output holds counted as ``info`` counts them (once per PFN)."""
        return self.in_file if self.in_file is not None and not self.cut else self.pages

    @property
    def incomplete(self) -> bool:
        """Whether pages were left out (the output is marked incomplete)."""
        return self.cut or self.lost > 0


@dataclass(frozen=True)
class SplitPart:
    """One file of a split set.

    :ivar path: the file
    :ivar pfns: its PFN range ``[start, end)``
    :ivar pages: pages written into it
    :ivar zero: its zero pages
    """

    path: str
    pfns: tuple[int, int]
    pages: int = 0
    zero: int = 0


@dataclass(frozen=True)
class SplitResult:
    """What :func:`kdumptool.split` wrote (or with ``dry_run`` would write).

    :ivar input: the dump split
    :ivar parts: the files, in order (with ``dry_run``: their PFN ranges, no pages)
    :ivar kind: how messages name the parts (``kdump-compressed (lzo)``)
    :ivar codec: the page codec's name, or None
    :ivar dump_level: the level written (see :class:`ConvertResult`)
    :ivar retried: the levels of a list given up before it
    :ivar dask: the scheduler the parts were written on, or None (this machine)
    :ivar split_error: with ``dry_run``: why the parts could not be planned (a bad block size)
    """

    input: str
    parts: tuple[SplitPart, ...]
    kind: str
    codec: str | None
    dump_level: int = 0
    retried: tuple[Retry, ...] = ()
    seconds: float = 0.0
    dry_run: bool = False
    dask: str | None = None
    page_classes: Mapping[str, Any] | None = None
    scrub: Any = None
    scrub_outcome: Any = None
    split_error: Exception | None = None


@dataclass(frozen=True)
class ReassembleResult:
    """What :func:`kdumptool.reassemble` wrote.

    :ivar parts: the parts merged
    :ivar output: the file written
    :ivar pages: page descriptors written
    :ivar zero: pages sharing the zero page
    :ivar lost: all-zero descriptors (the output is then marked incomplete)
    """

    parts: tuple[str, ...]
    output: str
    pages: int
    zero: int = 0
    lost: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class RepairResult:
    """What :func:`kdumptool.repair` wrote.

    :ivar output: the file written
    :ivar format: how messages name it (``ELF``, ``kdump-compressed (zlib)``)
    :ivar exit_code: 0 nothing lost, 1 pages lost, zero-filled or left out
    :ivar findings: what ``fsck`` found in the input (its ``--json`` records)
    :ivar actions: what was done, one line each
    :ivar pages_written: pages of the output (once per PFN)
    :ivar pages_lost: pages lost (missing or zero-filled) or left out
    :ivar lost_pfn_ranges: ranges marked missing
    :ivar zero_filled_pfn_ranges: ranges written as zeros (``zero_fill``)
    :ivar ambiguous_pfn_ranges: ranges holding the pages of unmatched descriptors
    :ivar unmatched_descriptors: page descriptors that could not be matched to data
    :ivar report: the whole report, as ``repair --json`` prints it
    """

    output: str
    format: str
    exit_code: int
    findings: tuple[Mapping[str, Any], ...]
    actions: tuple[str, ...]
    pages_written: int
    pages_lost: int
    lost_pfn_ranges: tuple[tuple[int, int], ...]
    zero_filled_pfn_ranges: tuple[tuple[int, int], ...]
    ambiguous_pfn_ranges: tuple[tuple[int, int], ...]
    unmatched_descriptors: int
    report: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def of(cls, report: Mapping[str, Any]) -> RepairResult:
        """The result of the report :func:`kdumptool.repair.salvage.repair` returns."""
        def ranges(key: str) -> tuple[tuple[int, int], ...]:
            return tuple((int(a), int(b)) for a, b in report[key])

        return cls(output=report["output"], format=report["format"], exit_code=report["exit_code"],
                   findings=tuple(report["input"]["findings"]), actions=tuple(report["actions"]),
                   pages_written=report["pages_written"], pages_lost=report["pages_lost"],
                   lost_pfn_ranges=ranges("lost_pfn_ranges"),
                   zero_filled_pfn_ranges=ranges("zero_filled_pfn_ranges"),
                   ambiguous_pfn_ranges=ranges("ambiguous_pfn_ranges"),
                   unmatched_descriptors=report["unmatched_descriptors"], report=report)


@dataclass(frozen=True)
class InfoResult:
    """What :func:`kdumptool.info` found: the dump's summary (``info --json``) and, when asked
    for, its pages per class.

    :ivar summary: format, kernel, architecture, pages, notes... (:mod:`kdumptool.summary`)
    :ivar page_classes: pages per class at dump level 31, or None
    """

    summary: Mapping[str, Any]
    page_classes: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``info --json`` document."""
        doc = dict(self.summary)
        if self.page_classes is not None:
            doc["page_classes"] = self.page_classes
        return doc


@dataclass(frozen=True)
class WalkStep:
    """One level of a page-table walk: its name, the index used, the table and the entry."""

    level: str
    index: int
    table: int
    entry: int


@dataclass(frozen=True)
class VtopResult:
    """A kernel virtual address translated (:func:`kdumptool.vtop`).

    :ivar form: the paging form (``x86_64 4-level``...)
    :ivar root: the top page table's physical address
    :ivar image_paddr: the physical address by the kernel image's offset (no page tables),
        None when the address is not in the kernel image
    :ivar steps: the walk, top level first
    :ivar paddr: the physical address (None: the walk failed)
    :ivar page_size: the size of the page mapping it (bytes; None: the walk failed)
    """

    vaddr: int
    paddr: int | None
    form: str
    root: int
    image_paddr: int | None
    steps: tuple[WalkStep, ...]
    page_size: int | None
