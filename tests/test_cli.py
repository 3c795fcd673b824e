"""The command line on the bundled real dump: info, vmcoreinfo, convert; output safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ours import HANG_S, REPO, kdumptool, our_digests

from corpus import need_corpus_file

BUNDLED = REPO / "corpus" / "x86_64-kdump-320m-c-d31.kdump"
FACTS = json.loads((REPO / "corpus" / "manifest.json").read_text())


def test_info_json_matches_the_bundled_manifest() -> None:
    proc = kdumptool("info", "--json", BUNDLED)
    assert proc.returncode == 0, proc.stderr.decode()
    s = json.loads(proc.stdout)
    assert s["format"] == "kdump" and s["header_version"] == FACTS["header"]["header_version"]
    assert s["kernel"]["release"] == FACTS["kernel_release"]
    assert s["kernel"]["version"] == FACTS["kernel_version"]
    assert s["arch"] == FACTS["arch"] and s["page_size"] == FACTS["page_size"]
    assert s["pfn_range"] == [0, FACTS["max_mapnr"]]
    assert s["pages"]["present"] == FACTS["dumpable_pages_in_bitmap"]
    assert s["pages"]["lost"] == 0
    assert s["codecs"] == [FACTS["compression"]]
    assert s["dump_level"] == FACTS["dump_level"] and s["cpus"] == FACTS["nr_cpus"]
    assert s["notes"] == {"CORE/NT_PRSTATUS": 2, "VMCOREINFO/VMCOREINFO": 1}


def test_info_text_names_the_kernel() -> None:
    proc = kdumptool("info", BUNDLED)
    assert proc.returncode == 0
    text = proc.stdout.decode()
    assert f"kernel:        {FACTS['kernel_release']}" in text
    assert "pages:         57208 RAM, 21097 in file" in text


def test_vmcoreinfo_prints_the_note() -> None:
    proc = kdumptool("vmcoreinfo", BUNDLED)
    assert proc.returncode == 0
    assert proc.stdout == (REPO / "corpus" / "x86_64-kdump-320m-vmcoreinfo.txt").read_bytes()


def test_convert_needs_force_and_refuses_the_input(tmp_path: Path) -> None:
    out = tmp_path / "o.elf"
    assert kdumptool("convert", "-q", "-E", BUNDLED, out).returncode == 0
    first = out.stat().st_mtime_ns
    proc = kdumptool("convert", "-E", BUNDLED, out)
    assert proc.returncode == 1 and b"--force" in proc.stderr
    assert out.stat().st_mtime_ns == first
    assert kdumptool("convert", "-q", "-E", "--force", BUNDLED, out).returncode == 0
    link = tmp_path / "same.kdump"
    os.link(out, link)  # another name for the same inode
    proc = kdumptool("convert", "--force", out, link)
    assert proc.returncode == 1 and b"same file" in proc.stderr
    assert our_digests(out) == our_digests(BUNDLED)


@pytest.mark.parametrize("args,message", [
    (["-c", "-l"], b"at most one"),
    (["-E", "-c"], b"not compressed"),
    (["-d", "32"], b"out of range"),
    (["-d", "11,x"], b"not a number"),
    (["-d", "31"], None),  # already filtered at 31: nothing more to exclude
    (["-d", "16", "--dry-run"], None),
])
def test_convert_options(tmp_path: Path, args: list[str], message: bytes | None) -> None:
    dry = "--dry-run" in args
    proc = kdumptool("convert", "-q", *args, BUNDLED, *([] if dry else [tmp_path / "o"]))
    if message is None:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert not (tmp_path / "o").exists()


def test_refiltering_a_kdump_file_keeps_what_was_excluded(tmp_path: Path) -> None:
    """-d 8 on a -d 31 file: free/cache pages already gone stay gone; nothing comes back."""
    out = tmp_path / "o.kdump"
    proc = kdumptool("convert", "-q", "-l", "-d", "8", BUNDLED, out)
    assert proc.returncode == 0, proc.stderr
    assert our_digests(out) == our_digests(BUNDLED)
    info = json.loads(kdumptool("info", "--json", out).stdout)
    assert info["dump_level"] == 31


def test_plain_image_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "o.kdump"
    proc = kdumptool("convert", "-q", "-l", "-", out, stdin=BUNDLED.read_bytes())
    assert proc.returncode == 0, proc.stderr
    assert our_digests(out) == our_digests(BUNDLED)


def test_not_a_dump_on_stdin() -> None:
    proc = kdumptool("info", "-", stdin=b"hello, world" * 1000)
    assert proc.returncode == 3
    assert proc.stderr.decode().startswith("kdumptool: error: <stdin>: offset 0x0:")


def _sigint_by_default() -> None:
    """A suite started as a shell's background job (``cmd &``) inherits SIGINT ignored, and so
    would the child, which is then right not to stop: give it the terminal's default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_convert_leaves_no_output(tmp_path: Path, sig: signal.Signals) -> None:
    src = need_corpus_file("x86_64-kdump-320m/vmcore.elf")
    outdir = tmp_path / "out"
    outdir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "kdumptool", "convert", "-c", "--threads", "1",
                             str(src), str(outdir / "o.kdump")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_sigint_by_default)
    deadline = time.monotonic() + HANG_S
    while not any(outdir.iterdir()):  # wait until the temporary output exists
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 130, err
    assert b"interrupted" in err and b"Traceback" not in err
    assert list(outdir.iterdir()) == []


