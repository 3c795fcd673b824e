"""Run a fuzz campaign against kdumptool and write a summary.

    /work/venv/bin/python fuzz/campaign.py N [--seed S] [--workers W] [--out fuzz/summaries/summary.md]

Input ``i`` of seed ``S`` is always the same bytes (``--show-input S:i`` prints how it was
made), so a finding can be replayed. Each input runs every operation group of
``harness.GROUPS`` in a worker process (512 MiB address space, a time limit per group).
A failure with a new signature is minimised (tail cut, then blocks zeroed, while the
signature holds) and saved to ``fuzz/regressions/NAME.bin`` with ``NAME.txt``.

``--replay FILE...`` runs saved inputs and prints what they do now. ``--atheris SECONDS``
runs a coverage-guided session with atheris (if installed) instead.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import fnmatch
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness as H


@dataclass
class Finding:
    """One failure signature of a campaign: its first result, how many inputs and which
    operations showed it, and what was saved of it.
    """

    signature: str
    result: H.OpResult
    count: int = 0
    first_index: int = -1
    description: str = ""
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    regression: str = ""
    original_size: int = 0
    minimized_size: int = 0


def all_seeds(args: argparse.Namespace, log: Any = None) -> list[H.Seed]:
    """The campaign's seeds: synthetic, real and hypervisor images, filtered by ``--seeds``."""
    seeds = H.synthetic_seeds()
    seeds += H.real_seeds(shared=not args.no_shared, log=log)
    seeds += H.hypervisor_seeds(shared=not args.no_shared, log=log)
    if args.seeds:
        seeds = [s for s in seeds if any(fnmatch.fnmatch(s.name, pat) for pat in args.seeds.split(","))]
        if not seeds:
            raise SystemExit(f"no seed matches --seeds {args.seeds}")
    return seeds


