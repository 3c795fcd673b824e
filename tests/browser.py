"""Headless Chromium (Debian's ``chromium`` package) for tests of HTML pages.

:func:`load_page` loads a local file the way a user's browser would, without network or
profile state, and returns the DOM after load, the console messages the page produced
(Chromium logs them to stderr as ``CONSOLE`` lines with ``--enable-logging=stderr``) and a
screenshot.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from corpus import in_ci

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0"]
_CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]? ?(.*)")


@dataclass
class PageLoad:
    """What the browser saw: the DOM after load, console messages, the screenshot file."""

    dom: str
    console: list[str]
    screenshot: Path


def chromium() -> str:
    """The browser's path (skips the test when missing, fails it under CI)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        msg = "chromium is not installed (Debian package chromium; scripts/install.sh --test)"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def _run(args: list[str], profile: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=180, check=False, stdin=subprocess.DEVNULL)


def load_page(page: Path, screenshot: Path, *, size: tuple[int, int] = (1400, 2000)) -> PageLoad:
    """Load ``page`` twice in fresh profiles: once to dump the DOM, once for a screenshot."""
    url = page.resolve().as_uri()
    console: list[str] = []
    with tempfile.TemporaryDirectory(prefix="chromium-") as prof:
        dom = _run(["--dump-dom", url], prof + "/a")
        shot = _run([f"--screenshot={screenshot}", f"--window-size={size[0]},{size[1]}", url], prof + "/b")
    for proc in (dom, shot):
        console += [m.group(1) for line in proc.stderr.splitlines() if (m := _CONSOLE.search(line))]
    assert screenshot.is_file(), shot.stderr[-2000:]
    return PageLoad(dom.stdout, console, screenshot)
