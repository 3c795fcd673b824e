"""Whole-file compression as a transport: ``.zst``, ``.xz``, ``.gz`` and ``.lz4`` dumps.

Spec: SPEC.md "Transport compression and the size limit"; the frame formats are
RFC 8878 (Zstandard: frame magic ``28 B5 2F FD``, skippable frames
``5? 2A 4D 18``), the .xz file format 1.1.0 (stream magic ``FD 37 7A 58 5A 00``,
stream padding), RFC 1952 (gzip members, magic ``1F 8B``, method 8) and the LZ4
frame format 1.6 (magic ``04 22 4D 18``, skippable frames as zstd's).

A compressed dump is detected by its magic bytes, never by its name. It cannot
be read at random, so it is decompressed once, front to back, with memory
bounded independently of the dump: the input is fed in small pieces (1 KiB:
at most about 32 MiB of output per piece, the worst ratio of any of these
formats), zstd frames may not declare a window above :data:`MAX_ZSTD_WINDOW`,
xz streams may not need more than :data:`XZ_MEMLIMIT`. Every frame (member,
stream) of a multi-frame file is read, and skippable frames are skipped.
:mod:`kdumptool.open` spools the result into a temporary file (a flattened
stream is rearranged on the way, as ``makedumpfile -R`` does).

:class:`CompressingWriter` is the other direction: a sequential byte stream
(the flattened format) written as one zstd or lz4 frame.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from typing import Any, BinaryIO

from kdumptool.errors import CorruptDumpError, TruncatedDumpError, UsageError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LZ4_MAGIC = b"\x04\x22\x4d\x18"
XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b\x08"  # ID1 ID2 and CM = 8 (deflate), the only method defined
SKIPPABLE_TAIL = b"\x2a\x4d\x18"  # magic 0x184D2A50..0x184D2A5F, little-endian

#: Kinds readable, in the words ``info`` uses ("zstd stream").
KINDS = ("zstd", "xz", "gzip", "lz4")
#: Kinds :class:`CompressingWriter` writes (``--stream-compress``).
WRITE_KINDS = ("zstd", "lz4")

#: Largest zstd window accepted (``zstd --long=31``); the decoder's memory is about this.
MAX_ZSTD_WINDOW = 1 << 31
#: Memory the xz decoder may use (``xz -9`` needs 65 MiB; ``--lzma2=dict=1536MiB`` about 1.5 GiB).
XZ_MEMLIMIT = 1 << 31
#: Compressed bytes fed to a decoder at a time (bounds the output of one step).
FEED = 1024


def _skippable(data: bytes, pos: int) -> bool:
    return len(data) >= pos + 4 and 0x50 <= data[pos] <= 0x5F and data[pos + 1:pos + 4] == SKIPPABLE_TAIL


def detect(head: bytes) -> str | None:
    """The compression of a file from its first bytes: one of :data:`KINDS`, or None.

    Leading skippable frames (shared by zstd and lz4) are stepped over to see which
    format follows; if they fill ``head``, zstd is assumed.
    """
    pos = 0
    while _skippable(head, pos):
        if len(head) < pos + 8:
            return "zstd"
        pos += 8 + struct.unpack_from("<I", head, pos + 4)[0]
    rest = head[pos:]
    if pos and not rest:
        return "zstd"
    if rest.startswith(ZSTD_MAGIC):
        return "zstd"
    if rest.startswith(LZ4_MAGIC):
        return "lz4"
    if pos:
        return None
    if rest.startswith(XZ_MAGIC):
        return "xz"
    if rest.startswith(GZIP_MAGIC):
        return "gzip"
    return None


def _new_decoder(kind: str) -> Any:
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW).decompressobj()
    if kind == "lz4":
        import lz4.frame

        return lz4.frame.LZ4FrameDecompressor()
    if kind == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)
    return zlib.decompressobj(16 + zlib.MAX_WBITS)  # one gzip member


def _starts_frame(kind: str, data: bytes) -> bool:
    if kind in ("zstd", "lz4"):
        return data.startswith(ZSTD_MAGIC if kind == "zstd" else LZ4_MAGIC) or _skippable(data, 0)
    return data.startswith(XZ_MAGIC if kind == "xz" else GZIP_MAGIC)


def _decoder_errors() -> tuple[type[BaseException], ...]:
    import zstandard

    # lz4.frame raises RuntimeError("LZ4F_decompress failed with code: ...")
    return (zstandard.ZstdError, lzma.LZMAError, zlib.error, RuntimeError, EOFError, ValueError,
            MemoryError)


class DecompressingReader:
    """The decompressed bytes of a compressed stream, read front to back.

    :param raw: the compressed stream (read sequentially, never seeked)
    :param kind: one of :data:`KINDS`
    :param name: the file, for errors
    :raises CorruptDumpError: (from :meth:`read`) the compressed data is invalid, naming the
        compressed offset (to within :data:`FEED` bytes)
    :raises TruncatedDumpError: (from :meth:`read`) the data ends inside a frame
    """

    def __init__(self, raw: BinaryIO, kind: str, name: str) -> None:
        if kind not in KINDS:
            raise ValueError(kind)
        self.raw = raw
        self.kind = kind
        self.name = name
        self.compressed_pos = 0  # compressed bytes taken from ``raw``
        self.frames = 0  # frames (members, streams) begun
        self._dec: Any = None
        self._pending = b""  # compressed bytes taken but not yet given to a decoder
        self._out = bytearray()
        self._done = False
        self._errors = _decoder_errors()

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` decompressed bytes (all the rest if ``n < 0``); ``b""`` at the end."""
        while (n < 0 or len(self._out) < n) and not self._done:
            self._step()
        if n < 0 or n >= len(self._out):
            out = bytes(self._out)
            self._out.clear()
        else:
            out = bytes(self._out[:n])
            del self._out[:n]
        return out

    def _fill(self, n: int) -> bool:
        """Read until ``n`` bytes are pending; False at the end of the input."""
        while len(self._pending) < n:
            more = self.raw.read(max(FEED, n - len(self._pending)))
            if not more:
                return False
            self.compressed_pos += len(more)
            self._pending += more
        return True

    def _take(self) -> bytes:
        if not self._pending:
            self._fill(1)
        chunk, self._pending = self._pending[:FEED], self._pending[FEED:]
        return chunk

    def _start_frame(self) -> None:
        """Between frames: skip padding, check the next magic, start a decoder (or end)."""
        self._fill(8)
        if self.kind in ("xz", "gzip"):  # xz stream padding; zeros gzip tolerates at the end
            while True:
                self._pending = self._pending.lstrip(b"\0")
                if self._pending or not self._fill(1):
                    break
            self._fill(8)
        if not self._pending:
            self._done = True
            return
        if not _starts_frame(self.kind, self._pending):
            what = {"zstd": "frame", "lz4": "frame", "xz": "stream", "gzip": "member"}[self.kind]
            raise CorruptDumpError(
                f"{self.kind} data: trailing bytes are not the start of a {what}", path=self.name,
                offset=self.compressed_pos - len(self._pending), expected=f"{self.kind} magic",
                got=self._pending[:6])
        self._dec = _new_decoder(self.kind)
        self.frames += 1

    def _step(self) -> None:
        if self._dec is None:
            self._start_frame()
            if self._done:
                return
        chunk = self._take()
        if not chunk:
            raise TruncatedDumpError(
                f"{self.kind} stream is truncated: the data ends inside frame {self.frames}",
                path=self.name, offset=self.compressed_pos,
                expected="the rest of the compressed frame", got="end of file")
        at = self.compressed_pos - len(self._pending) - len(chunk)  # offset of ``chunk``
        try:
            self._out += self._dec.decompress(chunk)
        except self._errors as exc:
            raise CorruptDumpError(
                f"{self.kind} data is corrupt in frame {self.frames}: {_describe(exc)}",
                path=self.name, offset=at) from None
        if self._dec.eof:
            self._pending = (self._dec.unused_data or b"") + self._pending
            self._dec = None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "too much memory" in text or "window" in text.lower() or isinstance(exc, MemoryError):
        text += f" (frames needing a window over {MAX_ZSTD_WINDOW >> 20} MiB are refused)"
    for prefix in ("zstd decompressor error: ", "zstd decompress error: "):
        text = text.replace(prefix, "")
    return text


