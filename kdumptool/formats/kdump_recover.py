"""kdump-compressed headers with a damaged field, rebuilt from the rest of the file.

Spec: SPEC.md §8 ("Checking and repairing"). Used only by tolerant readers (``fsck``,
``repair``, ``info``): a strict reader refuses such a file.

* :func:`rebuild_block_size` — ``block_size`` fails the layout trial: the page size under
  which the sub-header points at a VMCOREINFO that says the same ``PAGESIZE``;
* :func:`recover_signature` — ``signature`` is neither ``"KDUMP   "`` nor ``"DISKDUMP"``,
  but the header, the sub-header, the bitmaps and the page descriptor table agree.
"""

from __future__ import annotations

from typing import Any

import construct as cs
import numpy as np

from kdumptool.errors import DumpError
from kdumptool.formats.kdump import KdumpReader
from kdumptool.formats.kdump_layout import (
    _MACHINE_OFFSET,
    DISKDUMP_SIGNATURE,
    KDUMP_HEADER_VERSION,
    KDUMP_SIGNATURE,
    KNOWN_STATUS,
    MACHINES_32,
    MACHINES_32_PACKED,
    UTS_LEN,
    KdumpStructs,
    _plausible,
    kdump_structs,
    probe,
)
from kdumptool.schema import strip_c_string
from kdumptool.transport.source import ByteSource
from kdumptool.vmcoreinfo import MAX_VMCOREINFO, VmcoreInfo


def rebuild_block_size(source: ByteSource, head: bytes) -> tuple[KdumpStructs, cs.Container, str] | None:
    """A header whose ``block_size`` is damaged, rebuilt from the sub-header and VMCOREINFO.

    The sub-header sits at offset ``block_size``: each page size is tried there, and kept
    when that sub-header points at a VMCOREINFO whose ``PAGESIZE`` is the same size and the
    rest of the header is plausible with it.
    """
    machine = strip_c_string(head[_MACHINE_OFFSET:_MACHINE_OFFSET + UTS_LEN])
    layouts = [("64", "<"), ("64", ">")] if machine not in MACHINES_32 else \
        [("32pack" if machine in MACHINES_32_PACKED else "32pad", e) for e in "<>"]
    for layout, endian in layouts:
        s = kdump_structs(layout, endian)
        hdr = s.DiskDumpHeader.parse(head[:s.DiskDumpHeader.sizeof()])
        for bs in (4096, 16384, 65536, 8192, 2048, 1024, 32768, 131072, 262144):
            raw = source.pread(bs, s.KdumpSubHeader.sizeof())
            if len(raw) < s.KdumpSubHeader.sizeof():
                continue
            sub = s.KdumpSubHeader.parse(raw)
            off, size = sub.offset_vmcoreinfo, sub.size_vmcoreinfo
            if not (3 <= hdr.header_version <= 64 and bs < off and 0 < size <= MAX_VMCOREINFO
                    and off + size <= source.size):
                continue
            vmci = VmcoreInfo.parse(source.pread(off, size))
            if vmci.page_size != bs:
                continue
            old = hdr.block_size
            hdr.block_size = bs
            if _plausible(hdr):
                return s, hdr, f"block_size {old} replaced by {bs} (the sub-header's VMCOREINFO PAGESIZE)"
            hdr.block_size = old
    return None



class ResignedSource:
    """A source whose first bytes read as a restored signature (the file is not touched).

    Everything else is the wrapped source's (``wrapped``), including what it knows of holes
    and damage.
    """

    def __init__(self, wrapped: ByteSource, signature: bytes) -> None:
        self.wrapped = wrapped
        self.signature = signature
        self.name = wrapped.name
        self.size = wrapped.size

    def pread(self, offset: int, length: int) -> bytes:
        data = self.wrapped.pread(offset, length)
        if offset >= len(self.signature) or not data:
            return data
        sig = self.signature[offset:offset + len(data)]
        return sig + data[len(sig):]

    def close(self) -> None:
        self.wrapped.close()

    def __getattr__(self, name: str) -> Any:  # holds_data, damage, inner ...
        return getattr(self.wrapped, name)


