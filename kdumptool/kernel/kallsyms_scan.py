"""Find the kallsyms tables without VMCOREINFO's ``SYMBOL(kallsyms_*)`` lines.

Kernels before 6.0, and dumps whose VMCOREINFO lost those lines, still hold the tables;
they are found from their shapes (SPEC.md, "kallsyms: finding the tables by scanning"):

1. the token table: the digits are tokens of their own in every kernel, so the table
   holds the run ``"0\\0" "1\\0" ... "9\\0"``;
2. the token index follows the table: 256 rising u16 offsets from 0, whose entry for
   ``'0'`` points back at that run;
3. the markers precede the token table, possibly with ``kallsyms_seqs_of_names`` between
   (Linux 6.2+): rising offsets from 0, one per 256 names (u32 since 6.2, unsigned long
   before);
4. the names precede the markers and ``kallsyms_num_syms`` precedes the names: the names'
   lengths, walked from the last marker, must end where the markers begin;
5. the offsets are either before ``kallsyms_num_syms`` with ``kallsyms_relative_base``
   (the order up to 6.x) or after the token index (newer kernels); each candidate is
   decoded and kept only when ``_stext`` gets its known address.
"""

from __future__ import annotations

import numpy as np

from kdumptool.errors import KernelDataError, KernelDataMissingError
from kdumptool.kernel.kallsyms import (
    KallsymsLayout,
    SymbolTable,
    layout_from_vmcoreinfo,
    load_kallsyms,
    read_tokens,
)
from kdumptool.kernel.memory import KernelMemory
from kdumptool.vmcoreinfo import VmcoreInfo

DIGITS = b"".join(bytes([0x30 + d, 0]) for d in range(10))
#: How much of the kernel image (from ``_stext``) is searched for the token table.
SCAN_BYTES = 96 << 20
_CHUNK = 4 << 20
#: How far below the token table the markers may begin (names' markers + seqs_of_names).
_MARKERS_WINDOW = 4 << 20
#: The last 256 names take at most this many bytes in practice (a bound, not a guess:
#: candidates further away are not tried).
_TAIL_WINDOW = 256 << 10


def _align8(x: int) -> int:
    return (x + 7) & ~7


def _read_lenient(mem: KernelMemory, vaddr: int, size: int) -> bytes | None:
    """``size`` bytes at ``vaddr``, pages not in the dump (a filtered dump drops some pages of
    the image) read as zeros; ``None`` when no page of the range is there."""
    try:
        return mem.read(vaddr, size, "kernel image")
    except KernelDataMissingError:
        pass
    out = bytearray(size)
    found = False
    pos = 0
    while pos < size:
        step = min(size - pos, 4096 - ((vaddr + pos) & 4095))
        try:
            out[pos:pos + step] = mem.read(vaddr + pos, step, "kernel image")
            found = True
        except KernelDataMissingError:
            pass
        pos += step
    return bytes(out) if found else None


def _digit_runs(mem: KernelMemory, start: int) -> list[int]:
    """Addresses of the digit-token run in the first :data:`SCAN_BYTES` of the image."""
    hits: list[int] = []
    for off in range(0, SCAN_BYTES, _CHUNK):
        blob = _read_lenient(mem, start + off, _CHUNK + len(DIGITS))
        if blob is None:
            continue
        pos = blob.find(DIGITS)
        while 0 <= pos < _CHUNK:
            if pos > 0 and blob[pos - 1] == 0:
                hits.append(start + off + pos)
            pos = blob.find(DIGITS, pos + 1)
    return hits


def _token_index_after(mem: KernelMemory, digits: int) -> tuple[int, int] | None:
    """``(token_table, token_index)`` for the digit run at ``digits``, or ``None``."""
    blob = _read_lenient(mem, digits, 0x10000 + 512)
    if blob is None:
        return None
    first = _align8(digits) - digits
    for rel in range(first, 0x10000, 8):
        if blob[rel:rel + 2] != b"\0\0":
            continue
        idx = np.frombuffer(blob[rel:rel + 512], dtype=mem.endian + "u2").astype(np.int64)
        if idx[1] == 0 or np.any(np.diff(idx) <= 0):
            continue
        table = digits - int(idx[0x30])
        if table + int(idx[255]) >= digits + rel or table > digits:
            continue
        rebased = [int(idx[0x30 + d]) + table - digits for d in range(10)]
        if all(blob[o:o + 2] == bytes([0x30 + d, 0]) for d, o in enumerate(rebased) if o >= 0):
            return table, digits + rel
    return None


