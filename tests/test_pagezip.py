"""kdumptool's own page encoder (``kdumptool/_pagezip.c``), the default deflate of ``-c``.

Every stream it writes must decode to the page with the standard zlib and with libdeflate
(what makedumpfile, crash, libkdumpfile and drgn decode with; ``test_interop.py`` runs
them on its output), whatever the page: real dump pages, pages built to stress each part of
the encoder (the longest distance, the longest match, a Huffman tree deeper than deflate
allows, fixed against dynamic codes), and arbitrary bytes (Hypothesis). Its size on real
pages is checked against libdeflate's, its bytes against a digest (the same on any machine).
The extension is optional for an install without a C compiler; in CI (``CI`` set) it must be
there.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import random
import threading
import zlib
from pathlib import Path

import builders as B
import deflate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ours import REPO, read_all_pages

import kdumptool
from kdumptool import codecs
from kdumptool.open import open_dumps

if not codecs._installed("pagezip"):
    if os.environ.get("CI"):
        pytest.fail("kdumptool._pagezip was not built (CI is set)", pytrace=False)
    pytest.skip("kdumptool._pagezip was not built (no C compiler at install?)",
                allow_module_level=True)

from kdumptool import _pagezip  # noqa: E402

BUNDLED = REPO / "corpus" / "x86_64-kdump-320m-c-d31.kdump"


def _round_trip(data: bytes) -> bytes:
    stream = _pagezip.compress(data)
    assert stream[:2] == b"\x78\x01"
    assert zlib.decompress(stream) == data
    assert bytes(deflate.zlib_decompress(stream, max(len(data), 1))) == data
    return stream


def _fibonacci_page() -> bytes:
    """64 KiB whose byte counts follow the Fibonacci series (shuffled): the optimal Huffman
    tree is one level deeper per byte value, well past deflate's 15 bits, so the encoder
    must limit the code lengths."""
    counts, a, b = [], 1, 1
    while sum(counts) + a <= 65536:
        counts.append(a)
        a, b = b, a + b
    data = bytearray()
    for value, count in enumerate(counts):
        data += bytes([value * 5 + 1]) * count
    data += bytes(65536 - len(data))
    random.Random(5).shuffle(data)
    return bytes(data)


def test_edge_inputs_decode() -> None:
    rng = random.Random(1)
    noise = bytes(rng.getrandbits(8) for _ in range(65536))
    cases = [
        b"", b"a", b"ab", b"abc", b"abcd", bytes(4096), b"\xff" * 4096, bytes(65536),
        noise[:4096], noise,  # incompressible: a stream longer than the input
        bytes(range(256)) * 16,  # every literal, then matches at distance 256
        noise[:32768] * 2,  # the farthest match deflate allows (32768 bytes back)
        noise[:32769] + noise[:32767],  # one byte too far: literals, not a match
        (noise[:300] + bytes(700)) * 4 + noise[:96],  # matches of 258 and longer runs
        _fibonacci_page(),
    ]
    for data in cases:
        _round_trip(data)
    btype = lambda data: (_pagezip.compress(data)[2] >> 1) & 3  # noqa: E731 (RFC 1951 3.2.3)
    assert btype(b"abcd") == 1 and btype(noise[:4096]) == 2  # fixed codes, dynamic codes
    # the 64 KiB of noise cannot shrink: fixed or dynamic codes, never more than 1/8 larger
    assert len(_pagezip.compress(noise)) <= len(noise) + len(noise) // 8 + 64
    assert len(_pagezip.compress(bytes(65536))) < 300


def _optimal(counts: list[int]) -> tuple[int, int]:
    """Bits and depth of an unlimited optimal Huffman code (the cost is the sum of the merged
    weights)."""
    heap = [(c, 0) for c in counts if c]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        (a, da), (b, db) = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, (a + b, max(da, db) + 1))
    return cost, heap[0][1]


@pytest.mark.parametrize("counts, maxbits", [
    ([1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181], 7),
    ([int(1.6 ** k) + 1 for k in range(30)], 15),  # a distance code 28 levels deep unlimited
    ([int(1.6 ** k) + 1 for k in range(40)] + [0] * 246, 15),
    ([5, 0, 0, 0], 15),  # one symbol: a second one is given length 1 (complete code)
    ([0, 0, 0, 0], 15),
    ([3, 3, 3, 3, 3], 3),
])
def test_code_lengths_are_limited_and_complete(counts: list[int], maxbits: int) -> None:
    lengths = list(_pagezip._code_lengths(counts, maxbits))
    used = [n for n in lengths if n]
    assert max(used) <= maxbits
    assert len(used) >= 2 and sum(2.0 ** -n for n in used) == 1.0  # complete: decoders insist
    assert all(lengths[i] for i, c in enumerate(counts) if c)  # every counted symbol has a code


def test_unlimited_code_lengths_are_optimal() -> None:
    rng = random.Random(3)
    checked = 0
    for _ in range(300):
        n = rng.randrange(2, 287)
        counts = [rng.choice([0, rng.randrange(1, 50), rng.randrange(1, 5000)]) for _ in range(n)]
        cost, depth = _optimal(counts)
        if depth <= 14:  # no limit reached on any tie-breaking: the optimum is unique in cost
            lengths = _pagezip._code_lengths(counts, 15)
            assert sum(c * n for c, n in zip(counts, lengths, strict=True)) == cost
            checked += 1
    assert checked > 50


def test_threads_each_have_their_own_state() -> None:
    """The encoder keeps its tables per thread (freed when the thread ends) and releases the
    GIL: threads compressing at once, and threads that come and go, get the same bytes."""
    rng = random.Random(9)
    pages = [bytes(rng.choice(b"ab\0\xffkdump") for _ in range(4096)) for _ in range(64)]
    want = [_pagezip.compress(p) for p in pages]
    got: dict[int, list[bytes]] = {}

    def work(n: int) -> None:
        got[n] = [_pagezip.compress(p) for p in pages]

    for _ in range(3):  # 3 rounds of 8 live threads: 24 thread states made and freed
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(v == want for v in got.values()) and len(got) == 8
        got.clear()


def test_pages_over_64_kib_go_to_libdeflate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The encoder takes at most 64 KiB; a dump of 256 KiB pages (an accepted block size)
    still converts with -c by default: those pages are libdeflate's level 1, and read back."""
    monkeypatch.delenv("KDUMPTOOL_ZLIB", raising=False)
    monkeypatch.setattr(codecs, "_zlib_impl", None)
    big = 256 << 10
    pages = B.make_pages([(0, 6)], big, zero=[2], noisy=[4])
    src = B.write_to(tmp_path / "in.elf", B.build_elf(pages, page_size=big,
                                                        vmcoreinfo=B.vmcoreinfo_text(page_size=big)))
    out = tmp_path / "out.kdump"
    kdumptool.convert(str(src), str(out), level=0, codec="zlib", threads=1)
    with open_dumps([str(src)]) as a, open_dumps([str(out)]) as b:
        assert read_all_pages(a) == read_all_pages(b) and len(read_all_pages(b)) == 6
    page = bytes(range(256)) * 1024
    assert codecs.CODECS["zlib"].compress(page) == bytes(deflate.zlib_compress(page, 1))


