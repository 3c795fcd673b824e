"""What a new user trips on (issue 17): the output name with --dry-run, a forgotten --split,
standard input read once, the options makedumpfile users type, help that shows examples."""

from __future__ import annotations

from pathlib import Path

import pytest
from ours import REPO, kdumptool, our_digests

from kdumptool.cli import main

BUNDLED = REPO / "corpus" / "x86_64-kdump-320m-c-d31.kdump"


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A split set of two parts of the bundled dump."""
    work = tmp_path_factory.mktemp("parts")
    out = [work / "p.1", work / "p.2"]
    proc = kdumptool("convert", "-q", "-l", "--split", BUNDLED, *out)
    assert proc.returncode == 0, proc.stderr.decode()
    return out


def _one_line(proc: object, code: int, *needles: bytes) -> None:
    err = proc.stderr  # type: ignore[attr-defined]
    assert proc.returncode == code, err  # type: ignore[attr-defined]
    assert err.count(b"\n") == 1 and b"Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


# --- --dry-run takes the output name (makedumpfile --dry-run IN OUT) ---------------------------

@pytest.mark.parametrize("command", ["convert", "filter"])
def test_dry_run_accepts_a_new_output_name_and_writes_nothing(tmp_path: Path, command: str) -> None:
    out = tmp_path / "new.kdump"
    proc = kdumptool(command, "--dry-run", "-d", "31", BUNDLED, out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"pages" in proc.stdout  # the exclusion report
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_dry_run_leaves_an_existing_output_alone(tmp_path: Path) -> None:
    for content in (b"not a dump\n", BUNDLED.read_bytes()[:8192]):
        out = tmp_path / "old.kdump"
        out.write_bytes(content)
        proc = kdumptool("convert", "--dry-run", "-d", "31", BUNDLED, out)
        assert proc.returncode == 0, proc.stderr.decode()
        assert out.read_bytes() == content


def test_dry_run_of_a_split_set_with_and_without_an_output_name(tmp_path: Path, parts: list[Path]) -> None:
    for extra in ([], [tmp_path / "whole.kdump"]):
        proc = kdumptool("convert", "--dry-run", "-d", "31", *parts, *extra)
        assert proc.returncode == 0, proc.stderr.decode()
    assert list(tmp_path.iterdir()) == []


# --- several outputs without --split -----------------------------------------------------------

def test_several_outputs_without_split_say_so(tmp_path: Path) -> None:
    x1, x2 = tmp_path / "X1", tmp_path / "X2"
    proc = kdumptool("convert", "-c", "-d", "31", BUNDLED, x1, x2)
    _one_line(proc, 2, b"--split", b"X1")
    assert b"cannot open" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_extra_argument_that_is_no_dump_suggests_split(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    proc = kdumptool("convert", "-q", BUNDLED, text, tmp_path / "o")
    _one_line(proc, 2, b"--split", b"notes.txt")
    assert not (tmp_path / "o").exists()


def test_two_whole_dumps_are_not_a_split_set(tmp_path: Path) -> None:
    proc = kdumptool("convert", "-q", BUNDLED, BUNDLED, tmp_path / "o")
    _one_line(proc, 2, b"--split", b"not a part of a split")


def test_the_parts_of_a_split_set_still_convert(tmp_path: Path, parts: list[Path]) -> None:
    out = tmp_path / "whole.kdump"
    proc = kdumptool("convert", "-q", "-l", *parts, out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert our_digests(out) == our_digests(BUNDLED)


# --- standard input: read once, whatever the command -------------------------------------------

ADDR = "0xffffffff99bfb000"  # SYMBOL(init_uts_ns) of the bundled dump


def _same_text(out: bytes, path: Path) -> bytes:
    return out.replace(str(path).encode(), b"-").replace(b"<stdin>", b"-")


@pytest.mark.parametrize("args", [["fsck", "-"], ["dmesg", "-"], ["vmcoreinfo", "-"], ["vtop", "-", ADDR],
                                  ["ikconfig", "-"], ["info", "--pages", "-"], ["symbols", "-", "init_task"],
                                  ["ps", "-"], ["triage", "-"]],
                         ids=lambda a: a[0])
def test_commands_that_print_read_standard_input(args: list[str]) -> None:
    by_name = kdumptool(*[BUNDLED if a == "-" else a for a in args])
    piped = kdumptool(*args, stdin=BUNDLED.read_bytes())
    assert piped.returncode == by_name.returncode, piped.stderr.decode()
    assert b"got b''" not in piped.stderr and b"Traceback" not in piped.stderr
    if args[0] == "info":  # the text names the file and its transport
        assert b"Remaining pages" in piped.stdout and b"6.1.0-56-amd64" in piped.stdout
    else:
        assert _same_text(piped.stdout, BUNDLED) == _same_text(by_name.stdout, BUNDLED)


@pytest.mark.parametrize("args", [["convert", "-l"], ["filter", "-d", "31"], ["repair"], ["repair", "-c"]],
                         ids=" ".join)
def test_commands_that_write_read_standard_input(tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "o.kdump"
    proc = kdumptool(*args, "-", out, stdin=BUNDLED.read_bytes())
    assert proc.returncode == 0, proc.stderr.decode()
    assert our_digests(out) == our_digests(BUNDLED)


def test_reassemble_reads_a_part_from_standard_input(tmp_path: Path, parts: list[Path]) -> None:
    a, b = tmp_path / "a.kdump", tmp_path / "b.kdump"
    assert kdumptool("reassemble", "-q", *parts, a).returncode == 0
    proc = kdumptool("reassemble", "-q", "-", parts[1], b, stdin=parts[0].read_bytes())
    assert proc.returncode == 0, proc.stderr.decode()
    assert a.read_bytes() == b.read_bytes()


def test_open_dump_of_stdin_twice_reads_the_same_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library: a second open of ``-`` in one process (check, then salvage) gets the copy."""
    import io
    import sys

    from kdumptool import open as open_mod

    monkeypatch.setattr(open_mod, "_stdin_copy", None)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(BUNDLED.read_bytes())))
    with open_mod.open_dump("-") as first:
        pages = first.count_pages()
    with open_mod.open_dump("-", strict=False) as second, open_mod.open_dump("-") as third:
        assert second.count_pages() == pages == third.count_pages()
        assert second.read_page(0x1000) == third.read_page(0x1000)


