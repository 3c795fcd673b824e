"""Helpers for tests: what kdumptool itself reads from a dump, as page digests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kdumptool.open import open_dumps

REPO = Path(__file__).resolve().parent.parent

#: The wall-clock timeout of every subprocess a test runs: a guard against a hang only, so
#: generous that a machine busy with other jobs never trips it (limits on the work itself
#: count CPU time: ``fuzz/harness.py``'s ``SUITE_LIMITS``).
HANG_S = 900.0


def our_digests(*paths: str | os.PathLike[str], strict: bool = True) -> dict[int, str]:
    """pfn -> sha1 hex of every page kdumptool reads with data from the dump (or split set)."""
    out: dict[int, str] = {}
    with open_dumps([os.fspath(p) for p in paths], strict=strict) as reader:
        for batch in reader.iter_batches():
            for pfn, row in zip(batch.pfns().tolist(), batch.data, strict=True):
                out[pfn] = hashlib.sha1(row.tobytes()).hexdigest()
    return out


def read_all_pages(reader: Any, *, limit: int | None = None) -> dict[int, bytes]:
    """Every present page of an open reader, by PFN (stops after ``limit`` pages if given)."""
    out: dict[int, bytes] = {}
    for batch in reader.iter_batches():
        for pfn, row in zip(batch.pfns().tolist(), batch.data, strict=True):
            out[pfn] = row.tobytes()
        if limit is not None and len(out) >= limit:
            break
    return out


def kdumptool(*args: str | os.PathLike[str], stdin: bytes | None = None, timeout: float = HANG_S,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the command line in a subprocess (as a user would), capturing bytes.

    :param env: variables added to this process's environment
    """
    return subprocess.run(
        [sys.executable, "-m", "kdumptool", *(os.fspath(a) for a in args)],
        input=stdin, capture_output=True, timeout=timeout, check=False,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        env={**os.environ, **env} if env else None,
    )


def assert_peers_read(path: str | os.PathLike[str], pages: dict[int, str],
                      peers: tuple[str, ...] = ("drgn", "libkdumpfile"), *,
                      max_unread: int = 0) -> None:
    """drgn (isolated) and python3-libkdumpfile read every page of ``pages`` as we do.

    :param max_unread: pages a peer may fail to read at all (never to read differently)
    """
    from peers import drgn_page_digests, lkdf_page_digests, require_tool

    for peer in peers:
        require_tool(peer)
        theirs = (drgn_page_digests(path, pages, isolate=True) if peer == "drgn"
                  else lkdf_page_digests(path, pages))
        differ = [p for p, d in pages.items() if theirs.get(p) not in (None, d)]
        assert not differ, f"{peer}: {len(differ)} pages differ, first pfn {differ[0]:#x}"
        unread = [p for p in pages if theirs.get(p) is None]
        assert len(unread) <= max_unread, f"{peer} cannot read {len(unread)} pages"
