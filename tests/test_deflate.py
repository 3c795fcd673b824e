"""The deflate implementations of ``-c`` (``KDUMPTOOL_ZLIB``): kdumptool's own page encoder
(``pagezip``) by default, libdeflate, zlib-ng, the standard zlib (makedumpfile's bytes) and
ISA-L. The reproducible ones give the same bytes for a page on any thread and in any process;
pages aimed at every hash slot check it (the ISA-L level-1 body picks a slot from a stack
address: issue 17)."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
import threading
import zlib

import pytest

from kdumptool import codecs
from kdumptool.codecs import CODECS, PageDecodeError

PAGE = 4096
REPRODUCIBLE = ["pagezip", "libdeflate", "zlib-ng", "zlib"]


def _pages() -> list[bytes]:
    """Pages opening with a 4-byte key repeated: keys over every slot of a 13-bit CRC hash and
    spread over multiplicative hashes, then a few real-looking mixed pages."""
    keys = [k << 16 for k in range(8192)] + [k * 0x9E3779B1 & 0xFFFFFFFF for k in range(2048)]
    pages = []
    for k in keys:
        head = struct.pack("<I", k) * 4
        pages.append((head + bytes(48) + head).ljust(PAGE, b"\0"))
    pages += [bytes((i * 7 + j) % 251 for i in range(PAGE)) for j in range(16)]
    return pages


def _compressor(impl: str):  # type: ignore[no-untyped-def]
    if not codecs._installed(impl):
        pytest.skip(f"{impl} is not installed")
    return {
        "pagezip": lambda p: __import__("kdumptool._pagezip", fromlist=["x"]).compress(p),
        "libdeflate": lambda p: bytes(__import__("deflate").zlib_compress(p, 1)),
        "zlib-ng": lambda p: __import__("zlib_ng.zlib_ng", fromlist=["x"]).compress(p, 1),
        "zlib": lambda p: zlib.compress(p, 1),
    }[impl]


def _digest(compress, pages: list[bytes]) -> str:  # type: ignore[no-untyped-def]
    h = hashlib.sha256()
    for p in pages:
        h.update(compress(p))
    return h.hexdigest()


@pytest.mark.parametrize("impl", REPRODUCIBLE)
def test_same_bytes_on_two_live_threads_and_in_another_process(impl: str) -> None:
    compress = _compressor(impl)
    pages = _pages()
    here = _digest(compress, pages)
    got: dict[int, str] = {}
    barrier = threading.Barrier(2)

    def work(n: int) -> None:
        barrier.wait()  # two distinct thread stacks at once
        got[n] = _digest(compress, pages)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(got.values()) == {here}
    code = ("import sys; sys.path.insert(0, 'tests'); import test_deflate as t; "
            f"print(t._digest(t._compressor({impl!r}), t._pages()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == here  # another process: other addresses (ASLR)


def test_the_default_is_pagezip_and_zlib_gives_makedumpfiles_bytes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    page = _pages()[7]
    monkeypatch.delenv("KDUMPTOOL_ZLIB", raising=False)
    if codecs._installed("pagezip"):
        assert codecs.zlib_implementation() == "pagezip"
    elif codecs._installed("libdeflate"):  # no C compiler at install time
        assert codecs.zlib_implementation() == "libdeflate"
    monkeypatch.setenv("KDUMPTOOL_ZLIB", "zlib")
    monkeypatch.setattr(codecs, "_zlib_impl", None)
    assert codecs.zlib_implementation() == "zlib"
    assert CODECS["zlib"].compress(page) == zlib.compress(page, 1)
    monkeypatch.setenv("KDUMPTOOL_ZLIB", "no-such-deflate")  # an unknown name: the default
    assert codecs.zlib_implementation() in ("pagezip", "libdeflate", "zlib")


@pytest.mark.parametrize("impl", ["pagezip", "libdeflate", "zlib-ng", "isal"])
def test_every_implementation_writes_streams_zlib_decodes(impl: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if not codecs._installed(impl):
        pytest.skip(f"{impl} is not installed")
    monkeypatch.setenv("KDUMPTOOL_ZLIB", impl)
    monkeypatch.setattr(codecs, "_zlib_impl", None)
    assert codecs.zlib_implementation() == impl
    for page in _pages()[::500]:
        stream = CODECS["zlib"].compress(page)
        assert zlib.decompress(stream) == page
        assert CODECS["zlib"].decompress(stream, PAGE) == page


def test_the_page_decoder_refuses_more_or_less_than_a_page() -> None:
    zc = CODECS["zlib"]
    with pytest.raises(PageDecodeError, match="zlib data does not decode"):
        zc.decompress(zlib.compress(bytes(PAGE + 1)), PAGE)
    with pytest.raises(PageDecodeError, match="instead of a 4096-byte page"):
        zc.decompress(zlib.compress(bytes(100)), PAGE)
    bad = bytearray(zlib.compress(bytes(PAGE)))
    bad[-1] ^= 1  # the Adler-32 is checked
    with pytest.raises(PageDecodeError):
        zc.decompress(bytes(bad), PAGE)
