"""Per-page codecs of the kdump-compressed format, in one registry.

Each codec carries the flag it has in ``disk_dump_header.status`` and in
``page_desc.flags`` (makedumpfile ``diskdump_mod.h``: ``DUMP_DH_COMPRESSED_*``)
and the stream it stores per page (see SPEC.md, "Page compression"):

=======  ======  ===========================================================
name     flag    stream stored per page
=======  ======  ===========================================================
zlib     0x01    zlib stream (RFC 1950), makedumpfile ``-c`` level 1 (kdumptool's page encoder)
lzo      0x02    raw LZO1X-1 block, makedumpfile ``-l``
snappy   0x04    raw snappy block, makedumpfile ``-p``
zstd     0x20    zstd frame, makedumpfile ``-z`` level 1
=======  ======  ===========================================================

lz4 has no page flag upstream; it serves whole-file transport compression
only. A codec whose Python package is missing raises
:class:`~kdumptool.errors.CodecUnavailableError` naming the package when used.
Decompression is always bounded to one page: a stream that expands to more or
less than exactly one page is corrupt.
"""

from __future__ import annotations

import os
import sys
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from kdumptool.errors import CodecUnavailableError, PageDecodeError


@dataclass(frozen=True)
class Codec:
    """One page codec.

    :param name: short name used on the command line
    :param flag: bit in ``status`` and ``page_desc.flags``
    :param package: the PyPI package that provides it
    :param option: makedumpfile's option letter for it
    """

    name: str
    flag: int
    package: str
    option: str
    _compress: Callable[[bytes], bytes]
    _decompress: Callable[[bytes, int], bytes]
    _compress_many: Callable[[list[bytes], int], list[bytes]] | None = None
    _compress_list: Callable[[list[bytes]], list[bytes]] | None = None  # one call, no threads
    _direct: Callable[[], Callable[[bytes, int], bytes | bytearray]] | None = None

    def compress(self, page: bytes) -> bytes:
        """Compress one page; the caller stores it raw if this is not smaller."""
        return self._compress(page)

    @property
    def batches(self) -> bool:
        """Whether the library compresses a list of pages on its own threads."""
        return self._compress_many is not None

    def compress_many(self, pages: list[bytes], threads: int) -> list[bytes]:
        """Compress each page (same bytes as :meth:`compress`), with the library's batch API
        on ``threads`` threads where it has one."""
        if self._compress_many is not None and len(pages) > 1:
            return self._compress_many(pages, threads)
        if self._compress_list is not None:
            return self._compress_list(pages)
        return [self._compress(p) for p in pages]

    def decode_unchecked(self, data: bytes, page_size: int) -> bytes:
        """The library's decoder alone: its own exceptions, no length check (bulk decoding
        checks the length itself and falls back to :meth:`decompress` on any error)."""
        return self._decompress(data, page_size)

    def decoder(self) -> Callable[[bytes, int], bytes | bytearray]:
        """:meth:`decode_unchecked` as one callable for bulk decoding, which calls it once per
        page: the library's own function where its arguments fit (libdeflate's zlib), else one
        small wrapper (LZO's argument order) or :meth:`decode_unchecked`'s own.

        :raises CodecUnavailableError: the codec's package is missing
        """
        return self._direct() if self._direct is not None else self._decompress

    def decompress(self, data: bytes, page_size: int) -> bytes:
        """Decode one stored page; raise :class:`PageDecodeError` unless it is exactly a page."""
        try:
            out = self._decompress(data, page_size)
        except (CodecUnavailableError, MemoryError):
            raise  # not the page's fault
        except Exception as exc:  # each library raises its own error type
            raise PageDecodeError(f"{self.name} data does not decode: {exc}") from None
        if len(out) != page_size:
            raise PageDecodeError(
                f"{self.name} data decodes to {len(out)} bytes instead of a {page_size}-byte page"
            )
        return out


def _import(module: str, package: str, codec: str) -> ModuleType:
    found = sys.modules.get(module)  # once imported: no import machinery per page
    if found is not None:
        return found
    try:
        return __import__(module)
    except ImportError:
        raise CodecUnavailableError(
            f"the {codec} codec needs the Python package '{package}' (pip install {package})"
        ) from None


# --- zlib -------------------------------------------------------------------

#: What ``-c`` may compress with (``KDUMPTOOL_ZLIB``), fastest default first. Every one of
#: them writes standard zlib streams; they differ in speed, size and which bytes they choose.
ZLIB_IMPLEMENTATIONS = ("pagezip", "libdeflate", "zlib-ng", "zlib", "isal")

