"""Benchmark: kdumptool against makedumpfile on the same inputs, side by side, in one run.

For each input and case (kdump with -c, -l, -p, -z at -d 1 and -d 31, -c with each deflate
of ``KDUMPTOOL_ZLIB``; ELF at -d 1 and -d 31; refiltering a ``-c -d 0`` dump of the input,
made by makedumpfile, to -l -d 31, -l -d 0 and -c -d 31) both tools run ``--runs`` times,
each in its own process; per run: wall time, CPU time of the process and its workers
(user + system, from ``wait4``), peak RSS (of the largest process: the parent or one
worker), output size. kdumptool also runs with one worker (``--threads 1``): once per case
to check that the bytes are the same, ``--runs`` times for the cases of :data:`SCALING`;
and ``fsck --deep`` of the ``-c -d 0`` dump is timed against makedumpfile's rewrite of it.
Medians are reported with the throughput (input MiB per wall second) and the
kdumptool / makedumpfile ratios; both outputs of a case are checked once to hold the same
pages. Start-up (``--help``, ``info``) is measured too. Several inputs make the scaling
table (time and peak RSS per input size).
Usage::

    python bench/bench_convert.py [INPUT ...] [--runs N] [--out bench/RESULTS-run.md]

INPUT defaults to the shared corpus's real /proc/vmcore (x86_64-kdump-320m/vmcore.elf,
unpacked into .cache/corpus by the test helpers). Speed is measured here, never in tests.
Run it on a quiet machine: the figures are wall-clock times.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
TIME = "/usr/bin/time"  # GNU time (Debian package "time")

CASES = [  # (label, options: the same for both tools[, source: "input" or "c-d0"[, KDUMPTOOL_ZLIB]])
    ("kdump -c -d 0", ["-c", "-d", "0"]),
    ("kdump -c -d 1", ["-c", "-d", "1"]),
    ("kdump -c -d 1, zlib", ["-c", "-d", "1"], "input", "zlib"),
    ("kdump -c -d 1, zlib-ng", ["-c", "-d", "1"], "input", "zlib-ng"),
    ("kdump -c -d 1, libdeflate", ["-c", "-d", "1"], "input", "libdeflate"),
    ("kdump -l -d 1", ["-l", "-d", "1"]),
    ("kdump -p -d 1", ["-p", "-d", "1"]),
    ("kdump -z -d 1", ["-z", "-d", "1"]),
    ("ELF -E -d 1", ["-E", "-d", "1"]),
    ("kdump -c -d 31", ["-c", "-d", "31"]),
    ("kdump -c -d 31, zlib", ["-c", "-d", "31"], "input", "zlib"),
    ("kdump -c -d 31, libdeflate", ["-c", "-d", "31"], "input", "libdeflate"),
    ("kdump -l -d 31", ["-l", "-d", "31"]),
    ("kdump -p -d 31", ["-p", "-d", "31"]),
    ("kdump -z -d 31", ["-z", "-d", "31"]),
    ("ELF -E -d 31", ["-E", "-d", "31"]),
    ("refilter c-d0 -> -l -d 31", ["-l", "-d", "31"], "c-d0"),
    ("refilter c-d0 -> -l -d 0", ["-l", "-d", "0"], "c-d0"),
    ("refilter c-d0 -> -c -d 31", ["-c", "-d", "31"], "c-d0"),
]
#: Cases also run with one worker (``--threads 1``), medians, for the scaling table.
SCALING = ("kdump -c -d 0", "kdump -c -d 1", "kdump -l -d 1", "refilter c-d0 -> -l -d 0")


@dataclass
class Run:
    wall: float
    cpu: float
    rss_mib: float
    ok: bool


def run(cmd: list[str]) -> Run:
    """One command in its own process: wall, user+system CPU and peak RSS of that process.

    It runs under GNU ``time``, which forks a small process that then execs the command: the
    peak RSS is the command's own (Linux carries the RSS high-water mark across ``exec``, so a
    command started directly from this Python process would report this process's memory).
    """
    exe = shutil.which(cmd[0]) or cmd[0]
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        t0 = time.perf_counter()
        proc = subprocess.run([TIME, "-f", "%U %S %M", "-o", out.name, exe, *cmd[1:]],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, check=False)
        wall = time.perf_counter() - t0
        user, system, rss_kib = out.read().split()[-3:]
    return Run(wall, float(user) + float(system), int(rss_kib) / 1024, proc.returncode == 0)


def median_of(runs: list[Run]) -> Run:
    return Run(statistics.median(r.wall for r in runs), statistics.median(r.cpu for r in runs),
               statistics.median(r.rss_mib for r in runs), all(r.ok for r in runs))


def _codec_honoured(path: Path, opts: list[str]) -> bool:
    """Whether makedumpfile really compressed with the asked codec (Debian's build has no
    snappy or zstd: it says nothing and writes the pages uncompressed)."""
    from kdumptool.open import open_dumps

    wanted = {"-c": "zlib", "-l": "lzo", "-p": "snappy", "-z": "zstd"}
    asked = [wanted[o] for o in opts if o in wanted]
    if not asked:
        return True
    with open_dumps([str(path)]) as r:
        return asked[0] in (r.info.codecs or set())


def same_pages(a: Path, b: Path) -> bool:
    from ours import our_digests

    return our_digests(a) == our_digests(b)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(Path("/proc/meminfo").read_text().split()[1]) >> 20
    except OSError:
        mem = 0
    mdf = subprocess.run(["makedumpfile", "-v"], capture_output=True, text=True, check=False)
    mdf_ver = (mdf.stdout or mdf.stderr).splitlines()[0] if shutil.which("makedumpfile") else "absent"
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    load = os.getloadavg()
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem} GiB RAM; Linux {platform.release()}; "
            f"Python {platform.python_version()}; kdumptool {commit}; {mdf_ver}; "
            f"load average before the run {load[0]:.2f}")


def fmt_ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def _digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def warm(path: Path) -> None:
    """Read ``path`` whole, so that every run of either tool finds its input in the page cache:
    a machine may page out cold file pages at any time (this one runs DAMON's ``pageout``),
    and a run that reads part of its input from the disk measures the disk."""
    with path.open("rb", buffering=0) as f:
        while f.read(16 << 20):
            pass


def fresh(out: Path, cmd: list[str], inp: Path) -> Run:
    """Run ``cmd`` on the warm input ``inp``, writing ``out`` as a new file, as makedumpfile's
    runs do (it refuses to overwrite): replacing the last run's output would add the removal of
    the old file."""
    out.unlink(missing_ok=True)
    warm(inp)
    return run(cmd)


def bench_input(src: Path, runs: int, tmp: Path, mdf: str | None,
                cases: list[tuple]) -> list[dict[str, object]]:
    kdt = [sys.executable, "-m", "kdumptool"]
    size_mib = src.stat().st_size / (1 << 20)
    rows: list[dict[str, object]] = []
    cd0 = tmp / "c-d0.kdump"  # the refilter input, made by makedumpfile (or by us without it)
    for label, opts, *where in cases:
        inp = src
        if where and where[0] == "c-d0":
            if not cd0.exists():
                subprocess.run([mdf, "-c", "-d", "0", str(src), str(cd0)] if mdf else
                               [*kdt, "convert", "-q", "-c", "-d", "0", str(src), str(cd0)],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            inp = cd0
        o, m, one = tmp / "ours", tmp / "theirs", tmp / "ours-1"
        kdt = [sys.executable, "-m", "kdumptool"]
        if len(where) > 1:  # another deflate for -c
            kdt = ["env", f"KDUMPTOOL_ZLIB={where[1]}", *kdt]
        ours = median_of([fresh(o, [*kdt, "convert", "-q", "--force", *opts, str(inp), str(o)], inp)
                          for _ in range(runs)])
        row: dict[str, object] = {"case": label, "ours": ours, "ours_out": o.stat().st_size if ours.ok else 0}
        # one worker: the same bytes (and, for the scaling cases, the time)
        single = [fresh(one, [*kdt, "convert", "-q", "--force", "--threads", "1", *opts, str(inp), str(one)],
                        inp)
                  for _ in range(runs if label in SCALING else 1)]
        row["one"] = median_of(single)
        row["identical"] = ours.ok and _digest(o) == _digest(one)
        theirs = None
        if mdf:
            tries = []
            for _ in range(runs):
                r = fresh(m, [mdf, *opts, str(inp), str(m)], inp)
                tries.append(r)
                if not r.ok:
                    break  # this build lacks the codec (Debian: no -p, -z)
            if all(r.ok for r in tries) and _codec_honoured(m, opts):
                theirs = median_of(tries)
                row["theirs_out"] = m.stat().st_size
                row["same"] = "yes" if ours.ok and same_pages(o, m) else "NO"
        row["theirs"] = theirs
        row["mib_s"] = size_mib / ours.wall
        rows.append(row)
        print(format_row(row), flush=True)
    if cd0.exists():  # fsck --deep of the -c -d 0 dump (makedumpfile has no such check)
        fsck = [fresh(tmp / "none", [*kdt, "fsck", "--deep", str(cd0)], cd0) for _ in range(runs)]
        row = {"case": "fsck --deep c-d0", "fsck": median_of(fsck)}
        rows.append(row)
        print(f"fsck --deep: {row['fsck'].wall:.2f} s", flush=True)  # type: ignore[attr-defined]
    for p in (tmp / "ours", tmp / "theirs", tmp / "ours-1", cd0):
        p.unlink(missing_ok=True)
    return rows


def format_row(row: dict[str, object]) -> str:
    ours: Run = row["ours"]  # type: ignore[assignment]
    theirs: Run | None = row["theirs"]  # type: ignore[assignment]
    cells = [str(row["case"]), f"{ours.wall:.2f} s", f"{ours.cpu:.2f} s", f"{row['mib_s']:.0f}",
             f"{ours.rss_mib:.0f} MiB", f"{int(row['ours_out']) / (1 << 20):.1f} MiB"]  # type: ignore[call-overload]
    if theirs is not None:
        cells += [f"{theirs.wall:.2f} s", f"{theirs.cpu:.2f} s", f"{theirs.rss_mib:.0f} MiB",
                  f"{int(row['theirs_out']) / (1 << 20):.1f} MiB",  # type: ignore[call-overload]
                  f"**{fmt_ratio(ours.wall, theirs.wall)}**", fmt_ratio(ours.rss_mib, theirs.rss_mib),
                  str(row["same"])]
    else:
        cells += ["n/a"] * 4 + ["n/a", "n/a", "n/a"]
    one: Run = row["one"]  # type: ignore[assignment]
    cells += [f"{one.wall:.2f} s", "yes" if row["identical"] else "NO"]
    return "| " + " | ".join(cells) + " |"


HEAD = ("| case | kdumptool wall | CPU | MiB/s | peak RSS/worker | output | makedumpfile wall | CPU "
        "| peak RSS | output | wall ratio | RSS ratio | same pages | kdumptool 1 worker | same bytes "
        "1 and 2 workers |\n" + "|---" * 15 + "|\n")


def format_extra(rows: list[dict[str, object]]) -> str:
    """fsck --deep against makedumpfile's rewrite of the same dump as -l -d 0, and the
    scaling from one worker to all."""
    by = {str(r["case"]): r for r in rows}
    out = ""
    fsck, ref = by.get("fsck --deep c-d0"), by.get("refilter c-d0 -> -l -d 0")
    if fsck is not None:
        f: Run = fsck["fsck"]  # type: ignore[assignment]
        theirs = ref.get("theirs") if ref else None
        out += (f"\n`fsck --deep` of the -c -d 0 dump: {f.wall:.2f} s wall, {f.cpu:.2f} s CPU, "
                f"{f.rss_mib:.0f} MiB peak RSS per worker"
                + (f"; makedumpfile rewrites that dump as -l -d 0 in {theirs.wall:.2f} s: ratio "  # type: ignore[union-attr]
                   f"**{f.wall / theirs.wall:.2f}**" if theirs else "") + ".\n")  # type: ignore[union-attr]
    lines = []
    for label in SCALING:
        r = by.get(label)
        if r is not None:
            one, all_ = r["one"], r["ours"]
            lines.append(f"| {label} | {one.wall:.2f} s | {all_.wall:.2f} s | "  # type: ignore[union-attr]
                         f"**{one.wall / all_.wall:.2f}** |\n")  # type: ignore[union-attr]
    if lines:
        out += ("\n| case | 1 worker | all cores | speed-up |\n|---|---|---|---|\n" + "".join(lines))
    return out


def startup(src: Path, runs: int) -> str:
    kdt = [sys.executable, "-m", "kdumptool"]
    helps = median_of([run([*kdt, "--help"]) for _ in range(runs)])
    info = median_of([run([*kdt, "info", str(src)]) for _ in range(runs)])
    return f"`kdumptool --help` {helps.wall:.2f} s, `kdumptool info {src.name}` {info.wall:.2f} s (medians)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS-run.md")
    ap.add_argument("--cases", metavar="GLOB", help="only the cases whose label matches, e.g. 'ELF*'")
    args = ap.parse_args()
    cases = [c for c in CASES if not args.cases or fnmatch.fnmatch(c[0], args.cases)]
    if not cases:
        raise SystemExit(f"no case matches {args.cases!r}")
    if not args.inputs:
        from corpus import corpus_file

        args.inputs = [corpus_file("x86_64-kdump-320m/vmcore.elf")]
    mdf = shutil.which("makedumpfile")
    desc = machine()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "kdumptool")], check=False,
                   stdout=subprocess.DEVNULL)  # as an installed package has them
    parts = [f"# kdumptool vs makedumpfile\n\nMachine: {desc}.\n\nCommand: `python bench/bench_convert.py "
             f"{' '.join(str(p) for p in args.inputs)} --runs {args.runs}"
             f"{f' --cases {args.cases!r}' if args.cases else ''}`; medians of {args.runs} runs.\n"]
    results: dict[Path, list[dict[str, object]]] = {}
    for src in args.inputs:
        print(f"## {src} ({src.stat().st_size >> 20} MiB)", flush=True)
        with tempfile.TemporaryDirectory(dir=src.parent) as tmp:
            results[src] = bench_input(src, args.runs, Path(tmp), mdf, cases)
        parts.append(f"\n## {src.name} ({src.stat().st_size >> 20} MiB; {src.parent.name})\n\n"
                     f"Start-up: {startup(src, args.runs)}.\n\n" + HEAD
                     + "".join(format_row(r) + "\n" for r in results[src] if "ours" in r)
                     + format_extra(results[src]))
    if len(args.inputs) > 1:
        parts.append("\n## Scaling (kdumptool wall / peak RSS per input)\n\n| case | "
                     + " | ".join(f"{s.stat().st_size >> 20} MiB" for s in args.inputs) + " |\n"
                     + "|---" * (len(args.inputs) + 1) + "|\n")
        for i, (label, *_) in enumerate(cases):
            cells = []
            for src in args.inputs:
                r: Run = results[src][i]["ours"]  # type: ignore[assignment]
                cells.append(f"{r.wall:.2f} s / {r.rss_mib:.0f} MiB")
            parts.append(f"| {label} | " + " | ".join(cells) + " |\n")
    args.out.write_text("".join(parts))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
