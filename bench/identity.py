"""Byte-identity check: the same commands on the same inputs, run by two trees of kdumptool,
must give the same bytes (output files, standard output, standard error, exit status).

A refactoring claims "outputs unchanged"; this script is the proof. ``--before REV`` (default
``main``) is exported with ``git archive`` into a temporary directory; the tree holding this
script is "after". Inputs:

* the real corpus (``tests/corpus.py`` unpacks it into ``KDUMPTOOL_CACHE``): kdump, ELF,
  flattened, QEMU ELF, QEMU migration stream, split sets, the 6.12 and aarch64 dumps;
* the fuzz harness's synthetic seeds of every format (Hyper-V, Xen, Windows, libvirt, QEMU...)
  as the *before* tree builds them, and the harness's own output: the seeds and the first
  ``--generated`` mutated inputs of a fixed campaign seed, hashed in each tree (a split of
  the harness must not change what a campaign runs);
* every ``fuzz/regressions/*.bin``.

Each command's results are compared; the script prints one line per difference and exits 1
if there is any. Usage::

    python bench/identity.py [--before REV] [--quick] [--generated N] [-v]

Not a benchmark and not a test (it takes minutes: every command runs twice, in a process).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: (corpus path, [command lines]); ``{in}`` is the input, ``{out}`` an output path.
CORPUS_CASES: list[tuple[str, list[str]]] = [
    ("x86_64-kdump-320m/vmcore.elf", [
        "info --json {in}", "info {in}", "vmcoreinfo {in}", "dmesg {in}",
        "convert -l -d 31 {in} {out}", "convert -E -d 31 {in} {out}",
        "convert -F -c -d 1 {in} {out}", "convert -z -d 11 {in} {out}",
        "convert --split --splitblock-size 4096 -l -d 31 {in} {out}.1 {out}.2",
        "vtop {in} 0xffffffff81000000", "fsck --json {in}",
    ]),
    ("x86_64-kdump-320m/derived/c-d31.kdump", [
        "info --json {in}", "convert -E {in} {out}", "convert -p {in} {out}", "fsck --json {in}",
        "filter -d 31 {in} {out}",
    ]),
    ("x86_64-kdump-320m/derived/F-c-d31.flat", ["info --json {in}", "convert -l {in} {out}"]),
    ("x86_64-kdump-320m/derived/E-d31.elf", ["info --json {in}", "convert -l {in} {out}"]),
    ("x86_64-qemu-256m/qemu-migrate.qevm", [
        "info --json {in}", "convert -l -d 31 {in} {out}", "convert -E -d 1 {in} {out}",
    ]),
    ("x86_64-qemu-256m/qemu-elf.vmcore", ["info --json {in}", "convert -l -d 31 {in} {out}"]),
    ("x86_64-qemu-256m/qemu-kdump-zlib.vmcore", ["info --json {in}", "convert -l {in} {out}"]),
    ("x86_64-qemu-256m-novmcoreinfo/qemu-elf.vmcore", ["info --json {in}", "convert -l -d 1 {in} {out}"]),
    ("x86_64-kdump-320m-6.12/vmcore.elf", ["info --json {in}", "convert -l -d 31 {in} {out}"]),
    ("x86_64-kdump-320m/broken/c-d31-bad-page-data.kdump", [
        "fsck --json {in}", "repair {in} {out}", "info --json {in}",
    ]),
    ("x86_64-kdump-320m/broken/E-d31-trunc60.elf", ["repair -E {in} {out}", "info --json {in}"]),
]

#: Split sets: (part paths, commands with {parts}).
SPLIT_CASES: list[tuple[list[str], list[str]]] = [
    (["x86_64-kdump-320m/derived/split2-c-d31.1", "x86_64-kdump-320m/derived/split2-c-d31.2"],
     ["reassemble {parts} {out}", "info --json {parts}", "convert -E -d 31 {parts} {out}"]),
]

#: Dumps of the repository's own corpus cache (aarch64): absolute paths under the cache.
CACHE_CASES: list[tuple[str, list[str]]] = [
    ("repo/aarch64-kdump-384m/vmcore.elf", ["info --json {in}", "convert -l -d 31 {in} {out}",
                                            "vtop {in} 0xffff800080000000"]),
]

#: Commands run on every synthetic seed and every fuzz regression input.
SMALL_COMMANDS = ["info --json {in}", "convert -l {in} {out}", "convert -E {in} {out}"]

#: Run in a tree's interpreter: the harness's seeds and generated inputs, hashed, as JSON;
#: the synthetic seeds are also written to argv[1] (only the before tree's are used).
HARNESS_SCRIPT = r"""
import hashlib, json, sys
from pathlib import Path
sys.path[:0] = [sys.argv[3] + "/fuzz", sys.argv[3] + "/tests"]
import harness as H
out = Path(sys.argv[1]); n = int(sys.argv[2])
seeds = H.synthetic_seeds() + H.real_seeds(shared=True) + H.hypervisor_seeds(shared=True)
res = {}
for i, s in enumerate(seeds):
    res["seed %02d %s" % (i, s.name)] = hashlib.sha256(s.data).hexdigest()
    (out / ("%02d-%s.bin" % (i, s.name.replace("/", "_")))).write_bytes(s.data)