def _zlib_compressor() -> Callable[[bytes], bytes]:
    """The deflate of :func:`zlib_implementation`. Each gives the same bytes for the same
    page on every thread, in every process and run (``bench/deflate_eval.py`` checks pages
    aimed at every hash slot), except ISA-L:

    * ``pagezip``, kdumptool's own page encoder (``kdumptool/_pagezip.c``, SPEC.md section 4),
      the default: no per-call cost beyond the page's own, about 3x less CPU than the standard
      zlib for the size of libdeflate's level 1; its bytes depend on the page alone;
    * ``libdeflate`` (the ``deflate`` package), level 1, the default where the C extension was
      not built: about 2x less CPU than the standard zlib for a size within 2% of it;
    * ``zlib-ng``: about 4x less CPU, about 19% larger (its level 1 is a quick single-hash
      matcher);
    * ``zlib``, the standard library: makedumpfile's ``compress2(..., Z_BEST_SPEED)``, so
      ``-c`` output byte-identical to makedumpfile's;
    * ``isal``: fast, but its bytes are *not* reproducible: its level-1/2 assembly body
      (``igzip_icf_body_h1_gr_bt.asm``, ``.write_first_byte``; ISA-L 2.32) hashes the third input
      position from a register that still holds the address of the compressor's state, so where
      a page's first positions land in the hash table depends on the calling thread's stack.
    """
    impl = zlib_implementation()
    if impl == "pagezip":
        from kdumptool import _pagezip

        page, limit = _pagezip.compress, _pagezip.PAGE_MAX
        big = _deflate_level_1("libdeflate" if _installed("libdeflate") else "zlib")
        # pages over the encoder's 64 KiB (256 KiB pages exist) go to the next deflate
        return lambda data: page(data) if len(data) <= limit else big(data)
    return _deflate_level_1(impl)


def _deflate_level_1(impl: str) -> Callable[[bytes], bytes]:
    """Level 1 of a deflate library (any of :data:`ZLIB_IMPLEMENTATIONS` but ``pagezip``;
    an unknown name: the standard zlib)."""
    if impl == "libdeflate":
        import deflate

        return lambda page: bytes(deflate.zlib_compress(page, 1))
    if impl == "zlib-ng":
        from zlib_ng import zlib_ng

        return lambda page: zlib_ng.compress(page, 1)
    if impl == "isal":
        from isal import isal_zlib

        return lambda page: isal_zlib.compress(page, 1)
    return lambda page: zlib.compress(page, 1)


_zlib_impl: Callable[[bytes], bytes] | None = None


def _zlib_compress(page: bytes) -> bytes:
    global _zlib_impl
    if _zlib_impl is None:
        _zlib_impl = _zlib_compressor()
    return _zlib_impl(page)


def _zlib_compress_list(pages: list[bytes]) -> list[bytes]:
    global _zlib_impl
    if _zlib_impl is None:
        _zlib_impl = _zlib_compressor()
    return list(map(_zlib_impl, pages))


def zlib_implementation() -> str:
    """What ``-c`` compresses with in this process: ``KDUMPTOOL_ZLIB`` (one of
    :data:`ZLIB_IMPLEMENTATIONS`) when it is installed, else ``pagezip`` when built, else
    ``libdeflate`` when installed, else ``zlib``."""
    asked = os.environ.get("KDUMPTOOL_ZLIB", "").lower()
    if asked in ZLIB_IMPLEMENTATIONS and _installed(asked):
        return asked
    for impl in ("pagezip", "libdeflate"):
        if _installed(impl):
            return impl
    return "zlib"


def _installed(impl: str) -> bool:
    try:  # literal names only (no dynamic import: tests/test_broken_input.py)
        if impl == "pagezip":
            from kdumptool import _pagezip  # noqa: F401
        elif impl == "libdeflate":
            import deflate  # noqa: F401
        elif impl == "zlib-ng":
            from zlib_ng import zlib_ng  # noqa: F401
        elif impl == "isal":
            from isal import isal_zlib  # noqa: F401
    except ImportError:
        return False
    return True


def _zlib_decompress_std(data: bytes, page_size: int) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, page_size + 1)
    if not d.eof:
        raise ValueError("zlib stream does not end within one page")
    return out


def _zlib_decompressor() -> Callable[[bytes, int], bytes]:
    """libdeflate's zlib decoder when installed (about 2.5x faster than the standard zlib on
    pages; it checks the Adler-32 and refuses output longer than a page), else zlib's."""
    try:
        import deflate
    except ImportError:
        return _zlib_decompress_std
    return lambda data, page_size: bytes(deflate.zlib_decompress(data, page_size))


def _zlib_direct() -> Callable[[bytes, int], bytes | bytearray]:
    try:
        import deflate
    except ImportError:
        return _zlib_decompress_std
    return deflate.zlib_decompress  # type: ignore[no-any-return]


_zlib_dec: Callable[[bytes, int], bytes] | None = None


def _zlib_decompress(data: bytes, page_size: int) -> bytes:
    global _zlib_dec
    if _zlib_dec is None:
        _zlib_dec = _zlib_decompressor()
    return _zlib_dec(data, page_size)


# --- lzo --------------------------------------------------------------------

