"""The scaling model: how a conversion would run on 16 or 64 cores, from its measured parts.

    python bench/bench_model.py INPUT [--refilter C_D0_DUMP] [--runs 3]

Each case runs in this process with one worker (``--threads 1``), so that every chunk's CPU
time can be taken apart: ``S`` is the CPU time outside the chunks (start-up is measured
apart, as ``kdumptool --help``; then the mem_map sweep, the bitmaps, the headers, the
``fsync``), ``P`` the sum of the chunks' CPU times, ``n`` the number of chunks and ``m`` the
largest chunk. With ``N`` workers the parent also copies every chunk's bytes into the output
(``J``, measured as ``copy_file_range`` of that many bytes). The model:
``T(N) = start-up + S + J + max(P / N, m)`` (a chunk is the smallest unit of work), with no
limit from memory bandwidth or the disk, which a real machine adds. Medians of ``--runs``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CASES = [
    ("kdump -c -d 0", ["-c", "-d", "0"], "input"),
    ("kdump -c -d 1", ["-c", "-d", "1"], "input"),
    ("kdump -c -d 31", ["-c", "-d", "31"], "input"),
    ("kdump -l -d 1", ["-l", "-d", "1"], "input"),
    ("kdump -l -d 31", ["-l", "-d", "31"], "input"),
    ("refilter c-d0 -> -l -d 0", ["-l", "-d", "0"], "refilter"),
    ("refilter c-d0 -> -l -d 31", ["-l", "-d", "31"], "refilter"),
]


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(opts: list[str], src: str, out: str) -> tuple[float, list[float], int]:
    """``(total CPU, CPU per chunk, output bytes)`` of one in-process run on one worker."""
    from kdumptool import parallel
    from kdumptool.cli import main

    chunks: list[float] = []
    serial = parallel.ChunkRunner._serial

    def timed(self, tasks):  # type: ignore[no-untyped-def]
        fn = self.fn

        def each(task, write):  # type: ignore[no-untyped-def]
            t = cpu()
            try:
                return fn(task, write)
            finally:
                chunks.append(cpu() - t)

        self.fn = each
        return serial(self, tasks)

    parallel.ChunkRunner._serial = timed  # type: ignore[method-assign]
    try:
        t = cpu()
        main(["convert", "-q", "--force", "--threads", "1", *opts, src, out], standalone_mode=False)
        total = cpu() - t
    finally:
        parallel.ChunkRunner._serial = serial  # type: ignore[method-assign]
    return total, chunks, os.path.getsize(out)


def copy_cost(nbytes: int, directory: str) -> float:
    """CPU seconds of ``copy_file_range`` of ``nbytes`` between two files of ``directory``."""
    with tempfile.TemporaryFile(dir=directory) as a, tempfile.TemporaryFile(dir=directory) as b:
        a.write(os.urandom(1 << 20) * max(1, nbytes >> 20))
        a.flush()
        t = cpu()
        done = 0
        while done < nbytes:
            n = os.copy_file_range(a.fileno(), b.fileno(), nbytes - done, done, done)
            if not n:
                break
            done += n
        return cpu() - t


def startup() -> float:
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kdumptool", "--help"], capture_output=True, check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main_() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("--refilter", help="a -c -d 0 dump of INPUT (for the refilter cases)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    up = startup()
    print(f"Start-up (`kdumptool --help`): {up:.2f} s. One worker, in one process; CPU seconds.\n")
    print("| case | chunks n | P: chunks | m: largest | S: outside chunks | J: joining | "
          "T(1) | T(2) | T(16) | T(64) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.input))) as tmp:
        out = os.path.join(tmp, "out")
        for label, opts, source in CASES:
            src = args.refilter if source == "refilter" else args.input
            if src is None:
                continue
            runs = [measure(opts, src, out) for _ in range(args.runs)]
            total = statistics.median(r[0] for r in runs)
            chunks = min(runs, key=lambda r: abs(r[0] - total))[1]
            p, m = sum(chunks), max(chunks, default=0.0)
            s = total - p
            j = copy_cost(runs[0][2], tmp)

            def t(n: int, s: float = s, p: float = p, m: float = m, j: float = j) -> float:
                return up + s + (j if n > 1 else 0.0) + max(p / n, m)

            print(f"| {label} | {len(chunks)} | {p:.2f} s | {m:.2f} s | {s:.2f} s | {j:.2f} s | "
                  f"{t(1):.2f} s | {t(2):.2f} s | {t(16):.2f} s | {t(64):.2f} s |", flush=True)


if __name__ == "__main__":
    main_()