def test_an_interrupt_inside_exec_code_still_exits_130(tmp_path: Path) -> None:
    """An interrupt that escapes code run by ``exec`` of a string (a dataclass being built
    during a lazy import, say) made CPython kill the process with SIGINT at exit (status -2),
    although kdumptool had caught it, cleaned up and asked for 130."""
    script = (
        "import sys, kdumptool.cli as cli, kdumptool.cli_write as cli_write\n"
        "def boom(*args, **kwargs):\n"
        "    exec('raise KeyboardInterrupt')\n"
        "cli_write.write_levels = boom\n"
        "sys.argv = ['kdumptool', 'convert', '-q', sys.argv[1], sys.argv[2]]\n"
        "cli.run()\n")
    (tmp_path / "interrupt_probe.py").write_text(script)
    out = tmp_path / "o.kdump"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    # run as ``-m`` (as ``python -m kdumptool``): there CPython checks its flag at exit
    proc = subprocess.run([sys.executable, "-m", "interrupt_probe", str(BUNDLED), str(out)],
                          capture_output=True, timeout=HANG_S, check=False, env=env)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.decode() == "kdumptool: interrupted\n"
    assert not out.exists()


def test_level_list_retries_the_next_level_when_the_file_is_too_big(tmp_path: Path) -> None:
    """-d 1,31 under a 25 MiB file-size limit: level 1 (33 MiB) does not fit, level 31 (22 MiB) does."""
    import resource

    src = need_corpus_file("x86_64-kdump-320m/vmcore.elf")
    out = tmp_path / "o.kdump"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (25 << 20, 25 << 20))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    proc = subprocess.run([sys.executable, "-m", "kdumptool", "convert", "-q", "-l", "-d", "1,31",
                           str(src), str(out)], capture_output=True, preexec_fn=limit,
                          stdin=subprocess.DEVNULL, timeout=HANG_S, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"retrying with dump level 31" in proc.stderr
    assert out.read_bytes() == need_corpus_file("x86_64-kdump-320m/derived/l-d31.kdump").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.kdump"]


def test_dmesg_command_equals_makedumpfiles_output() -> None:
    proc = kdumptool("dmesg", BUNDLED)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (REPO / "corpus" / "x86_64-kdump-320m-dmesg.txt").read_bytes()
    records = json.loads(kdumptool("dmesg", "--json", BUNDLED).stdout)
    assert records[0]["text"].startswith("Linux version 6.1.0-56-amd64")
    assert [r["seq"] for r in records] == list(range(len(records)))


def test_out_of_memory_is_one_line_naming_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bound too generous for the machine (a MemoryError) still ends in one error line."""
    from click.testing import CliRunner

    import kdumptool.summary
    from kdumptool.cli import main

    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(kdumptool.summary, "dump_summary", exhausted)
    res = CliRunner().invoke(main, ["info", str(BUNDLED)])
    err = res.stderr if hasattr(res, "stderr") else res.output
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), err
    assert err == f"kdumptool: error: {BUNDLED}: out of memory (the machine's memory or " \
                  "address-space limit is too small for this dump)\n"


def test_starting_the_command_line_imports_no_scrub_or_kernel_package() -> None:
    """Start-up stays light (issue 21): the scrub and kernel packages load only when a command
    needs them, and the help text's profile names are the library's."""
    import subprocess
    import sys

    from kdumptool.cli_scrub import PROFILES as HELP_PROFILES
    from kdumptool.scrub.profiles import PROFILES

    assert HELP_PROFILES == PROFILES
    code = ("import sys, kdumptool.cli; "
            "print(sorted(m for m in sys.modules if m.startswith(('kdumptool.scrub', 'kdumptool.kernel'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_interrupt_python_swallows_is_raised_again_at_the_next_check() -> None:
    """A signal that arrives inside a weak-reference callback (an import lock's, during a lazy
    import) raises KeyboardInterrupt where CPython ignores it; the run must stop anyway at the
    next window or chunk and before publishing its output (the interruption test saw a
    conversion finish with status 0 so)."""
    script = (
        "import os, signal, sys, weakref\n"
        "from kdumptool import interrupts\n"
        "interrupts.install()\n"
        "class Box: pass\n"
        "box = Box()\n"
        "def callback(_):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    sum(range(100000))\n"
        "ref = weakref.ref(box, callback)\n"
        "del box\n"
        "print('carried on', flush=True)\n"
        "try:\n"
        "    interrupts.check()\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(7)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=HANG_S,
                          preexec_fn=_sigint_by_default)
    assert b"Exception ignored" in proc.stderr and b"KeyboardInterrupt" in proc.stderr
    assert proc.stdout == b"carried on\n"
    assert proc.returncode == 7, proc.stderr


def test_only_the_command_line_asks_openblas_for_one_thread() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    probe = "import os, {}; print(os.environ.get('OPENBLAS_NUM_THREADS'))"
    cli = subprocess.run([sys.executable, "-c", probe.format("kdumptool.cli")], env=env,
                         capture_output=True, text=True, check=True)
    library = subprocess.run([sys.executable, "-c", probe.format("kdumptool, kdumptool.api")], env=env,
                             capture_output=True, text=True, check=True)
    assert (cli.stdout, library.stdout) == ("1\n", "None\n")
