"""kdump-compressed headers with a damaged field, rebuilt from the rest of the file.

Spec: SPEC.md §8 ("Checking and repairing"). Used only by tolerant readers (``fsck``,
``repair``, ``info``): a strict reader refuses such a file.

* :func:`~kdumptool.formats.kdump_layout.rebuild_block_size` — ``block_size`` fails the
  layout trial: the page size under which the sub-header points at a VMCOREINFO that says the
  same ``PAGESIZE`` (called by the reader itself);
* :func:`recover_signature` — ``signature`` is neither ``"KDUMP   "`` nor ``"DISKDUMP"``,
  but the header, the sub-header, the bitmaps and the page descriptor table agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdumptool.errors import DumpError
from kdumptool.formats.kdump import KdumpReader
from kdumptool.formats.kdump_layout import (
    DISKDUMP_SIGNATURE,
    KDUMP_HEADER_VERSION,
    KDUMP_SIGNATURE,
    KNOWN_STATUS,
    probe,
)
from kdumptool.formats.registry import ReaderEntry
from kdumptool.transport.source import ByteSource


class ResignedSource:
    """A source whose first bytes read as a restored signature (the file is not touched).

    Everything else is the wrapped source's (``wrapped``), including what it knows of holes
    and damage.
    """

    #: every read goes through :meth:`pread` (a mapping or a read into a buffer of the wrapped
    #: file would give its damaged signature)
    view = None
    pread_into = None

    def __init__(self, wrapped: ByteSource, signature: bytes) -> None:
        self.wrapped = wrapped
        self.signature = signature
        self.name = wrapped.name
        self.size = wrapped.size

    def pread(self, offset: int, length: int) -> bytes:
        """The wrapped source's bytes, the restored signature over the first ones."""
        data = self.wrapped.pread(offset, length)
        if offset >= len(self.signature) or not data:
            return data
        sig = self.signature[offset:offset + len(data)]
        return sig + data[len(sig):]

    def close(self) -> None:
        """Close the wrapped source."""
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


def lost_pages(r: KdumpReader) -> int:
    """Pages with a descriptor but no data in the file: an all-zero descriptor (not written),
    or data past the end of the file (truncated)."""
    lost = 0
    step = 1 << 16
    for first in range(0, r.num_descs, step):
        d = r._descs(first, min(step, r.num_descs - first))
        offs = d["offset"].astype(np.int64)
        lost += int(((offs == 0) | (offs + d["size"] > r.source.size)).sum())
    return lost


def page_data_offset(r: KdumpReader, pfn: int) -> int:
    """The file offset of the stored data of page ``pfn`` (from its descriptor)."""
    return int(r._descs(r.rank(pfn), 1)[0]["offset"])


#: The kdump-compressed format in the registry (:mod:`kdumptool.formats`), declared here rather
#: than in :mod:`kdumptool.formats.kdump`: with the recovery of a damaged signature, which needs
#: the reader.
ENTRY = ReaderEntry("kdump", probe, KdumpReader, "'KDUMP   ', 'DISKDUMP'", order=10,
                    recover=recover_signature, lost_pages=lost_pages,  # type: ignore[arg-type]
                    page_data_offset=page_data_offset,  # type: ignore[arg-type]
                    writer="kdump")
