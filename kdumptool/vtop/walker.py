"""One generic page-table walker; paging forms are data.

A :class:`PagingForm` lists the levels from the top (name, index shift, index bits)
and the entry size; an architecture supplies a :class:`PteDecoder` that says
whether an entry is present, whether it maps a large page at that level, and the
physical address it holds. The walker does the index arithmetic, caches page-table
pages, and reports every step, so ``kdumptool vtop`` can print the walk and a
failed translation names the level, the index and the entry.

Models: volatility3 ``layers/intel.py``, libkdumpfile
``include/libkdumpfile/addrxlat.h.in`` (paging forms as data).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kdumptool.errors import KdumpToolError, NonCanonicalAddressError, TranslationError


@dataclass(frozen=True)
class Level:
    """One level of a paging form: its name and which virtual-address bits index it."""

    name: str
    shift: int  # lowest virtual-address bit of this level's index
    bits: int  # index width


@dataclass(frozen=True)
class PagingForm:
    """Levels from the top; ``page_shift`` is the base page size."""

    name: str
    levels: tuple[Level, ...]
    page_shift: int = 12
    entry_size: int = 8
    sign_extended: bool = False  # x86_64: an address's upper bits copy its top translated bit

    @property
    def va_bits(self) -> int:
        """Address bits the levels translate (48 for 4-level x86_64, 57 for 5-level)."""
        return self.levels[0].shift + self.levels[0].bits

    def canonical(self, vaddr: int) -> bool:
        """Whether ``vaddr`` is a 64-bit address this form can hold (always, unless
        :attr:`sign_extended`: then bits 63 down to the top translated bit are all equal)."""
        if not 0 <= vaddr < 1 << 64:
            return False
        upper = vaddr >> (self.va_bits - 1)
        return not self.sign_extended or upper in (0, (1 << (65 - self.va_bits)) - 1)


@dataclass(frozen=True)
class PteDecoder:
    """Architecture rules for one entry at a given level index (0 = top)."""

    present: Callable[[int, int], bool]
    leaf: Callable[[int, int], bool]  # maps a (large) page here, not a next table
    address: Callable[[int, int], int]  # physical address of the next table or the page frame


@dataclass
class Step:
    """One level of a walk: the table read, the index used and the entry found there."""

    level: str
    index: int
    table: int  # physical address of the table
    entry: int


@dataclass
class Walk:
    """The result of one translation."""

    vaddr: int
    paddr: int
    page_size: int  # size of the mapping that covers vaddr
    steps: list[Step] = field(default_factory=list)


class Walker:
    """Translate virtual addresses with ``read_phys(paddr, size) -> bytes`` and a top table.

    :param form: the paging form
    :param decoder: the architecture's entry rules
    :param root: physical address of the top-level table
    :param read_phys: reads physical memory (raises on missing pages)
    :param cache_tables: page-table pages kept in memory
    :param frame_map: maps an address held in an entry (next table or page frame) to a
        physical address, one base page at a time (Xen PV: machine to pseudo-physical);
        None when entries hold physical addresses
    """

    def __init__(self, form: PagingForm, decoder: PteDecoder, root: int,
                 read_phys: Callable[[int, int], bytes], *, cache_tables: int = 256,
                 frame_map: Callable[[int], int] | None = None) -> None:
        self.form, self.decoder, self.root, self.read_phys = form, decoder, root, read_phys
        self.frame_map = frame_map
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = cache_tables

    def _table(self, paddr: int, entries: int) -> np.ndarray:
        table = self._cache.get(paddr)
        if table is None:
            raw = self.read_phys(paddr, entries * self.form.entry_size)
            table = np.frombuffer(raw, dtype="<u8" if self.form.entry_size == 8 else "<u4")
            self._cache[paddr] = table
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(paddr)
        return table

    def walk(self, vaddr: int) -> Walk:
        """Translate ``vaddr``, recording every level.

        :raises NonCanonicalAddressError: the form cannot hold ``vaddr``
        :raises TranslationError: an entry is not present (or a table cannot be read)
        """
        if not self.form.canonical(vaddr):
            raise NonCanonicalAddressError(vaddr, self.form.name, self.form.va_bits)
        table = self.root
        steps: list[Step] = []
        for depth, lvl in enumerate(self.form.levels):
            index = (vaddr >> lvl.shift) & ((1 << lvl.bits) - 1)
            try:
                entry = int(self._table(table, 1 << lvl.bits)[index])
            except KdumpToolError as exc:
                raise TranslationError(vaddr, lvl.name, index, 0, table,
                                       f"cannot be read: {exc}") from None
            steps.append(Step(lvl.name, index, table, entry))
            if not self.decoder.present(entry, depth):
                raise TranslationError(vaddr, lvl.name, index, entry, table, "is not present")
            last = depth == len(self.form.levels) - 1
            if last or self.decoder.leaf(entry, depth):
                size = 1 << lvl.shift
                base = self.decoder.address(entry, depth) & ~(size - 1)
                if self.frame_map is None:
                    return Walk(vaddr, base | (vaddr & (size - 1)), size, steps)
                page = 1 << self.form.page_shift
                held = base | (vaddr & (size - 1) & ~(page - 1))
                paddr = self._mapped(held, vaddr, lvl.name, index, entry, table)
                return Walk(vaddr, paddr | (vaddr & (page - 1)), page, steps)
            table = self.decoder.address(entry, depth)
            if self.frame_map is not None:
                table = self._mapped(table, vaddr, lvl.name, index, entry, steps[-1].table)
        raise AssertionError("unreachable")

    def _mapped(self, held: int, vaddr: int, level: str, index: int, entry: int, table: int) -> int:
        assert self.frame_map is not None
        try:
            return self.frame_map(held)
        except KdumpToolError as exc:
            raise TranslationError(vaddr, level, index, entry, table, f"names {exc}") from None

    def translate(self, vaddr: int) -> int:
        """The physical address of ``vaddr``.

        :raises NonCanonicalAddressError: the form cannot hold ``vaddr``
        :raises TranslationError: an entry on the way is not present
        """
        return self.walk(vaddr).paddr

    def ranges(self, vaddr: int, size: int) -> list[tuple[int, int]]:
        """Physical ``(paddr, length)`` pieces of the virtual range, merged where contiguous."""
        out: list[tuple[int, int]] = []
        end = vaddr + size
        while vaddr < end:
            w = self.walk(vaddr)
            n = min(end - vaddr, w.page_size - (vaddr & (w.page_size - 1)))
            if out and out[-1][0] + out[-1][1] == w.paddr:
                out[-1] = (out[-1][0], out[-1][1] + n)
            else:
                out.append((w.paddr, n))
            vaddr += n
        return out