class Campaign:
    """A campaign: N inputs of one seed on W workers, failures minimised and saved, the summary."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.next_index = 0
        self.done = 0
        self.stopping = False
        self.kinds: collections.Counter[str] = collections.Counter()
        self.op_kinds: collections.Counter[tuple[str, str]] = collections.Counter()
        self.handled: collections.Counter[str] = collections.Counter()
        self.by_strategy: collections.Counter[tuple[str, str]] = collections.Counter()
        self.by_seed_fmt: collections.Counter[tuple[str, str]] = collections.Counter()
        self.findings: dict[str, Finding] = {}
        self.slowest: list[tuple[float, int, str, str]] = []
        self.peaks: list[tuple[int, int, int, str, str]] = []
        self.seconds_total = 0.0
        self.restarts = 0
        self.log_lines: list[str] = []
        self.groups = _groups(args)
        self.version_start = H.kdumptool_version()
        self.version_end = ""
        t0 = time.monotonic()
        seeds = all_seeds(args, log=self.log)
        self.seeds = seeds
        self.gen = H.Generator(seeds, strategies(args))
        self.seed_fmt = {s.name: s.fmt for s in seeds}
        self.log(f"{len(seeds)} seeds ({sum(s.origin == 'real' for s in seeds)} real) "
                 f"in {time.monotonic() - t0:.1f} s")

    def log(self, msg: str) -> None:
        """Print a time-stamped line on standard error and keep it for the summary's notes."""
        line = f"[{datetime.datetime.now():%H:%M:%S}] {msg}"
        print(line, file=sys.stderr, flush=True)
        self.log_lines.append(msg)

    # --- running -------------------------------------------------------------------------
    def _take(self) -> int | None:
        with self.lock:
            if self.next_index >= self.args.n:
                return None
            i = self.next_index
            self.next_index += 1
            return self.args.start + i

    def run(self) -> None:
        """Run every input on the workers; checkpoint the summary; stop cleanly on ^C or SIGTERM."""
        t0 = time.monotonic()
        threads = [threading.Thread(target=self._thread, args=(k,), daemon=True)
                   for k in range(self.args.workers)]
        for t in threads:
            t.start()
        last = time.monotonic()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(1.0)
                if self.args.checkpoint and time.monotonic() - last >= self.args.checkpoint:
                    last = time.monotonic()
                    self.seconds_total = last - t0
                    self.write_summary(final=False)
        except KeyboardInterrupt:
            self.stopping = True
            self.log("interrupted: writing the summary of what ran")
            with self.lock:
                self.next_index = self.args.n
            for t in threads:
                t.join(60)
        self.seconds_total = time.monotonic() - t0
        self.version_end = H.kdumptool_version()

    def _thread(self, k: int) -> None:
        w = H.Worker(group_timeout=self.args.group_timeout, mem_mb=self.args.mem_mb,
                     groups=self.groups, cpu_clock=self.args.cpu_clock,
                     hard_extra=120.0 if self.args.cpu_clock else 15.0)
        try:
            while (i := self._take()) is not None:
                data, desc = self.gen.generate(self.args.seed, i)
                out = w.check(data)
                if self.stopping:  # the worker may have been signalled too: not a finding
                    break
                new = self._record(i, data, desc, out)
                for sig in new:
                    self._save(w, sig, data, desc)
                if self.done % self.args.progress == 0:
                    self._progress()
        finally:
            with self.lock:
                self.restarts += w.restarts
            w.close()

    def _record(self, i: int, data: bytes, desc: str, out: H.Outcome) -> list[str]:
        seed_name, _, rest = desc.partition(" | ")
        strategy = rest.split(":", 1)[0]
        fmt = self.seed_fmt.get(seed_name, "?")
        new = []
        with self.lock:
            self.done += 1
            self.kinds[out.kind] += 1
            self.by_strategy[(strategy, out.kind)] += 1
            self.by_seed_fmt[(fmt, out.kind)] += 1
            for r in out.results:
                self.op_kinds[(r.op, r.kind)] += 1
                if r.kind == "handled":
                    self.handled[r.error] += 1
            for sig, r in out.signatures().items():
                f = self.findings.get(sig)
                if f is None:
                    f = self.findings[sig] = Finding(sig, r, first_index=i, description=desc,
                                                    original_size=len(data))
                    new.append(sig)
                f.count += 1
                f.ops[r.op] += 1
            slow_group = max(out.group_seconds, key=out.group_seconds.get, default="")
            self.slowest.append((out.seconds, i, desc, slow_group))
            self.slowest = sorted(self.slowest, reverse=True)[:10]
            peak_group = max(out.group_peak_kb, key=out.group_peak_kb.get, default="")
            self.peaks.append((out.peak_kb, i, len(data), desc, peak_group))
            self.peaks = sorted(self.peaks, reverse=True)[:5]
        for sig in new:
            self.log(f"input {i}: NEW {sig} in {self.findings[sig].result.op} ({desc[:120]})")
        return new

    def _save(self, w: H.Worker, sig: str, data: bytes, desc: str) -> None:
        f = self.findings[sig]
        res = f.result
        group = _group_of(res.op)
        if self.args.no_save:
            return
        slow = res.kind in ("hang", "crash")
        budget = max(4, self.args.minimize_budget // 5) if slow else self.args.minimize_budget
        if res.kind == "hang":  # a shorter limit: these inputs do not end at all
            w = H.Worker(group_timeout=min(1.0, self.args.group_timeout), mem_mb=self.args.mem_mb,
                         cpu_clock=self.args.cpu_clock, hard_extra=120.0 if self.args.cpu_clock else 15.0)

        def reproduces(cand: bytes, g: str | None) -> bool:
            out = w.check(cand, [g] if g else self.groups)
            if res.kind == "hang":  # where a loop is interrupted varies from run to run
                return any(r.kind == "hang" for r in out.results)
            return sig in out.signatures()

        for old in H.regressions_with(Path(self.args.regressions), sig):
            if old.exists() and reproduces(old.read_bytes(), None):
                if res.kind == "hang":
                    w.close()
                with self.lock:
                    f.regression = f"{old.name} (already saved, still fails)"
                    f.minimized_size = old.stat().st_size
                self.log(f"{sig}: same as the open regression {old.name}")
                return

        # minimise where the failure reproduces; the tolerant reader first, since it lets the
        # file be cut short (the strict one refuses a truncated file before reaching the bug)
        chosen = next((g for g in dict.fromkeys(("tolerant", group)) if reproduces(data, g)), None)

        def test(cand: bytes) -> bool:
            return reproduces(cand, chosen)  # type: ignore[arg-type]

        t0 = time.monotonic()
        small = H.minimize(data, sig, test, budget=budget) if chosen else data
        path = H.write_regression(Path(self.args.regressions), res, small,
                                  original_size=len(data), description=desc,
                                  extra=f"campaign: --seed {self.args.seed}, input {f.first_index}\n")
        if res.kind == "hang":
            w.close()
        with self.lock:
            f.regression = str(path.relative_to(H.REPO)) if path.is_relative_to(H.REPO) else str(path)
            f.minimized_size = len(small)
        self.log(f"saved {f.regression} ({len(data)} -> {len(small)} bytes, "
                 f"{time.monotonic() - t0:.1f} s)")

    def _progress(self) -> None:
        with self.lock:
            done = self.done
            kinds = dict(self.kinds)
            nsig = len(self.findings)
        self.log(f"{done}/{self.args.n} inputs; {kinds}; {nsig} distinct failures")

    # --- summary -------------------------------------------------------------------------
    def write_summary(self, *, final: bool = True) -> None:
        """Write the summary to ``--out`` atomically (also as a checkpoint while running)."""
        with self.lock:
            text = self.summary(final=final)
        out = Path(self.args.out)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out)

    def summary(self, *, final: bool = True) -> str:
        """The campaign's summary in Markdown: how it ran, outcomes, failures, then tables."""
        lines = self._summary_head(final)
        lines += self._summary_failures()
        lines += self._summary_tables()
        return "\n".join(lines) + "\n"

    def _summary_head(self, final: bool) -> list[str]:
        a = self.args
        lines = [
            "# kdumptool fuzz campaign",
            "",
            f"- command: `python fuzz/campaign.py {a.n} --seed {a.seed} --workers {a.workers}"
            f"{f' --start {a.start}' if a.start else ''}"
            f"{f' --group-timeout {a.group_timeout:g}' if a.group_timeout != 3.0 else ''}"
            f"{' --cpu-clock' if a.cpu_clock else ''}{f' --seeds {a.seeds}' if a.seeds else ''}"
            f"{' --groups all' if a.groups == 'all' else ''}{f' --only {a.only}' if a.only else ''}"
            f"{' --no-shared' if a.no_shared else ''}"
            f"{f' --strategies {a.strategies}' if getattr(a, 'strategies', None) else ''}`",
            *([] if final else [f"- **checkpoint** of a campaign still running ({self.done} of {a.n} "
                                "inputs so far)"]),
            f"- inputs: indices {a.start} to {a.start + a.n - 1} of seed {a.seed} (input i is a pure "
            "function of the seed, i and the seed files)",
            f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}",
            f"- inputs run: **{self.done}** in {self.seconds_total:.0f} s "
            f"({self.done / max(self.seconds_total, 1e-9):.1f}/s) with {a.workers} workers; "
            f"worker restarts: {self.restarts}",
            f"- limits: {a.group_timeout} {'CPU ' if a.cpu_clock else ''}s per operation group"
            f"{' (wall-clock kill after 120 s more)' if a.cpu_clock else ''}, RLIMIT_AS {a.mem_mb} MiB "
            "per worker",
            f"- kdumptool: {self.version_start} at the start"
            + ("" if self.version_end == self.version_start else
               f"; {self.version_end} at the end (workers load the code when they start, and "
               "restart after a crash, a stuck worker or 2000 inputs)"),
            f"- seeds: {len(self.seeds)} ({sum(s.origin == 'real' for s in self.seeds)} from real "
            f"dumps); operation groups: {', '.join(self.groups)}",
            "",
            "## Outcomes by kind (worst step of each input)",
            "",
            "| kind | inputs |",
            "|---|---:|",
        ]
        for kind in sorted(self.kinds, key=lambda k: -H._RANK[k]):
            lines.append(f"| {kind} | {self.kinds[kind]} |")
        return lines

    def _summary_failures(self) -> list[str]:
        lines: list[str] = []
        lines += ["", "## Failures by signature", ""]
        if not self.findings:
            lines.append("None.")
        else:
            lines += ["| signature | inputs | operations | minimized | regression |",
                      "|---|---:|---|---:|---|"]
            for f in sorted(self.findings.values(), key=lambda f: (-H._RANK[f.result.kind], -f.count)):
                ops = ", ".join(f"{o} ({c})" for o, c in f.ops.most_common(4))
                lines.append(f"| `{f.signature}` | {f.count} | {ops} | "
                             f"{f.original_size} -> {f.minimized_size} | {f.regression or '-'} |")
            lines += ["", "### Details", ""]
            for f in sorted(self.findings.values(), key=lambda f: (-H._RANK[f.result.kind], -f.count)):
                r = f.result
                lines += [f"- `{f.signature}`: {r.error}: {r.message[:200]}",
                          f"  - at {r.where or '?'}; first input {f.first_index}: {f.description[:200]}"]
        return lines

    def _summary_tables(self) -> list[str]:
        lines: list[str] = []
        lines += ["", "## Steps by outcome", "", "| step | " + " | ".join(_KINDS) + " |",
                  "|---|" + "---:|" * len(_KINDS)]
        ops = sorted({op for op, _ in self.op_kinds})
        for op in ops:
            lines.append(f"| {op} | " + " | ".join(str(self.op_kinds.get((op, k), 0)) for k in _KINDS)
                         + " |")
        lines += ["", "## Inputs by generator strategy", "", "| strategy | " + " | ".join(_KINDS) + " |",
                  "|---|" + "---:|" * len(_KINDS)]
        for st in sorted({s for s, _ in self.by_strategy}):
            lines.append(f"| {st} | " + " | ".join(str(self.by_strategy.get((st, k), 0)) for k in _KINDS)
                         + " |")
        lines += ["", "| seed format | " + " | ".join(_KINDS) + " |", "|---|" + "---:|" * len(_KINDS)]
        for fm in sorted({s for s, _ in self.by_seed_fmt}):
            lines.append(f"| {fm} | " + " | ".join(str(self.by_seed_fmt.get((fm, k), 0)) for k in _KINDS)
                         + " |")
        lines += ["", "## Handled errors by class (top 25)", "", "| error | steps |", "|---|---:|"]
        for err, c in self.handled.most_common(25):
            lines.append(f"| {err} | {c} |")
        lines += ["", "## Slowest inputs", "", "| seconds | input | slowest group | generated by |",
                  "|---:|---:|---|---|"]
        for sec, i, desc, grp in self.slowest:
            lines.append(f"| {sec:.2f} | {i} | {grp} | {desc[:110]} |")
        lines += ["", "## Peak memory (VmHWM of the worker, per input)", "",
                  "| peak MiB | input | size | group | generated by |", "|---:|---:|---:|---|---|"]
        for kb, i, size, desc, grp in self.peaks:
            lines.append(f"| {kb / 1024:.0f} | {i} | {size} | {grp} | {desc[:100]} |")
        notes = [ln for ln in self.log_lines if "skipped" in ln or "not used" in ln]
        if notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
        return lines


