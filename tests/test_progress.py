"""The progress line: drawn on a terminal with rate and time left, silent otherwise."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

from ours import HANG_S, REPO, kdumptool

from kdumptool.progress import Progress, format_duration, progress_for

BUNDLED = REPO / "corpus" / "x86_64-kdump-320m-c-d31.kdump"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_line_has_percentage_rate_and_time_left() -> None:
    clock, out = _Clock(), io.StringIO()
    p = Progress(1000, 4096, "out.kdump", stream=out, clock=clock)
    p.delay = 0.5
    p.advance(100)  # at once: too early to draw
    assert out.getvalue() == ""
    clock.now += 1.0
    p.advance(150)  # 250 pages of 4 KiB in 1 s: 0.98 MiB/s, 3 s left
    text = out.getvalue()
    assert text.startswith("\r") and "out.kdump" in text and "25.0%" in text
    assert "250/1000 pages" in text and "1 MiB/s" in text and "ETA 3s" in text
    clock.now += 0.05
    p.advance(10)  # redrawn at most every 0.2 s
    assert out.getvalue() == text
    p.close()
    assert out.getvalue().endswith("\r\033[K")


def test_durations() -> None:
    assert [format_duration(s) for s in (0, 42.4, 185, 7620)] == ["0s", "42s", "3m05s", "2h07m"]


def test_not_a_terminal_or_quiet_means_no_progress() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    calls: list[int] = []

    def total() -> int:
        calls.append(1)
        return 5

    assert progress_for(total, 4096, "x", quiet=False, stream=io.StringIO()) is None
    assert progress_for(total, 4096, "x", quiet=True, stream=Tty()) is None
    assert calls == []  # the pages are not even counted
    assert progress_for(total, 4096, "x", quiet=False, stream=Tty()) is not None


def _convert_on_terminal(tmp_path: Path, *extra: str) -> tuple[int, str]:
    """Run ``convert`` with its standard error on a pseudo-terminal; return (status, what it showed)."""
    master, slave = pty.openpty()
    env = {**os.environ, "KDUMPTOOL_PROGRESS_DELAY": "0", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "kdumptool", "convert", *extra, "-l", str(BUNDLED),
                             str(tmp_path / "out.kdump")], stderr=slave, stdout=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=HANG_S), b"".join(chunks).decode(errors="replace")


def test_convert_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    status, shown = _convert_on_terminal(tmp_path)
    assert status == 0
    assert "out.kdump  [" in shown and "% " in shown and "MiB/s" in shown and "pages" in shown
    assert "\r\033[K" in shown  # erased before the summary line
    assert "pages written" in shown.rsplit("\r\033[K", 1)[1]

    status, shown = _convert_on_terminal(tmp_path, "-q", "-f")
    assert status == 0 and shown == ""

    res = kdumptool("convert", "-f", "-l", BUNDLED, tmp_path / "out.kdump",
                    env={"KDUMPTOOL_PROGRESS_DELAY": "0"})
    assert res.returncode == 0 and b"\r" not in res.stderr and b"MiB/s" not in res.stderr
