"""makedumpfile's flattened format, as a transport under any dump format.

Spec: SPEC.md "Flattened format"; upstream makedumpfile ``makedumpfile.h``
(``struct makedumpfile_header``, ``struct makedumpfile_data_header``,
``MAKEDUMPFILE_SIGNATURE``, ``TYPE_FLAT_HEADER``, ``VERSION_FLAT_HEADER``,
``END_FLAG_FLAT_HEADER``) and ``IMPLEMENTATION``; libkdumpfile ``flatmap.c``.

A flattened file is a 4096-byte header followed by records, each a big-endian
``(offset, size)`` pair and ``size`` bytes destined for ``offset`` of the
image, and ends with the pair ``(-1, -1)``. Records may come in any order and
may overlap; as with ``makedumpfile -R``, a later record wins.

* :class:`FlattenedSource` indexes a flattened *file* in place (no copy) and
  serves random reads of the image.
* :func:`rearrange_stream` turns a flattened *stream* (a pipe) into a plain
  image file without seeking the input, as ``makedumpfile -R`` does.
* :class:`FlattenedSink` writes positional writes as a flattened stream.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from typing import BinaryIO

import construct as cs

from kdumptool.errors import CorruptDumpError, TruncatedDumpError
from kdumptool.transport.source import ByteSource

SIGNATURE = b"makedumpfile"
HEADER_SIZE = 4096  # the header is padded to this size (makedumpfile HEADER_SIZE_FLAT... 4096)
TYPE_FLAT_HEADER = 1
VERSION_FLAT_HEADER = 1
END_FLAG = -1

# struct makedumpfile_header (big-endian, padded to 4096 bytes)
MakedumpfileHeader = cs.Struct(
    "signature" / cs.Bytes(16),  # "makedumpfile" NUL-padded
    "type" / cs.Int64sb,  # TYPE_FLAT_HEADER
    "version" / cs.Int64sb,  # VERSION_FLAT_HEADER
)
# struct makedumpfile_data_header (big-endian)
MakedumpfileDataHeader = cs.Struct(
    "offset" / cs.Int64sb,
    "buf_size" / cs.Int64sb,
)
_DATA_HDR = struct.Struct(">qq")

#: Largest single record accepted; makedumpfile writes at most a few MiB.
MAX_RECORD = 1 << 30


def probe(head: bytes) -> bool:
    """True if ``head`` (the first bytes of a file) starts a flattened stream."""
    if len(head) < MakedumpfileHeader.sizeof():
        return False
    hdr = MakedumpfileHeader.parse(head)
    return (
        hdr.signature == SIGNATURE.ljust(16, b"\0")
        and hdr.type == TYPE_FLAT_HEADER
        and hdr.version == VERSION_FLAT_HEADER
    )


def header_bytes() -> bytes:
    """The 4096-byte header that starts every flattened stream."""
    raw = MakedumpfileHeader.build(
        {"signature": SIGNATURE.ljust(16, b"\0"), "type": TYPE_FLAT_HEADER,
         "version": VERSION_FLAT_HEADER}
    )
    return raw.ljust(HEADER_SIZE, b"\0")


def end_marker() -> bytes:
    """The record header that ends a flattened stream."""
    return _DATA_HDR.pack(END_FLAG, END_FLAG)


def iter_records(src: ByteSource, *, strict: bool = True) -> Iterator[tuple[int, int, int]]:
    """Yield ``(image_offset, size, file_offset_of_data)`` for each record of a flattened file.

    :param strict: raise on a missing end marker / truncated record; otherwise stop there,
        after yielding what the file holds of a record cut short (its first bytes)
    :raises TruncatedDumpError: the stream ends before its end marker (strict)
    :raises CorruptDumpError: a record header is invalid
    """
    pos = HEADER_SIZE
    while True:
        if pos + _DATA_HDR.size > src.size:
            if strict:
                raise TruncatedDumpError(
                    "flattened stream ends without its end marker", path=src.name, offset=pos,
                    expected="a 16-byte record header", got=f"{src.size - pos} bytes",
                )
            return
        offset, size = _DATA_HDR.unpack(src.pread(pos, _DATA_HDR.size))
        if offset == END_FLAG and size == END_FLAG:
            return
        if offset < 0 or size <= 0 or size > MAX_RECORD:
            if strict:
                raise CorruptDumpError(
                    "invalid flattened record header", path=src.name, offset=pos,
                    expected="offset >= 0 and 0 < size <= 1 GiB", got=f"offset {offset}, size {size}",
                )
            return
        data_pos = pos + _DATA_HDR.size
        if data_pos + size > src.size:
            if strict:
                raise TruncatedDumpError(
                    f"flattened stream is truncated: the record at {pos:#x} needs {size} bytes of "
                    "data", path=src.name, offset=src.size,
                    expected=f"file size >= {data_pos + size:#x}", got=f"{src.size:#x}",
                )
            if data_pos < src.size:  # the part of the record that was written
                yield offset, src.size - data_pos, data_pos
            return
        yield offset, size, data_pos
        pos = data_pos + size


class FlattenedSource:
    """Random access to the image inside a flattened file, through an index of its records.

    The index is a sorted list of non-overlapping pieces ``(start, end, file_pos)``;
    adjacent records that continue each other in both the image and the file are merged,
    so a typical stream needs a few entries per megabyte. Gaps read as zeros (like the
    sparse file ``makedumpfile -R`` makes).

    :param inner: the flattened file
    :param strict: refuse a stream without its end marker (else index what is there)
    """

    def __init__(self, inner: ByteSource, *, strict: bool = True) -> None:
        self.inner = inner
        self.name = inner.name
        self.complete = True
        #: a record cut by the end of the file: (file offset of its header, bytes kept,
        #: bytes it declares); its first bytes are in the image (tolerant mode)
        self.partial: tuple[int, int, int] | None = None
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._pos: list[int] = []
        try:
            records = list(iter_records(inner, strict=strict))
        except TruncatedDumpError:
            raise
        if not strict:
            self.complete = self._ends_with_marker(records)
            if records and records[-1][1] + records[-1][2] == inner.size:
                at = records[-1][2] - _DATA_HDR.size
                declared = _DATA_HDR.unpack(inner.pread(at, _DATA_HDR.size))[1]
                if declared != records[-1][1]:
                    self.partial = (at, records[-1][1], declared)
        self._build(records)
        self.size = self._ends[-1] if self._ends else 0
        self.records = len(records)

    def _ends_with_marker(self, records: list[tuple[int, int, int]]) -> bool:
        last = records[-1][2] + records[-1][1] if records else HEADER_SIZE
        if last + _DATA_HDR.size > self.inner.size:
            return False
        return _DATA_HDR.unpack(self.inner.pread(last, _DATA_HDR.size)) == (END_FLAG, END_FLAG)

    def _build(self, records: list[tuple[int, int, int]]) -> None:
        # Fast path: records already sorted and disjoint (the usual case after sorting).
        order = sorted(range(len(records)), key=lambda i: records[i][0])
        disjoint = all(
            records[a][0] + records[a][1] <= records[b][0] for a, b in zip(order, order[1:], strict=False)
        )
        if disjoint:
            pieces = [(records[i][0], records[i][0] + records[i][1], records[i][2]) for i in order]
        else:
            pieces = self._resolve_overlaps(records)
        for start, end, pos in pieces:
            if self._ends and self._ends[-1] == start and self._pos[-1] + (start - self._starts[-1]) == pos:
                self._ends[-1] = end  # continues the previous piece in image and file
            else:
                self._starts.append(start)
                self._ends.append(end)
                self._pos.append(pos)

    @staticmethod
    def _resolve_overlaps(records: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """Later records win: paint from the last record backwards, keeping uncovered parts."""
        starts: list[int] = []
        ends: list[int] = []
        out: list[tuple[int, int, int]] = []
        for offset, size, pos in reversed(records):
            cur, stop = offset, offset + size
            i = bisect.bisect_right(ends, cur)
            while cur < stop:
                if i < len(starts) and starts[i] <= cur:
                    cur = max(cur, ends[i])
                    i += 1
                    continue
                nxt = starts[i] if i < len(starts) else stop
                piece_end = min(stop, nxt)
                out.append((cur, piece_end, pos + (cur - offset)))
                starts.insert(i, cur)
                ends.insert(i, piece_end)
                i += 1
                cur = piece_end
        out.sort()
        return out

    def pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes of the image at ``offset``, gathered from the records that cover them
        (zeros where no record does; short only at the end of the image).
        """
        if length <= 0 or offset >= self.size:
            return b""
        end = min(offset + length, self.size)
        buf = bytearray(end - offset)
        i = max(bisect.bisect_right(self._starts, offset) - 1, 0)
        while i < len(self._starts) and self._starts[i] < end:
            s, e, p = self._starts[i], self._ends[i], self._pos[i]
            lo, hi = max(s, offset), min(e, end)
            if lo < hi:
                buf[lo - offset:hi - offset] = self.inner.pread(p + (lo - s), hi - lo)
            i += 1
        return bytes(buf)

    def holds_data(self, offset: int, length: int) -> bool:
        """Whether any record covers part of the range (gaps read as zeros)."""
        if offset + length > self.size:
            return True  # past the end: let the read say what is wrong
        i = bisect.bisect_right(self._ends, offset)
        return i < len(self._starts) and self._starts[i] < offset + length

    def close(self) -> None:
        """Close the underlying stream's source."""
        self.inner.close()