def test_refuses_what_is_not_a_page() -> None:
    with pytest.raises(ValueError, match="at most 65536 bytes"):
        _pagezip.compress(bytes(65537))
    with pytest.raises(TypeError):
        _pagezip.compress("a str")  # type: ignore[arg-type]


@settings(max_examples=400)
@given(st.binary(max_size=9000) | st.lists(st.sampled_from([b"\0" * 64, b"ab", b"kdump", b"\xff"]),
                                           max_size=300).map(b"".join))
def test_any_bytes_round_trip(data: bytes) -> None:
    _round_trip(data)


def test_real_pages_decode_and_are_as_small_as_libdeflates() -> None:
    with open_dumps([str(BUNDLED)]) as reader:
        pages = list(read_all_pages(reader).values())
    assert len(pages) > 10000
    ours = theirs = 0
    digest = hashlib.sha256()
    for page in pages:
        stream = _round_trip(page)
        digest.update(stream)
        ours += min(len(stream), len(page))
        theirs += min(len(deflate.zlib_compress(page, 1)), len(page))
    assert ours <= theirs * 1.03  # the encoder keeps -c's size (libdeflate level 1's, ~zlib's)
    # the same bytes on every machine and run: the stream depends on the page alone
    assert digest.hexdigest() == _digest_of_bundled_pages()


def _digest_of_bundled_pages() -> str:
    """Recorded from this encoder; changing the encoder changes ``-c`` output and this value
    (bench/identity.py then reports every ``-c`` command)."""
    return "7655729887adc506759ef5852426748bce1210c5d8df866375242dafd6c1cf85"