def recover_signature(source: ByteSource, *, transport: str = "plain") -> KdumpReader | None:
    """A tolerant reader of a kdump-compressed file whose signature is damaged, or None.

    Both signatures are tried and a reading kept only when the rest of the file agrees
    (:func:`_agrees`): ``"KDUMP   "`` when its sub-header gives a VMCOREINFO (makedumpfile and
    QEMU write one), else the signature nearest the damaged bytes. The reader's
    ``damaged_signature`` holds the bytes found. ``source`` stays open either way.
    """
    head = source.pread(0, 512)
    if len(head) < 512 or probe(head):
        return None
    readers: dict[bytes, KdumpReader] = {}
    for signature in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE):
        try:
            reader = KdumpReader(ResignedSource(source, signature), strict=False, transport=transport)
            if not _agrees(reader):
                continue
        except DumpError:
            continue
        reader.damaged_signature = head[:8]
        if signature == KDUMP_SIGNATURE and reader.vmcoreinfo is not None:
            return reader
        readers[signature] = reader
    nearest = sorted(readers, key=lambda sig: sum(a != b for a, b in zip(sig, head[:8], strict=True)))
    return readers[nearest[0]] if nearest else None


def _agrees(r: KdumpReader) -> bool:
    """Whether everything but the signature is a consistent kdump-compressed file.

    The header passes the layout trial as it is (no field rebuilt), with a known version and
    status bits; a VMCOREINFO the sub-header points at says the same page size; the 2nd bitmap
    lies within the 1st and declares pages; and the page data starts right after a descriptor
    table of exactly that many entries, inside the file (an unsplit file only).
    """
    h = r.header
    if r.rebuilt or not 0 <= h.header_version <= KDUMP_HEADER_VERSION or h.status & ~KNOWN_STATUS:
        return False
    if r.vmcoreinfo is not None and r.vmcoreinfo.page_size not in (None, 0, r.block_size):
        return False
    if r.info.split is not None or r.num_descs == 0 or r.desc_end > r.source.size:
        return False
    for start, count in r.windows(1 << 16):
        ram, present = r.bitmaps(start, count)
        if (present & ~ram).any():
            return False
    offs = r._descs(0, min(r.num_descs, 4096))["offset"].astype(np.int64)
    if not (offs > 0).any():
        return False
    r._check_table_start()  # raises CorruptDumpError when the table disagrees
    return True


class Remap:
    """A 2nd bitmap rebuilt over some of its bytes, and the descriptor of each page it declares
    there (repair's answer to a zeroed part of the 2nd bitmap: ``kdumptool.repair.bitmap2``).

    Ranks (the index of a present page in PFN order) and descriptor indexes are equal before
    the rebuilt bytes; inside, ``index`` lists the descriptor of each present page (-1: the page
    was dumped but which descriptor is its cannot be told: it reads as lost); after them they
    differ by ``shift``.

    :param first_byte: first byte of the 2nd bitmap replaced by ``bits``
    :param first_rank: rank of the first present page of the replaced bytes
    """

    def __init__(self, first_byte: int, bits: np.ndarray, first_rank: int, index: np.ndarray,
                 shift: int) -> None:
        self.first_byte, self.bits = first_byte, bits
        self.first_rank, self.index, self.shift = first_rank, index.astype(np.int64), shift

    def overlaps(self, start_byte: int, nbytes: int) -> bool:
        """Whether bytes ``[start_byte, start_byte + nbytes)`` of the 2nd bitmap are rebuilt ones."""
        return start_byte < self.first_byte + len(self.bits) and self.first_byte < start_byte + nbytes

    def overlay(self, start_byte: int, raw: np.ndarray) -> np.ndarray:
        """2nd-bitmap bytes read from the file, the rebuilt ones put in."""
        end = self.first_byte + len(self.bits)
        lo, hi = max(start_byte, self.first_byte), min(start_byte + len(raw), end)
        if lo >= hi:
            return raw
        out = raw.copy()
        out[lo - start_byte:hi - start_byte] = self.bits[lo - self.first_byte:hi - self.first_byte]
        return out

    def descs(self, reader: KdumpReader, first: int, count: int) -> np.ndarray:
        """The descriptors of present pages ``[first, first + count)`` (ranks), read from the table."""
        ranks = np.arange(first, first + count, dtype=np.int64)
        inside = ranks - self.first_rank
        within = (inside >= 0) & (inside < len(self.index))
        idx = np.where(inside < 0, ranks, ranks + self.shift)
        idx[within] = self.index[inside[within]]
        out = np.zeros(count, dtype=reader.structs.page_desc_dtype)
        have = np.flatnonzero(idx >= 0)
        if not have.size:
            return out
        breaks = np.flatnonzero(np.diff(idx[have]) != 1) + 1  # one read per run of the table
        for lo, hi in zip(np.concatenate(([0], breaks)).tolist(),
                          np.concatenate((breaks, [have.size])).tolist(), strict=True):
            out[have[lo:hi]] = reader._table(int(idx[have[lo]]), hi - lo)
        return out