_KINDS = ("ok", "handled", "bad_output", "unhandled", "memory", "hang", "crash", "skipped")


def _groups(args: argparse.Namespace) -> tuple[str, ...]:
    """The operation groups to run: ``--groups``, narrowed by ``--only``."""
    groups = H.ALL_GROUPS if args.groups == "all" else H.DEFAULT_GROUPS
    if getattr(args, "only", None):
        want = args.only.split(",")
        unknown = [g for g in want if g not in H.ALL_GROUPS]
        if unknown:
            raise SystemExit(f"unknown operation group(s) {', '.join(unknown)}; "
                             f"known: {', '.join(H.ALL_GROUPS)}")
        groups = tuple(g for g in groups if g in want)
    return groups


def strategies(args: argparse.Namespace) -> tuple[tuple[str, int], ...]:
    """The generator's strategies: the default mix, or only those named by ``--strategies``."""
    if not getattr(args, "strategies", None):
        return H.STRATEGIES
    weights = dict(H.STRATEGIES) | H.EXTRA_STRATEGIES
    names = args.strategies.split(",")
    unknown = [n for n in names if n not in weights]
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}; known: {', '.join(weights)}")
    return tuple((n, weights[n]) for n in names)


def _group_of(op: str) -> str:
    best = ""
    for g in H.ALL_GROUPS:
        if (op == g or op.startswith(g + ".")) and len(g) > len(best):
            best = g
    return best or "strict"


