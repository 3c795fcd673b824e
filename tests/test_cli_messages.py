"""What a user sees: exit codes that keep their documented meaning, counts that agree
between commands, one notation for PFN ranges, and text that quotes garbage safely."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from ours import REPO, kdumptool

BUNDLED = REPO / "corpus" / "x86_64-kdump-320m-c-d31.kdump"


# --- fsck: an input that cannot be read is exit 3, in text and in JSON ----------------------

@pytest.mark.parametrize("what", ["missing", "directory"])
def test_fsck_of_unreadable_input_exits_3(tmp_path: Path, what: str) -> None:
    path = tmp_path / "nothing-here" if what == "missing" else tmp_path
    proc = kdumptool("fsck", path)
    assert proc.returncode == 3, proc.stderr.decode()
    assert proc.stdout.decode() == f"{path}: fatal: cannot open: " \
        f"{os.strerror(errno.ENOENT if what == 'missing' else errno.EISDIR)}\n"
    proc = kdumptool("fsck", "--json", path)
    assert proc.returncode == 3, proc.stderr.decode()
    report = json.loads(proc.stdout)  # still one JSON object, with the error in it
    assert report["exit_code"] == 3
    assert [(f["severity"], f["code"]) for f in report["findings"]] == [("fatal", "unreadable")]


def test_fsck_names_the_missing_part_of_a_set(tmp_path: Path) -> None:
    missing = tmp_path / "part2"
    proc = kdumptool("fsck", BUNDLED, missing)
    assert proc.returncode == 3
    assert f"fatal: {missing}: cannot open:" in proc.stdout.decode()


@pytest.mark.parametrize("failure", ["open", "read"])
def test_fsck_of_a_file_the_system_refuses_exits_3(monkeypatch: pytest.MonkeyPatch,
                                                   failure: str) -> None:
    """Permission denied on open, an I/O error on read: 3 (not 1 "repairable" or 2
    "data lost"), as root too (where a chmod 000 file is still readable)."""
    import kdumptool.transport.source as source
    from kdumptool.cli import main

    if failure == "open":
        real_open = os.open

        def refuse(path: str, *args: object, **kwargs: object) -> int:
            if os.fspath(path) == str(BUNDLED):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
            return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(source.os, "open", refuse)
    else:
        def eio(self: object, offset: int, length: int) -> bytes:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        monkeypatch.setattr(source.FileSource, "pread", eio)
    res = CliRunner().invoke(main, ["fsck", "--json", str(BUNDLED)])
    assert res.exit_code == 3, res.output
    report = json.loads(res.stdout)
    assert report["findings"][0]["code"] == "unreadable"
    assert os.strerror(errno.EACCES if failure == "open" else errno.EIO) in report["findings"][0]["message"]


def test_other_commands_exit_3_for_a_missing_input(tmp_path: Path) -> None:
    proc = kdumptool("info", tmp_path / "nothing-here")
    assert proc.returncode == 3
    assert proc.stderr.decode() == f"kdumptool: error: {tmp_path / 'nothing-here'}: cannot open: " \
        f"{os.strerror(errno.ENOENT)}\n"


# --- fsck: "clean" says how far the check went ----------------------------------------------

def test_fsck_says_metadata_clean_without_deep() -> None:
    proc = kdumptool("fsck", BUNDLED)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.decode() == f"{BUNDLED}: metadata clean (pages not decoded; --deep decodes them)\n"
    proc = kdumptool("fsck", "--deep", BUNDLED)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.decode() == f"{BUNDLED}: 21097 pages decoded\n{BUNDLED}: clean\n"


# --- one notation for PFN ranges: half-open [start, end), as in --json --------------------

def _half_open(ranges: list[list[int]]) -> str:
    return ", ".join(f"[{a:#x}, {b:#x})" for a, b in ranges[:20]) + \
        (f" (+{len(ranges) - 20} more)" if len(ranges) > 20 else "")


def test_pfn_ranges_are_printed_half_open_everywhere(tmp_path: Path) -> None:
    from corpus import need_corpus_file

    broken = need_corpus_file("x86_64-kdump-320m/broken/c-d31-trunc30.kdump")
    report = json.loads(kdumptool("fsck", "--json", broken).stdout)
    lost = report["lost_pfn_ranges"]
    assert lost and all(a < b for a, b in lost)
    text = kdumptool("fsck", broken).stdout.decode().splitlines()
    assert f"{broken}: lost PFN ranges: {_half_open(lost)}" in text
    proc = kdumptool("repair", broken, tmp_path / "r.kdump")
    assert f"lost PFN ranges: {_half_open(lost)}" in proc.stdout.decode().splitlines()
    info = kdumptool("info", BUNDLED).stdout.decode().splitlines()
    assert "pfn range:     [0x0, 0x13fda)" in info


def test_a_missing_split_part_is_named_half_open(tmp_path: Path) -> None:
    import builders as B

    pages = B.make_pages([(0, 300)])
    parts = B.build_kdump_split(pages, parts=3)
    for i, data in enumerate(parts):
        (tmp_path / f"p{i}").write_bytes(data)
    report = json.loads(kdumptool("fsck", "--json", tmp_path / "p0", tmp_path / "p2").stdout)
    (gap,) = [f for f in report["findings"] if f["code"] == "split-part-missing"]
    assert gap["message"] == "the split set has no part for PFNs [0x64, 0xc8)"  # part 2 of 3
    assert gap["lost_pfn_ranges"] == [[0x64, 0xc8]]


# --- garbage quoted from a dump is escaped and short ---------------------------------------

def test_notices_quote_garbage_escaped_and_short(tmp_path: Path) -> None:
    """A fabricated VMCOREINFO whose init_uts_ns points at binary data, and a header release
    holding a terminal escape sequence: the notices print them escaped (printable ASCII only,
    nothing a terminal would act on) and cut to 32 bytes."""
    import builders as B

    garbage = bytes([0xE9, 0x1B, 0x5B, 0x32, 0x4A, 0x07, 0xC3, 0xA1]) * 8  # 64 bytes, no NUL
    page = bytearray(B.page_for(5))
    page[2 * 65:3 * 65] = garbage + b"\0"
    pages = dict(B.make_pages([(0, 16)]))
    pages[5] = bytes(page)
    vmci = B.vmcoreinfo_text("6.1.0-test", extra={"SYMBOL(init_uts_ns)": 0xFFFFFFFF80000000 + 5 * 4096,
                                                  "NUMBER(phys_base)": 0})
    path = tmp_path / "garbage.kdump"
    path.write_bytes(B.build_kdump(pages, vmcoreinfo=vmci, machine="x86_64",
                                   release=b"6\x1b]0;pwned\x07" + bytes(range(0x80, 0xB0))))
    out = kdumptool("fsck", path).stdout.decode()
    assert out.isascii() and all(c.isprintable() for line in out.splitlines() for c in line), out
    quoted = "'" + "\\xe9\\x1b[2J\\x07\\xc3\\xa1" * 4 + "'..."  # 32 bytes of it, then "..."
    assert f"init_uts_ns in memory says release {quoted}, VMCOREINFO says '6.1.0-test'" in out
    assert "header utsname release '6\\x1b]0;pwned\\x07\\x80\\x81" in out
    header_quote = out.split("header utsname release ", 1)[1].split(" differs", 1)[0]
    assert header_quote.endswith("\\x94'...")  # its 32nd byte, then "..."
    text = kdumptool("info", "--deep", path).stdout.decode()  # info's evidence lines too
    assert "header utsname: release 6\\x1b]0;pwned\\x07\\x80" in text
    assert text.isascii() and all(c.isprintable() for line in text.splitlines() for c in line), text


# --- the page counts convert prints are the ones info reads back ---------------------------

def test_convert_to_elf_counts_pages_as_info_does(tmp_path: Path) -> None:
    """/proc/vmcore maps the kernel image twice (its own PT_LOAD and the RAM's): the ELF
    output does too, and convert counts each page once, as info does, saying how many are
    there twice; the level report says why the file differs from "Remaining pages"."""
    from corpus import need_corpus_file

    src = need_corpus_file("x86_64-kdump-320m/vmcore.elf")
    out = tmp_path / "o.elf"
    proc = kdumptool("convert", "-E", "-d", "31", src, out)
    assert proc.returncode == 0, proc.stderr.decode()
    err = proc.stderr.decode().splitlines()
    present = json.loads(kdumptool("info", "--json", out).stdout)["pages"]["present"]
    assert err[0].startswith(f"{out}: ELF, dump level 31: {present} pages written, 8163 of them twice "
                             "(in PT_LOADs that overlap, as the input's do) in "), err[0]
    assert f"  In the ELF file            : {present} (zero pages left out; the excluded pages of " \
        "gaps shorter than 256 pages inside a PT_LOAD written, as makedumpfile -E does)" in err
    proc = kdumptool("convert", "-l", BUNDLED, tmp_path / "o.kdump")  # kdump: one page per PFN
    present = json.loads(kdumptool("info", "--json", tmp_path / "o.kdump").stdout)["pages"]["present"]
    assert proc.stderr.decode().startswith(f"{tmp_path / 'o.kdump'}: kdump-compressed (lzo), dump level "
                                           f"31: {present} pages written in ")
