"""Where the bytes to erase are, page by page, and the reader that erases them as pages pass.

Spec: SPEC.md §19.4. An :class:`ErasePlan` turns :class:`~kdumptool.scrub.resolve.EraseTarget`
virtual ranges into physical pieces (page tables walked, one piece per page touched), kept
as NumPy columns sorted by PFN. :class:`ScrubReader` wraps the source reader: every batch
the pipeline reads gets its pieces overwritten (``X``, or zeros for ``nullify``) on a copy
of the window that holds them; every other page passes untouched. The writers need no
change, and memory holds the plan, never the dump.

:meth:`ErasePlan.outcome` answers, from metadata only, which pieces land in the output
(pages a dump level keeps): the bytes and pages touched and the ERASEINFO text, in
makedumpfile's form: for each erase command in order, one line per range erased,
``erase EXPR size N`` (``N`` the bytes erased in the output) or ``erase EXPR nullify``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kdumptool.dump import METADATA_WINDOW, DumpReader, PageBatch
from kdumptool.errors import KdumpToolError
from kdumptool.pipeline import Selection
from kdumptool.scrub.resolve import EraseTarget

#: makedumpfile's erase byte (``'X'``); ``nullify`` writes zeros.
ERASE_BYTE = 0x58


@dataclass
class Outcome:
    """What the output holds of a plan.

    :ivar in_output: per piece, whether its page is in the output
    :ivar bytes: bytes overwritten in the output (overlaps counted once)
    :ivar pages: pages of the output with at least one byte overwritten
    :ivar eraseinfo: the ERASEINFO lines of this run
    """

    in_output: np.ndarray
    bytes: int
    pages: int
    eraseinfo: bytes
    target_bytes: list[int] = field(default_factory=list)


class ErasePlan:
    """The physical pieces of a list of targets.

    Targets that start at the same virtual address as an earlier one are merged into it (the
    longer size kept), as makedumpfile's ``insert_filter_info`` merges ranges that start at
    the same physical address.

    :param reader: the source (its page tables translate the addresses)
    :param targets: ranges to erase, in rule order
    """

    def __init__(self, reader: DumpReader, targets: list[EraseTarget]) -> None:
        from kdumptool.vtop import translator_for

        self.page_size = reader.page_size
        self.notes: list[str] = []
        merged: dict[int, int] = {}
        kept: list[EraseTarget] = []
        for t in targets:
            if t.vaddr in merged:
                i = merged[t.vaddr]
                if t.size > kept[i].size:
                    kept[i] = EraseTarget(t.vaddr, t.size, kept[i].nullify, kept[i].rule, kept[i].command,
                                          kept[i].origin)
                continue
            merged[t.vaddr] = len(kept)
            kept.append(t)
        self.targets = kept
        xlat = getattr(reader, "_translator", None) if kept else None
        if xlat is None and kept:
            xlat = translator_for(reader)
        rows: list[tuple[int, int, int, int]] = []  # (paddr, size, target, virtual offset)
        for i, t in enumerate(kept):
            for paddr, size, voff in self._pieces(xlat, t):
                rows.append((paddr, size, i, voff))
        ps = self.page_size
        arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
        order = np.lexsort((arr[:, 2], arr[:, 0] // ps)) if len(arr) else np.zeros(0, dtype=np.int64)
        arr = arr[order]
        self.paddr, self.size, self.target, self.voffset = (arr[:, k].copy() for k in range(4))
        self.pfn = self.paddr // ps
        self.fill = np.where(np.array([kept[i].nullify for i in self.target.tolist()], dtype=bool),
                             0, ERASE_BYTE).astype(np.uint8)

    def _pieces(self, xlat: object, t: EraseTarget) -> list[tuple[int, int, int]]:
        """``(paddr, size, offset in the target)`` of each page the target touches; pages that
        do not translate are skipped and noted."""
        ps = self.page_size
        out: list[tuple[int, int, int]] = []
        off = 0
        missing = 0
        while off < t.size:
            n = min(t.size - off, ps - ((t.vaddr + off) % ps))
            try:
                for paddr, size in xlat.ranges(t.vaddr + off, n):  # type: ignore[attr-defined]
                    pos = 0
                    while pos < size:  # one piece per physical page
                        k = min(size - pos, ps - ((paddr + pos) % ps))
                        out.append((paddr + pos, k, off + pos))
                        pos += k
            except KdumpToolError:
                missing += n
            off += n
        if missing:
            self.notes.append(f"{t.origin}: {t.rule} at {t.vaddr:#x}: {missing} of {t.size} bytes "
                              "are at addresses the page tables do not map in this dump: not erased")
        return out

    def __len__(self) -> int:
        return len(self.paddr)

    def pieces_of(self, index: int) -> list[tuple[int, int]]:
        """``(paddr, size)`` pieces of target ``index``, in virtual order."""
        rows = np.flatnonzero(self.target == index)
        rows = rows[np.argsort(self.voffset[rows], kind="stable")]
        return list(zip(self.paddr[rows].tolist(), self.size[rows].tolist(), strict=True))

    def apply(self, batch: PageBatch) -> PageBatch:
        """The batch with its pieces erased (a new data array; the batch is not changed)."""
        lo = int(np.searchsorted(self.pfn, batch.start, side="left"))
        hi = int(np.searchsorted(self.pfn, batch.start + batch.count, side="left"))
        if lo == hi:
            return batch
        rel = self.pfn[lo:hi] - batch.start
        here = batch.present[rel]
        if not here.any():
            return batch
        rows = (np.cumsum(batch.present) - 1)[rel]
        data = np.array(batch.data, copy=True)
        ps = self.page_size
        for row, paddr, size, fill in zip(rows[here].tolist(), self.paddr[lo:hi][here].tolist(),
                                          self.size[lo:hi][here].tolist(), self.fill[lo:hi][here].tolist(),
                                          strict=True):
            start = paddr % ps
            data[row, start:start + size] = fill
        return PageBatch(batch.start, batch.count, batch.ram, batch.present, data, batch.lost,
                         batch.corrupt)

    def outcome(self, selection: Selection) -> Outcome:
        """Which pieces the output holds (its pages kept by the selection, from metadata) and
        the resulting counts and ERASEINFO text."""
        n = len(self)
        in_output = np.zeros(n, dtype=bool)
        i = 0
        while i < n:
            wstart = int(self.pfn[i]) // METADATA_WINDOW * METADATA_WINDOW
            count = min(METADATA_WINDOW, selection.reader.max_pfn - wstart)
            j = int(np.searchsorted(self.pfn, wstart + count, side="left"))
            if count > 0:
                keep = selection.masks(wstart, count)[1]
                in_output[i:j] = keep[self.pfn[i:j] - wstart]
            i = max(j, i + 1)
        per_target = np.bincount(self.target[in_output], weights=self.size[in_output],
                                 minlength=len(self.targets)).astype(np.int64)
        return Outcome(in_output, _union_bytes(self.paddr[in_output], self.size[in_output]),
                       int(np.unique(self.pfn[in_output]).size),
                       eraseinfo_text(self.targets, per_target.tolist()), per_target.tolist())


def _union_bytes(paddr: np.ndarray, size: np.ndarray) -> int:
    """Bytes covered by the ranges, each byte once."""
    if not len(paddr):
        return 0
    order = np.argsort(paddr, kind="stable")
    total, cur_a, cur_b = 0, -1, -1
    for a, s in zip(paddr[order].tolist(), size[order].tolist(), strict=True):
        if a > cur_b:
            total += cur_b - cur_a if cur_a >= 0 else 0
            cur_a, cur_b = a, a + s
        else:
            cur_b = max(cur_b, a + s)
    return total + (cur_b - cur_a)


def eraseinfo_text(targets: list[EraseTarget], erased: list[int]) -> bytes:
    """makedumpfile's ERASEINFO lines (``write_eraseinfo``): commands in the order they first
    erased something, each with one line per target that has bytes in the output."""
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        if erased[i] > 0:
            groups.setdefault(t.command, []).append(i)
    lines = []
    for members in groups.values():
        for i in members:
            t = targets[i]
            lines.append(f"erase {t.rule} nullify\n" if t.nullify else f"erase {t.rule} size {erased[i]}\n")
    return "".join(lines).encode()


class ScrubReader(DumpReader):
    """The source dump as the scrubbed output holds it.

    Every batch has the plan's pieces erased. Pages in ``exclude`` (PFNs, sorted: the per-CPU
    free lists) read as not present. Once :attr:`selection` is set (the output's pages), a
    present page the selection leaves out reads as zeros: the ELF writer writes the excluded
    pages of short gaps inside a segment (as ``makedumpfile -E`` does), and a scrubbed file
    must not hold what its dump level excluded. Bitmaps, windows, regions, VMCOREINFO and
    notes are the source's.
    """

    def __init__(self, inner: DumpReader, plan: ErasePlan, exclude: np.ndarray | None = None) -> None:
        super().__init__(inner.source, strict=inner.strict)
        self.inner = inner
        self.plan = plan
        self.info = inner.info
        self.exclude = np.zeros(0, dtype=np.int64) if exclude is None else np.asarray(exclude, np.int64)
        self.selection: Selection | None = None

    def _excluded(self, start: int, count: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.exclude, [start, start + count])
        out = np.zeros(count, dtype=bool)
        out[self.exclude[lo:hi] - start] = True
        return out

    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The source's bitmaps, without the pages the plan excludes."""
        ram, present = self.inner.bitmaps(start, count)
        if len(self.exclude):
            present = present & ~self._excluded(start, count)
        return ram, present

    def data_windows(self, window: int | None = None):  # type: ignore[no-untyped-def]
        """The source's data windows."""
        return self.inner.data_windows(window)

    def ram_ranges(self) -> list[tuple[int, int]] | None:
        """The source's RAM ranges."""
        return self.inner.ram_ranges()

    def read_batch(self, start: int, count: int) -> PageBatch:
        """The source's pages with the plan applied (bytes erased); pages the selection drops are zeros."""
        batch = self.plan.apply(self.inner.read_batch(start, count))
        if self.selection is None:
            return batch
        drop = batch.present & ~self.selection.masks(start, count)[1]
        if not drop.any():
            return batch
        data = np.array(batch.data, copy=True)  # the source reader's array is never written
        data[(np.cumsum(batch.present) - 1)[drop]] = 0
        return PageBatch(batch.start, batch.count, batch.ram, batch.present, data, batch.lost,
                         batch.corrupt)

    def close(self) -> None:
        """Close the source."""
        self.inner.close()
