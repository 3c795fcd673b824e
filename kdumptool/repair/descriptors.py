"""Recover emptied page descriptors by scanning the page data between intact ones.

makedumpfile writes page data in PFN order, so the data of a run of emptied (all-zero)
descriptors lies between the end of the last intact page before the run and the start
of the first intact page after it. With a self-delimiting codec (zlib streams, zstd
frames) or raw pages, that region splits into pages; when it splits into exactly as many
pages as there are emptied descriptors, each descriptor is rebuilt in order. Otherwise
(some of the emptied pages were shared zero pages, which leave no data) the run stays
lost: guessing which pages were zero would invent data.
"""

from __future__ import annotations

import zlib

import numpy as np

from kdumptool.codecs import CODECS, PageDecodeError
from kdumptool.formats.kdump import KdumpReader

MAX_REGION = 64 << 20  # bytes scanned for one run


def _stream_length(data: bytes, codec: str, page_size: int) -> int:
    """Bytes of the first zlib stream / zstd frame in ``data`` if it holds exactly one page."""
    if codec == "zlib":
        d = zlib.decompressobj()
        try:
            page = d.decompress(data[:page_size + 1024], page_size + 1)
        except zlib.error:
            return 0
        return len(data[:page_size + 1024]) - len(d.unused_data) if d.eof and len(page) == page_size else 0
    import zstandard

    try:
        d = zstandard.ZstdDecompressor().decompressobj()
        page = d.decompress(data[:page_size + 1024])
    except zstandard.ZstdError:
        return 0
    return len(data[:page_size + 1024]) - len(d.unused_data) if d.eof and len(page) == page_size else 0


def _split(region: bytes, codec: str | None, page_size: int, limit: int) -> list[tuple[int, int]] | None:
    """(offset in region, size) of each stored page, or None if the region does not split."""
    out: list[tuple[int, int]] = []
    pos = 0
    view = memoryview(region)
    while pos < len(region) and len(out) <= limit:
        # at most one page's stream is looked at: no copy of the rest of the region
        length = _stream_length(bytes(view[pos:pos + page_size + 1024]), codec, page_size) if codec else 0
        if 0 < length < page_size:
            out.append((pos, length))
            pos += length
        elif len(region) - pos >= page_size:  # a page stored raw (it did not compress)
            out.append((pos, page_size))
            pos += page_size
        else:
            return None
    return out if pos == len(region) else None


def recover_descriptors(r: KdumpReader) -> list[tuple[int, int, int]]:
    """Patch ``r.desc_patches`` for every run of empty descriptors that can be rebuilt.

    :return: ``(first descriptor index, count, pages recovered)`` for each run examined
    """
    if r.sub is not None and r.header.header_version >= 2 and r.sub.split:
        return []
    codec = sorted(r.info.codecs)[0] if len(r.info.codecs) == 1 else None
    if codec not in (None, "zlib", "zstd"):
        return []
    flag = CODECS[codec].flag if codec else 0
    ps, size = r.block_size, r.source.size
    descs = [r._descs(i, min(1 << 16, r.num_descs - i)) for i in range(0, r.num_descs, 1 << 16)]
    table = np.concatenate(descs) if descs else np.zeros(0, dtype=r.structs.page_desc_dtype)
    offs = table["offset"].astype(np.int64)
    empty = offs == 0
    # the shared zero page (dump level 1) sits first in the data and belongs to no run
    zero_page = r.desc_end if (r.info.dump_level or 0) & 1 else -1
    usable = np.flatnonzero(~empty & (offs != zero_page))  # descriptors that bound a run
    runs: list[tuple[int, int, int]] = []
    i = 0
    while i < len(table):
        if not empty[i]:
            i += 1
            continue
        j = i
        while j < len(table) and empty[j]:
            j += 1
        at = int(np.searchsorted(usable, i))  # usable[at - 1] < i <= j <= usable[at]
        before = int(usable[at - 1]) if at > 0 else None
        after = int(usable[at]) if at < len(usable) else None
        lo = int(offs[before] + table["size"][before]) if before is not None else (
            r.desc_end + (ps if zero_page >= 0 else 0))
        hi = int(offs[after]) if after is not None else size
        found = 0
        if 0 < hi - lo <= MAX_REGION and hi <= size:
            pieces = _split(r.source.pread(lo, hi - lo), codec, ps, j - i)
            if pieces is not None and len(pieces) == j - i:
                for k, (off, length) in enumerate(pieces):
                    raw = length == ps
                    desc = (lo + off, length, 0 if raw else flag, 0)
                    try:  # keep only what decodes to exactly one page
                        if not raw:
                            CODECS[codec].decompress(r.source.pread(lo + off, length), ps)  # type: ignore[index]
                    except PageDecodeError:
                        break
                    r.desc_patches[i + k] = desc
                    found += 1
        runs.append((i, j - i, found))
        i = j
    return runs