class CompressingWriter:
    """A byte stream written through one zstd or lz4 frame (for ``--stream-compress``).

    :param stream: where the compressed bytes go (written sequentially)
    :param kind: ``"zstd"`` or ``"lz4"``
    :param level: compression level (default: the library's)
    :param threads: zstd worker threads (0: compress in the calling thread)
    """

    def __init__(self, stream: BinaryIO, kind: str, *, level: int | None = None, threads: int = 0) -> None:
        if kind not in WRITE_KINDS:
            raise UsageError(f"--stream-compress: {kind!r} is not one of {', '.join(WRITE_KINDS)}")
        self.stream = stream
        self.kind = kind
        self.written = 0  # uncompressed bytes
        if kind == "zstd":
            import zstandard

            cctx = zstandard.ZstdCompressor(level=3 if level is None else level, write_checksum=True,
                                            threads=threads)
            self._zw: Any = cctx.stream_writer(stream, closefd=False, write_size=1 << 20)
            self._zstd_flush = zstandard.FLUSH_FRAME
        else:
            import lz4.frame

            self._lz = lz4.frame.LZ4FrameCompressor(
                block_size=lz4.frame.BLOCKSIZE_MAX4MB, content_checksum=True,
                compression_level=0 if level is None else level)
            stream.write(self._lz.begin())

    def write(self, data: bytes | memoryview) -> int:
        """Compress ``data`` into the stream.

        :return: the number of bytes taken (all of them)
        """
        self.written += len(data)
        if self.kind == "zstd":
            self._zw.write(data)
        else:
            self.stream.write(self._lz.compress(bytes(data)))
        return len(data)

    def flush(self) -> None:
        """Flush Python buffers only; the frame stays open until :meth:`finish`."""
        self.stream.flush()

    def finish(self) -> None:
        """End the frame and flush."""
        if self.kind == "zstd":
            self._zw.flush(self._zstd_flush)
        else:
            self.stream.write(self._lz.flush())
        self.stream.flush()


def compress_bound(kind: str, size: int) -> int:
    """Largest compressed size of ``size`` bytes (zstd ``ZSTD_compressBound`` and the lz4
    frame bound, rounded up generously: headers, block headers, checksums)."""
    return size + size // 255 + 4096


__all__ = ["KINDS", "WRITE_KINDS", "CompressingWriter", "DecompressingReader", "compress_bound", "detect"]
