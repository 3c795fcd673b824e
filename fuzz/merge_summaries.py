"""Add up the summaries of a campaign run in parts into one summary.

    /work/venv/bin/python fuzz/merge_summaries.py PART.md [PART.md ...] --out fuzz/summaries/summary-1m.md

A long campaign (``campaign.py N --seed S``) is stopped at the end of a session and resumed
with ``--start`` in the next one, often on a newer commit (with the fixes for what the earlier
parts found). Each part writes its own summary (``campaign.py --out``); this script reads those
markdown files (the format ``campaign.py`` writes, nothing else) and writes one summary with
every table added up: outcomes, failures by signature, steps, strategies, seed formats,
handled errors, the slowest inputs and the peak memory over all parts.

Counting: each part says how many inputs it finished (``inputs run``) and its first index
(``--start``). A part stopped with ``SIGTERM`` leaves the inputs its workers had in flight
unfinished (at most one per worker); a part that resumes a few indices early covers them, so
it may run again a few inputs the previous one finished. The merged count of *distinct*
inputs is therefore given as a lower bound: the sum of the parts, less ``workers`` for each
resume whose first index is below the previous part's end.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KINDS = ("ok", "handled", "bad_output", "unhandled", "memory", "hang", "crash", "skipped")
RANK = {k: i for i, k in enumerate(("skipped", "ok", "handled", "bad_output", "unhandled", "memory",
                                      "hang", "crash"))}


@dataclass
class Part:
    """One part's summary, parsed: its command, range of inputs, tables and details."""

    path: Path
    command: str = ""
    start: int = 0
    seed: str = ""
    inputs: int = 0
    seconds: float = 0.0
    workers: int = 2
    commit: str = ""
    date: str = ""
    checkpoint: bool = False
    tables: dict[str, list[list[str]]] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    note: str = ""


def _cells(line: str, ncols: int) -> list[str]:
    """The cells of a table row; the last column keeps any ``|`` of its own (input descriptions
    hold ``seed | strategy``)."""
    inner = line.strip()[1:]
    if inner.endswith("|"):
        inner = inner[:-1]
    parts = [c.strip() for c in inner.split("|")]
    if len(parts) > ncols:
        parts = parts[:ncols - 1] + [" | ".join(parts[ncols - 1:])]
    return parts


def parse(path: Path) -> Part:
    """Read one summary written by ``campaign.py``."""
    text = path.read_text()
    p = Part(path)
    if m := re.search(r"^- command: `(.*)`$", text, re.M):
        p.command = m.group(1)
        if s := re.search(r"--start (\d+)", p.command):
            p.start = int(s.group(1))
        if s := re.search(r"--seed (\S+)", p.command):
            p.seed = s.group(1)
        if s := re.search(r"--workers (\d+)", p.command):
            p.workers = int(s.group(1))
    m = re.search(r"^- inputs run: \*\*(\d+)\*\* in (\d+) s", text, re.M)
    if not m:
        raise SystemExit(f"{path}: no 'inputs run' line: not a campaign.py summary")
    p.inputs, p.seconds = int(m.group(1)), float(m.group(2))
    if m := re.search(r"^- kdumptool: (\S+)", text, re.M):
        p.commit = m.group(1)
    if m := re.search(r"^- date: (.*)$", text, re.M):
        p.date = m.group(1)
    p.checkpoint = "**checkpoint**" in text
    if m := re.match(r"\s*<!--(.*?)-->", text, re.S):  # what the session that ran it added
        p.note = " ".join(m.group(1).split())
    section = ""
    header: list[str] = []
    for line in text.splitlines():
        if line.startswith("## ") or line.startswith("### "):
            section, header = line.lstrip("#").strip(), []
            continue
        if section == "Details" and line.startswith("- "):
            p.details.append(line)
        elif section == "Details" and line.startswith("  - ") and p.details:
            p.details[-1] += "\n" + line
        if not line.startswith("|"):
            header = [] if not line.strip() else header  # a blank line ends a table
            continue
        if line.startswith("|---"):
            continue
        if not header:
            header = _cells(line, 99)
            # the seed-format table shares the strategies' section
            key = "Inputs by seed format" if header[0] == "seed format" else section
            p.tables[key] = [header]
            continue
        p.tables[key].append(_cells(line, len(header)))
    return p


