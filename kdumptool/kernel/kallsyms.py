"""The kernel's own symbol table (kallsyms), decoded from the dump's memory.

``scripts/kallsyms.c`` links these tables into the kernel's read-only data (SPEC.md,
"kallsyms"): ``kallsyms_num_syms`` (u32), ``kallsyms_names`` (per symbol a ULEB128
length of one or two bytes, then that many token indices; the first expanded character
is the ``nm`` type letter), ``kallsyms_token_table`` (256 NUL-terminated tokens),
``kallsyms_token_index`` (256 u16 offsets into the token table) and the addresses, as
``kallsyms_addresses`` (absolute pointers) or ``kallsyms_offsets`` (s32) decoded in one
of three ways.  Linux 6.0+ names the tables in VMCOREINFO
(``kernel/vmcore_info.c``); :mod:`kdumptool.kernel.kallsyms_scan` finds them without.

Every count and length read from memory is bounded (:data:`MAX_SYMS`, the two-byte
length limit, :data:`~kdumptool.kernel.memory.MAX_READ`), so a corrupt table is one
:class:`~kdumptool.errors.KernelDataError`, never a hang or a huge allocation.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from kdumptool.errors import KernelDataError, KernelDataMissingError
from kdumptool.kernel.memory import KernelMemory
from kdumptool.vmcoreinfo import VmcoreInfo

#: More symbols than any kernel has (a distribution kernel has ~200,000).
MAX_SYMS = 4_000_000
#: A name's compressed length is ULEB128 in at most two bytes (``scripts/kallsyms.c``).
MAX_NAME_TOKENS = 0x3FFF
#: Names are read from memory in pieces of this size.
_NAMES_CHUNK = 256 << 10

ENCODINGS = ("absolute", "base-relative", "absolute-percpu", "place-relative")


@dataclass(frozen=True)
class KallsymsLayout:
    """Where the kallsyms tables are (kernel virtual addresses) and who said so.

    ``offsets`` with ``relative_base`` is the base-relative form (``relative_base`` absent
    on Linux 7.0+, where offsets are place-relative); ``addresses`` the absolute form.
    """

    num_syms: int
    names: int
    token_table: int
    token_index: int
    offsets: int | None = None
    relative_base: int | None = None
    addresses: int | None = None
    source: str = "vmcoreinfo"


@dataclass(frozen=True)
class Symbol:
    """One kernel symbol: its address, ``nm`` type letter and name (module name for a
    module's symbol, else ``None``)."""

    address: int
    type: str
    name: str
    module: str | None = None

    def kallsyms_line(self) -> str:
        """The line ``/proc/kallsyms`` prints for this symbol."""
        tail = f"\t[{self.module}]" if self.module else ""
        return f"{self.address:016x} {self.type} {self.name}{tail}"


def layout_from_vmcoreinfo(vmci: VmcoreInfo) -> KallsymsLayout | None:
    """The tables' addresses from ``SYMBOL(kallsyms_*)`` lines (Linux 6.0+), or ``None``."""
    need = ("kallsyms_num_syms", "kallsyms_names", "kallsyms_token_table", "kallsyms_token_index")
    if not all(vmci.has(f"SYMBOL({n})") for n in need):
        return None

    def opt(name: str) -> int | None:
        return vmci.symbol(name) if vmci.has(f"SYMBOL({name})") else None

    offsets, addresses = opt("kallsyms_offsets"), opt("kallsyms_addresses")
    if offsets is None and addresses is None:
        return None
    return KallsymsLayout(*(vmci.symbol(n) for n in need), offsets=offsets,
                          relative_base=opt("kallsyms_relative_base"), addresses=addresses)


def read_tokens(mem: KernelMemory, table: int, index: int) -> list[bytes]:
    """The 256 tokens, from ``kallsyms_token_table`` and ``kallsyms_token_index``.

    :raises KernelDataError: the index is not increasing from 0 or a token is unterminated
    """
    raw_index = np.frombuffer(mem.read(index, 512, "kallsyms_token_index"), dtype=mem.endian + "u2")
    offs = raw_index.astype(np.int64)
    if offs[0] != 0 or np.any(np.diff(offs) <= 0):
        raise KernelDataError(f"{mem.path}: kallsyms_token_index at {index:#x}: offsets must rise "
                              f"from 0 (got {offs[:4].tolist()}...)")
    size = int(offs[-1]) + 256
    if index > table and index - table <= 0x10000:
        size = index - table
    blob = mem.read(table, size, "kallsyms_token_table")
    tokens = []
    for i, off in enumerate(offs.tolist()):
        end = blob.find(b"\0", off)
        if end < 0:
            raise KernelDataError(f"{mem.path}: kallsyms_token_table at {table + off:#x}: token {i} "
                                  "has no terminating NUL")
        tokens.append(blob[off:end])
    return tokens


class _Window:
    """A sliding view of ``kallsyms_names``: :meth:`need` makes bytes available."""

    def __init__(self, mem: KernelMemory, start: int) -> None:
        self.mem, self.start = mem, start
        self.buf = b""
        self.base = 0  # offset of buf[0] from ``start``

    def need(self, pos: int, n: int) -> int:
        """Make ``buf[pos:pos + n]`` readable; returns the new position of ``pos``.

        :raises KernelDataMissingError: the bytes are not in the dump
        """
        if pos + n <= len(self.buf):
            return pos
        self.buf, self.base = self.buf[pos:], self.base + pos
        want = max(n - len(self.buf), _NAMES_CHUNK)
        while True:
            try:
                self.buf += self.mem.read(self.start + self.base + len(self.buf), want,
                                          "kallsyms_names")
                return 0
            except KernelDataMissingError:  # the table may end near the end of a mapping
                if want <= n - len(self.buf):
                    raise
                want = max(want // 4, n - len(self.buf))


def read_names(mem: KernelMemory, names: int, count: int, tokens: list[bytes]) -> tuple[list[str], int]:
    """The ``count`` expanded names (type letter first) and the bytes they took.

    :raises KernelDataError: a zero length, or a name that expands to less than a type and
        one character
    """
    win = _Window(mem, names)
    pos = 0
    out: list[str] = []
    join = b"".join
    lookup = tokens.__getitem__
    for i in range(count):
        pos = win.need(pos, 1)
        first = win.buf[pos]
        if first & 0x80:
            pos = win.need(pos, 2)
            length, pos = (first & 0x7F) | (win.buf[pos + 1] << 7), pos + 2
        else:
            length, pos = first, pos + 1
        if length == 0:
            raise KernelDataError(f"{mem.path}: kallsyms_names at {names + win.base + pos:#x}: "
                                  f"symbol {i} has length 0")
        pos = win.need(pos, length)
        text = join(map(lookup, win.buf[pos:pos + length]))
        pos += length
        if len(text) < 2:
            raise KernelDataError(f"{mem.path}: kallsyms_names at {names + win.base + pos:#x}: "
                                  f"symbol {i} expands to {text!r}")
        out.append(text.decode("latin-1"))
    return out, win.base + pos


def read_address_words(mem: KernelMemory, layout: KallsymsLayout, count: int) -> np.ndarray:
    """The raw address table: u64 absolute addresses, or s32 offsets."""
    if layout.addresses is not None:
        raw = mem.read(layout.addresses, 8 * count, "kallsyms_addresses")
        return np.frombuffer(raw, dtype=mem.endian + "u8").copy()
    assert layout.offsets is not None
    raw = mem.read(layout.offsets, 4 * count, "kallsyms_offsets")
    return np.frombuffer(raw, dtype=mem.endian + "i4").astype(np.int64)


def decode_addresses(words: np.ndarray, encoding: str, *, relative_base: int | None,
                     offsets_addr: int | None) -> np.ndarray:
    """Addresses (uint64) of the table under one of :data:`ENCODINGS`
    (``kernel/kallsyms.c`` ``kallsyms_sym_address``)."""
    if encoding == "absolute":
        return words.astype(np.uint64)
    mask = (1 << 64) - 1
    if encoding == "place-relative":
        assert offsets_addr is not None
        where = np.uint64(offsets_addr) + np.arange(len(words), dtype=np.uint64) * np.uint64(4)
        return where + words.astype(np.uint64)  # wraps mod 2**64: a signed add
    assert relative_base is not None
    base = np.uint64(relative_base & mask)
    if encoding == "base-relative":
        return base + (words & 0xFFFFFFFF).astype(np.uint64)
    neg = words < 0
    out = words.astype(np.uint64)
    out[neg] = base - np.uint64(1) - words[neg].astype(np.uint64)
    return out


def choose_encoding(layout: KallsymsLayout, words: np.ndarray, names: list[str],
                    stext: int | None, base: int | None) -> str:
    """The encoding under which ``_stext`` gets the address VMCOREINFO gives it (as drgn and
    makedumpfile decide); without that clue, the one the table's shape allows."""
    if layout.addresses is not None:
        return "absolute"
    candidates = ["absolute-percpu", "base-relative"] if layout.relative_base is not None else []
    candidates.append("place-relative")
    if stext is not None:
        idx = next((i for i, n in enumerate(names) if n[1:] == "_stext"), None)
        if idx is not None:
            for enc in candidates:
                got = decode_addresses(words[idx:idx + 1], enc, relative_base=base,
                                       offsets_addr=None if layout.offsets is None
                                       else layout.offsets + 4 * idx)
                if int(got[0]) == stext:
                    return enc
            raise KernelDataError(f"kallsyms_offsets at {layout.offsets or 0:#x}: no address "
                                  f"encoding gives _stext its address {stext:#x}")
    if layout.relative_base is None:
        return "place-relative"
    return "absolute-percpu" if bool(np.any(words < 0)) else "base-relative"


class SymbolTable:
    """The kernel's symbols in kallsyms order (by address), with lookups both ways.

    :param names: expanded names, type letter first
    :param addresses: one uint64 per name
    :param encoding: how the addresses were stored (:data:`ENCODINGS`)
    :param layout: where the tables were found
    """

    def __init__(self, names: list[str], addresses: np.ndarray, *, encoding: str,
                 layout: KallsymsLayout | None) -> None:
        self.encoding = encoding
        self.layout = layout
        self._names = [n[1:] for n in names]
        self._types = [n[0] for n in names]
        self._addresses = [int(a) for a in addresses.tolist()]
        self._module_syms: list[Symbol] = []
        self._by_name: dict[str, int] | None = None
        self._sorted: tuple[list[int], list[int]] | None = None

    def __len__(self) -> int:
        return len(self._names) + len(self._module_syms)

    def __iter__(self) -> Iterator[Symbol]:
        """Core-kernel symbols in table order, then module symbols (as ``/proc/kallsyms``)."""
        for a, t, n in zip(self._addresses, self._types, self._names, strict=True):
            yield Symbol(a, t, n)
        yield from self._module_syms

    def with_modules(self, symbols: list[Symbol]) -> SymbolTable:
        """A new table: these symbols, then the symbols of loaded modules (found by walking
        the module list). This table is left as it is."""
        table = SymbolTable.__new__(SymbolTable)
        table.__dict__.update(self.__dict__)
        table._module_syms = self._module_syms + list(symbols)
        table._by_name = None
        table._sorted = None
        return table

    def _index(self) -> dict[str, int]:
        if self._by_name is None:
            by_name: dict[str, int] = {}
            for i, sym in enumerate(self):
                by_name.setdefault(sym.name, i)
            self._by_name = by_name
        return self._by_name

    def _symbol(self, i: int) -> Symbol:
        core = len(self._names)
        if i < core:
            return Symbol(self._addresses[i], self._types[i], self._names[i])
        return self._module_syms[i - core]

    def address(self, name: str) -> int | None:
        """The address of the first symbol called ``name`` (core kernel first), or ``None``."""
        i = self._index().get(name)
        return None if i is None else self._symbol(i).address

    def lookup(self, name: str) -> list[Symbol]:
        """Every symbol called ``name`` (static functions may share a name)."""
        if name not in self._index():
            return []
        return [s for s in self if s.name == name]

    def symbolize(self, address: int) -> tuple[Symbol, int, int] | None:
        """``(symbol, offset, size)`` of the symbol holding ``address``, as the kernel's
        ``%pS`` prints ``name+offset/size``; the size runs to the next higher address.
        Absolute (per-CPU) symbols are not candidates.  ``None`` when below every symbol or
        past the last one."""
        if self._sorted is None:
            pairs = sorted((s.address, i) for i, s in enumerate(self) if s.type not in "aA")
            self._sorted = ([a for a, _ in pairs], [i for _, i in pairs])
        addrs, order = self._sorted
        k = bisect.bisect_right(addrs, address) - 1
        if k < 0:
            return None
        start = addrs[k]
        first = bisect.bisect_left(addrs, start)
        nxt = bisect.bisect_right(addrs, start)
        if nxt >= len(addrs):
            return None
        sym = self._symbol(order[first])
        return sym, address - start, addrs[nxt] - start

    def format_address(self, address: int) -> str:
        """``name+0x34/0x9a0`` (``[module]`` appended for a module), or the bare address."""
        found = self.symbolize(address)
        if found is None:
            return f"{address:#x}"
        sym, off, size = found
        mod = f" [{sym.module}]" if sym.module else ""
        return f"{sym.name}+{off:#x}/{size:#x}{mod}"


def load_kallsyms(mem: KernelMemory, layout: KallsymsLayout, *, stext: int | None) -> SymbolTable:
    """Decode the tables at ``layout``.

    :param stext: ``SYMBOL(_stext)`` from VMCOREINFO (or the kernel text found otherwise),
        used to tell the address encodings apart
    :raises KernelDataError: a count, length or offset out of bounds
    :raises KernelDataMissingError: a page of the tables is not in the dump
    """
    count = mem.u32(layout.num_syms, "kallsyms_num_syms")
    if not 1 <= count <= MAX_SYMS:
        raise KernelDataError(f"{mem.path}: kallsyms_num_syms at {layout.num_syms:#x}: {count} symbols "
                              f"(expected 1..{MAX_SYMS})")
    tokens = read_tokens(mem, layout.token_table, layout.token_index)
    names, _ = read_names(mem, layout.names, count, tokens)
    words = read_address_words(mem, layout, count)
    base = None if layout.relative_base is None else mem.u64(layout.relative_base,
                                                              "kallsyms_relative_base")
    encoding = choose_encoding(layout, words, names, stext, base)
    addresses = decode_addresses(words, encoding, relative_base=base, offsets_addr=layout.offsets)
    return SymbolTable(names, addresses, encoding=encoding, layout=layout)