def test_closed_standard_input_is_one_line_exit_3() -> None:
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "kdumptool", "info", "-"], capture_output=True,
                          check=False, preexec_fn=lambda: os.close(0), timeout=300)
    _one_line(proc, 3, b"<stdin>", b"standard input is closed")


# --- the options a user expects ----------------------------------------------------------------

COMMANDS = sorted(main.commands)


@pytest.mark.parametrize("command", ["convert", "filter"])
@pytest.mark.parametrize("flag", ["-d", "--level"])
def test_level_on_every_command_that_filters(command: str, flag: str) -> None:
    proc = kdumptool(command, "--dry-run", flag, "31", BUNDLED)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"dump level 31" in proc.stdout


@pytest.mark.parametrize("args", [["convert", "-l"], ["filter", "-d", "31"], ["repair"], ["reassemble"]],
                         ids=lambda a: a[0])
def test_quiet_on_every_command_that_writes(tmp_path: Path, parts: list[Path], args: list[str]) -> None:
    ins = parts if args[0] == "reassemble" else [BUNDLED]
    proc = kdumptool(*args, "-q", *ins, tmp_path / "o.kdump")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"" and proc.stderr == b""
    assert (tmp_path / "o.kdump").exists()


def test_debug_before_or_after_the_command(tmp_path: Path) -> None:
    missing = tmp_path / "missing.kdump"
    for args in (["--debug", "info", missing], ["info", "--debug", missing]):
        proc = kdumptool(*args)
        assert proc.returncode != 0 and b"Traceback" in proc.stderr, args
    assert kdumptool("info", "--debug", BUNDLED).returncode == 0
    assert kdumptool("info", missing).stderr.count(b"\n") == 1  # without it: one line


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_h_is_help(command: str | None) -> None:
    args = [command] if command else []
    short, long_ = kdumptool(*args, "-h"), kdumptool(*args, "--help")
    assert short.returncode == long_.returncode == 0, short.stderr.decode()
    assert short.stdout == long_.stdout and b"Usage:" in short.stdout