gen = H.Generator(seeds, H.STRATEGIES + tuple(H.EXTRA_STRATEGIES.items()))
for i in range(n):
    data, what = gen.generate("identity", i)
    res["generated %04d" % i] = hashlib.sha256(data + what.encode()).hexdigest()
print(json.dumps(res))
"""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _output_digest(data: bytes) -> str:
    """A flattened stream's records are written as compression threads finish: the image it
    stands for is what must not change, so it is compared de-flattened."""
    if data.startswith(b"makedumpfile\0"):
        sys.path.insert(0, str(REPO / "tests"))
        import builders  # type: ignore[import-not-found]

        return "flat:" + _digest(builders.unflatten(data))
    return _digest(data)


#: What legitimately differs between two runs: elapsed times.
_TIMES = re.compile(rb"\b\d+(\.\d+)? s\b")


def _normal(text: bytes, tree: Path) -> bytes:
    return _TIMES.sub(b"<t> s", text.replace(str(tree).encode(), b"<tree>"))


def run_cli(tree: Path, argv: list[str], workdir: Path) -> dict[str, object]:
    """One command of ``tree``'s kdumptool: exit status, hashed stdout/stderr and outputs."""
    out_dir = workdir / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=str(tree), COLUMNS="100", KDUMPTOOL_THREADS="1")
    env.pop("KDUMPTOOL_DEBUG", None)
    proc = subprocess.run([PYTHON, "-m", "kdumptool", *argv], cwd=workdir, env=env,
                          capture_output=True, timeout=600, check=False)
    outputs = {p.name: _output_digest(p.read_bytes()) for p in sorted(out_dir.iterdir()) if p.is_file()}
    stdout, stderr = (_normal(proc.stdout, tree), _normal(proc.stderr, tree))
    return {"rc": proc.returncode, "stdout": _digest(stdout), "stderr": _digest(stderr),
            "outputs": outputs, "stderr_text": stderr[-300:].decode("latin-1")}


def _argv(template: str, inp: str, parts: list[str], workdir: Path) -> list[str]:
    out = str(workdir / "out" / "o")
    argv: list[str] = []
    for word in template.split():
        if word == "{parts}":
            argv.extend(parts)
        else:
            argv.append(word.replace("{in}", inp).replace("{out}", out))
    return argv


