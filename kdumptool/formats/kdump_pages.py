"""The page data of a kdump-compressed window, read and decoded in bulk.

Spec: SPEC.md "kdump-compressed" (page descriptors, page data). makedumpfile writes the
pages of a PFN window one after the other, so one ``pread`` gets them all; the shared zero
page of a level-1 dump sits before all of them and is left out of that span. Decoding
then costs one codec call per distinct stored page and little Python around it. Anything
unusual (a page outside the span, a stream that does not decode to exactly one page, bad
flags) makes :func:`decode_all` give up, and the reader decodes the window page by page,
which names the damaged page and the reason.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from kdumptool.codecs import PageDecodeError, codec_for_flags
from kdumptool.errors import CodecUnavailableError, CorruptPageError
from kdumptool.transport.source import ByteSource, mapped


class KdumpReader(Protocol):
    """What decoding needs of :class:`kdumptool.formats.kdump.KdumpReader` (a protocol: that
    module imports this one)."""

    source: ByteSource
    block_size: int
    strict: bool
    path: str

#: Largest span of page data read at once for a window.
SPAN_LIMIT = 64 << 20
#: Stored pages up to this size are decoded once per window however often they occur (the
#: zero pages of a -d 0 dump, each stored).
SHORT_STREAM = 128


def window_bytes(source: ByteSource, block_size: int, offs: np.ndarray,
                 sizes: np.ndarray) -> tuple[memoryview | None, int]:
    """``(bytes, file offset)`` of a window's stored pages in one read (in a worker: one
    mapping, no copy), when they lie close
    together (at most twice their size apart, the shared zero page aside) and are all in the
    file; else ``(None, 0)``: each page is read on its own.

    :param offs: the pages' ``page_desc.offset``
    :param sizes: their ``page_desc.size``
    """
    if len(offs) < 2:
        return None, 0
    lo = int(offs.min())
    rest = offs[offs > lo]
    if rest.size and int(rest.min()) - lo > 2 * block_size:  # the shared zero page: left out
        lo = int(rest.min())
    hi = int((offs + sizes).max())
    need = int(sizes[offs >= lo].sum())
    if hi - lo > min(SPAN_LIMIT, 2 * need + block_size):
        return None, 0
    view = mapped(source, lo, hi - lo)  # a worker: in place
    if view is not None:
        return view, lo
    raw = source.pread(lo, hi - lo)
    if len(raw) != hi - lo:
        return None, 0
    return memoryview(raw), lo


def decode_all(blob: memoryview, base: int, offs: np.ndarray, sizes: np.ndarray, flags: np.ndarray,
               data: np.ndarray, page_size: int, keep: int = 0,
               stored: dict[int, bytes] | None = None) -> bool:
    """Decode every page of a window from ``blob`` (file offset ``base``) into the rows of
    ``data``; False at the first page that is not right. The streams of the pages whose
    flags are ``keep`` go to ``stored`` by row, once they decoded to exactly one page (a
    writer with that codec copies them instead of compressing the page again).

    :raises CodecUnavailableError: a codec's package is missing (not the page's fault)
    """
    starts = (offs - base).tolist()
    ends = (offs - base + sizes).tolist()
    fls = flags.tolist()
    try:
        codecs = {f: codec_for_flags(f) for f in set(fls)}
    except ValueError:
        return False
    decoders = {f: None if c is None else c.decoder() for f, c in codecs.items()}
    done: dict[tuple[object, ...], int] = {}  # a page stored once, or the same stream: its row
    out = memoryview(data.reshape(-1))  # rows filled by slice (a third of a NumPy row's cost)
    size = len(blob)
    try:
        for row, (a, b, f) in enumerate(zip(starts, ends, fls, strict=True)):
            if a < 0 or b > size:
                return False
            at = row * page_size
            decode = decoders[f]
            if decode is None:
                if b - a != page_size:
                    return False
                out[at:at + page_size] = blob[a:b]
                continue
            raw = bytes(blob[a:b])
            if f == keep and stored is not None and b - a < page_size:
                stored[row] = raw  # (a stream of a whole page is stored raw when written)
            key = (raw, f) if b - a <= SHORT_STREAM else (a, b, f)
            seen = done.get(key)
            if seen is not None:
                out[at:at + page_size] = out[seen * page_size:(seen + 1) * page_size]
                continue
            page = decode(raw, page_size)
            if len(page) != page_size:
                return False
            out[at:at + page_size] = page
            done[key] = row
    except (CodecUnavailableError, MemoryError):
        raise
    except Exception:  # noqa: BLE001 - the page-by-page pass names the page and the error
        return False
    return True


def decode_each(reader: KdumpReader, start: int, idx: np.ndarray,
                descs: tuple[np.ndarray, np.ndarray, np.ndarray], ok: np.ndarray,
                span: tuple[memoryview | None, int], data: np.ndarray, corrupt: dict[int, str]) -> int:
    """Decode a window's pages one by one into ``data``; a page that does not decode is noted
    in ``corrupt`` (or raised, when the reader is strict) and cleared in ``ok``.

    :param idx: the window's indexes of the pages with descriptors
    :param descs: their ``(offset, size, flags)``
    :param span: :func:`window_bytes`
    :return: the rows of ``data`` filled
    """
    blob, base = span
    row = 0
    cache: dict[tuple[int, int, int], bytes | memoryview] = {}  # pages stored once (zero page)
    offs, sizes, flags = (a.tolist() for a in descs)
    for j, (off, size, fl) in enumerate(zip(offs, sizes, flags, strict=True)):
        if not ok[j]:
            continue
        pfn = start + int(idx[j])
        page = cache.get((off, size, fl))  # the flags too: the same bytes decode otherwise
        if page is None:
            raw = blob[off - base:off - base + size] if blob is not None and off >= base else None
            page = decode_one(reader, pfn, (off, size, fl), corrupt, raw)
            if page is None:
                ok[j] = False
                continue
            cache[(off, size, fl)] = page
        data[row] = np.frombuffer(page, np.uint8)
        row += 1
    return row


def decode_one(reader: KdumpReader, pfn: int, desc: tuple[int, int, int], corrupt: dict[int, str],
               raw: bytes | memoryview | None = None) -> bytes | memoryview | None:
    """One page's data (read unless ``raw`` holds it), decoded; None (noted in ``corrupt``)
    or :class:`~kdumptool.errors.CorruptPageError` (strict) when it is damaged."""
    off, size, flags = desc
    if raw is None or len(raw) != size:
        raw = reader.source.pread(off, size)
    codec = codec_for_flags(flags)
    if len(raw) != size or (codec is None and size != reader.block_size):
        msg = f"short read of page data ({len(raw)} of {size} bytes)"
        if reader.strict:
            raise CorruptPageError(msg, pfn=pfn, path=reader.path, offset=off)
        corrupt[pfn] = msg
        return None
    if codec is None:
        return raw
    try:
        return codec.decompress(bytes(raw), reader.block_size)
    except PageDecodeError as exc:
        if reader.strict:
            raise CorruptPageError(str(exc), pfn=pfn, path=reader.path, offset=off) from None
        corrupt[pfn] = str(exc)
        return None
