"""Benchmark: the BTF parser and the BTF search of a dump, in CPU seconds (medians).

Measures, on the 6.12 corpus kernel's BTF (``guest-info/crash/btf/vmlinux.gz``, or FILE):
``Btf.parse`` (header, record walk, vectorised reference checks), the first ``find`` (which
builds the name index), decoding every type, and ``offsetof(task_struct, pid)``; then on a
dump (default: the 6.12 set's ``derived/c-d31.kdump``) the memory scan for vmlinux's BTF.
Usage::

    python bench/bench_btf.py [--btf FILE] [--dump DUMP] [--runs N]

Speed is measured here, never in tests.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def cpu(fn: Callable[[], object], runs: int) -> float:
    """Median CPU seconds of ``fn`` over ``runs`` calls."""
    times = []
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def main() -> None:
    from corpus import CORPUS_ROOT, corpus_file
    from kdumptool.kernel.btf import Btf
    from kdumptool.kernel.btf_dump import scan_vmlinux_btf
    from kdumptool.open import open_dumps

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    guest = CORPUS_ROOT / "x86_64-kdump-320m-6.12" / "guest-info" / "crash" / "btf" / "vmlinux.gz"
    p.add_argument("--btf", default=str(guest))
    p.add_argument("--dump", default=None)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    raw = Path(args.btf).read_bytes()
    blob = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    btf = Btf.parse(blob)
    print(f"BTF: {len(blob)} bytes, {btf.nr_types} types ({args.btf})\n")
    print("| step | CPU s (median) |\n|---|---:|")
    print(f"| parse + validate | {cpu(lambda: Btf.parse(blob), args.runs):.3f} |")

    def first_find() -> None:
        Btf.parse(blob).find("task_struct")

    def decode_all() -> None:
        fresh = Btf.parse(blob)
        for _ in fresh.types:
            pass

    print(f"| parse + first find (name index) | {cpu(first_find, args.runs):.3f} |")
    warm = cpu(lambda: btf.offsetof("task_struct", "pid"), args.runs)
    print(f"| offsetof(task_struct, pid), warm | {warm:.6f} |")
    print(f"| parse + decode every type | {cpu(decode_all, max(1, args.runs // 2)):.3f} |")
    dump = args.dump or str(corpus_file("x86_64-kdump-320m-6.12/derived/c-d31.kdump"))

    def scan() -> None:
        with open_dumps([dump]) as reader:
            assert scan_vmlinux_btf(reader) is not None

    print(f"| scan of {Path(dump).name} for vmlinux BTF | {cpu(scan, max(1, args.runs // 2)):.3f} |")


if __name__ == "__main__":
    main()