def replay(paths: list[str], args: argparse.Namespace) -> int:
    """Run saved inputs; exit 1 if any still breaks the contract."""
    groups = H.ALL_GROUPS if args.groups == "all" else H.DEFAULT_GROUPS
    w = H.Worker(group_timeout=args.group_timeout, mem_mb=args.mem_mb, groups=groups)
    bad = 0
    try:
        for p in paths:
            out = w.check(Path(p).read_bytes())
            sigs = out.signatures()
            slowest = max(out.group_seconds.items(), key=lambda kv: kv[1], default=("-", 0.0))
            print(f"{p}: {out.kind} ({out.seconds:.2f} s; slowest group {slowest[0]} {slowest[1]:.2f} s)")
            for sig, r in sigs.items():
                print(f"    {sig}  [{r.op}] {r.message[:160]}")
                if args.verbose and r.traceback:
                    print("      " + r.traceback.replace("\n", "\n      "))
            bad += bool(sigs)
    finally:
        w.close()
    return 1 if bad else 0


def show_input(spec: str, args: argparse.Namespace, out_path: str | None) -> int:
    """Print (and with ``out_path`` write) input ``SEED:I`` of the generator."""
    seed, _, index = spec.rpartition(":")
    c = H.Generator(all_seeds(args), strategies(args))
    data, desc = c.generate(int(seed) if seed.lstrip("-").isdigit() else seed, int(index))
    print(f"{len(data)} bytes: {desc}")
    if out_path:
        Path(out_path).write_bytes(data)
        print(f"written to {out_path}")
    return 0