def cases(args: argparse.Namespace, seed_dir: Path) -> list[tuple[str, str, list[str]]]:
    """(label, template, inputs) for every command to run."""
    sys.path.insert(0, str(REPO / "tests"))
    from corpus import CACHE_ROOT, corpus_file  # type: ignore[import-not-found]

    todo: list[tuple[str, str, list[str]]] = []
    for rel, cmds in CORPUS_CASES[:3] if args.quick else CORPUS_CASES:
        path = str(corpus_file(rel))
        todo += [(f"{rel}: {c}", c, [path]) for c in cmds]
    for rels, cmds in [] if args.quick else SPLIT_CASES:
        paths = [str(corpus_file(r)) for r in rels]
        todo += [(f"{rels[0]}+: {c}", c, paths) for c in cmds]
    for rel, cmds in [] if args.quick else CACHE_CASES:
        path = CACHE_ROOT / rel
        if path.exists():
            todo += [(f"{rel}: {c}", c, [str(path)]) for c in cmds]
    regressions = seed_dir.parent / "regressions"  # copied: a path inside a tree would differ
    regressions.mkdir(exist_ok=True)
    for path in sorted((REPO / "fuzz" / "regressions").glob("*.bin")):
        shutil.copyfile(path, regressions / path.name)
    small = sorted(seed_dir.glob("*.bin")) + sorted(regressions.glob("*.bin"))
    for path in small[:8] if args.quick else small:
        todo += [(f"{path.name}: {c}", c, [str(path)]) for c in SMALL_COMMANDS]
    return todo


def harness_hashes(tree: Path, seed_dir: Path, n: int) -> dict[str, str]:
    """The harness's seeds and ``n`` generated inputs, hashed, as ``tree`` makes them."""
    sys.path.insert(0, str(REPO / "tests"))
    from corpus import CACHE_ROOT, CORPUS_ROOT  # type: ignore[import-not-found]

    env = dict(os.environ, PYTHONPATH=str(tree), KDUMPTOOL_CORPUS=str(CORPUS_ROOT),
               KDUMPTOOL_CACHE=str(CACHE_ROOT))
    proc = subprocess.run([PYTHON, "-c", HARNESS_SCRIPT, str(seed_dir), str(n), str(tree)],
                          cwd=tree, env=env, capture_output=True, text=True, check=True, timeout=900)
    result: dict[str, str] = json.loads(proc.stdout.splitlines()[-1])
    return result


def main() -> int:
    """Run every case in both trees; print the differences; 0 when there are none."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default="main", help="git revision of the 'before' tree")
    p.add_argument("--quick", action="store_true", help="a few inputs only")
    p.add_argument("--generated", type=int, default=300, help="harness inputs to compare")
    p.add_argument("--harness-only", action="store_true", help="compare the fuzz harness only")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kdumptool-identity-"))
    try:
        before = tmp / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        seed_dir, workdir = tmp / "seeds", tmp / "work"
        seed_dir.mkdir()
        workdir.mkdir()
        diffs = 0
        h_before = harness_hashes(before, seed_dir, args.generated)
        h_after = harness_hashes(REPO, tmp, args.generated)  # its seed files are not used
        for key in sorted(set(h_before) | set(h_after)):
            if h_before.get(key) != h_after.get(key):
                diffs += 1
                print(f"DIFF harness {key}: {h_before.get(key)} != {h_after.get(key)}")
        print(f"harness: {len(h_before)} seeds and generated inputs compared")
        if args.harness_only:
            return 1 if diffs else 0
        todo = cases(args, seed_dir)
        for label, template, inputs in todo:
            argv = _argv(template, inputs[0], inputs, workdir)
            a, b = run_cli(before, argv, workdir), run_cli(REPO, argv, workdir)
            same = all(a[k] == b[k] for k in ("rc", "stdout", "stderr", "outputs"))
            if not same:
                diffs += 1
                print(f"DIFF {label}\n  before {a}\n  after  {b}")
            elif args.verbose:
                print(f"same {label}: rc {a['rc']}, {len(a['outputs'])} output file(s)")  # type: ignore[arg-type]
        print(f"{len(todo)} commands compared against {args.before}: {diffs} difference(s)")
        return 1 if diffs else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