def _saved_as(seeds: list[str], index: int) -> str:
    """The regression file saved for input ``index`` of the campaign (found by its .txt)."""
    want = [f"campaign: --seed {s}, input {index}" for s in seeds]
    for txt in sorted((REPO / "fuzz" / "regressions").glob("*.txt")):
        for ln in txt.read_text(errors="replace").splitlines():
            if any(ln.strip() == w or ln.startswith(w + " ") for w in want):  # "... (a comment)"
                return str(txt.with_suffix(".bin").relative_to(REPO))
    return ""


@dataclass
class _Totals:
    """Every part's tables, added up."""

    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    steps: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))
    strategies: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))
    seed_fmts: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))
    handled: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: dict[str, list[str]] = field(default_factory=dict)
    failure_parts: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    first_inputs: dict[str, int] = field(default_factory=dict)
    slowest: list[tuple[float, int, str, str, str]] = field(default_factory=list)
    peaks: list[tuple[int, int, int, str, str, str]] = field(default_factory=list)

    def add(self, label: str, p: Part) -> None:
        """Add the tables of part ``p`` (called ``label`` in the merged summary)."""
        for row in p.tables.get("Outcomes by kind (worst step of each input)", [])[1:]:
            self.kinds[row[0]] += int(row[1])
        for key, into in (("Steps by outcome", self.steps), ("Inputs by generator strategy", self.strategies),
                          ("Inputs by seed format", self.seed_fmts)):
            rows = p.tables.get(key, [])
            if not rows:
                continue
            cols = rows[0][1:]
            for row in rows[1:]:
                for k, v in zip(cols, row[1:], strict=True):
                    into[row[0]][k] += int(v)
        for row in p.tables.get("Handled errors by class (top 25)", [])[1:]:
            self.handled[row[0]] += int(row[1])
        for row in p.tables.get("Failures by signature", [])[1:]:
            sig = row[0]
            if sig in self.failures:
                old = self.failures[sig]
                old[1] = str(int(old[1]) + int(row[1]))
            else:
                self.failures[sig] = list(row)
            self.failure_parts[sig].append(f"{label} ({p.commit})")
        for d in p.details:
            if m := re.match(r"- `([^`]+)`.*?first input (\d+):", d, re.S):
                self.first_inputs.setdefault(m.group(1), int(m.group(2)))
        for row in p.tables.get("Slowest inputs", [])[1:]:
            self.slowest.append((float(row[0]), int(row[1]), row[2], row[3], label))
        for row in p.tables.get("Peak memory (VmHWM of the worker, per input)", [])[1:]:
            self.peaks.append((int(row[0]), int(row[1]), int(row[2]), row[3], row[4], label))


def merge(parts: list[Part]) -> str:
    """One summary of a campaign run in parts: the parts, then every table added up."""
    t = _Totals()
    for i, p in enumerate(parts, 1):
        t.add(f"part {i}", p)
    seeds = sorted({p.seed for p in parts})
    out = _merged_head(parts, seeds) + _merged_failures(parts, seeds, t) + _merged_tables(t)
    return "\n".join(out) + "\n"


