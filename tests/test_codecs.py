"""Page codecs: the same page gives the same stored bytes, whatever thread compresses it.

Issue 17: ``convert -c`` wrote different bytes from run to run (a few page descriptors 1-4
bytes apart), with any ``--threads``. The cause was ISA-L's level-1 deflate (``isal``
1.9.1, ISA-L 2.32): on the first byte of a stream its assembly body
(``igzip_icf_body_h1_gr_bt.asm``, ``.write_first_byte``) hashes the third input position
from a register that still holds the address of the ``isal_zstream`` (on the calling
thread's C stack in ``isal_zlib.compress``), so position 2 lands in a hash slot chosen by
that address and may overwrite the slot of position 0 or 1. A later match against the
start of the page is then found on one thread and missed on another (or in another run:
ASLR moves the stacks). The streams stay valid; only their bytes change.
"""

from __future__ import annotations

import hashlib
import struct
import threading

import pytest
from ours import REPO, kdumptool

from kdumptool import codecs

BUNDLED = REPO / "corpus" / "x86_64-kdump-320m-c-d31.kdump"
PAGE = 4096


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


def _crc32c_raw(value: int, table: list[int]) -> int:
    """The x86 ``crc32 r32, r32`` instruction from 0 (CRC-32C, no inversion): ISA-L's hash."""
    c = 0
    for b in struct.pack("<I", value):
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c


def _adversarial_pages() -> list[bytes]:
    """8192 pages, each opening with a 4-byte key written four times; the keys hash (ISA-L's
    CRC-32C of a position's four bytes, 8192 slots for a 4 KiB input) to every slot once.

    Whatever slot a thread's stack address picks for position 2, one page has its key there:
    on that thread position 0 is lost from its slot, and the repeat at position 4 is coded
    differently. (Measured: every one of 60 stack addresses tried changed one page.)"""
    table = _crc32c_table()
    keys = [k << 16 for k in range(8192)]
    assert len({_crc32c_raw(k, table) & 8191 for k in keys}) == 8192  # every slot covered
    pages = []
    for k in keys:
        head = struct.pack("<I", k) * 4
        pages.append((head + bytes(48) + head).ljust(PAGE, b"\0"))
    return pages


@pytest.fixture
def default_zlib(monkeypatch: pytest.MonkeyPatch) -> codecs.Codec:
    """The zlib codec as a user gets it (conftest pins ``KDUMPTOOL_ZLIB`` for other tests)."""
    monkeypatch.delenv("KDUMPTOOL_ZLIB", raising=False)
    monkeypatch.setattr(codecs, "_zlib_impl", None)
    return codecs.CODECS["zlib"]


def test_zlib_pages_are_the_same_bytes_on_every_thread(default_zlib: codecs.Codec) -> None:
    pages = _adversarial_pages()
    here = [default_zlib.compress(p) for p in pages]
    results: dict[int, list[bytes]] = {}
    start = threading.Barrier(2)

    def work(n: int) -> None:
        start.wait()  # both alive at once: two distinct thread stacks
        results[n] = [default_zlib.compress(p) for p in pages]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n, got in results.items():
        differ = [i for i, (a, b) in enumerate(zip(here, got, strict=True)) if a != b]
        assert not differ, f"thread {n}: {len(differ)} of {len(pages)} pages compress differently"


def test_zlib_is_makedumpfiles_bytes_when_asked(default_zlib: codecs.Codec,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The default (kdumptool's page encoder) is reproducible; ``KDUMPTOOL_ZLIB=zlib`` gives
    makedumpfile's own bytes (level 1, zlib's compress2)."""
    import zlib

    page = _adversarial_pages()[5]
    if codecs._installed("pagezip"):
        assert codecs.zlib_implementation() == "pagezip"
    monkeypatch.setenv("KDUMPTOOL_ZLIB", "zlib")
    monkeypatch.setattr(codecs, "_zlib_impl", None)
    assert codecs.zlib_implementation() == "zlib"
    assert default_zlib.compress(page) == zlib.compress(page, 1)


def test_isal_is_an_explicit_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("isal.isal_zlib")
    monkeypatch.setenv("KDUMPTOOL_ZLIB", "isal")
    assert codecs.zlib_implementation() == "isal"


@pytest.mark.parametrize("threads", ["1", "2"])
def test_convert_c_is_reproducible_and_makedumpfiles_bytes(
        tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, threads: str) -> None:
    """``convert -c`` of the bundled dump (makedumpfile -c -d 31) gives the same file run after
    run, on one worker or two; with ``KDUMPTOOL_ZLIB=zlib`` it is the file makedumpfile wrote,
    byte for byte."""
    monkeypatch.delenv("KDUMPTOOL_ZLIB", raising=False)
    want = hashlib.sha256(BUNDLED.read_bytes()).hexdigest()
    got = set()
    for run in range(2):
        out = tmp_path / f"out{run}.kdump"  # type: ignore[operator]
        proc = kdumptool("convert", "-q", "-c", "--threads", threads, BUNDLED, out)
        assert proc.returncode == 0, proc.stderr.decode()
        got.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(got) == 1
    out = tmp_path / "zlib.kdump"  # type: ignore[operator]
    proc = kdumptool("convert", "-q", "-c", "--threads", threads, BUNDLED, out,
                     env={"KDUMPTOOL_ZLIB": "zlib"})
    assert proc.returncode == 0, proc.stderr.decode()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == want