def _markers_before(mem: KernelMemory, table: int) -> tuple[int, np.ndarray] | None:
    """``(markers_start, markers)``: the rising run from 0 closest below ``table``, of u32
    (Linux 6.2+) or of unsigned longs (before)."""
    start = table - _MARKERS_WINDOW
    blob = _read_lenient(mem, start, _MARKERS_WINDOW)
    if blob is None:
        return None
    best: tuple[int, np.ndarray] | None = None
    for width in (4, 8):
        words = np.frombuffer(blob, dtype=f"{mem.endian}u{width}").astype(np.int64)
        zeros = np.flatnonzero(words[:-8] == 0)
        for i in zeros[::-1].tolist():
            if (width * i) % 8:
                continue
            diffs = np.diff(words[i:i + 4096])
            ok = (diffs >= 256 * 2) & (diffs <= 256 * 512)
            run = int(np.argmin(ok)) if not ok.all() else len(ok)
            if run >= 1:
                if best is None or start + width * i > best[0]:
                    best = (start + width * i, words[i:i + run + 1])
                break
    return best


def _walk(buf: bytes, pos: int, count: int) -> int:
    """The position after ``count`` names starting at ``pos`` (-1 if they do not fit)."""
    for _ in range(count):
        if pos >= len(buf):
            return -1
        first = buf[pos]
        if first & 0x80:
            if pos + 1 >= len(buf):
                return -1
            length, pos = (first & 0x7F) | (buf[pos + 1] << 7), pos + 2
        else:
            length, pos = first, pos + 1
        if length == 0:
            return -1
        pos += length
    return pos if pos <= len(buf) else -1


def _names_start(mem: KernelMemory, markers_at: int, markers: np.ndarray) -> tuple[int, int] | None:
    """``(names, num_syms)``: where the names begin so that they end at the markers."""
    last = int(markers[-1])
    lo = markers_at - last - _TAIL_WINDOW
    blob = _read_lenient(mem, lo, markers_at - lo)
    if blob is None:
        return None
    m = len(markers)
    for names in range((markers_at - last - 1) & ~7, lo + 8, -8):
        rel = names - lo
        n = int.from_bytes(blob[rel - 8:rel - 4], "little" if mem.endian == "<" else "big")
        if not 256 * (m - 1) < n <= 256 * m:
            continue
        end = _walk(blob, rel + last, n - 256 * (m - 1))
        if end < 0 or _align8(lo + end) != markers_at:
            continue
        if m > 1 and _walk(blob, rel, 256) != rel + int(markers[1]):
            continue
        return names, n
    return None


def _candidates(table: int, index: int, names: int, count: int) -> list[KallsymsLayout]:
    old_base = names - 16
    new_offsets = _align8(index + 512)
    common = {"num_syms": names - 8, "names": names, "token_table": table, "token_index": index,
              "source": "scan"}
    return [
        KallsymsLayout(**common, offsets=old_base - _align8(4 * count), relative_base=old_base),
        KallsymsLayout(**common, offsets=new_offsets, relative_base=_align8(new_offsets + 4 * count)),
        KallsymsLayout(**common, offsets=new_offsets),
    ]


def find_kallsyms(mem: KernelMemory, *, stext: int | None) -> KallsymsLayout:
    """The tables' layout, found by their shapes in the kernel image from ``_stext``.

    :raises KernelDataMissingError: the tables were not found (``stext`` unknown, or no
        candidate decodes to a table where ``_stext`` has that address)
    """
    if stext is None:
        raise KernelDataMissingError(f"{mem.path}: cannot scan for kallsyms: the kernel text "
                                     "address (SYMBOL(_stext)) is unknown")
    for digits in _digit_runs(mem, stext):
        found = _token_index_after(mem, digits)
        if found is None:
            continue
        table, index = found
        try:
            read_tokens(mem, table, index)
        except KernelDataError:
            continue
        marks = _markers_before(mem, table)
        if marks is None:
            continue
        start = _names_start(mem, *marks)
        if start is None:
            continue
        for layout in _candidates(table, index, *start):
            try:
                load_kallsyms(mem, layout, stext=stext)
            except (KernelDataError, KernelDataMissingError):
                continue
            return layout
    raise KernelDataMissingError(f"{mem.path}: the kallsyms tables were not found in the kernel "
                                 f"image from {stext:#x}")


def core_kallsyms(mem: KernelMemory, vmci: VmcoreInfo, *, scan: bool = False) -> SymbolTable:
    """The core kernel's kallsyms (no module symbols): from the tables VMCOREINFO names
    (Linux 6.0+), else (or with ``scan``) found by scanning the kernel image.

    :raises KernelDataError: the tables are corrupt
    :raises KernelDataMissingError: no tables found, or memory they need is not in the dump
    """
    stext = vmci.symbol("_stext") if vmci.has("SYMBOL(_stext)") else None
    layout = None if scan else layout_from_vmcoreinfo(vmci)
    if layout is None:
        layout = find_kallsyms(mem, stext=stext)
    return load_kallsyms(mem, layout, stext=stext)