def rearrange_stream(stream: BinaryIO, out: BinaryIO, *, name: str = "<stdin>") -> None:
    """Turn a flattened stream read sequentially into a plain image written to ``out``.

    Reads the input front to back without seeking; ``out`` must be seekable.

    :raises TruncatedDumpError: the stream ends before its end marker
    :raises CorruptDumpError: a record header is invalid
    """
    pos = 0
    head = read_full(stream, HEADER_SIZE)
    pos += len(head)
    if not probe(head):
        raise CorruptDumpError("not a flattened stream", path=name, offset=0)
    while True:
        hdr = read_full(stream, _DATA_HDR.size)
        if len(hdr) < _DATA_HDR.size:
            raise TruncatedDumpError(
                "flattened stream ends without its end marker", path=name, offset=pos,
                expected="a 16-byte record header", got=f"{len(hdr)} bytes",
            )
        offset, size = _DATA_HDR.unpack(hdr)
        if offset == END_FLAG and size == END_FLAG:
            return
        if offset < 0 or size <= 0 or size > MAX_RECORD:
            raise CorruptDumpError(
                "invalid flattened record header", path=name, offset=pos,
                expected="offset >= 0 and 0 < size <= 1 GiB", got=f"offset {offset}, size {size}",
            )
        pos += _DATA_HDR.size
        out.seek(offset)
        remaining = size
        while remaining:
            chunk = stream.read(min(remaining, 1 << 20))
            if not chunk:
                raise TruncatedDumpError(
                    "flattened record data cut short", path=name, offset=pos,
                    expected=f"{remaining} more bytes", got="end of stream",
                )
            out.write(chunk)
            pos += len(chunk)
            remaining -= len(chunk)


def read_full(stream: BinaryIO, n: int) -> bytes:
    """Read exactly ``n`` bytes from ``stream``, fewer only at its end (a pipe returns short
    reads).
    """
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class FlattenedSink:
    """Positional writes emitted as a flattened stream (to a pipe or a file).

    :param stream: where the stream goes; written strictly sequentially
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.stream.write(header_bytes())

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Append one record: the image offset and length, then the data."""
        if not len(data):
            return
        self.stream.write(_DATA_HDR.pack(offset, len(data)))
        self.stream.write(data)

    def finish(self) -> None:
        """Write the end marker and flush the stream."""
        self.stream.write(end_marker())
        self.stream.flush()