def test_makedumpfile_names_are_aliases(tmp_path: Path) -> None:
    out = tmp_path / "o.kdump"
    proc = kdumptool("convert", "-q", "-c", "--num-threads", "1", BUNDLED, out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.read_bytes() == BUNDLED.read_bytes()  # --num-threads is --threads
    partial = kdumptool("dmesg", "--partial-dmesg", BUNDLED)
    assert partial.returncode == 0 and partial.stdout == kdumptool("dmesg", "--partial", BUNDLED).stdout
    mem_usage = kdumptool("info", "--mem-usage", BUNDLED)
    assert mem_usage.returncode == 0 and b"Remaining pages" in mem_usage.stdout
    assert mem_usage.stdout == kdumptool("info", "--pages", BUNDLED).stdout


@pytest.mark.parametrize("command", ["convert", "filter", "dmesg"])
def test_vmlinux_is_refused_with_the_reason(tmp_path: Path, command: str) -> None:
    args = [BUNDLED] if command == "dmesg" else ["-d", "31", BUNDLED, tmp_path / "o"]
    proc = kdumptool(command, "-x", "vmlinux-6.1", *args)
    _one_line(proc, 2, b"-x vmlinux-6.1", b"not needed", b"VMCOREINFO")
    assert not (tmp_path / "o").exists()


def _help(*args: str) -> str:
    proc = kdumptool(*args, "--help", env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_ends_with_examples(command: str) -> None:
    tail = _help(command).rstrip().split("Examples:")
    assert len(tail) == 2, f"{command} --help has no examples"
    lines = [ln.strip() for ln in tail[1].strip().splitlines()]
    assert len(lines) >= 2 and all(ln.startswith(f"kdumptool {command} ") for ln in lines), lines


def test_the_command_list_shows_whole_first_sentences() -> None:
    listing = " ".join(_help().split("Commands:")[1].split())
    assert "..." not in listing
    for name in COMMANDS:
        first = main.commands[name].short_help
        assert first and " ".join(first.split()) in listing, name


def _example_dir(tmp_path: Path, parts: list[Path]) -> Path:
    """The input names the examples use, as links to real dumps (outputs use other names)."""
    d = tmp_path / "ex"
    d.mkdir(parents=True)
    for name in ("vmcore", "dump.kdump", "broken.kdump", "broken.elf"):
        (d / name).symlink_to(BUNDLED)
    for i, part in enumerate(parts, 1):
        (d / f"dump.{i}").symlink_to(part)
    (d / "vmcoreinfo.txt").symlink_to(REPO / "corpus" / "x86_64-kdump-320m-vmcoreinfo.txt")
    return d


def test_every_example_runs(tmp_path: Path, parts: list[Path]) -> None:
    """Each example of each --help, run by a shell on the bundled dump (ikconfig: the kernel
    of the bundled dump has no CONFIG_IKCONFIG, which the command says)."""
    import subprocess
    import sys

    from kdumptool.cli_common import EXAMPLES

    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "kdumptool").write_text(f"#!/bin/sh\nexec {sys.executable} -m kdumptool \"$@\"\n")
    (bindir / "kdumptool").chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    failed = []
    for command, examples in EXAMPLES.items():
        for n, (line, _) in enumerate(examples):
            d = _example_dir(tmp_path / f"{command}-{n}", parts)
            proc = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=d, env=env,
                                  capture_output=True, timeout=900, check=False)
            expected_fail = command == "ikconfig" and b"no IKCFG_ST" in proc.stderr
            if proc.returncode != 0 and not expected_fail:
                failed.append(f"{line}: {proc.returncode}: {proc.stderr.decode()[-300:]}")
    assert not failed, "\n".join(failed)