def _lzo_compress(page: bytes) -> bytes:
    lzo = _import("lzo", "python-lzo", "lzo")
    return bytes(lzo.compress(page, 1, False))  # LZO1X-1, no python-lzo header


def _lzo_compress_list(pages: list[bytes]) -> list[bytes]:
    compress = _import("lzo", "python-lzo", "lzo").compress
    return [compress(p, 1, False) for p in pages]  # bytes already: one C call per page


def _lzo_direct() -> Callable[[bytes, int], bytes]:
    decompress = _import("lzo", "python-lzo", "lzo").decompress
    return lambda data, page_size: decompress(data, False, page_size)  # type: ignore[no-any-return]


def _lzo_decompress(data: bytes, page_size: int) -> bytes:
    lzo = _import("lzo", "python-lzo", "lzo")
    return bytes(lzo.decompress(data, False, page_size))


# --- snappy -----------------------------------------------------------------

def _snappy_compress(page: bytes) -> bytes:
    snappy = _import("snappy", "python-snappy", "snappy")
    return bytes(snappy.compress(page))


def _snappy_length(data: bytes) -> int:
    """The uncompressed length a raw snappy block declares (a leading varint)."""
    value = 0
    for i, byte in enumerate(data[:5]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value
    raise ValueError("bad snappy length prefix")


def _snappy_decompress(data: bytes, page_size: int) -> bytes:
    snappy = _import("snappy", "python-snappy", "snappy")
    declared = _snappy_length(data)
    if declared != page_size:
        raise ValueError(f"snappy block declares {declared} bytes")
    return bytes(snappy.uncompress(data))


# --- zstd -------------------------------------------------------------------

_zstd_local = threading.local()


def _zstd_objects() -> tuple[object, object]:
    # zstandard's (de)compressor objects are not thread-safe: one per thread.
    objs = getattr(_zstd_local, "objs", None)
    if objs is None:
        zstandard = _import("zstandard", "zstandard", "zstd")
        objs = (zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor())
        _zstd_local.objs = objs
    return objs


def _zstd_compress(page: bytes) -> bytes:
    return _zstd_objects()[0].compress(page)  # type: ignore[attr-defined]


def _zstd_compress_many(pages: list[bytes], threads: int) -> list[bytes]:
    # one frame per page, as compress() makes them, on zstd's own threads (GIL released)
    zstandard = _import("zstandard", "zstandard", "zstd")
    cctx = _zstd_objects()[0]
    try:
        done = cctx.multi_compress_to_buffer(pages, threads=threads)  # type: ignore[attr-defined]
    except zstandard.ZstdError:  # no room for its thread pool (a low ulimit -v): one by one
        return [cctx.compress(p) for p in pages]  # type: ignore[attr-defined]
    return [done[i].tobytes() for i in range(len(done))]


def _zstd_decompress(data: bytes, page_size: int) -> bytes:
    # zstandard allocates the size a frame header declares (max_output_size bounds only frames
    # that declare none): a forged size must be refused before, not met with a MemoryError
    zstandard = _import("zstandard", "zstandard", "zstd")
    declared = zstandard.frame_content_size(data)  # -1: not declared
    if declared > page_size:
        raise ValueError(f"the zstd frame declares {declared} bytes")
    return _zstd_objects()[1].decompress(data, max_output_size=page_size)  # type: ignore[attr-defined]


CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        Codec("zlib", 0x01, "zlib (standard library)", "-c", _zlib_compress, _zlib_decompress,
              _compress_list=_zlib_compress_list, _direct=_zlib_direct),
        Codec("lzo", 0x02, "python-lzo", "-l", _lzo_compress, _lzo_decompress,
              _compress_list=_lzo_compress_list, _direct=_lzo_direct),
        Codec("snappy", 0x04, "python-snappy", "-p", _snappy_compress, _snappy_decompress),
        Codec("zstd", 0x20, "zstandard", "-z", _zstd_compress, _zstd_decompress, _zstd_compress_many),
    )
}

#: All page-codec bits of ``page_desc.flags``.
CODEC_FLAG_MASK = 0x01 | 0x02 | 0x04 | 0x20


_BY_FLAGS: dict[int, Codec | None] = {}


def codec_for_flags(flags: int) -> Codec | None:
    """Return the codec a ``page_desc.flags`` value names, or None for a raw page.

    :raises ValueError: if more than one codec bit is set
    """
    bits = flags & CODEC_FLAG_MASK
    if bits in _BY_FLAGS:
        return _BY_FLAGS[bits]
    if bits == 0:
        return None
    found = [c for c in CODECS.values() if c.flag == bits]
    if not found:
        raise ValueError(f"page flags {flags:#x} name more than one codec")
    _BY_FLAGS[bits] = found[0]
    return found[0]


def get_codec(name: str) -> Codec:
    """Look a codec up by name; check that its package is importable."""
    codec = CODECS[name]
    codec.compress(b"\0" * 64)  # raises CodecUnavailableError early, naming the package
    return codec
