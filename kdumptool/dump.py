"""DumpInfo (a dump's metadata) and the reader interface every format implements.

A reader answers two kinds of questions, both by PFN window so that nothing
grows with the size of the dump:

* metadata only — :meth:`DumpReader.bitmaps`: which pages are RAM (the
  kdump "1st bitmap") and which have data in the file (the "2nd bitmap");
* data — :meth:`DumpReader.read_batch`: the contents of the present pages of
  a window as one NumPy array, plus which pages turned out lost or corrupt.

Random access (:meth:`DumpReader.read_page`, :meth:`DumpReader.read`) is built
on the same two calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from kdumptool.errors import CorruptPageError, PageNotPresentError
from kdumptool.transport.source import ByteSource
from kdumptool.vmcoreinfo import VmcoreInfo

#: Bytes of page data per window of the streaming pipeline.
WINDOW_BYTES = 4 << 20
#: Fewest pages per window (a dump of 256 KiB pages is not walked 16 pages at a time).
MIN_WINDOW_PAGES = 64
#: Pages per window of metadata-only passes (bitmaps: one byte per page in memory).
METADATA_WINDOW = 1 << 16


def pfn_range_text(start: int, end: int) -> str:
    """A PFN range as every command prints it: half-open, ``[0x100, 0x200)`` (PFNs 0x100 to
    0x1ff), the notation of the ``[start, end)`` pairs of ``--json``."""
    return f"[{start:#x}, {end:#x})"


def pfn_ranges_text(ranges: list[tuple[int, int]] | list[list[int]], limit: int = 20) -> str:
    """Up to ``limit`` ranges (:func:`pfn_range_text`), then how many more."""
    text = ", ".join(pfn_range_text(a, b) for a, b in ranges[:limit])
    return text + (f" (+{len(ranges) - limit} more)" if len(ranges) > limit else "")


@dataclass(frozen=True)
class Note:
    """One ELF note (also used for the note blob of kdump-compressed files)."""

    name: bytes  # without the terminating NUL
    type: int
    desc: bytes
    offset: int = 0  # file offset of the note header, for error messages


#: ``__NEW_UTS_LEN + 1`` (Linux ``include/uapi/linux/utsname.h``): the size of each field of
#: ``struct new_utsname``, NUL included.
UTS_LEN = 65
#: The fields of ``struct new_utsname``, in order.
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")


@dataclass(frozen=True)
class Utsname:
    """``struct new_utsname``: six 65-byte strings."""

    sysname: str = ""
    nodename: str = ""
    release: str = ""
    version: str = ""
    machine: str = ""
    domainname: str = ""

    def looks_sane(self) -> bool:
        """True if the fields look like a real kernel's (libkdumpfile ``uts_looks_sane``)."""
        return bool(self.sysname) and bool(self.release) and self.release[:1].isdigit()


@dataclass
class DumpInfo:
    """What a dump says about itself (no page contents)."""

    #: the format: "elf64", "elf32", "kdump", "diskdump", "xen-core", "xen-stream", "qemu-savevm",
    #: "hyperv-vmrs", "hyperv-vsv", "windows-dmp", "lime" (the registry: kdumptool.formats.READERS)
    format: str
    path: str
    endian: str  # "<" or ">"
    word_size: int  # 4 or 8
    machine: str  # "x86_64", "aarch64", ... ("" if unknown)
    page_size: int
    max_pfn: int  # one past the highest PFN the dump describes
    transport: str = "plain"  # "plain", "flattened", "stdin", "zstd stream[, flattened]", ...
    notes: list[Note] = field(default_factory=list)
    vmcoreinfo: VmcoreInfo | None = None
    utsname: Utsname | None = None
    timestamp: tuple[int, int] | None = None  # (seconds, microseconds)
    nr_cpus: int | None = None
    phys_base: int | None = None
    dump_level: int | None = None
    codecs: set[str] = field(default_factory=set)
    incomplete: bool = False
    header_version: int | None = None
    split: tuple[int, int] | None = None  # [start_pfn, end_pfn) of one part of a split set
    details: dict[str, object] = field(default_factory=dict)  # format-specific extras

    @property
    def release(self) -> str | None:
        """Kernel release: VMCOREINFO OSRELEASE, else a sane header utsname."""
        if self.vmcoreinfo is not None and self.vmcoreinfo.get("OSRELEASE"):
            return self.vmcoreinfo.get("OSRELEASE")
        if self.utsname is not None and self.utsname.looks_sane():
            return self.utsname.release
        return None


@dataclass
class PageBatch:
    """The pages of PFN window ``[start, start + count)``.

    ``data`` holds one row per *present* page, in PFN order. A page that the
    dump declares but that cannot be read (``lost``: cut off or never written;
    ``corrupt``: stored data does not decode) is not present. ``data`` is never written
    in place: in a worker process it may be a read-only view of the mapped file.
    """

    start: int
    count: int
    ram: np.ndarray  # bool[count]
    present: np.ndarray  # bool[count]
    data: np.ndarray  # uint8[present.sum(), page_size]
    lost: np.ndarray  # bool[count]
    corrupt: dict[int, str] = field(default_factory=dict)
    #: on request (``read_batch(..., keep_stored=flag)`` of a kdump reader): row of ``data`` ->
    #: the page's stored stream, compressed with that codec (the row holds the decoded page)
    stored: dict[int, bytes] = field(default_factory=dict)

    def pfns(self) -> np.ndarray:
        """PFNs of the rows of ``data``."""
        return self.start + np.flatnonzero(self.present)


