"""Hints to the C library and the kernel: page buffers of varying sizes are reused, not
faulted in again; an output's writeback starts while it is being written."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from ours import HANG_S

from kdumptool.parallel import ChunkRunner
from kdumptool.transport import sink as sink_module

# Buffers of a few MiB with sizes that vary as a window's kept pages do, filled as pread
# fills them; the minor page faults of the loop are what the kernel had to hand out again.
SCRIPT = """
import resource, sys
import numpy as np
from kdumptool import allocator
if sys.argv[1] == "tuned":
    assert allocator.tune()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(400):
    pages = 600 + (i * 37) % 424
    data = np.empty((pages, 4096), dtype=np.uint8)
    data.fill(1)
    small = np.empty(pages, dtype=bool)
    del data
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, timeout=HANG_S,
                          check=True)
    return int(proc.stdout)


def test_tuned_allocator_reuses_page_buffers() -> None:
    plain, tuned = _faults("plain"), _faults("tuned")
    # glibc's defaults hand many of the ~3 MiB buffers fresh memory (15,000 faults here);
    # tuned, the first buffers' memory serves all the others (1,600)
    assert plain > 8_000, plain
    assert tuned * 5 < plain, (plain, tuned)


def test_file_sink_starts_writeback_as_it_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every 32 MiB of page data a chunk writes, the kernel is asked to start writing that
    range out, so the final fsync does not wait for all of it (the call itself is the real
    one); the header written last is never in a range."""
    calls: list[tuple[int, int, bool]] = []
    real = sink_module._start_writeback

    def counted(fd: int, offset: int, length: int) -> bool:
        calls.append((offset, length, real(fd, offset, length)))
        return calls[-1][2]

    monkeypatch.setattr(sink_module, "_start_writeback", counted)
    block = bytes(range(256)) * 4096  # 1 MiB

    def chunk(i: int, write: Callable[[bytes], None]) -> int:
        write(block)
        return i

    with open(tmp_path / "out", "wb") as f:
        sink = sink_module.FileSink(f.fileno())
        runner = ChunkRunner(chunk, list(range(70)), 1, sink, 4096)
        assert [r for r, _, _ in runner.results()] == list(range(70))
        sink.pwrite(0, b"H" * 4096)
        sink.finish()
    mib = 1 << 20
    assert calls == [(4096, 32 * mib, True), (4096 + 32 * mib, 32 * mib, True)]
    assert (tmp_path / "out").read_bytes() == b"H" * 4096 + block * 70
