"""Benchmark: fleet triage throughput, local process pool (1 and 2 workers) and a Dask
``LocalCluster`` of 2 worker processes, on the same fleet of real dumps.

The fleet is made of hard links to corpus dumps (both kdump sets: ``c-d31`` kdump files,
the ELF ``E-d31`` files, the split sets and damaged files), ``--copies`` times over.  For
each engine: wall time, dumps triaged per second, and peak RSS per worker process
(local: sampled every 50 ms with psutil over the pool's processes; Dask: each worker's own
``ru_maxrss``, asked at the end).  Usage::

    python bench/bench_fleet.py [--copies N] [--out bench/RESULTS-fleet-run.md]

Speed is measured here, never in tests.  The figures are wall-clock times on a shared
machine: read the load average printed with them.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

FILES = ["derived/c-d31.kdump", "derived/E-d31.elf", "derived/l-d31.kdump", "broken/c-d31-trunc30.kdump"]


def build(root: Path, copies: int) -> int:
    """Hard links of corpus dumps under ``root``; returns the number of dumps."""
    from corpus import need_corpus_file

    n = 0
    for c in range(copies):
        for set_ in ("x86_64-kdump-320m", "x86_64-kdump-320m-6.12"):
            for rel in FILES:
                dst = root / f"copy{c}" / set_ / rel.replace("/", "-")
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(need_corpus_file(f"{set_}/{rel}"), dst)
                n += 1
            for i in (1, 2):
                dst = root / f"copy{c}" / set_ / "split" / f"split2-c-d31.{i}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(need_corpus_file(f"{set_}/derived/split2-c-d31.{i}"), dst)
            n += 1
    return n


class RssSampler:
    """Peak RSS of each descendant process of this one, sampled in a thread."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for p in self.me.children(recursive=True):
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                self.peak[p.pid] = max(self.peak.get(p.pid, 0), rss)
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _worker_maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_local(root: Path, jobs: int) -> tuple[float, int, int]:
    from kdumptool.fleet.run import run_fleet

    with tempfile.TemporaryDirectory() as out, RssSampler() as rss:
        t0 = time.monotonic()
        res = run_fleet([str(root)], out=out, jobs=jobs, report=False)
        wall = time.monotonic() - t0
    workers = sorted(rss.peak.values(), reverse=True)[:jobs]  # the forkserver is small
    return wall, res.triaged, max(workers) if workers else 0


def run_dask(root: Path) -> tuple[float, int, int]:
    import distributed

    from kdumptool.fleet.run import run_fleet

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=50) as cluster, \
            distributed.Client(cluster.scheduler_address, set_as_default=False) as client, \
            tempfile.TemporaryDirectory() as out:
        client.run(lambda: __import__("kdumptool.fleet.task"))  # warm: imports are not triage
        t0 = time.monotonic()
        res = run_fleet([str(root)], out=out, dask=cluster.scheduler_address, report=False)
        wall = time.monotonic() - t0
        peaks = client.run(_worker_maxrss)
    return wall, res.triaged, max(peaks.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        root = Path(tmp)
        n = build(root, args.copies)
        load = os.getloadavg()[0]
        for label, fn in [("local, 1 worker", lambda: run_local(root, 1)),
                          ("local, 2 workers", lambda: run_local(root, 2)),
                          ("Dask LocalCluster, 2 workers", lambda: run_dask(root))]:
            wall, done, rss = fn()
            assert done == n, (label, done, n)
            rows.append(f"| {label} | {n} | {wall:.1f} s | {n / wall:.2f} | {rss / 2**20:.0f} MiB |")
            print(rows[-1], flush=True)
    text = "\n".join([f"{os.cpu_count()} cores, load average {load:.2f} before the run", "",
                      "| engine | dumps | wall | dumps/s | peak RSS per worker |",
                      "|---|---|---|---|---|", *rows])
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
