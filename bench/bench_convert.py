"""Benchmark: kdumptool convert against makedumpfile on the same input, in one run.

Each command runs in its own process; wall time and that process's peak RSS (from
``wait4``) are recorded, and both tools' outputs are checked to hold the same pages
(kdumptool reads both). Usage::

    python bench/bench_convert.py [INPUT] [--repeat N] [--out bench/results.md]

INPUT defaults to the shared corpus's real /proc/vmcore (x86_64-kdump-320m/vmcore.elf,
unpacked into .cache/corpus by the test helpers). Speed is measured here, never in tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

CASES = [  # (label, kdumptool args, makedumpfile args)
    ("kdump zlib, -d 1", ["-c", "-d", "1"], ["-c", "-d", "1"]),
    ("kdump lzo, -d 1", ["-l", "-d", "1"], ["-l", "-d", "1"]),
    ("kdump zstd, -d 1", ["-z", "-d", "1"], None),  # Debian's makedumpfile has no zstd
    ("ELF, -d 1", ["-E", "-d", "1"], ["-E", "-d", "1"]),
    ("flattened zlib, -d 1", ["-F", "-c", "-d", "1"], ["-F", "-c", "-d", "1"]),
    ("kdump zlib, -d 31", ["-c", "-d", "31"], ["-c", "-d", "31"]),
    ("kdump lzo, -d 31", ["-l", "-d", "31"], ["-l", "-d", "31"]),
    ("ELF, -d 31", ["-E", "-d", "31"], ["-E", "-d", "31"]),
]


def run(cmd: list[str], stdout: Path | None = None) -> tuple[float, int]:
    """(seconds, peak RSS in MiB) of one command in its own process.

    The process is started with ``posix_spawn`` (glibc's shares the parent's memory until
    ``exec``), so the peak RSS that ``wait4`` reports is the command's own, not a copy of
    this Python process made by ``fork``.
    """
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)]
    target = str(stdout) if stdout else os.devnull
    actions.append((os.POSIX_SPAWN_OPEN, 1, target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    exe = shutil.which(cmd[0]) or cmd[0]
    t0 = time.perf_counter()
    pid = os.posix_spawn(exe, cmd, dict(os.environ), file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return elapsed, usage.ru_maxrss // 1024


def same_pages(a: Path, b: Path) -> bool:
    from ours import our_digests

    return our_digests(a) == our_digests(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", nargs="?")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench" / "results.md"))
    args = ap.parse_args()
    if args.input:
        src = Path(args.input)
    else:
        from corpus import corpus_file

        src = corpus_file("x86_64-kdump-320m/vmcore.elf")
    mdf = shutil.which("makedumpfile")
    kdt = [sys.executable, "-m", "kdumptool", "convert", "-q", "--force"]
    rows = []
    with tempfile.TemporaryDirectory(dir=REPO / ".cache" if (REPO / ".cache").is_dir() else None) as tmp:
        for label, ours, theirs in CASES:
            o, m = Path(tmp) / "ours", Path(tmp) / "theirs"
            best_o = min((run([*kdt, *ours, str(src), str(o)]) for _ in range(args.repeat)))
            row = [label, f"{best_o[0]:.2f} s", f"{best_o[1]} MiB", f"{o.stat().st_size >> 20} MiB"]
            if theirs and mdf:
                best_m = (1e9, 0)
                for _ in range(args.repeat):
                    m.unlink(missing_ok=True)
                    if "-F" in theirs:
                        best_m = min(best_m, run([mdf, *theirs, str(src)], stdout=m))
                    else:
                        best_m = min(best_m, run([mdf, *theirs, str(src), str(m)]))
                same = "yes" if same_pages(o, m) else "NO"
                row += [f"{best_m[0]:.2f} s", f"{best_m[1]} MiB", f"{m.stat().st_size >> 20} MiB", same]
            else:
                row += ["n/a", "n/a", "n/a", "n/a"]
            rows.append(row)
            print(" | ".join(row), flush=True)
    head = ("| case | kdumptool time | kdumptool peak RSS | output | makedumpfile time | "
            "makedumpfile peak RSS | output | same pages |\n|---|---|---|---|---|---|---|---|\n")
    text = (f"# convert: kdumptool vs makedumpfile\n\nInput: `{src.name}` ({src.stat().st_size >> 20} MiB), "
            f"best of {args.repeat}; {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{platform.machine()}. Made by `python bench/bench_convert.py`.\n\n"
            + head + "".join(f"| {' | '.join(r)} |\n" for r in rows))
    Path(args.out).write_text(text)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