class DumpReader:
    """Base of every format reader. Subclasses implement :meth:`bitmaps` and :meth:`read_batch`.

    :param source: the bytes of the image
    :param strict: raise on damage; when False, damaged pages are reported as lost or
        corrupt in each batch instead (the repair tools read this way)
    """

    info: DumpInfo
    #: Maps an address held in a page-table entry to the dump's physical address space, for
    #: dumps whose page tables hold other frames (a Xen PV guest's dump-core holds machine
    #: frames: :class:`~kdumptool.formats.xen_core.XenCoreReader`); None: the same space.
    frame_map: Callable[[int], int] | None = None

    def __init__(self, source: ByteSource, *, strict: bool = True) -> None:
        self.source = source
        self.strict = strict

    # --- to implement --------------------------------------------------------
    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ram, present)`` bool arrays for PFNs ``[start, start + count)``."""
        raise NotImplementedError

    def read_batch(self, start: int, count: int) -> PageBatch:
        """Read every present page of the window.

        :raises CorruptPageError: (strict) a page's stored data is damaged
        """
        raise NotImplementedError

    # --- derived -------------------------------------------------------------
    @property
    def page_size(self) -> int:
        """The dump's page size in bytes (``info.page_size``)."""
        return self.info.page_size

    @property
    def max_pfn(self) -> int:
        """One past the highest PFN the dump describes (``info.max_pfn``)."""
        return self.info.max_pfn

    @property
    def window_pages(self) -> int:
        """Pages per data window: :data:`WINDOW_BYTES` of pages, a multiple of 8, and at least
        64 pages (16 MiB at the largest page size, 256 KiB), so that a dump of huge pages
        is not walked in tiny steps."""
        return max(MIN_WINDOW_PAGES, (WINDOW_BYTES // self.page_size) // 8 * 8)

    def windows(self, window: int | None = None) -> Iterator[tuple[int, int]]:
        """``(start, count)`` windows covering ``[0, max_pfn)``; ``window`` must be a multiple of 8."""
        window = window or self.window_pages
        for start in range(0, self.max_pfn, window):
            yield start, min(window, self.max_pfn - start)

    def data_windows(self, window: int | None = None) -> Iterator[tuple[int, int]]:
        """Windows that may hold pages with data (formats narrow this down; see ELF)."""
        return self.windows(window)

    def ram_ranges(self) -> list[tuple[int, int]] | None:
        """Sorted PFN ranges ``[a, b)`` outside which no page is RAM, for formats that list
        their memory (ELF segments, memory runs); None where a bitmap in the file says it."""
        return None

    def ram_windows(self, window: int | None = None) -> Iterator[tuple[int, int]]:
        """Windows for metadata passes: those that may hold RAM, then always the last one (so
        writers reach the end of their tables). A dump that claims a huge address space but
        lists little memory is then walked in time proportional to what it lists."""
        window = window or self.window_pages
        ranges = self.ram_ranges()
        if ranges is None:
            yield from self.windows(window)
            return
        done = -1
        for a, b in ranges:
            for w in range(max(a // window, done + 1), (min(b, self.max_pfn) - 1) // window + 1):
                yield w * window, min(window, self.max_pfn - w * window)
                done = w
        last = (self.max_pfn - 1) // window
        if self.max_pfn and last > done:
            yield last * window, self.max_pfn - last * window

    def iter_batches(self, window: int | None = None) -> Iterator[PageBatch]:
        """Every window of the dump that may hold data, with its data."""
        for start, count in self.data_windows(window):
            yield self.read_batch(start, count)

    def count_pages(self) -> tuple[int, int]:
        """``(ram_pages, present_pages)`` over the whole dump (metadata only)."""
        ram = present = 0
        for start, count in self.ram_windows(1 << 20):
            r, p = self.bitmaps(start, count)
            ram += int(r.sum())
            present += int(p.sum())
        return ram, present

    def read_page(self, pfn: int) -> bytes:
        """The contents of one page.

        :raises PageNotPresentError: the page is a hole, excluded or lost
        :raises CorruptPageError: its stored data is damaged
        """
        if not 0 <= pfn < self.max_pfn:
            raise PageNotPresentError(pfn, "hole")
        batch = self.read_batch(pfn, 1)
        if batch.present[0]:
            return batch.data[0].tobytes()
        if pfn in batch.corrupt:
            raise CorruptPageError(batch.corrupt[pfn], pfn=pfn, path=self.info.path)
        if batch.lost[0]:
            raise PageNotPresentError(pfn, "lost")
        raise PageNotPresentError(pfn, "excluded" if batch.ram[0] else "hole")

    def read(self, paddr: int, size: int) -> bytes:
        """``size`` bytes of physical memory at ``paddr`` (may span pages).

        :raises PageNotPresentError: a page of the range is not in the dump
        :raises CorruptPageError: a page's stored data is damaged
        """
        if size <= 0:
            return b""
        ps = self.page_size
        first, last = paddr // ps, (paddr + size - 1) // ps
        if first == last:
            return self.read_page(first)[paddr % ps:paddr % ps + size]
        out = bytearray()
        for start in range(first, last + 1, self.window_pages):
            count = min(self.window_pages, last + 1 - start)
            if start + count > self.max_pfn:
                raise PageNotPresentError(max(start, self.max_pfn), "hole")
            batch = self.read_batch(start, count)
            if not batch.present.all():
                self.read_page(start + int(np.flatnonzero(~batch.present)[0]))  # raises
            out += batch.data.tobytes()
        skip = paddr % ps
        return bytes(out[skip:skip + size])

    def close(self) -> None:
        """Close the byte source (a reader over several files closes them all)."""
        self.source.close()

    def __enter__(self) -> DumpReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