def save_inputs(specs: list[str], args: argparse.Namespace) -> int:
    """Regenerate inputs ``SEED:I``, run them and save every failure as a regression."""
    args.n = 0
    c = Campaign(args)
    w = H.Worker(group_timeout=args.group_timeout, mem_mb=args.mem_mb, groups=c.groups)
    try:
        for spec in specs:
            seed, _, index = spec.rpartition(":")
            args.seed = seed
            data, desc = c.gen.generate(seed, int(index))
            out = w.check(data)
            for sig in c._record(int(index), data, desc, out):
                c._save(w, sig, data, desc)
    finally:
        w.close()
    return 0


def run_atheris(seconds: int, args: argparse.Namespace) -> int:
    """Coverage-guided fuzzing with atheris: structured mutations as a custom mutator."""
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        print("atheris is not installed (pip install atheris)", file=sys.stderr)
        return 2
    import random

    seeds = all_seeds(args)
    import kdumptool.cli  # noqa: F401 - loaded before instrumenting

    atheris.instrument_all()  # kdumptool is already imported (by the harness): patch it in place
    corpus = H.REPO / ".cache" / "fuzz-atheris" / "corpus"  # .cache/ is ignored by git
    corpus.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        (corpus / f"{s.name}.bin").write_bytes(s.data)

    def one_input(data: bytes) -> None:
        out = H.run_ops(data, group_timeout=None)  # libFuzzer's -timeout owns SIGALRM
        fails = out.failures(H.CONTRACT_FAILURES)
        if fails:
            r = fails[0]
            raise RuntimeError(f"{r.signature} in {r.op}: {r.message}\n{r.traceback}")

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        d = bytearray(data)
        lay = H.describe(d)
        op = rng.choice([H.m_field, H.m_field, H.m_vmcoreinfo, *H.HAVOC])
        op(d, lay, rng)
        return bytes(d[:max_size])

    argv = [sys.argv[0], str(corpus), f"-max_total_time={seconds}", f"-max_len={H.MAX_INPUT}",
            f"-timeout={int(args.group_timeout * 12)}", f"-rss_limit_mb={args.mem_mb * 4}",
            f"-artifact_prefix={corpus.parent}/"]
    atheris.Setup(argv, one_input, custom_mutator=mutator)
    atheris.Fuzz()
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("n", type=int, nargs="?", default=1000, help="number of inputs")
    p.add_argument("--seed", default="1", help="campaign seed (input i is a function of seed and i)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(H.FUZZ_DIR / "summaries" / "summary.md"),
                   help="summary file (markdown)")
    p.add_argument("--group-timeout", type=float, default=3.0, help="seconds per operation group")
    p.add_argument("--mem-mb", type=int, default=512, help="RLIMIT_AS of each worker (MiB)")
    p.add_argument("--groups", choices=("contract", "all"), default="contract",
                   help="'all' adds info --pages and filter -d 31")
    p.add_argument("--only", metavar="GROUP[,GROUP]",
                   help="run only these operation groups (e.g. to cover groups added after a campaign began)")
    p.add_argument("--no-shared", action="store_true", help="do not use the shared corpus")
    p.add_argument("--regressions", default=str(H.REGRESSIONS))
    p.add_argument("--no-save", action="store_true", help="do not write regression files")
    p.add_argument("--minimize-budget", type=int, default=150, help="checks per minimisation")
    p.add_argument("--progress", type=int, default=500, help="log every N inputs")
    p.add_argument("--seeds", metavar="GLOB[,GLOB]", help="only the seeds whose names match")
    p.add_argument("--cpu-clock", action="store_true",
                   help="count --group-timeout in CPU seconds (for campaigns sharing a busy machine)")
    p.add_argument("--start", type=int, default=0, help="index of the first input (to resume or shard)")
    p.add_argument("--checkpoint", type=float, default=600.0,
                   help="write the summary every N seconds while running (0: only at the end)")
    p.add_argument("--tmp", default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
                   help="directory for the workers' files (default /dev/shm: fsync is free there)")
    p.add_argument("--strategies", metavar="NAME[,NAME]",
                   help="only these generator strategies, e.g. 'scale' (opt-in: bulk bitmaps and "
                        "program header tables); the default mix leaves it out")
    p.add_argument("--replay", nargs="+", metavar="FILE", help="run saved inputs and report")
    p.add_argument("--show-input", metavar="SEED:I", help="print (and --write) how input I was made")
    p.add_argument("--write", metavar="FILE", help="with --show-input: write the input there")
    p.add_argument("--save-input", nargs="+", metavar="SEED:I",
                   help="run inputs again and save (minimised) whatever fails")
    p.add_argument("--atheris", type=int, metavar="SECONDS", help="coverage-guided session instead")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.replay:
        return replay(args.replay, args)
    if args.show_input:
        return show_input(args.show_input, args, args.write)
    if args.save_input:
        return save_inputs(args.save_input, args)
    if args.atheris:
        return run_atheris(args.atheris, args)
    if args.tmp:
        os.environ["TMPDIR"] = args.tmp  # the spawned workers inherit it
        tempfile.tempdir = None
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # end like ^C: write the summary
    c = Campaign(args)
    c.run()
    c.write_summary()
    c.log(f"summary written to {args.out}")
    print(c.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