def _merged_head(parts: list[Part], seeds: list[str]) -> list[str]:
    total = sum(p.inputs for p in parts)
    overlap = sum(p.workers for prev, p in zip(parts, parts[1:], strict=False)
                  if p.start < prev.start + prev.inputs)
    distinct = total - overlap
    seconds = sum(p.seconds for p in parts)
    out = [
        "# kdumptool fuzz campaign, all parts",
        "",
        f"- parts: {len(parts)}, merged by `fuzz/merge_summaries.py` from "
        + ", ".join(f"`{p.path.name}`" for p in parts),
        f"- seed: {', '.join(seeds)}",
        f"- inputs run: **{total}** in {seconds:.0f} s of running ({total / max(seconds, 1e-9):.1f}/s)",
        f"- distinct inputs: **at least {distinct}** (each resume may repeat up to one input per worker)",
        "",
        "| part | first index | inputs | seconds | kdumptool | date | summary |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for i, p in enumerate(parts, 1):
        out.append(f"| {i}{' (checkpoint)' if p.checkpoint else ''} | {p.start} | {p.inputs} | "
                   f"{p.seconds:.0f} | {p.commit} | {p.date} | `{p.path.name}` |")
    notes = [(i, p.note) for i, p in enumerate(parts, 1) if p.note]
    if notes:
        out += ["", "## What each part's session noted", ""] + [f"- part {i}: {n}" for i, n in notes]
    return out


def _merged_failures(parts: list[Part], seeds: list[str], t: _Totals) -> list[str]:
    out: list[str] = []
    out += ["", "## Outcomes by kind (worst step of each input)", "", "| kind | inputs |", "|---|---:|"]
    for k in sorted(t.kinds, key=lambda k: -RANK.get(k, 0)):
        out.append(f"| {k} | {t.kinds[k]} |")
    out += ["", "## Failures by signature", ""]
    if not t.failures:
        out.append("None.")
    else:
        out += ["| signature | inputs | operations | minimized | regression | found in |",
                "|---|---:|---|---:|---|---|"]
        for sig, row in t.failures.items():
            reg = row[4]
            if reg.startswith("fuzz/regressions/") and not (REPO / reg).exists():
                kept = _saved_as(seeds, t.first_inputs.get(sig.strip("`"), -1))
                row[4] = (f"{kept} (renamed)" if kept else f"{reg} (not kept: see the part's note)")
            out.append("| " + " | ".join(row) + f" | {', '.join(t.failure_parts[sig])} |")
        out += ["", "### Details (as each part gave them)", ""]
        for p in parts:
            out += p.details
    return out


def _merged_tables(t: _Totals) -> list[str]:
    out: list[str] = []
    for title, table in (("Steps by outcome", t.steps), ("Inputs by generator strategy", t.strategies),
                         ("Inputs by seed format", t.seed_fmts)):
        first = {"Steps by outcome": "step", "Inputs by generator strategy": "strategy"}.get(title,
                                                                                         "seed format")
        out += ["", f"## {title}", "", f"| {first} | " + " | ".join(KINDS) + " |",
                "|---|" + "---:|" * len(KINDS)]
        for name in sorted(table):
            out.append(f"| {name} | " + " | ".join(str(table[name].get(k, 0)) for k in KINDS) + " |")
    out += ["", "## Handled errors by class (each part's top 25, added up)", "", "| error | steps |",
            "|---|---:|"]
    for err, c in t.handled.most_common(25):
        out.append(f"| {err} | {c} |")
    out += ["", "## Slowest inputs (all parts)", "",
            "| seconds | input | slowest group | generated by | part |", "|---:|---:|---|---|---|"]
    for sec, i, grp, desc, label in sorted(t.slowest, reverse=True)[:15]:
        out.append(f"| {sec:.2f} | {i} | {grp} | {desc} | {label} |")
    out += ["", "## Peak memory (VmHWM of the worker, per input; all parts)", "",
            "| peak MiB | input | size | group | generated by | part |", "|---:|---:|---:|---|---|---|"]
    for kb, i, size, grp, desc, label in sorted(t.peaks, reverse=True)[:8]:
        out.append(f"| {kb} | {i} | {size} | {grp} | {desc} | {label} |")
    return out


def main(argv: list[str] | None = None) -> int:
    """The command line: merge the parts given, to ``--out`` or standard output."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="+", type=Path, help="summaries, in the order they ran")
    ap.add_argument("--out", type=Path, help="write here (default: standard output)")
    args = ap.parse_args(argv)
    parts = sorted((parse(p) for p in args.parts), key=lambda p: p.start)
    text = merge(parts)
    if args.out:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
