"""LiME images, written from LiME's own definition (``src/lime.h`` ``lime_mem_range_header``,
``src/main.c`` ``write_lime_header`` / ``write_range``), independently of the reader.

LiME is a kernel module: no LiME runs here. :func:`lime_from_dump` writes, from a real dump
of the shared corpus, the image LiME would have written of that machine's RAM (the dump's
RAM ranges as the ``System RAM`` resources), so the reader is tested on real memory.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from kdumptool.repair.findings import merge_ranges

MAGIC = 0x4C694D45  # LIME_MAGIC
PS = 4096


def header(start: int, end: int, *, endian: str = "<", magic: int = MAGIC, version: int = 1) -> bytes:
    """``lime_mem_range_header``: magic, version, s_addr, inclusive e_addr, 8 reserved bytes."""
    return struct.pack(f"{endian}IIQQ8x", magic, version, start, end)


def lime_image(ranges: Iterable[tuple[int, bytes]], *, endian: str = "<") -> bytes:
    """An image of ``(physical start, bytes)`` ranges, in the order given."""
    return b"".join(header(start, start + len(data) - 1, endian=endian) + data for start, data in ranges)


def _range_pages(reader: Any, a: int, b: int) -> Iterator[bytes]:
    step = 1 << 12
    for start in range(a, b, step):
        batch = reader.read_batch(start, min(step, b - start))
        rows = iter(batch.data)
        for present in batch.present.tolist():
            yield next(rows).tobytes() if present else bytes(PS)


def lime_from_dump(reader: Any, out: BinaryIO) -> list[tuple[int, int]]:
    """Write the LiME image of ``reader``'s RAM (its PFN ranges, overlaps merged) to ``out``.

    :return: the PFN ranges written
    """
    ranges = merge_ranges(list(reader.ram_ranges()))
    for a, b in ranges:
        out.write(header(a * PS, b * PS - 1))
        for page in _range_pages(reader, a, b):
            out.write(page)
    return ranges


def fuzz_seed() -> bytes:
    """A small image for the fuzzer: a PC-like layout (a partial last page below 640 KiB, as
    LiME writes ``0x1000-0x9fbff``), pages that encode their own address."""
    def pages(start: int, size: int) -> bytes:
        return b"".join(struct.pack("<Q", (start + k) // PS) * (PS // 8) for k in range(0, size, PS))[:size]

    return lime_image([(0x1000, pages(0x1000, 0x3C00)), (0x100000, pages(0x100000, 4 * PS))])
