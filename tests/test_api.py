"""The library behind the commands (:mod:`kdumptool.api`): typed results, the ``-d`` list
retry, ``-L`` size parsing, the writer registry, and errors that name their input without a
global of opened files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from ours import REPO

import kdumptool
from kdumptool import api
from kdumptool.errors import OutputError, TranslationError, UsageError

BUNDLED = str(REPO / "corpus" / "x86_64-kdump-320m-c-d31.kdump")


def test_top_level_names_are_the_library_commands() -> None:
    from kdumptool import convert, filter, fsck, info, reassemble, repair_dump, split, triage  # noqa: A004

    assert convert is api.convert and filter is api.filter and fsck is api.fsck
    assert info is api.info and split is api.split and reassemble is api.reassemble
    assert repair_dump is api.repair and triage is api.triage
    assert kdumptool.ConvertResult is api.ConvertResult


def test_convert_returns_a_frozen_typed_result(tmp_path: Path) -> None:
    out = str(tmp_path / "o.kdump")
    notes: list[str] = []
    result = kdumptool.convert(BUNDLED, out, level=31, codec="zlib", notify=notes.append)
    assert isinstance(result, api.ConvertResult)
    assert (result.inputs, result.output, result.format) == ((BUNDLED,), out, "kdump")
    assert result.kind == "kdump-compressed (zlib)" and result.codec == "zlib"
    assert result.dump_level == 31 and result.retried == () and not result.cut and not result.incomplete
    assert result.pages == result.counts["pages"] > 10000 and result.zero == result.counts["zero"]
    assert result.page_classes is not None and result.page_classes["remaining"] == result.pages
    assert result.in_file is None and result.pages_once == result.pages
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.pages = 0  # type: ignore[misc]
    assert Path(out).is_file() and notes == []
    with pytest.raises(OutputError, match="exists"):  # no force: the file is kept
        kdumptool.convert(BUNDLED, out)
    health = kdumptool.fsck(out)
    assert health.exit_code == 0 and health.path == out


def test_convert_elf_counts_and_dry_run(tmp_path: Path) -> None:
    out = str(tmp_path / "o.elf")
    result = api.convert(BUNDLED, out, elf=True, level=31)
    assert result.format == "elf" and result.kind == "ELF" and result.codec is None
    assert result.in_file is not None and result.copies is not None and result.pages_once == result.in_file
    dry = api.filter(BUNDLED, level="31", dry_run=True)
    assert dry.dry_run and dry.output is None and dry.page_classes is not None
    assert dry.page_classes["remaining"] == result.page_classes["remaining"]  # type: ignore[index]


def test_level_list_retries_when_the_size_limit_is_reached(tmp_path: Path) -> None:
    """ELF at level 0 holds the zero pages, at level 1 not: a limit between the two makes
    ``-d 0,1`` give level 0 up and write level 1, the retry recorded in the result."""
    full = api.convert(BUNDLED, str(tmp_path / "full.elf"), elf=True, level=0)
    small = api.convert(BUNDLED, str(tmp_path / "small.elf"), elf=True, level=1)
    sizes = [(tmp_path / n).stat().st_size for n in ("full.elf", "small.elf")]
    assert sizes[1] < sizes[0] and full.zero is None
    limit = (sizes[0] + sizes[1]) // 2
    told: list[tuple[api.Retry, int]] = []
    out = tmp_path / "o.elf"
    result = api.convert(BUNDLED, str(out), elf=True, level="0,1", size_limit=limit,
                         on_retry=lambda retry, level: told.append((retry, level)))
    assert result.dump_level == small.dump_level and not result.cut
    assert [r.level for r in result.retried] == [0] and "size limit" in result.retried[0].reason
    assert told == [(result.retried[0], 1)]
    assert out.read_bytes() == (tmp_path / "small.elf").read_bytes()
    # at the last level the limit cuts the dump: kept, incomplete, said so in the result
    mib = (sizes[1] >> 20) - 1  # below level 1's size
    cut = api.convert(BUNDLED, str(tmp_path / "cut.elf"), elf=True, level=1, size_limit=f"{mib}M")
    assert cut.cut and cut.incomplete and cut.lost > 0 and cut.size_limit == mib << 20


@pytest.mark.parametrize("text, value", [("10M", 10 << 20), ("4k", 4096), ("0x100K", 256 << 10),
                                         ("010", 8), ("123", 123), ("2T", 2 << 40)])
def test_parse_size(text: str, value: int) -> None:
    assert api.parse_size(text) == value


@pytest.mark.parametrize("text", ["0", "", "M", "abc", "10Q", "-5", "1.5G", "0x"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="size limit .* is invalid"):
        api.parse_size(text)
    with pytest.raises(UsageError):  # the library command parses the same way
        api.convert(BUNDLED, "/nonexistent/o.kdump", size_limit=text)


def test_parse_levels() -> None:
    assert api.parse_levels("11,31") == [11, 31] and api.parse_levels(7) == [7]
    assert api.parse_levels([1, 31]) == [1, 31]
    with pytest.raises(UsageError, match="out of range"):
        api.parse_levels("1,32")
    with pytest.raises(UsageError, match="not a number"):
        api.parse_levels("1,x")
    with pytest.raises(UsageError, match="no dump level"):
        api.parse_levels([])


def test_writer_registry() -> None:
    from kdumptool.formats.writers import WRITERS, get_writer

    assert list(WRITERS) == ["kdump", "elf"]
    assert get_writer("elf").option == "-E" and not get_writer("elf").compresses
    assert get_writer("kdump").splits and not get_writer("elf").splits
    with pytest.raises(UsageError, match="no output format 'xml'"):
        get_writer("xml")
    with pytest.raises(UsageError, match="not compressed"):
        api.convert(BUNDLED, "/nonexistent/o.elf", elf=True, codec="zlib")


def test_each_writer_belongs_to_one_registered_format() -> None:
    """A format is one registered object: its entry names its writer (issue 22)."""
    from kdumptool.formats import READERS
    from kdumptool.formats.writers import WRITERS

    named = {e.name: e.writer for e in READERS if e.writer is not None}
    assert named == {"kdump": "kdump", "elf": "elf"}
    assert sorted(named.values()) == sorted(WRITERS)  # every writer, each once


def test_errors_below_the_reader_name_the_input(tmp_path: Path) -> None:
    """A page-table walk knows addresses, not files: the input's name comes from where the
    library opened it, on the error itself; a later call names its own input (the old global
    of opened inputs kept the first command's names)."""
    with pytest.raises(TranslationError) as caught:
        api.vtop(BUNDLED, 0x1000)
    exc = caught.value
    assert exc.inputs == (BUNDLED,)  # type: ignore[attr-defined]
    assert api.error_text(exc) == f"{BUNDLED}: {exc}"
    assert exc.partial_result.form == "x86_64 4-level" and exc.partial_result.paddr is None  # type: ignore[attr-defined]
    copy = tmp_path / "copy.kdump"
    copy.write_bytes(Path(BUNDLED).read_bytes())
    with pytest.raises(TranslationError) as again:
        api.vtop(str(copy), "1000")
    assert api.error_text(again.value).startswith(f"{copy}: cannot translate 0x1000")
    # an error that names its file already, or is about the output, is left alone
    with pytest.raises(OutputError) as out_err:
        api.convert(BUNDLED, BUNDLED)
    assert getattr(out_err.value, "inputs", ()) == () and api.error_text(out_err.value) == str(out_err.value)


def test_vtop_and_triage_results() -> None:
    walk = api.vtop(BUNDLED, "ffffffff99bfb000")
    assert walk.paddr is not None and walk.steps and walk.page_size in (4096, 2 << 20, 1 << 30)
    report = kdumptool.triage(BUNDLED)
    assert report.signature and report.kind
    with kdumptool.open_kernel(BUNDLED) as kernel:  # an open Kernel, as before
        assert kdumptool.triage(kernel).signature == report.signature
        quick = kdumptool.triage(kernel, health=False)  # the keywords of the kernel's triage
        assert quick.signature == report.signature and not quick.health and report.health
        assert kdumptool.triage(kernel, paths=[BUNDLED]).health == report.health


def test_inputs_and_outputs_may_be_pathlib_paths(tmp_path: Path) -> None:
    src = Path(BUNDLED)
    assert kdumptool.info(src).summary == kdumptool.info(BUNDLED).summary
    assert kdumptool.fsck(src).exit_code == 0
    assert kdumptool.triage(src).signature == kdumptool.triage([BUNDLED]).signature
    result = kdumptool.convert(src, tmp_path / "out.kdump", level=31, codec="zlib")
    assert result.pages > 10000 and (tmp_path / "out.kdump").stat().st_size > 0
    split = kdumptool.split(src, [tmp_path / "p1", tmp_path / "p2"], level=31)
    assert all((tmp_path / p).exists() for p in ("p1", "p2")) and split.parts


def test_repair_result_is_typed(tmp_path: Path) -> None:
    out = str(tmp_path / "fixed.kdump")
    result = kdumptool.repair_dump(BUNDLED, out)
    assert isinstance(result, api.RepairResult) and result.output == out
    assert result.exit_code == 0 and result.pages_lost == 0 and result.lost_pfn_ranges == ()
    assert result.pages_written > 10000 and result.report["exit_code"] == 0
    with pytest.raises(UsageError, match="--in-place takes exactly one input"):
        api.repair([BUNDLED, BUNDLED], in_place=True)
    with pytest.raises(UsageError, match="missing OUT"):
        api.repair(BUNDLED)
