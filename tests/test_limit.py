"""``-L SIZE``: makedumpfile's output size limit, on the bundled real dump.

makedumpfile 1.7 (``makedumpfile.c``: ``write_and_check_space``, ``create_dumpfile``,
``check_and_modify_headers``): when a write would pass the limit, the dump level list
(``-d 11,31``) is tried next; at the last level the dump is kept, cut at the limit,
with ``DUMP_DH_COMPRESSED_INCOMPLETE`` (kdump) or ``e_flags`` bit 0 (ELF) set, and the
run fails (exit status 1). The tests compare with makedumpfile's own ``-L`` output.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from ours import HANG_S, REPO, assert_peers_read, kdumptool, our_digests

from corpus import need_corpus_file
from kdumptool.api import parse_size
from kdumptool.errors import TruncatedDumpError, UsageError
from kdumptool.formats.elf import DUMP_ELF_INCOMPLETE
from kdumptool.formats.kdump import DUMP_DH_COMPRESSED_INCOMPLETE
from kdumptool.open import open_dump

BUNDLED = REPO / "corpus" / "x86_64-kdump-320m-c-d31.kdump"
STATUS_OFFSET = 0x1A8  # disk_dump_header.status, 64-bit layout
E_FLAGS_OFFSET = 0x30  # Elf64_Ehdr.e_flags
LIMIT = 10 << 20


@pytest.fixture(scope="module")
def full() -> dict[int, str]:
    return our_digests(BUNDLED)


def _scan(path: Path) -> tuple[dict[int, str], list[int]]:
    """Pages with data and lost pfns, read strictly (the file says it is incomplete)."""
    from hashlib import sha1

    pages: dict[int, str] = {}
    lost: list[int] = []
    with open_dump(str(path)) as reader:
        for batch in reader.iter_batches():
            for pfn, row in zip(batch.pfns().tolist(), batch.data, strict=True):
                pages[pfn] = sha1(row.tobytes()).hexdigest()
            lost += (batch.start + batch.lost.nonzero()[0]).tolist()
    return pages, lost


def _check_cut(path: Path, full: dict[int, str], limit: int) -> tuple[dict[int, str], list[int]]:
    assert path.stat().st_size <= limit
    pages, lost = _scan(path)
    assert lost and pages
    assert all(full[p] == d for p, d in pages.items())  # what is there is right
    assert set(pages) | set(lost) == set(full)  # what is not there is reported lost
    assert max(pages) < min(lost)  # pages are written in PFN order until the limit
    return pages, lost


def test_parse_size_follows_memparse() -> None:
    assert parse_size("10M") == 10 << 20 and parse_size("10m") == 10 << 20
    assert parse_size("1G") == 1 << 30 and parse_size("4k") == 4096 and parse_size("2T") == 2 << 40
    assert parse_size("0x100K") == 256 << 10 and parse_size("010") == 8 and parse_size("123") == 123
    for bad in ("", "0", "M", "10X", "1.5G", "-1", "10 M", "0x"):
        with pytest.raises(UsageError):
            parse_size(bad)


def test_kdump_cut_at_the_limit_is_marked_incomplete(tmp_path: Path, full: dict[int, str]) -> None:
    out = tmp_path / "cut.kdump"
    proc = kdumptool("convert", "-c", "-L", "10M", BUNDLED, out)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert f"the size limit of {LIMIT} bytes is reached at dump level 31: the dump is incomplete" in err
    raw = out.read_bytes()
    assert struct.unpack_from("<I", raw, STATUS_OFFSET)[0] & DUMP_DH_COMPRESSED_INCOMPLETE
    pages, lost = _check_cut(out, full, LIMIT)
    assert len(pages) > 9000 and len(raw) > LIMIT - 64 * 4096  # the limit is used, not wasted
    s = json.loads(kdumptool("info", "--json", out).stdout)
    assert s["incomplete"] and s["pages"]["lost"] == len(lost)
    fsck = kdumptool("fsck", out)
    assert b"marked incomplete" in fsck.stdout


def test_same_cut_as_makedumpfile(tmp_path: Path, full: dict[int, str]) -> None:
    from peers import require_tool, run_makedumpfile

    require_tool("makedumpfile")
    theirs = tmp_path / "mdf.kdump"
    proc = run_makedumpfile(["-c", "-d", "31", "-L", "10M", BUNDLED, theirs], timeout=HANG_S)
    assert proc.returncode == 1 and b"Size limit(10485760) reached" in proc.stdout + proc.stderr
    ours = tmp_path / "ours.kdump"
    assert kdumptool("convert", "-q", "-c", "-L", "10M", BUNDLED, ours).returncode == 1
    their_pages, their_lost = _check_cut(theirs, full, LIMIT)
    our_pages, our_lost = _check_cut(ours, full, LIMIT)
    assert struct.unpack_from("<I", theirs.read_bytes(), STATUS_OFFSET)[0] & DUMP_DH_COMPRESSED_INCOMPLETE
    # same order, same limit, same codec: the cut falls within a few pages of theirs
    assert abs(len(our_lost) - len(their_lost)) <= 32
    assert abs(min(our_lost) - min(their_lost)) <= 64


def test_elf_cut_at_the_limit(tmp_path: Path, full: dict[int, str]) -> None:
    out = tmp_path / "cut.elf"
    proc = kdumptool("convert", "-E", "-L", "20M", BUNDLED, out)
    assert proc.returncode == 1 and b"the dump is incomplete" in proc.stderr
    raw = out.read_bytes()
    assert struct.unpack_from("<I", raw, E_FLAGS_OFFSET)[0] & DUMP_ELF_INCOMPLETE
    pages, lost = _check_cut(out, full, 20 << 20)
    # the flag is what makes the strict reader accept the short file
    flipped = tmp_path / "noflag.elf"
    flipped.write_bytes(raw[:E_FLAGS_OFFSET] + bytes(4) + raw[E_FLAGS_OFFSET + 4:])
    with pytest.raises(TruncatedDumpError):
        open_dump(str(flipped))
    reconverted = tmp_path / "re.kdump"  # an incomplete source stays incomplete
    assert kdumptool("convert", "-q", out, reconverted).returncode == 0
    assert json.loads(kdumptool("info", "--json", reconverted).stdout)["incomplete"]
    assert our_digests(reconverted) == pages


def test_flattened_and_compressed_stream_limits(tmp_path: Path, full: dict[int, str]) -> None:
    flat = tmp_path / "cut.flat"
    assert kdumptool("convert", "-q", "-c", "-F", "-L", "10M", BUNDLED, flat).returncode == 1
    assert flat.stat().st_size <= LIMIT
    pages, lost = _check_cut(flat, full, LIMIT)  # a complete stream: header and end marker
    assert open_dump(str(flat)).info.transport == "flattened"
    from peers import require_tool, run_makedumpfile

    require_tool("makedumpfile")
    rearranged = tmp_path / "R.kdump"
    proc = run_makedumpfile(["-R", rearranged], stdin=flat, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr.decode()
    assert _scan(rearranged) == (pages, lost)
    zst = tmp_path / "cut.zst"
    proc = kdumptool("convert", "-q", "-F", "--stream-compress", "zstd", "-L", "2M", BUNDLED, zst)
    assert proc.returncode == 1 and zst.stat().st_size <= 2 << 20
    _check_cut(zst, full, 2 << 20)


def test_level_list_is_tried_before_cutting(tmp_path: Path) -> None:
    src = need_corpus_file("x86_64-kdump-320m/derived/c-d1.kdump")  # makedumpfile -c -d 1
    d31 = tmp_path / "d31.kdump"
    assert kdumptool("convert", "-q", "-c", "-d", "31", src, d31).returncode == 0
    limit = d31.stat().st_size + 4096  # too small for level 1, enough for 31
    out = tmp_path / "out.kdump"
    proc = kdumptool("convert", "-q", "-c", "-d", "1,31", "-L", str(limit), src, out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"retrying with dump level 31" in proc.stderr
    assert out.read_bytes() == d31.read_bytes()  # complete, as if -d 31 had been asked
    # a limit no level meets: the last level is cut and kept
    proc = kdumptool("convert", "-q", "-c", "-d", "1,31", "-L", "5M", src, out, "--force")
    assert proc.returncode == 1 and b"retrying with dump level 31" in proc.stderr
    s = json.loads(kdumptool("info", "--json", out).stdout)
    assert s["incomplete"] and s["dump_level"] == 31 and out.stat().st_size <= 5 << 20


def test_limit_too_small_for_the_metadata(tmp_path: Path) -> None:
    out = tmp_path / "none.kdump"
    proc = kdumptool("convert", "-c", "-L", "100K", BUNDLED, out)
    assert proc.returncode == 1
    assert b"is too small for the dump's headers, bitmaps and page table" in proc.stderr
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing left behind
    proc = kdumptool("convert", "-L", "10Q", BUNDLED, out)
    assert proc.returncode == 2 and b"size limit '10Q' is invalid" in proc.stderr


@pytest.mark.peer
def test_peers_read_the_cut_dump(tmp_path: Path) -> None:
    from peers import run_crash_osrelease

    out = tmp_path / "cut.kdump"
    assert kdumptool("convert", "-q", "-c", "-L", "10M", BUNDLED, out).returncode == 1
    pages, _ = _scan(out)
    # drgn and libkdumpfile read every stored page as we do; both skip pfn 1 (a zero page)
    # in a dump marked incomplete, exactly as in makedumpfile's own -L output
    assert_peers_read(out, pages, max_unread=1)
    assert run_crash_osrelease(out) == "6.1.0-56-amd64"
    elf = tmp_path / "cut.elf"
    assert kdumptool("convert", "-q", "-E", "-L", "20M", BUNDLED, elf).returncode == 1
    assert_peers_read(elf, _scan(elf)[0])
