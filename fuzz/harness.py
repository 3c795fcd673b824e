"""Fuzz harness for kdumptool: structured input generators and an isolated checker.

The contract checked (see ``fuzz/README.md``): for ANY input bytes, opening a dump
(:func:`kdumptool.open.open_bytes` strict and tolerant, :func:`kdumptool.open.open_dump`
through the command line), reading every batch, ``read_page``, ``count_pages``, the
summary (:func:`kdumptool.summary.dump_summary`) and every command (``info`` in its
forms, ``vmcoreinfo``, ``convert`` to kdump / ELF / flattened / a split set, ``filter``,
``dmesg``, ``vtop``, ``fsck``, ``repair``, ``ikconfig``, ``reassemble``) either succeed or raise a
:class:`kdumptool.errors.KdumpToolError` -- no other exception, no hang, no allocation
past the worker's address-space limit, no crash.

Generators (:class:`Generator`)
    * *structured*: field-aware mutation of real and synthetic files. The fields come from
      kdumptool's own construct schemas (``kdump_structs`` DiskDumpHeader / KdumpSubHeader /
      PageDesc, ``elf_structs`` Ehdr / Phdr / Shdr / Nhdr, the flattened
      ``MakedumpfileHeader`` / ``MakedumpfileDataHeader``); values are boundaries (0, 1, -1,
      max, page size +-1, file size +-1, huge) or random. VMCOREINFO text is mutated key by key.
    * *havoc*: bit flips, byte runs, zeroed blocks, truncations, insertions and deletions,
      anywhere and at structure boundaries; splices between seeds; re-flattening.

Checker
    :func:`run_ops` runs every operation in-process and classifies each step;
    :class:`Worker` runs it in a ``spawn``-ed process with ``RLIMIT_AS`` (default 512 MiB),
    ``RLIMIT_FSIZE``, a per-group time limit (``SIGALRM`` raising :class:`OpTimeout`, plus a
    hard kill with a ``faulthandler`` traceback when the process is stuck in C code) and crash
    detection; :func:`check_one` is the one-call form.

Outcome kinds, worst first: ``crash``, ``hang``, ``memory``, ``unhandled`` (the contract is
broken), ``bad_output`` (``convert`` succeeded but kdumptool cannot re-read what it wrote),
``handled`` (a kdumptool error), ``ok``.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import faulthandler
import importlib
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import construct as cs
import numpy as np

from kdumptool.dump import DumpReader, PageBatch
from kdumptool.errors import KdumpToolError
from kdumptool.formats.elf import PT_LOAD, PT_NOTE, elf_structs
from kdumptool.formats.kdump import detect_layout, kdump_structs
from kdumptool.open import open_bytes, open_dump, open_dumps
from kdumptool.summary import dump_summary, format_summary
from kdumptool.transport.flattened import MakedumpfileDataHeader, MakedumpfileHeader

REPO = Path(__file__).resolve().parent.parent
FUZZ_DIR = REPO / "fuzz"
REGRESSIONS = FUZZ_DIR / "regressions"
BUNDLED_KDUMP = REPO / "corpus" / "x86_64-kdump-320m-c-d31.kdump"
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
B: Any = importlib.import_module("builders")  # tests/builders.py: independent dump builders

PS = 4096
#: Largest input the generators make (bytes).
MAX_INPUT = 2 << 20

# ============================================================================================
# outcomes
# ============================================================================================

#: Kinds that break the contract.
CONTRACT_FAILURES = ("crash", "hang", "memory", "unhandled")
#: Everything worth a regression file.
FAILURE_KINDS = (*CONTRACT_FAILURES, "bad_output")
_RANK = {"ok": 0, "skipped": 0, "handled": 1, "bad_output": 2, "unhandled": 3, "memory": 4,
         "hang": 5, "crash": 6}


def worst(kinds: Iterable[str]) -> str:
    """The most severe of ``kinds`` (``ok`` for none)."""
    return max(kinds, key=lambda k: _RANK[k], default="ok")


@dataclass
class OpResult:
    """One step of one operation on one input.

    :param op: ``"<group>.<step>"``, e.g. ``"tolerant.iter_batches"``, ``"cli.info"``
    :param kind: ``ok``, ``handled``, ``unhandled``, ``hang``, ``memory``, ``crash``,
        ``bad_output`` or ``skipped``
    :param error: exception class (``"exit 4"`` for a command-line error exit)
    :param where: innermost kdumptool frame, ``"kdumptool/x.py:LINE:function"``
    """

    op: str
    kind: str
    error: str = ""
    message: str = ""
    where: str = ""
    traceback: str = ""
    seconds: float = 0.0

    @property
    def signature(self) -> str:
        """What identifies a distinct bug: kind, exception type and kdumptool location.

        A hang is located by file and function only (where a loop is interrupted varies).
        """
        loc = self.where
        if self.kind in ("hang", "crash"):
            parts = loc.split(":")
            loc = f"{parts[0]}:{parts[-1]}" if len(parts) == 3 else loc
        return f"{self.kind}:{self.error}@{loc}"


@dataclass
class Outcome:
    """Everything :func:`run_ops` found for one input."""

    kind: str
    results: list[OpResult]
    seconds: float
    peak_kb: int
    size: int
    group_seconds: dict[str, float] = field(default_factory=dict)
    group_peak_kb: dict[str, int] = field(default_factory=dict)

    def failures(self, kinds: Iterable[str] = FAILURE_KINDS) -> list[OpResult]:
        kinds = tuple(kinds)
        return [r for r in self.results if r.kind in kinds]

    def signatures(self, kinds: Iterable[str] = FAILURE_KINDS) -> dict[str, OpResult]:
        """Distinct failure signatures, each with its first step."""
        out: dict[str, OpResult] = {}
        for r in self.failures(kinds):
            out.setdefault(r.signature, r)
        return out

    def handled(self) -> list[str]:
        return [r.error for r in self.results if r.kind == "handled"]


class OpTimeout(BaseException):  # noqa: N818 - not an Exception: kdumptool must not catch it
    """Raised by SIGALRM when a group of operations exceeds its time limit."""


class _CliExit(KdumpToolError):
    """The command line ended with a documented error exit (1-4) and an error line."""


class _CliBadExit(Exception):
    """The command line ended with an undocumented exit code or without an error line."""


def _where(tb: Any, op: str = "") -> str:
    """The innermost frame in the kdumptool package, else the innermost frame outside this
    harness (numpy, click, ...), else ``harness:0:<op>`` (e.g. a generator that never ends
    interrupted between two of its items)."""
    frames = traceback.extract_tb(tb) if tb is not None else []
    pick = None
    for fr in frames:
        if "/kdumptool/" in fr.filename.replace("\\", "/"):
            pick = fr
    if pick is None:
        outside = [fr for fr in frames if Path(fr.filename).name != "harness.py"]
        pick = outside[-1] if outside else None
    if pick is None:
        return f"harness:0:{op}" if op else ""
    return f"{_rel(pick.filename)}:{pick.lineno}:{pick.name}"


def _rel(filename: str) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(filename).resolve().relative_to(REPO))
    m = re.search(r"(site-packages/.*)$", filename)
    return m.group(1) if m else filename


def _exc_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


# ============================================================================================
# running the operations (in-process)
# ============================================================================================


class _Stop(Exception):  # noqa: N818 - control flow inside a group
    """A step hung: abandon the rest of its group."""


@dataclass
class _Ctx:
    data: bytes
    path: Path
    workdir: Path
    variant: int  # deterministic per input: picks codec, dump level, pfns to read
    results: list[OpResult] = field(default_factory=list)


def _on_alarm(signum: int, frame: Any) -> None:
    raise OpTimeout()


def _peak_reset() -> None:
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def _peak_kb() -> int:
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _step(ctx: _Ctx, op: str, fn: Callable[[], Any], *, handled_kind: str = "handled",
          record_ok: bool = True) -> Any:
    """Run one step, record its classification, return its value (None unless ok)."""
    t0 = time.monotonic()
    value = None
    try:
        value = fn()
        res = OpResult(op, "ok")
    except OpTimeout as exc:
        res = OpResult(op, "hang", "Timeout", "time limit exceeded", _where(exc.__traceback__, op),
                       traceback.format_exc(limit=40))
    except MemoryError as exc:
        res = OpResult(op, "memory", _exc_name(exc), str(exc)[:300], _where(exc.__traceback__),
                       traceback.format_exc(limit=40))
    except _CliExit as exc:
        res = OpResult(op, handled_kind, str(exc).split(":", 1)[0], str(exc)[:300])
    except KdumpToolError as exc:
        res = OpResult(op, handled_kind, _exc_name(exc), str(exc)[:300], _where(exc.__traceback__))
    except BaseException as exc:  # noqa: BLE001 - classifying every exception is the point
        res = OpResult(op, "unhandled", _exc_name(exc), str(exc)[:300], _where(exc.__traceback__),
                       traceback.format_exc(limit=40))
    res.seconds = time.monotonic() - t0
    if record_ok or res.kind != "ok":
        ctx.results.append(res)
    if res.kind == "hang":
        raise _Stop
    return value


def _consume(reader: DumpReader, found: list[int]) -> int:
    n = 0
    for batch in reader.iter_batches():
        assert isinstance(batch, PageBatch)
        n += int(batch.present.sum())
        if not found and batch.present.any():
            found.append(int(batch.pfns()[0]))
    return n


def _read_pages(reader: DumpReader, found: list[int], variant: int) -> int:
    """read_page on edge PFNs, the first present one and a few others; read() across pages."""
    mp = reader.max_pfn
    rng = random.Random(variant)
    pfns = [0, 1, mp - 1, mp, mp + 1, -1, 1 << 40, *found]
    pfns += [rng.randrange(mp) for _ in range(3)] if mp > 0 else []
    ok = 0
    for pfn in pfns:
        try:
            if len(reader.read_page(pfn)) != reader.page_size:
                raise AssertionError(f"read_page({pfn:#x}) is not one page")
            ok += 1
        except KdumpToolError:
            pass
    ps = reader.page_size
    for paddr, size in ((0, 3 * ps + 5), (max(mp - 2, 0) * ps + 7, 2 * ps), (ps - 1, 2)):
        with contextlib.suppress(KdumpToolError):
            if len(reader.read(paddr, size)) != size:
                raise AssertionError(f"read({paddr:#x}, {size}) returned a short result")
    return ok


def _summary(reader: DumpReader) -> int:
    s = dump_summary(reader)
    return len(json.dumps(s)) + len(format_summary(s))


def _lib_group(ctx: _Ctx, strict: bool) -> None:
    pre = "strict" if strict else "tolerant"
    reader = _step(ctx, f"{pre}.open", lambda: open_bytes(ctx.data, strict=strict, name="<fuzz>"))
    if reader is None:
        return
    try:
        found: list[int] = []
        _step(ctx, f"{pre}.iter_batches", lambda: _consume(reader, found))
        _step(ctx, f"{pre}.count_pages", reader.count_pages)
        _step(ctx, f"{pre}.read_page", lambda: _read_pages(reader, found, ctx.variant))
        _step(ctx, f"{pre}.summary", lambda: _summary(reader))
    finally:
        _step(ctx, f"{pre}.close", reader.close, record_ok=False)


def _invoke(args: list[str], stdin: bytes | None = None) -> Any:
    from click.testing import CliRunner

    from kdumptool.cli import main

    runner = CliRunner()
    res = runner.invoke(main, args, input=stdin, catch_exceptions=True)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    if res.exit_code == 0:
        return res
    if args[0] == "repair" and res.exit_code == 1 and " pages lost (" in res.stdout:
        return res  # repair wrote its output and says which pages it lost: a result
    err = res.stderr if hasattr(res, "stderr") else res.output
    line = next((ln for ln in err.splitlines() if ln.startswith("kdumptool: error:")), "")
    if ": out of memory (" in line:  # the CLI's one line for a MemoryError: still a finding
        raise MemoryError(line)
    if res.exit_code in (1, 2, 3, 4) and (line or res.exit_code == 2):
        raise _CliExit(f"exit {res.exit_code}: {line or err.strip()[:200]}")
    raise _CliBadExit(f"exit {res.exit_code}: {err.strip()[:300]}")


def _roundtrip(path: Path) -> int:
    """kdumptool must read back what it wrote."""
    with open_dump(str(path), strict=True) as reader:
        n = _consume(reader, [])
        reader.count_pages()
    return n


_CODEC_FLAGS = ["", "-c", "-l", "-p", "-z"]


def _convert(ctx: _Ctx, kind: str) -> None:
    out = ctx.workdir / f"out.{kind}"
    args = ["convert", "-q", "--force", "--threads", "2"]
    codec = _CODEC_FLAGS[ctx.variant % len(_CODEC_FLAGS)]
    if kind == "elf":
        args.append("-E")
    elif codec:
        args.append(codec)
    if kind == "flat":
        args.append("-F")
    args += ["-d", str((ctx.variant >> 4) & 1), str(ctx.path), str(out)]
    _write_and_read_back(ctx, f"cli.convert_{kind}", args, out)


def _write_and_read_back(ctx: _Ctx, op: str, args: list[str], out: Path) -> None:
    """Run a command that writes ``out``; what it wrote must open and read back strictly."""
    try:
        if _step(ctx, op, lambda: _invoke(args)) is not None and out.exists():
            _step(ctx, f"{op}.roundtrip", lambda: _roundtrip(out), handled_kind="bad_output")
    finally:
        with contextlib.suppress(OSError):
            out.unlink()


def _cli_simple(ctx: _Ctx, name: str, args: list[str], stdin: bytes | None = None) -> None:
    _step(ctx, f"cli.{name}", lambda: _invoke(args, stdin))


def _invoke_fsck(args: list[str]) -> Any:
    """``fsck`` reports damage by its exit status (0-3) without an error line: all are results."""
    from click.testing import CliRunner

    from kdumptool.cli import main

    res = CliRunner().invoke(main, args, catch_exceptions=True)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    if res.exit_code in (0, 1, 2, 3) and res.output.strip():
        return res
    err = res.stderr if hasattr(res, "stderr") else res.output
    raise _CliBadExit(f"exit {res.exit_code}: {err.strip()[:300]}")


def _fsck(ctx: _Ctx) -> None:
    args = ["fsck", *(["--json"] if ctx.variant & 1 else []), *(["--deep"] if ctx.variant & 2 else []),
            str(ctx.path)]
    _step(ctx, "cli.fsck", lambda: _invoke_fsck(args))


def _repair(ctx: _Ctx) -> None:
    out = ctx.workdir / "out.repaired"
    args = ["repair", "--force", *(["--zero-fill"] if ctx.variant & 4 else []),
            *(["-E"] if ctx.variant & 8 else []), str(ctx.path), str(out)]
    _write_and_read_back(ctx, "cli.repair", args, out)


def _filter(ctx: _Ctx) -> None:
    out = ctx.workdir / "out.filtered"
    _write_and_read_back(ctx, "cli.filter_d31",
                         ["filter", "-q", "--force", "-d", "31", str(ctx.path), str(out)], out)


def _roundtrip_set(paths: list[Path]) -> int:
    """kdumptool must read back, as one dump, the split set it wrote."""
    with open_dumps([str(p) for p in paths], strict=True) as reader:
        n = _consume(reader, [])
        reader.count_pages()
    return n


def _split(ctx: _Ctx) -> None:
    """``convert --split`` into two parts (a small split block or makedumpfile's default, which
    leaves the second part of a small input empty), read back as one set."""
    outs = [ctx.workdir / f"out.part{i}" for i in (1, 2)]
    codec = _CODEC_FLAGS[ctx.variant % len(_CODEC_FLAGS)]
    args = ["convert", "-q", "--force", "--split", *(["--splitblock-size", "4"] if ctx.variant & 32 else []),
            *([codec] if codec else []), "-d", str((ctx.variant >> 4) & 1), str(ctx.path), *map(str, outs)]
    try:
        if _step(ctx, "cli.split", lambda: _invoke(args)) is not None and all(o.exists() for o in outs):
            _step(ctx, "cli.split.roundtrip", lambda: _roundtrip_set(outs), handled_kind="bad_output")
    finally:
        for o in outs:
            with contextlib.suppress(OSError):
                o.unlink()


_SPLIT_SIBLINGS: list[bytes] = []


def _split_siblings() -> list[bytes]:
    """The two pristine parts of the synthetic split seed (built once per worker)."""
    if not _SPLIT_SIBLINGS:
        _SPLIT_SIBLINGS.extend(bytes(p) for p in B.build_kdump_split(
            _pages(), 2, codec="zlib", vmcoreinfo=synthetic_vmcoreinfo()))
    return _SPLIT_SIBLINGS


class PresentPagesDiffer(KdumpToolError):
    """reassemble's output has other present pages than its parts (a bad_output)."""


class LostPagesDiffer(KdumpToolError):
    """reassemble's output has other lost pages than its parts (a bad_output)."""


class PageDataDiffer(KdumpToolError):
    """reassemble's output has other page data, or other corrupt pages, than its parts."""


def _reads_like(parts: list[Path], out: Path) -> int:
    """``reassemble`` copies pages as stored, without decoding them (as makedumpfile does): its
    output must read page for page as the set does, damage included (tolerant readers: the same
    present, lost and corrupt pages, the same data)."""
    with open_dumps([str(p) for p in parts], strict=False) as a, open_dump(str(out), strict=False) as b:
        if (a.max_pfn, a.page_size) != (b.max_pfn, b.page_size):
            raise PresentPagesDiffer(f"geometry differs: {a.max_pfn}/{a.page_size} vs "
                                     f"{b.max_pfn}/{b.page_size}")
        n = 0
        for start, count in a.data_windows():
            x, y = a.read_batch(start, count), b.read_batch(start, count)
            span = f"[{start:#x}, {start + count:#x})"
            if not np.array_equal(x.present, y.present):
                raise PresentPagesDiffer(f"present pages differ in {span}")
            if not np.array_equal(x.lost, y.lost):
                raise LostPagesDiffer(f"lost pages differ in {span}")
            if sorted(x.corrupt) != sorted(y.corrupt) or not np.array_equal(x.data, y.data):
                raise PageDataDiffer(f"page data or corrupt pages differ in {span}")
            n += int(x.present.sum())
    return n


def _reassemble(ctx: _Ctx) -> None:
    """``reassemble`` of the input with a pristine part of the synthetic split seed: the input
    as the first part or as the second (a mutated part of that set is then merged; anything
    else must be refused), or alone."""
    out = ctx.workdir / "out.reassembled"
    which = (ctx.variant >> 5) % 3
    parts = [str(ctx.path)]
    if which < 2:
        sibling = ctx.workdir / "sibling.part"
        sibling.write_bytes(_split_siblings()[1 - which])
        parts.insert(1 - which, str(sibling))
    args = ["reassemble", "-q", "--force", *parts, str(out)]
    try:
        if _step(ctx, "cli.reassemble", lambda: _invoke(args)) is not None and out.exists():
            _step(ctx, "cli.reassemble.roundtrip", lambda: _reads_like([Path(p) for p in parts], out),
                  handled_kind="bad_output")
    finally:
        for leftover in (out, ctx.workdir / "sibling.part"):
            with contextlib.suppress(OSError):
                leftover.unlink()


#: Addresses for ``vtop``: the direct map, the kernel image (unrandomised, and the bundled
#: kdump's ``init_uts_ns`` and ``prb``), the top of the address space, a user address.
_VTOP_ADDRESSES = ["0xffff888000001000", "0xffffffff81000000", "0xffffffff99bfb000",
                   "0xffffffff99a643e0", "0xffffffffffffffff", "0x1000"]


#: Operation groups, in the order they run; a group that hangs ends the input's run.
GROUPS: dict[str, Callable[[_Ctx], None]] = {
    "strict": lambda c: _lib_group(c, True),
    "cli.convert_kdump": lambda c: _convert(c, "kdump"),
    "cli.convert_elf": lambda c: _convert(c, "elf"),
    "cli.convert_flat": lambda c: _convert(c, "flat"),
    "cli.vmcoreinfo": lambda c: _cli_simple(c, "vmcoreinfo", ["vmcoreinfo", str(c.path)]),
    "tolerant": lambda c: _lib_group(c, False),
    "cli.info": lambda c: _cli_simple(c, "info", ["info", str(c.path)]),
    "cli.info_json": lambda c: _cli_simple(c, "info_json", ["info", "--json", str(c.path)]),
    "cli.info_stdin": lambda c: _cli_simple(c, "info_stdin", ["info", "-"], c.data),
    "cli.info_pages": lambda c: _cli_simple(c, "info_pages", ["info", "--pages", str(c.path)]),
    "cli.vmcoreinfo_scan": lambda c: _cli_simple(c, "vmcoreinfo_scan", ["vmcoreinfo", "--scan", str(c.path)]),
    "cli.dmesg": lambda c: _cli_simple(
        c, "dmesg", ["dmesg", *(["--json"] if c.variant & 1 else []), str(c.path)]),
    "cli.vtop": lambda c: _cli_simple(
        c, "vtop", ["vtop", str(c.path), _VTOP_ADDRESSES[(c.variant >> 2) % len(_VTOP_ADDRESSES)]]),
    "cli.fsck": _fsck,
    "cli.repair": _repair,
    "cli.filter_d31": _filter,
    # added in the fourth session, after the million-input campaign had started (see README)
    "cli.ikconfig": lambda c: _cli_simple(c, "ikconfig", ["ikconfig", str(c.path)]),
    "cli.split": _split,
    "cli.reassemble": _reassemble,
}
#: Operation groups outside the contract (commands being built; ``--groups all`` or ``--only``).
EXTRA_GROUPS: dict[str, Callable[[_Ctx], None]] = {
    # the kernel layer (issue 18): BTF read from memory, by symbols or by scanning
    "cli.btf": lambda c: _cli_simple(c, "btf", ["btf", "--list", str(c.path)]),
    "cli.symbols": lambda c: _cli_simple(c, "symbols", ["symbols", str(c.path), "schedule",
                                                        "0xffffffff81000000"]),
    "cli.ps": lambda c: _cli_simple(c, "ps", ["ps", str(c.path)]),
    "cli.triage": lambda c: _cli_simple(c, "triage", ["triage", "--json", str(c.path)]),
}
DEFAULT_GROUPS = tuple(GROUPS)
ALL_GROUPS = (*GROUPS, *EXTRA_GROUPS)


def run_ops(data: bytes, groups: Iterable[str] | None = None, *, workdir: Path | None = None,
            group_timeout: float | None = 3.0, cpu_clock: bool = False,
            progress: Callable[[str], None] | None = None) -> Outcome:
    """Run every operation group on ``data`` in this process and classify each step.

    :param groups: names from :data:`GROUPS` / :data:`EXTRA_GROUPS` (default: the contract)
    :param group_timeout: seconds per group (SIGALRM; main thread only; None: no limit)
    :param cpu_clock: count the limit in CPU seconds of this process (``ITIMER_PROF``), not
        wall-clock seconds: a campaign that shares the machine then finds no false hangs
    :param progress: called with each group's name as it starts
    """
    groups = list(groups or DEFAULT_GROUPS)
    own = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="kdumptool-fuzz-")) if own else Path(workdir)  # type: ignore[arg-type]
    path = wd / "input.dump"
    path.write_bytes(data)
    ctx = _Ctx(data, path, wd, zlib.crc32(data))
    t_all = time.monotonic()
    peak = 0
    gsec: dict[str, float] = {}
    gpeak: dict[str, int] = {}
    timer = group_timeout is not None and threading_main()
    which, signum = ((signal.ITIMER_PROF, signal.SIGPROF) if cpu_clock
                     else (signal.ITIMER_REAL, signal.SIGALRM))
    old = signal.signal(signum, _on_alarm) if timer else None
    try:
        hung = False
        for name in groups:
            if hung:
                ctx.results.append(OpResult(name, "skipped", message="after a hang"))
                continue
            if progress is not None:
                progress(name)
            fn = GROUPS.get(name) or EXTRA_GROUPS[name]
            _peak_reset()
            t0 = time.monotonic()
            try:
                if timer:
                    signal.setitimer(which, group_timeout)  # type: ignore[arg-type]
                try:
                    fn(ctx)
                finally:
                    if timer:
                        signal.setitimer(which, 0)
            except _Stop:
                hung = True
            except OpTimeout as exc:  # fired between steps, in harness code
                ctx.results.append(OpResult(name, "hang", "Timeout", "time limit exceeded",
                                            _where(exc.__traceback__, name), traceback.format_exc()))
                hung = True
            gsec[name] = time.monotonic() - t0
            gpeak[name] = _peak_kb()
            peak = max(peak, gpeak[name])
    finally:
        if timer:
            signal.signal(signum, old)
        if own:
            shutil.rmtree(wd, ignore_errors=True)
        else:
            for p in wd.iterdir():
                if p.is_file() and not p.name.startswith("."):
                    with contextlib.suppress(OSError):
                        p.unlink()
    kind = worst(r.kind for r in ctx.results)
    return Outcome(kind, ctx.results, time.monotonic() - t_all, peak, len(data), gsec, gpeak)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ============================================================================================
# the isolated worker
# ============================================================================================

_WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "MALLOC_ARENA_MAX": "2"}


def _worker_main(conn: Any, cfg: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cfg["mem_mb"]:
        lim = cfg["mem_mb"] << 20
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    if cfg["fsize_mb"]:
        lim = cfg["fsize_mb"] << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim, lim))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    tb = open(cfg["tbfile"], "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    faulthandler.enable(tb, all_threads=True)
    faulthandler.register(signal.SIGUSR1, tb, all_threads=True)
    workdir = Path(cfg["workdir"])
    os.chdir(workdir)
    os.environ["TMPDIR"] = str(workdir)
    tempfile.tempdir = str(workdir)
    import kdumptool.cli  # noqa: F401 - import before the first input, not during it

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        data, groups = msg
        out = run_ops(data, groups, workdir=workdir, group_timeout=cfg["group_timeout"],
                      cpu_clock=cfg["cpu_clock"], progress=lambda g: conn.send(("group", g)))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the CLI installs its own handler
        conn.send(("done", out))


_FH_FRAME = re.compile(r'File "([^"]+)", line (\d+) in (\S+)')


def _where_faulthandler(text: str) -> str:
    """Innermost kdumptool frame of the first thread in a faulthandler dump."""
    block = text.split("\n\n")[0] if "Current thread" not in text else \
        text[text.index("Current thread"):].split("\n\n")[0]
    frames = _FH_FRAME.findall(block)
    for fn, line, func in frames:  # most recent call first
        if "/kdumptool/" in fn:
            return f"{_rel(fn)}:{line}:{func}"
    if frames:
        fn, line, func = frames[0]
        return f"{_rel(fn)}:{line}:{func}"
    return ""


#: The limits of the test suite's workers (``tests/test_fuzz_*.py``): the campaigns'
#: ``--cpu-clock --group-timeout 5`` semantics, 5 CPU-seconds of the worker per operation group,
#: and a wall-clock kill only 120 s later (stuck in C code): a machine busy with other jobs
#: slows a step down but never turns it into a "hang". A campaign keeps its own options.
SUITE_LIMITS: dict[str, Any] = {"group_timeout": 5.0, "cpu_clock": True, "mem_mb": 512}


class Worker:
    """A worker process that runs :func:`run_ops` under resource limits.

    :param group_timeout: seconds per operation group (soft: SIGALRM, or SIGPROF with
        ``cpu_clock``)
    :param mem_mb: RLIMIT_AS of the worker (0: none)
    :param fsize_mb: RLIMIT_FSIZE of the worker (bounds convert outputs)
    :param hard_extra: wall-clock seconds past ``group_timeout`` before the process is killed
        (default: 120 with ``cpu_clock``, else 15)
    :param recycle: restart the process after this many inputs
    :param cpu_clock: the soft limit counts CPU seconds (see :func:`run_ops`)
    """

    def __init__(self, *, group_timeout: float = 3.0, mem_mb: int = 512, fsize_mb: int = 256,
                 hard_extra: float | None = None, recycle: int = 2000,
                 groups: Iterable[str] = DEFAULT_GROUPS, cpu_clock: bool = False) -> None:
        self.cpu_clock = cpu_clock
        self.group_timeout = group_timeout
        self.mem_mb = mem_mb
        self.fsize_mb = fsize_mb
        self.hard_extra = hard_extra if hard_extra is not None else 120.0 if cpu_clock else 15.0
        self.recycle = recycle
        self.groups = tuple(groups)
        self.dir = Path(tempfile.mkdtemp(prefix="kdumptool-fuzz-worker-"))
        self.tbfile = self.dir / "faulthandler.txt"
        self.tbfile.touch()
        self.restarts = 0
        self.proc: Any = None
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        work = self.dir / "work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        cfg = {"mem_mb": self.mem_mb, "fsize_mb": self.fsize_mb, "tbfile": str(self.tbfile),
               "workdir": str(work), "group_timeout": self.group_timeout,
               "cpu_clock": self.cpu_clock}
        saved = {k: os.environ.get(k) for k in _WORKER_ENV}
        os.environ.update(_WORKER_ENV)
        main = sys.modules.get("__main__")
        main_file = getattr(main, "__file__", None)
        hide = main_file is not None and not os.path.isfile(main_file)  # python - < script
        try:
            if hide:
                del main.__file__  # type: ignore[union-attr]
            self.proc = ctx.Process(target=_worker_main, args=(child, cfg), daemon=True)
            self.proc.start()
        finally:
            if hide:
                main.__file__ = main_file  # type: ignore[union-attr]
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child.close()
        self.done = 0

    def _kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            with contextlib.suppress(OSError):
                os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.join(5)
        with contextlib.suppress(OSError):
            self.conn.close()

    def restart(self) -> None:
        self._kill()
        self.restarts += 1
        self._start()

    def close(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.proc.join(2)
        self._kill()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def _tb_since(self, pos: int) -> str:
        with open(self.tbfile, errors="replace") as f:
            f.seek(pos)
            return f.read()

    def check(self, data: bytes, groups: Iterable[str] | None = None) -> Outcome:
        """Run the operation groups on ``data``; never raises for anything the input does."""
        groups = tuple(groups or self.groups)
        if self.proc is None or not self.proc.is_alive() or self.done >= self.recycle:
            self.restart()
        pos = self.tbfile.stat().st_size
        t0 = time.monotonic()
        current = groups[0]
        started: list[str] = []
        try:
            self.conn.send((bytes(data), list(groups)))
        except (OSError, BrokenPipeError):
            return self._died(data, groups, started, current, pos, t0)
        while True:
            if not self.conn.poll(self.group_timeout + self.hard_extra):
                return self._hard_hang(data, groups, started, current, pos, t0)
            try:
                tag, payload = self.conn.recv()
            except (EOFError, OSError):
                return self._died(data, groups, started, current, pos, t0)
            if tag == "group":
                current = payload
                started.append(payload)
                continue
            self.done += 1
            return payload  # type: ignore[no-any-return]

    def _partial(self, data: bytes, groups: tuple[str, ...], started: list[str], res: OpResult,
                 t0: float) -> Outcome:
        results = [res] + [OpResult(g, "skipped", message="worker lost") for g in groups
                           if g not in started]
        return Outcome(res.kind, results, time.monotonic() - t0, 0, len(data))

    def _hard_hang(self, data: bytes, groups: tuple[str, ...], started: list[str], current: str,
                   pos: int, t0: float) -> Outcome:
        with contextlib.suppress(OSError):
            os.kill(self.proc.pid, signal.SIGUSR1)
        time.sleep(0.5)
        text = self._tb_since(pos)
        self.restart()
        res = OpResult(current, "hang", "HardTimeout",
                       f"no answer in {self.group_timeout + self.hard_extra:.0f} s (stuck in C code?)",
                       _where_faulthandler(text), text[-6000:])
        return self._partial(data, groups, started, res, t0)

    def _died(self, data: bytes, groups: tuple[str, ...], started: list[str], current: str,
              pos: int, t0: float) -> Outcome:
        self.proc.join(2)
        code = self.proc.exitcode
        time.sleep(0.1)
        text = self._tb_since(pos)
        self.restart()
        what = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                what = signal.Signals(-code).name
        res = OpResult(current, "crash", what, "worker process died", _where_faulthandler(text),
                       text[-6000:])
        return self._partial(data, groups, started, res, t0)


_DEFAULT_WORKER: Worker | None = None


def check_one(data: bytes, groups: Iterable[str] | None = None, *, isolate: bool = True,
              group_timeout: float = 3.0, mem_mb: int = 512) -> Outcome:
    """Run every operation on ``data`` and classify the outcome.

    With ``isolate`` (default) the operations run in a shared worker process with
    ``RLIMIT_AS = mem_mb`` MiB and ``group_timeout`` seconds per group (the worker is
    restarted after a hang or crash); without, in this process (time limit only).
    """
    global _DEFAULT_WORKER
    if not isolate:
        return run_ops(data, groups, group_timeout=group_timeout)
    w = _DEFAULT_WORKER
    if w is None or (w.group_timeout, w.mem_mb) != (group_timeout, mem_mb):
        if w is not None:
            w.close()
        w = _DEFAULT_WORKER = Worker(group_timeout=group_timeout, mem_mb=mem_mb)
        # registered after multiprocessing's own exit hook, so it runs before it
        atexit.register(_close_default_worker)
    return w.check(data, groups)


def _close_default_worker() -> None:
    global _DEFAULT_WORKER
    if _DEFAULT_WORKER is not None:
        _DEFAULT_WORKER.close()
        _DEFAULT_WORKER = None


# ============================================================================================
# structure maps: which bytes are which field (from kdumptool's construct schemas)
# ============================================================================================


@dataclass(frozen=True)
class Field:
    """An integer or byte-string field at an absolute file offset."""

    name: str
    offset: int
    size: int
    kind: str  # "u", "s" or "bytes"
    endian: str
    group: str = ""  # "header", "table", "notes", ...

    def read(self, data: bytes | bytearray) -> int:
        raw = bytes(data[self.offset:self.offset + self.size]).ljust(self.size, b"\0")
        return int.from_bytes(raw, "little" if self.endian == "<" else "big",
                              signed=self.kind == "s")

    def write(self, data: bytearray, value: int) -> None:
        if self.offset + self.size > len(data):
            return
        mask = (1 << (8 * self.size)) - 1
        data[self.offset:self.offset + self.size] = (value & mask).to_bytes(
            self.size, "little" if self.endian == "<" else "big")


def schema_fields(st: cs.Construct, endian: str, base: int = 0, prefix: str = "",
                  group: str = "") -> list[Field]:
    """Flatten a construct Struct of fixed-size fields into :class:`Field` s at ``base``."""
    out: list[Field] = []
    off = base
    for sub in st.subcons:  # type: ignore[attr-defined]
        name = sub.name or ""
        inner = sub.subcon if isinstance(sub, cs.Renamed) else sub
        size = inner.sizeof()
        if isinstance(inner, cs.Struct):
            out += schema_fields(inner, endian, off, f"{prefix}{name}.", group)
        elif isinstance(inner, cs.FormatField):
            kind = "s" if inner.fmtstr[-1].islower() else "u"
            out.append(Field(prefix + name, off, size, kind, endian, group))
        elif name and not name.startswith("_"):
            out.append(Field(prefix + name, off, size, "bytes", endian, group))
        off += size
    return out


@dataclass
class Layout:
    """What the generators know about an input's structure."""

    fmt: str  # "kdump", "elf", "flat", "raw"
    endian: str = "<"
    page_size: int = PS
    fields: list[Field] = field(default_factory=list)
    boundaries: set[int] = field(default_factory=set)
    regions: dict[str, tuple[int, int]] = field(default_factory=dict)
    texts: list[tuple[int, int]] = field(default_factory=list)  # VMCOREINFO spans


def _parse(st: cs.Construct, data: bytes | bytearray, off: int) -> Any:
    size = st.sizeof()
    if off < 0 or off + size > len(data):
        return None
    return st.parse(bytes(data[off:off + size]))


def _note_fields(data: bytes | bytearray, start: int, size: int, endian: str,
                 lay: Layout) -> None:
    """Nhdr fields of every note in ``[start, start + size)`` and VMCOREINFO spans."""
    nh = elf_structs(2, endian).Nhdr
    pos, end = start, min(start + size, len(data))
    for k in range(64):
        if pos < 0 or pos + 12 > end:
            break
        h = _parse(nh, data, pos)
        lay.fields += schema_fields(nh, endian, pos, f"note[{k}].", "notes")
        lay.boundaries.add(pos)
        name_end = pos + 12 + h.n_namesz
        desc = pos + 12 + ((h.n_namesz + 3) & ~3)
        name = bytes(data[pos + 12:min(name_end, end)]).rstrip(b"\0")
        if name == b"VMCOREINFO" and desc < end:
            lay.texts.append((desc, max(0, min(h.n_descsz, end - desc))))
        nxt = desc + ((h.n_descsz + 3) & ~3)
        if nxt <= pos or (h.n_namesz == 0 and h.n_descsz == 0):
            break
        pos = nxt
    lay.boundaries.add(min(pos, end))


def describe(data: bytes | bytearray) -> Layout:
    """Map the fields and structure boundaries of a kdump, ELF or flattened image."""
    head = bytes(data[:16])
    try:
        if head[:8] in (b"KDUMP   ", b"DISKDUMP"):
            return _describe_kdump(data)
        if head[:4] == b"\x7fELF":
            return _describe_elf(data)
        if head[:12] == b"makedumpfile":
            return _describe_flat(data)
    except (cs.ConstructError, ValueError, OverflowError, KdumpToolError, IndexError):
        pass
    return Layout("raw", boundaries={0, len(data)})


def _describe_kdump(data: bytes | bytearray) -> Layout:
    head = bytes(data[:4096]).ljust(4096, b"\0")
    try:
        s, hdr = detect_layout(head)
    except KdumpToolError:
        s = kdump_structs("64", "<")
        hdr = s.DiskDumpHeader.parse(head[:s.DiskDumpHeader.sizeof()])
    e = s.endian
    lay = Layout("kdump", e)
    bs = hdr.block_size if 512 <= hdr.block_size <= 1 << 18 else PS
    lay.page_size = bs
    hsize = s.DiskDumpHeader.sizeof()
    lay.fields += schema_fields(s.DiskDumpHeader, e, 0, "disk_dump_header.", "header")
    lay.boundaries |= {0, hsize, bs}
    lay.regions["header"] = (0, hsize)
    sub = _parse(s.KdumpSubHeader, data, bs)
    ssize = s.KdumpSubHeader.sizeof()
    if sub is not None:
        lay.fields += schema_fields(s.KdumpSubHeader, e, bs, "kdump_sub_header.", "header")
        lay.boundaries.add(bs + ssize)
        lay.regions["sub_header"] = (bs, bs + ssize)
        if 0 < sub.offset_note < len(data):
            lay.regions["notes"] = (sub.offset_note, min(len(data), sub.offset_note + sub.size_note))
            _note_fields(data, sub.offset_note, min(sub.size_note, 1 << 20), e, lay)
        if 0 < sub.offset_vmcoreinfo < len(data):
            lay.texts.append((sub.offset_vmcoreinfo,
                              max(0, min(sub.size_vmcoreinfo, len(data) - sub.offset_vmcoreinfo))))
        if 0 < sub.offset_eraseinfo < len(data):
            lay.boundaries |= {sub.offset_eraseinfo, sub.offset_eraseinfo + sub.size_eraseinfo}
    shs = hdr.sub_hdr_size if 0 <= hdr.sub_hdr_size < 1 << 16 else 1
    bmb = hdr.bitmap_blocks if hdr.bitmap_blocks < 1 << 16 else 2
    bm = bs * (1 + shs)
    half = bmb * bs // 2
    desc = bs * (1 + shs + bmb)
    lay.boundaries |= {bm, bm + half, desc}
    lay.regions["bitmap1"] = (bm, bm + half)
    lay.regions["bitmap2"] = (bm + half, desc)
    if desc < len(data):
        bits = np.frombuffer(bytes(data[bm + half:min(desc, len(data))]), np.uint8)
        ndesc = int(np.unpackbits(bits).sum()) if bits.size else 0
        ndesc = max(1, min(ndesc, (len(data) - desc) // 24))
        lay.regions["descs"] = (desc, desc + 24 * ndesc)
        lay.boundaries.add(desc + 24 * ndesc)
        idx = sorted(set(range(min(ndesc, 24))) | set(range(max(0, ndesc - 4), ndesc)))
        for i in idx:
            pos = desc + 24 * i
            d = _parse(s.PageDesc, data, pos)
            if d is None:
                break
            lay.fields += schema_fields(s.PageDesc, e, pos, f"page_desc[{i}].", "table")
            lay.boundaries.add(pos)
            if 0 < d.offset < len(data):
                lay.boundaries |= {d.offset, d.offset + d.size}
        lay.regions["data"] = (desc + 24 * ndesc, len(data))
    return lay


def _describe_elf(data: bytes | bytearray) -> Layout:
    cls = 2 if data[4:5] != b"\x01" else 1
    e = ">" if data[5:6] == b"\x02" else "<"
    s = elf_structs(cls, e)
    lay = Layout("elf", e)
    lay.fields += schema_fields(s.Ehdr, e, 0, "ehdr.", "header")
    lay.fields += [Field("ehdr.e_ident[EI_CLASS]", 4, 1, "u", e, "header"),
                   Field("ehdr.e_ident[EI_DATA]", 5, 1, "u", e, "header"),
                   Field("ehdr.e_ident[EI_VERSION]", 6, 1, "u", e, "header")]
    esz = s.Ehdr.sizeof()
    lay.boundaries |= {0, 16, esz}
    lay.regions["header"] = (0, esz)
    eh = _parse(s.Ehdr, data, 0)
    if eh is None:
        return lay
    phsz = s.Phdr.sizeof()
    phnum = eh.e_phnum
    if eh.e_shoff and eh.e_shoff < len(data):
        sh = _parse(s.Shdr, data, eh.e_shoff)
        if sh is not None:
            lay.fields += schema_fields(s.Shdr, e, eh.e_shoff, "shdr[0].", "header")
            lay.boundaries |= {eh.e_shoff, eh.e_shoff + s.Shdr.sizeof()}
            if phnum == 0xFFFF:
                phnum = sh.sh_info
    phoff = eh.e_phoff
    phnum = min(phnum, 256, max(0, (len(data) - phoff) // phsz) if phoff < len(data) else 0)
    lay.regions["phdrs"] = (phoff, phoff + phnum * phsz)
    lay.boundaries.add(phoff + phnum * phsz)
    for k in range(phnum):
        pos = phoff + k * phsz
        ph = _parse(s.Phdr, data, pos)
        if ph is None:
            break
        lay.fields += schema_fields(s.Phdr, e, pos, f"phdr[{k}].", "table")
        lay.boundaries.add(pos)
        if ph.p_type == PT_NOTE and ph.p_offset < len(data):
            lay.regions["notes"] = (ph.p_offset, min(len(data), ph.p_offset + ph.p_filesz))
            _note_fields(data, ph.p_offset, min(ph.p_filesz, 1 << 20), e, lay)
        elif ph.p_type == PT_LOAD and ph.p_offset < len(data):
            lay.boundaries |= {ph.p_offset, ph.p_offset + ph.p_filesz}
            lay.regions.setdefault("data", (ph.p_offset, len(data)))
    return lay


def _describe_flat(data: bytes | bytearray) -> Layout:
    lay = Layout("flat", ">")
    lay.fields += schema_fields(MakedumpfileHeader, ">", 0, "makedumpfile_header.", "header")
    lay.boundaries |= {0, MakedumpfileHeader.sizeof(), 4096}
    lay.regions["header"] = (0, 4096)
    pos = 4096
    for k in range(4096):
        if pos + 16 > len(data):
            break
        off, size = struct.unpack_from(">qq", data, pos)
        lay.fields += schema_fields(MakedumpfileDataHeader, ">", pos, f"record[{k}].", "table")
        lay.boundaries |= {pos, pos + 16}
        if off == -1 and size == -1 or size <= 0 or pos + 16 + size > len(data):
            break
        pos += 16 + size
        lay.boundaries.add(pos)
    lay.regions["records"] = (4096, min(pos + 16, len(data)))
    return lay


# ============================================================================================
# values and mutators
# ============================================================================================


def boundary_values(f: Field, orig: int, file_size: int, page_size: int) -> list[int]:
    """The boundary values for field ``f`` (0, 1, -1, max, page size +-1, file size +-1, huge,
    the original value +-1...), unmasked: :meth:`Field.write` keeps the field's low bits."""
    bits = 8 * f.size
    umax = (1 << bits) - 1
    smax = (1 << (bits - 1)) - 1
    return [0, 1, 2, 3, 4, 7, 8, 12, 16, 24, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, smax,
            smax + 1, umax, umax - 1, -1, -2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32,
            1 << 40, 1 << 48, 1 << 52, 1 << 62, 1 << 63, (1 << 63) - 1,
            page_size, page_size - 1, page_size + 1, page_size // 2, 2 * page_size, 512, 1000,
            1023, 1024, 1 << 16, 1 << 18, (1 << 18) + 1, 1 << 20, 1 << 21,
            file_size, file_size - 1, file_size + 1, file_size - 16, file_size - 24,
            file_size // page_size, file_size // page_size + 1, 8 * file_size,
            orig, orig + 1, orig - 1, orig * 2, orig // 2, orig + page_size, orig - page_size,
            -orig]


def interesting(f: Field, orig: int, file_size: int, page_size: int, rng: random.Random) -> int:
    """A boundary value for field ``f``, or the original value with one bit flipped."""
    bits = 8 * f.size
    vals = boundary_values(f, orig, file_size, page_size)
    vals.insert(len(vals) - 1, orig ^ (1 << rng.randrange(bits)))  # the order inputs were made with
    return rng.choice(vals) & ((1 << bits) - 1)


def field_value(f: Field, data: bytes | bytearray, page_size: int, rng: random.Random) -> int:
    orig = f.read(data)
    r = rng.random()
    if r < 0.72:
        return interesting(f, orig, len(data), page_size, rng)
    if r < 0.86:
        return rng.getrandbits(8 * f.size)
    return rng.randrange(0, max(2, 3 * len(data)))


_SIGNATURES = [b"KDUMP   ", b"DISKDUMP", b"KDUMP  \0", b"makedumpfile\0\0\0\0", b"\x7fELF\x02\x01\x01\0"]
_MACHINES = [b"x86_64", b"i686", b"arm", b"aarch64", b"s390x", b"ppc64", b"ppc", b"", b"x86",
             b"riscv64", b"mips", b"\xff" * 64]


def _mutate_bytes_field(d: bytearray, f: Field, rng: random.Random) -> str:
    name = f.name.rsplit(".", 1)[-1]
    if name == "signature":
        v = rng.choice(_SIGNATURES)
    elif name == "machine":
        v = rng.choice(_MACHINES)
    elif name in ("release", "version", "sysname"):
        v = rng.choice([b"", b"Linux", b"6.1.0-\xff\xfe", b"x" * 65, b"\0Linux", b"9" * 64])
    elif rng.random() < 0.5:
        v = bytes(f.size)
    else:
        v = rng.randbytes(f.size)
    v = v[:f.size].ljust(f.size, b"\0")
    if f.offset + f.size <= len(d):
        d[f.offset:f.offset + f.size] = v
    return f"{f.name}={v[:16]!r}"


def m_field(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Set one schema field to a boundary or random value."""
    if not lay.fields:
        return m_flip(d, lay, rng)
    groups = sorted({f.group for f in lay.fields})
    g = rng.choice(groups)
    f = rng.choice([f for f in lay.fields if f.group == g])
    if f.kind == "bytes":
        return _mutate_bytes_field(d, f, rng)
    v = field_value(f, d, lay.page_size, rng)
    f.write(d, v)
    return f"{f.name}={v:#x}"


_VMCI: dict[str, list[str]] = {
    "PAGESIZE": ["0", "1", "512", "1024", "4096", "16384", "65536", "1048576", "2097152", "3",
                 "-4096", "4097", "0x1000", "", "99999999999999999999"],
    "OSRELEASE": ["", "x" * 300, "6.1.0-\xff", "1", "6.1.0 ", "\t"],
    "SYMBOL(init_uts_ns)": ["0", "ffffffff80000000", "ffffffffffffffff", "fffffffffffffff0",
                            "ffffffff80010000", "7fffffffffffffff", "zz", "-1", "1" + "0" * 20,
                            "ffffffff80010ffc", "ffffffff9fffffff"],
    "OFFSET(uts_namespace.name)": ["0", "4", "-4", "4096", "99999999999", "x",
                                   "-99999999999999", "4093"],
    "NUMBER(phys_base)": ["0", "-1", "-9223372036854775808", "18446744073709551615",
                          "99999999999999999999999", "4096", "x", "-4096", "-65536"],
    "NUMBER(kimage_voffset)": ["0", "-1", "18446744073709551615", "x"],
    "KERNELOFFSET": ["0", "ffffffffffffffff", "zz", "-1", "1" * 40],
    "CRASHTIME": ["0", "1", "99999999999999999999", "253402300800", "-1", "x", "4102444800",
                  "9" * 400],
    "BUILD-ID": ["", "zz" * 100, "\xff"],
    "SYMBOL(swapper_pg_dir)": ["0", "ffffffffffffffff", "ffffffff80010000", "zz"],
    "SYMBOL(_stext)": ["0", "ffffffffffffffff", "zz"],
    "NUMBER(pgtable_l5_enabled)": ["0", "1", "2", "-1", "x"],
    "NUMBER(VA_BITS)": ["0", "48", "52", "64", "99", "-1"],
    "SIZE(page)": ["0", "1", "64", "-64", "99999999"],
    "OFFSET(page.flags)": ["0", "-8", "99999999"],
    "SYMBOL(mem_map)": ["0", "ffffffffffffffff"],
    "SYMBOL(vmemmap_base)": ["0", "ffffffffffffffff", "ffffea0000000000"],
    "SYMBOL(page_offset_base)": ["0", "ffffffffffffffff", "ffff888000000000"],
    "LENGTH(mem_section)": ["0", "-1", "99999999999"],
}


def mutate_vmcoreinfo_text(text: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Change, add, duplicate or garble one ``KEY=VALUE`` line."""
    lines = text.decode("latin-1").split("\n")
    r = rng.random()
    if r < 0.7:
        key = rng.choice(list(_VMCI))
        val = rng.choice(_VMCI[key])
        new = f"{key}={val}"
        for i, ln in enumerate(lines):
            if ln.startswith(key + "="):
                lines[i] = new
                break
        else:
            lines.insert(rng.randrange(len(lines) + 1), new)
        what = f"vmcoreinfo {new[:60]}"
    elif r < 0.8 and lines:
        i = rng.randrange(len(lines))
        what = f"vmcoreinfo delete {lines[i][:40]!r}"
        del lines[i]
    elif r < 0.9 and lines:
        i = rng.randrange(len(lines))
        lines[i] = lines[i].replace("=", rng.choice(["", "==", " = ", "=\0"]), 1)
        what = f"vmcoreinfo garble {lines[i][:40]!r}"
    else:
        lines = lines * rng.choice([2, 50])
        what = "vmcoreinfo repeated"
    return "\n".join(lines).encode("latin-1"), what


def m_vmcoreinfo(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Mutate a VMCOREINFO text in place (padded or cut to its span)."""
    spans = [(a, n) for a, n in lay.texts if n > 0 and a + n <= len(d)]
    if not spans:
        return m_field(d, lay, rng)
    a, n = rng.choice(spans)
    new, what = mutate_vmcoreinfo_text(bytes(d[a:a + n]), rng)
    d[a:a + n] = new[:n].ljust(n, b"\n")
    return what


def _pos(d: bytearray, lay: Layout, rng: random.Random) -> int:
    r = rng.random()
    n = len(d)
    if r < 0.35 and lay.regions:
        a, b = rng.choice(list(lay.regions.values()))
        a, b = max(0, min(a, n - 1)), max(0, min(b, n))
        if b > a:
            return rng.randrange(a, b)
    if r < 0.65 and lay.boundaries:
        b = rng.choice(sorted(lay.boundaries)) + rng.randrange(-16, 17)
        return max(0, min(b, n - 1))
    if r < 0.8:
        return rng.randrange(min(n, 4096))
    return rng.randrange(n)


def m_flip(d: bytearray, lay: Layout, rng: random.Random) -> str:
    if not d:
        return "flip (empty)"
    k = rng.choice([1, 1, 2, 3, 8])
    at = []
    for _ in range(k):
        p = _pos(d, lay, rng)
        d[p] ^= 1 << rng.randrange(8)
        at.append(p)
    return f"flip bits at {', '.join(hex(p) for p in at[:4])}"


def m_byte(d: bytearray, lay: Layout, rng: random.Random) -> str:
    if not d:
        return "byte (empty)"
    p = _pos(d, lay, rng)
    d[p] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
    return f"byte {p:#x}={d[p]:#x}"


def m_run(d: bytearray, lay: Layout, rng: random.Random) -> str:
    if not d:
        return "run (empty)"
    p = _pos(d, lay, rng)
    n = min(rng.choice([2, 4, 8, 16, 64, 512]), len(d) - p)
    fill = rng.choice(["zero", "ff", "random"])
    d[p:p + n] = bytes(n) if fill == "zero" else (b"\xff" * n if fill == "ff" else rng.randbytes(n))
    return f"{fill} run {p:#x}+{n}"


def m_zero_block(d: bytearray, lay: Layout, rng: random.Random) -> str:
    if lay.regions and rng.random() < 0.5:
        name, (a, b) = rng.choice(list(lay.regions.items()))
        a, b = max(0, min(a, len(d))), max(0, min(b, len(d)))
        if rng.random() < 0.5 and b - a > 64:
            b = a + rng.randrange(1, b - a)
        d[a:b] = bytes(b - a)
        return f"zero {name} {a:#x}-{b:#x}"
    p = _pos(d, lay, rng) if d else 0
    n = min(rng.choice([64, 512, 4096]), len(d) - p)
    d[p:p + n] = bytes(n)
    return f"zero {p:#x}+{n}"


def m_truncate(d: bytearray, lay: Layout, rng: random.Random) -> str:
    if rng.random() < 0.6 and lay.boundaries:
        cut = rng.choice(sorted(lay.boundaries)) + rng.choice([0, 0, 0, -1, 1, -8, 8, -16, 12])
    else:
        cut = rng.randrange(len(d) + 1)
    cut = max(0, min(cut, len(d)))
    del d[cut:]
    return f"truncate at {cut:#x}"


def m_extend(d: bytearray, lay: Layout, rng: random.Random) -> str:
    n = rng.choice([1, 16, 4096, 8192, 65536])
    kind = rng.choice(["zero", "random", "copy"])
    if kind == "copy" and d:
        p = rng.randrange(len(d))
        ext = bytes(d[p:p + n])
    else:
        ext = bytes(n) if kind == "zero" else rng.randbytes(n)
    d += ext
    return f"append {len(ext)} {kind} bytes"


def m_insert_delete(d: bytearray, lay: Layout, rng: random.Random) -> str:
    p = rng.choice(sorted(lay.boundaries)) if lay.boundaries and rng.random() < 0.7 else \
        rng.randrange(len(d) + 1)
    p = max(0, min(p, len(d)))
    n = rng.choice([1, 4, 8, 16, 24, 512, 4096])
    if rng.random() < 0.5:
        d[p:p] = bytes(n) if rng.random() < 0.5 else rng.randbytes(n)
        return f"insert {n} at {p:#x}"
    del d[p:p + n]
    return f"delete {n} at {p:#x}"


def m_copy(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Copy a chunk of the file over another place (duplicate descriptors, phdrs, records)."""
    if len(d) < 32:
        return m_flip(d, lay, rng)
    n = rng.choice([8, 16, 24, 56, 64, 4096])
    a = _pos(d, lay, rng)
    b = _pos(d, lay, rng)
    chunk = bytes(d[a:a + n])
    d[b:b + len(chunk)] = chunk
    return f"copy {a:#x}+{n} to {b:#x}"


def _fields_named(lay: Layout, suffix: str) -> list[Field]:
    return [f for f in lay.fields if f.name.endswith(suffix)]


def m_geometry(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Set related fields together, so that a huge size survives the plausibility checks."""
    huge = rng.choice([1 << 16, 1 << 20, 1 << 24, 1 << 31, (1 << 32) - 1, 1 << 40, 1 << 52,
                       (1 << 63) - 1, (1 << 64) - 1])
    if lay.fmt == "kdump":
        bs = lay.page_size
        what = rng.choice(["bitmap", "mapnr64", "sub_hdr", "block_size"])
        if what == "bitmap":
            blocks = rng.choice([1 << 12, 1 << 16, 1 << 20, (1 << 31) - 1, (1 << 32) - 2])
            mapnr = blocks * bs * 4
            for f in _fields_named(lay, ".bitmap_blocks"):
                f.write(d, blocks)
            for f in _fields_named(lay, ".max_mapnr"):
                f.write(d, min(mapnr, (1 << 32) - 1))
            for f in _fields_named(lay, ".max_mapnr_64"):
                f.write(d, mapnr)
            return f"geometry bitmap_blocks={blocks:#x}, max_mapnr={mapnr:#x}"
        if what == "mapnr64":
            for f in _fields_named(lay, ".max_mapnr_64"):
                f.write(d, huge)
            return f"geometry max_mapnr_64={huge:#x}"
        if what == "sub_hdr":
            v = rng.choice([1 << 16, (1 << 31) - 1, 1 << 20])
            for f in _fields_named(lay, ".sub_hdr_size"):
                f.write(d, v)
            return f"geometry sub_hdr_size={v:#x}"
        k = rng.choice([2, 4, 64])
        for f in _fields_named(lay, ".block_size"):
            f.write(d, bs * k)
        return f"geometry block_size={bs * k:#x}"
    if lay.fmt == "elf":
        loads = [f for f in lay.fields if f.name.startswith("phdr[") and f.name.endswith(".p_memsz")]
        if not loads:
            return m_field(d, lay, rng)
        mem = rng.choice(loads)
        k = mem.name.split(".")[0]
        named = {f.name.rsplit(".", 1)[-1]: f for f in lay.fields if f.name.startswith(k + ".")}
        what = rng.choice(["memsz", "filesz", "wrap", "top"])
        if what == "memsz":
            named["p_memsz"].write(d, huge)
        elif what == "filesz":
            named["p_memsz"].write(d, huge)
            named["p_filesz"].write(d, huge)
        elif what == "wrap":
            named["p_paddr"].write(d, (1 << (8 * named["p_paddr"].size)) - lay.page_size)
            named["p_memsz"].write(d, 4 * lay.page_size)
        else:
            named["p_paddr"].write(d, huge)
        return f"geometry {k} {what} {huge:#x}"
    if lay.fmt == "flat":
        recs = [f for f in lay.fields if f.name.startswith("record[") and f.name.endswith(".offset")]
        if recs:
            f = rng.choice(recs)
            f.write(d, huge & ((1 << 63) - 1))
            return f"geometry {f.name}={huge & ((1 << 63) - 1):#x}"
    return m_field(d, lay, rng)


HAVOC = (m_flip, m_byte, m_run, m_zero_block, m_truncate, m_extend, m_insert_delete, m_copy)


def _bitmap_pattern(n: int, rng: random.Random) -> tuple[bytes, str]:
    """``n`` bitmap bytes in a pattern that cuts memory into many runs (or none)."""
    kind = rng.choice(["alternate", "alternate", "random", "sparse", "runs", "full"])
    if kind == "alternate":
        byte = rng.choice([0x55, 0xAA, 0x33, 0x0F, 0x01])
        return bytes([byte]) * n, f"every byte {byte:#04x}"
    if kind == "random":
        return rng.randbytes(n), "random bits"
    if kind == "sparse":
        step = rng.choice([8, 64, 512])
        out = bytearray(n)
        out[::step] = b"\x01" * len(out[::step])
        return bytes(out), f"one bit every {step} bytes"
    if kind == "runs":
        out = bytearray()
        while len(out) < n:
            out += bytes([rng.choice([0, 0xFF])]) * rng.choice([1, 2, 32, 33, 4096])
        return bytes(out[:n]), "runs of 0x00/0xff bytes"
    return b"\xff" * n, "all ones"


def m_scale(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Structures with huge counts that stay inside the input: a whole bitmap rewritten so that
    memory falls into hundreds of thousands of runs, or a program header table of tens of
    thousands of PT_LOADs (alternating, overlapping, reversed), to check that time and memory
    follow the input's size with a small factor (the mutations above change a few bytes)."""
    if lay.fmt == "kdump" and "bitmap1" in lay.regions:
        a, b = lay.regions["bitmap1"]
        b = min(b, len(d))
        if b <= a:
            return m_field(d, lay, rng)
        pattern, what = _bitmap_pattern(b - a, rng)
        d[a:b] = pattern
        for f in _fields_named(lay, ".max_mapnr"):
            f.write(d, min((b - a) * 8, (1 << 32) - 1))
        for f in _fields_named(lay, ".max_mapnr_64"):
            f.write(d, (b - a) * 8)
        a2, b2 = lay.regions.get("bitmap2", (0, 0))
        b2 = min(b2, len(d))
        second = rng.choice(["kept", "same", "zero", "pattern"])
        if b2 > a2 and second != "kept":
            n = min(b2 - a2, b - a)
            fill = {"same": pattern[:n], "zero": bytes(n),
                    "pattern": _bitmap_pattern(n, rng)[0]}[second]
            d[a2:a2 + n] = fill
        return f"scale bitmap1 {what} ({(b - a) * 8} pfns), bitmap2 {second}"
    if lay.fmt == "elf" and "phdrs" in lay.regions:
        e = lay.endian
        elf_class = d[4] if len(d) > 4 and d[4] in (1, 2) else 2
        s = elf_structs(elf_class, e)
        eh = _parse(s.Ehdr, d, 0)
        if eh is None:
            return m_field(d, lay, rng)
        phsz, ps = s.Phdr.sizeof(), lay.page_size
        notes = [bytes(d[p:p + phsz]) for p in range(*lay.regions["phdrs"], phsz)
                 if (ph := _parse(s.Phdr, d, p)) is not None and ph.p_type == PT_NOTE]
        room = max(0, (MAX_INPUT - len(d)) // phsz - len(notes) - 1)
        n = min(rng.choice([1000, 10000, 30000, 65000]), room, 0xFFFE - len(notes))
        if n <= 0:
            return m_field(d, lay, rng)
        shape = rng.choice(["alternate", "adjacent", "overlap", "reversed", "huge"])
        data_at = max(0, min(len(d) - ps, lay.regions["phdrs"][1]))  # any page of the file
        rows = []
        for k in range(n):
            pfn = {"alternate": 2 * k, "adjacent": k, "overlap": 0, "reversed": 2 * (n - k),
                   "huge": k << 20}[shape]
            memsz = ps << 19 if shape == "huge" else ps
            filesz = ps if rng.random() < 0.5 else 0
            width = (1 << (32 * elf_class)) - 1
            rows.append(s.Phdr.build({"p_type": PT_LOAD, "p_flags": 7, "p_offset": data_at if filesz else 0,
                                      "p_vaddr": 0, "p_paddr": (pfn * ps) & width, "p_filesz": filesz,
                                      "p_memsz": memsz & width, "p_align": 0}))
        phoff = (len(d) + 7) // 8 * 8
        d += bytes(phoff - len(d)) + b"".join(notes) + b"".join(rows)
        for f in _fields_named(lay, "ehdr.e_phoff"):
            f.write(d, phoff)
        for f in _fields_named(lay, "ehdr.e_phnum"):
            f.write(d, len(notes) + n)
        return f"scale {n} PT_LOADs ({shape}, shared data page) after {len(notes)} PT_NOTE"
    return m_field(d, lay, rng)


# ============================================================================================
# seeds
# ============================================================================================


@dataclass
class Seed:
    """A starting file. ``rebuild(vmcoreinfo)`` rebuilds a synthetic seed with other text."""

    name: str
    fmt: str
    data: bytes
    origin: str = "synthetic"
    rebuild: Callable[[bytes], bytes] | None = None
    vmcoreinfo: bytes | None = None
    weight: float = 1.0


UTS_PFN = 16
UTS_VADDR = 0xFFFFFFFF80000000 + UTS_PFN * PS


def _uts_page(release: str = "6.1.0-test", page_size: int = PS, at: int = 4) -> bytes:
    fields = [b"Linux", b"fuzzhost", release.encode(), b"#1 SMP PREEMPT_DYNAMIC fuzz", b"x86_64",
              b"(none)"]
    raw = b"".join(f.ljust(65, b"\0") for f in fields)
    page = bytearray(page_size)
    page[at:at + len(raw)] = raw
    return bytes(page)


def synthetic_vmcoreinfo(page_size: int = PS, machine: int = 62, **extra: Any) -> bytes:
    """VMCOREINFO that makes kdumptool read ``init_uts_ns`` from page :data:`UTS_PFN`."""
    ex: dict[str, Any] = {"SYMBOL(init_uts_ns)": 0xFFFFFFFF80000000 + UTS_PFN * page_size,
                          "OFFSET(uts_namespace.name)": 4, "NUMBER(phys_base)": 0,
                          "CRASHTIME": 1700000000, "BUILD-ID": "0123456789abcdef"}
    ex.update(extra)
    return B.vmcoreinfo_text(page_size=page_size, machine=machine, extra=ex)


def _pages(page_size: int = PS, *, lost: Iterable[int] = (), noisy: Iterable[int] = (),
           extra: Iterable[tuple[int, int]] = ()) -> dict[int, Any]:
    pages = B.make_pages([(0, 12), (UTS_PFN, UTS_PFN + 2), (20, 24), *extra], page_size,
                         excluded=[3, 21], zero=[5, 6], lost=lost, noisy=noisy)
    pages[UTS_PFN] = _uts_page(page_size=page_size)
    return pages


def _prstatus_notes() -> list[tuple[bytes, int, bytes]]:
    return [(b"CORE", 1, B.prstatus_x86_64(1, {"rip": 0xFFFFFFFF81000000})),
            (b"CORE", 1, B.prstatus_x86_64(2))]


def synthetic_seeds() -> list[Seed]:
    """Small complete dumps of every format, layout, byte order, version and codec."""
    seeds: list[Seed] = []

    def kd(name: str, pages: dict[int, Any] | None = None, vmci: bytes | None = b"",
           **kw: Any) -> None:
        pages = pages if pages is not None else _pages(kw.get("page_size", PS))
        ps = kw.get("page_size", PS)
        text = synthetic_vmcoreinfo(ps) if vmci == b"" else vmci
        kw.setdefault("notes", _prstatus_notes())
        kw.setdefault("version", "")

        def build(v: bytes | None, pages: dict[int, Any] = pages, kw: dict[str, Any] = kw) -> bytes:
            return bytes(B.build_kdump(pages, vmcoreinfo=v, **kw))
        try:
            seeds.append(Seed(f"kdump-{name}", "kdump", build(text), rebuild=build, vmcoreinfo=text))
        except ImportError:  # a codec package is missing
            pass

    kd("64le-raw-v6")
    for codec in ("zlib", "lzo", "snappy", "zstd"):
        kd(f"64le-{codec}-v6", codec=codec)
    kd("64be-zlib-v6", endian=">", codec="zlib")
    kd("32pack-zlib-v6", layout="32pack", codec="zlib")
    kd("32pad-raw-v6", layout="32pad")
    kd("32pad-be-raw-v6", layout="32pad", endian=">")
    for v in (0, 1, 2, 3, 4, 5):
        kd(f"64le-zlib-v{v}", header_version=v, codec="zlib",
           eraseinfo=b"erase this\n" if v == 5 else None)
    kd("diskdump", signature=b"DISKDUMP", header_version=1)
    kd("incomplete", codec="zlib", incomplete_after=4)
    kd("lost", pages=_pages(lost=[8, 9]), codec="lzo")
    kd("level0-noisy", pages=_pages(noisy=[1, 2, 7]), codec="zlib", dump_level=0)
    kd("trailing-holes", codec="zstd", max_mapnr=5000)
    kd("window-edge", pages=_pages(extra=[(1020, 1030), (2047, 2049)]), codec="zlib")
    kd("ps1024", pages=_pages(1024), page_size=1024, vmci=synthetic_vmcoreinfo(1024))
    kd("ps65536", pages=B.make_pages([(0, 3)], 65536), page_size=65536, codec="zlib",
       vmci=synthetic_vmcoreinfo(65536))
    kd("no-notes", notes=(), vmci=None)
    # a valid file whose windows are large: 1024 pages of 256 KiB sharing one stored zero page
    big = {p: B.ZERO for p in range(1024)}
    seeds.append(Seed("kdump-ps256k-1024-zero-pages", "kdump",
                      bytes(B.build_kdump(big, page_size=1 << 18, dump_level=1, version="")),
                      weight=0.2))
    try:
        for i, part in enumerate(B.build_kdump_split(_pages(), 2, codec="zlib",
                                                     vmcoreinfo=synthetic_vmcoreinfo())):
            seeds.append(Seed(f"kdump-split-part{i}", "kdump", bytes(part)))
    except ImportError:
        pass

    def el(name: str, pages: dict[int, Any] | None = None, vmci: bytes | None = b"",
           **kw: Any) -> None:
        pages = pages if pages is not None else _pages(kw.get("page_size", PS))
        text = synthetic_vmcoreinfo(kw.get("page_size", PS), kw.get("machine", 62)) \
            if vmci == b"" else vmci
        kw.setdefault("notes", _prstatus_notes())

        def build(v: bytes | None, pages: dict[int, Any] = pages, kw: dict[str, Any] = kw) -> bytes:
            return bytes(B.build_elf(pages, vmcoreinfo=v, **kw))
        seeds.append(Seed(f"elf-{name}", "elf", build(text), rebuild=build, vmcoreinfo=text))

    el("64le")
    el("64le-align4096", data_align=4096)
    el("32le-i386", elf_class=32, machine=B.EM_386)
    el("32be-arm", elf_class=32, endian=">", machine=B.EM_ARM)
    el("64be-s390", endian=">", machine=B.EM_S390)
    el("64le-aarch64", machine=B.EM_AARCH64)
    el("pn-xnum", use_pn_xnum=True)
    el("incomplete-flag", e_flags=1)
    el("long-excluded-run", pages=B.make_pages([(0, 306), (UTS_PFN, UTS_PFN + 1)],
                                               excluded=range(10, 300)))
    el("ps16384", pages=B.make_pages([(0, 4)], 16384), page_size=16384)
    el("ps65536", pages=B.make_pages([(0, 2)], 65536), page_size=65536)
    el("no-notes", notes=(), vmci=None)
    el("qemu-note", notes=[(b"QEMU", 0, bytes(0x1B8)), *_prstatus_notes()])
    pages = _pages()
    seg_text = B.Segment(UTS_PFN * PS, 2 * PS, 2 * PS, vaddr=UTS_VADDR)
    seg_ram = B.Segment(0, 24 * PS, 24 * PS)
    el("overlapping-segments", pages=pages, segments=[seg_text, seg_ram])
    el("memsz-gt-filesz", pages=pages, segments=[B.Segment(0, 64 * PS, 12 * PS),
                                                 B.Segment(64 * PS, PS + 100, PS)])

    flat_src = [s for s in seeds if s.name in ("kdump-64le-zlib-v6", "kdump-32pack-zlib-v6",
                                                "kdump-split-part0", "elf-64le", "elf-pn-xnum",
                                                "kdump-incomplete", "elf-long-excluded-run")]
    rng = random.Random(0xF1A7)
    for s in flat_src:
        for variant, kw in (("plain", {}), ("shuffled", {"record_size": 4096, "shuffle": rng}),
                            ("overlaps", {"record_size": 512, "duplicate_overlaps": True,
                                          "shuffle": rng})):
            if variant != "plain" and s.name not in ("kdump-64le-zlib-v6", "elf-64le"):
                continue
            seeds.append(Seed(f"flat-{variant}-{s.name}", "flat", bytes(B.flatten(s.data, **kw))))
    seeds.append(Seed("flat-no-end-marker", "flat",
                      bytes(B.flatten(seeds[0].data, end_marker=False))))
    return seeds


# --- real files -----------------------------------------------------------------------------


class _Subset(DumpReader):
    """A reader that presents only some PFNs of another (to write small real dumps)."""

    def __init__(self, inner: DumpReader, keep: Iterable[int]) -> None:
        super().__init__(inner.source, strict=True)
        self.inner = inner
        self.info = dataclasses.replace(inner.info, details=dict(inner.info.details))
        self.keep = np.array(sorted(set(keep)), dtype=np.int64)

    def _mask(self, start: int, count: int) -> np.ndarray:
        m = np.zeros(count, dtype=bool)
        sel = self.keep[(self.keep >= start) & (self.keep < start + count)] - start
        m[sel] = True
        return m

    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        ram, present = self.inner.bitmaps(start, count)
        return ram, present & self._mask(start, count)

    def read_batch(self, start: int, count: int) -> PageBatch:
        ram, present = self.bitmaps(start, count)
        z = np.zeros(count, dtype=bool)
        if not present.any():
            return PageBatch(start, count, ram, present, np.empty((0, self.page_size), np.uint8), z)
        b = self.inner.read_batch(start, count)
        rows = present[b.present]
        return PageBatch(start, count, ram, b.present & present, b.data[rows], z)


def _uts_pfns(reader: DumpReader) -> list[int]:
    from kdumptool.vtop.kernel_image import kernel_image_to_phys

    vmci = reader.info.vmcoreinfo
    out = []
    with contextlib.suppress(Exception):
        v = vmci.symbol("init_uts_ns") + (vmci.offset("uts_namespace.name")
                                          if vmci.has("OFFSET(uts_namespace.name)") else 0)
        p = kernel_image_to_phys(vmci, reader.info.machine, v, reader.info.phys_base)
        out += [p // reader.page_size, (p + 6 * 65) // reader.page_size]
    with contextlib.suppress(Exception):
        v = vmci.symbol("swapper_pg_dir")
        out.append(kernel_image_to_phys(vmci, reader.info.machine, v, reader.info.phys_base)
                   // reader.page_size)
    return out


def _present_pfns(reader: DumpReader, first: int, rng: random.Random, extra: int) -> list[int]:
    found: list[int] = []
    others: list[int] = []
    for start, count in reader.windows(1 << 16):
        _, present = reader.bitmaps(start, count)
        idx = (np.flatnonzero(present) + start).tolist()
        if len(found) < first:
            found += idx[:first - len(found)]
        if idx:
            others += rng.sample(idx, min(len(idx), 2))
    return found + rng.sample(others, min(extra, len(others)))


def shrink_with_writer(path: Path, fmt: str, *, first: int = 12, extra: int = 6,
                       codec: str | None = "zlib") -> bytes:
    """A small complete dump of the real ``path`` (real notes, real pages) via kdumptool's writers."""
    from kdumptool.codecs import get_codec
    from kdumptool.formats.elf_writer import write_elf
    from kdumptool.formats.kdump_writer import write_kdump
    from kdumptool.metadata import output_metadata
    from kdumptool.pipeline import Selection
    from kdumptool.transport.sink import BytesSink

    with open_dump(str(path)) as inner:
        keep = _present_pfns(inner, first, random.Random(7), extra) + _uts_pfns(inner)
        sub = _Subset(inner, keep)
        sink = BytesSink()
        meta = output_metadata(sub)
        if fmt == "elf":
            write_elf(Selection(sub, 0), sink, meta)
        else:
            write_kdump(Selection(sub, 0), sink, meta, get_codec(codec) if codec else None,
                        threads=1)
        return sink.getvalue()


def _working_set(reader: DumpReader) -> list[int]:
    """The PFNs that ``dmesg`` and ``vtop`` (a few kernel addresses) read from ``reader``."""
    from kdumptool.dmesg import dmesg_text
    from kdumptool.vtop import translator_for

    touched: set[int] = set()
    inner = reader.read_batch

    def recording(start: int, count: int) -> PageBatch:
        batch = inner(start, count)
        if count <= 4096:  # random access, not a sweep
            touched.update(batch.pfns().tolist())
        return batch

    reader.read_batch = recording  # type: ignore[method-assign]
    try:
        with contextlib.suppress(KdumpToolError):
            dmesg_text(reader)
        with contextlib.suppress(KdumpToolError, ValueError):
            walker = translator_for(reader).walker
            for a in _VTOP_ADDRESSES:
                with contextlib.suppress(KdumpToolError, ValueError):
                    walker.walk(int(a, 0))
    finally:
        reader.read_batch = inner  # type: ignore[method-assign]
    return sorted(touched)


def shrink_to_working_set(path: Path, fmt: str) -> bytes:
    """A small real dump holding what ``dmesg``, ``vtop`` and the utsname need (kdump: zlib)."""
    from kdumptool.codecs import get_codec
    from kdumptool.formats.elf_writer import write_elf
    from kdumptool.formats.kdump_writer import write_kdump
    from kdumptool.metadata import output_metadata
    from kdumptool.pipeline import Selection
    from kdumptool.transport.sink import BytesSink

    with open_dump(str(path)) as inner:
        from kdumptool.scan import scan_vmcoreinfo

        keep = _working_set(inner) + _uts_pfns(inner)
        keep += [f.paddr // inner.page_size for f in scan_vmcoreinfo(inner, first_only=True)]
        sub = _Subset(inner, keep)
        sink = BytesSink()
        meta = output_metadata(sub)
        if fmt == "elf":
            write_elf(Selection(sub, 0), sink, meta)
        else:
            write_kdump(Selection(sub, 0), sink, meta, get_codec("zlib"), threads=1)
        return sink.getvalue()


def shrink_kdump_bytes(path: Path, *, first: int = 16, extra: int = 6) -> bytes:
    """The real kdump ``path`` cut to a few pages, keeping its header, notes and bitmap bytes.

    Everything before the bitmaps and the 1st bitmap are copied verbatim; the 2nd bitmap
    keeps only the chosen PFNs; their descriptors and stored (compressed) data follow.
    """
    from kdumptool.formats.kdump import KdumpReader

    with open_dump(str(path)) as r:
        assert isinstance(r, KdumpReader) and r.two_bitmaps
        keep = sorted(set(_present_pfns(r, first, random.Random(11), extra) + _uts_pfns(r)))
        _, present = r.bitmaps(0, r.max_pfn)
        keep = [p for p in keep if 0 <= p < r.max_pfn and present[p]]
        src = r.source
        out = bytearray(src.pread(0, r.bitmap_offset))
        sub = r.sub
        if sub is not None and sub.offset_eraseinfo:  # eraseinfo was at the end of the file
            s = r.structs
            c = dict(sub)
            c.pop("_io", None)
            c.update(offset_eraseinfo=0, size_eraseinfo=0)
            raw = s.KdumpSubHeader.build(c)
            out[r.block_size:r.block_size + len(raw)] = raw
        out += src.pread(r.bitmap_offset, r.bitmap_len)
        bm2 = bytearray(r.bitmap_len)
        for p in keep:
            bm2[p // 8] |= 1 << (p % 8)
        out += bm2
        out += bytes(r.desc_offset - len(out))
        dtype = r.structs.page_desc_dtype
        descs = np.zeros(len(keep), dtype=dtype)
        data = bytearray()
        base = r.desc_offset + 24 * len(keep)
        placed: dict[tuple[int, int], int] = {}
        for i, p in enumerate(keep):
            d = r._descs(r.rank(p), 1)[0]
            k = (int(d["offset"]), int(d["size"]))
            if k not in placed:
                placed[k] = base + len(data)
                data += src.pread(*k)
            descs[i] = (placed[k], k[1], int(d["flags"]), int(d["page_flags"]))
        return bytes(out + descs.tobytes() + data)


def shrink_elf_bytes(path: Path, *, pages: int = 2) -> bytes:
    """The real ELF ``path`` with its headers and notes verbatim and ``pages`` pages per PT_LOAD."""
    from kdumptool.formats.elf import ElfReader

    with open_dump(str(path)) as r:
        assert isinstance(r, ElfReader)
        eh, s = r.ehdr, r.structs
        ends = [eh.e_phoff + len(r.phdrs) * eh.e_phentsize]
        ends += [off + n for off, n in r.note_segments]
        if eh.e_shoff:
            ends.append(eh.e_shoff + s.Shdr.sizeof())
        out = bytearray(r.source.pread(0, max(ends)))
        for k in range(len(r.phdrs)):
            ph = r.phdr(k)
            if ph.p_type != PT_LOAD:
                continue
            n = min(ph.p_filesz, pages * r.page_size)
            c = dict(ph)
            c.update(p_offset=len(out) if n else 0, p_filesz=n)
            out += r.source.pread(ph.p_offset, n)
            raw = s.Phdr.build(c)
            at = eh.e_phoff + k * eh.e_phentsize
            out[at:at + len(raw)] = raw
        return bytes(out)


def _prefix(path: Path, n: int = 256 << 10) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def hypervisor_seeds(*, shared: bool = True, log: Callable[[str], None] | None = None) -> list[Seed]:
    """Small QEMU savevm, libvirt, Xen dump-core / save and Hyper-V images.

    Built with the tests' spec builders (``tests/builders_{qemu,xen,hyperv}.py``) around real
    pages (the bundled kdump's working set, so identification and ``dmesg`` run on them), and,
    with the shared corpus, the first 256 KiB of the real migration stream.
    """
    out: list[Seed] = []

    def add(name: str, fmt: str, make: Callable[[], bytes]) -> None:
        try:
            out.append(Seed(name, fmt, make(), origin="spec"))
        except Exception as exc:  # noqa: BLE001 - a builder change: skip the seed, say so
            if log is not None:
                log(f"seed {name} skipped: {type(exc).__name__}: {exc}")

    X: Any = importlib.import_module("builders_xen")
    Q: Any = importlib.import_module("builders_qemu")
    HV: Any = importlib.import_module("builders_hyperv")
    from kdumptool.scan import scan_vmcoreinfo

    with open_dump(str(BUNDLED_KDUMP)) as real:
        keep = _working_set(real) + _uts_pfns(real)
        keep += [f.paddr // PS for f in scan_vmcoreinfo(real, first_only=True)]
        pages = {p: real.read_page(p) for p in sorted(set(keep))}
    small = dict(list(pages.items())[:6])

    add("xen-core-hvm", "xen", lambda: X.build_xc_core(pages, vcpus=[X.vcpu_context_x86_64()],
                                                        xen_version=X.xen_version_desc()))
    add("xen-core-pv", "xen", lambda: X.build_xc_core(small, hvm=False, vcpus=[X.vcpu_context_x86_64()],
                                                       invalid_slots=2))
    batches = [[(p, 0, d) for p, d in list(small.items())[:3]], [(p, 0, d) for p, d in small.items()]]
    add("xen-stream-xl", "xen", lambda: X.xl_save_file(X.libxl_stream(X.libxc_stream(
        batches, after=X.hvm_tail()), after=[X.emulator_context()]), config={"name": "fuzz"}))
    add("xen-stream-libxc", "xen", lambda: X.libxc_stream(batches, version=2))

    def qemu(libvirt: bool) -> bytes:
        st = Q.QemuStream()
        st.configuration("pc-i440fx-7.2")
        st.ram_setup([("pc.ram", 320 << 20), ("pc.bios", 256 << 10)])
        recs = [("page", "pc.ram", p * PS, d) for p, d in pages.items()]
        recs += [("zero", "pc.ram", 0x3000 * PS, 0), ("zlib", "pc.ram", 0x3001 * PS, bytes(PS))]
        st.ram_part(recs[:3])
        st.ram_part(recs[3:], end=True)
        content, fields = Q.cpu_content({"env.eflags": 0x246})
        st.device("cpu", content, version=12, desc_fields=fields)
        st.eof()
        return Q.libvirt_wrap(st.bytes()) if libvirt else st.bytes()

    add("qemu-savevm", "qemu", lambda: qemu(False))
    add("qemu-libvirt", "qemu", lambda: qemu(True))

    def vmrs() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "seed.vmrs"
            mem = bytearray(1 << 20)
            for p, d in small.items():
                mem[(p % 256) * PS:(p % 256 + 1) * PS] = d
            HV.build_vmrs(path, [(0, 1 << 20), (1 << 20, 1 << 20)],
                          lambda gpa, n: bytes(mem[gpa % (1 << 20):gpa % (1 << 20) + n]),
                          os_id=HV.linux_guest_os_id(6, 1, 192), compress=[1])
            return path.read_bytes()

    add("hyperv-vmrs", "hyperv", vmrs)
    W: Any = importlib.import_module("builders_windows")
    add("windows-dmp", "windows", lambda: W.build_win_dmp64(
        [(1, 0x1F), (0x100, 8)], lambda pfn: pages.get(pfn, bytes(PS))))
    if shared:
        with contextlib.suppress(Exception):
            corpus = importlib.import_module("corpus")
            qevm = Path(corpus.corpus_file("x86_64-qemu-256m/qemu-migrate.qevm"))
            add("real-qemu-migrate-prefix256k", "qemu", lambda: _prefix(qevm))
    return out


def real_seeds(*, shared: bool = True, log: Callable[[str], None] | None = None) -> list[Seed]:
    """Seeds from real dumps: the bundled kdump always, the shared corpus when ``shared``."""
    out: list[Seed] = []

    def add(name: str, fmt: str, make: Callable[[], bytes]) -> None:
        try:
            out.append(Seed(name, fmt, make(), origin="real"))
        except Exception as exc:  # noqa: BLE001 - a missing file or a reader change: skip it
            if log is not None:
                log(f"seed {name} skipped: {type(exc).__name__}: {exc}")

    k = BUNDLED_KDUMP
    add("real-kdump-prefix256k", "kdump", lambda: _prefix(k))
    add("real-kdump-shrunk", "kdump", lambda: shrink_kdump_bytes(k))
    add("real-kdump-rewritten", "kdump", lambda: shrink_with_writer(k, "kdump"))
    add("real-kdump-as-elf", "elf", lambda: shrink_with_writer(k, "elf"))
    add("real-kdump-dmesg-set", "kdump", lambda: shrink_to_working_set(k, "kdump"))
    add("real-kdump-dmesg-set-elf", "elf", lambda: shrink_to_working_set(k, "elf"))
    if out:
        first = out[1].data if len(out) > 1 else out[0].data
        add("real-kdump-shrunk-flat", "flat", lambda: bytes(B.flatten(first, record_size=4096)))
    if not shared:
        return out
    try:
        corpus = importlib.import_module("corpus")
        if not corpus.corpus_available():
            raise FileNotFoundError(corpus.CORPUS_ROOT)
    except Exception as exc:  # noqa: BLE001
        if log is not None:
            log(f"shared corpus not used: {exc}")
        return out

    def cf(rel: str) -> Path:
        return Path(corpus.corpus_file(rel))

    for rel, name in (("x86_64-kdump-320m/vmcore.elf", "vmcore"),
                      ("x86_64-kdump-320m/derived/E-d31.elf", "E-d31"),
                      ("x86_64-qemu-256m/qemu-elf.vmcore", "qemu-elf")):
        add(f"real-elf-{name}-prefix256k", "elf", lambda rel=rel: _prefix(cf(rel)))
        add(f"real-elf-{name}-shrunk", "elf", lambda rel=rel: shrink_elf_bytes(cf(rel)))
    add("real-elf-vmcore-rewritten", "elf",
        lambda: shrink_with_writer(cf("x86_64-kdump-320m/vmcore.elf"), "elf"))
    add("real-elf-qemu-dmesg-set", "elf",
        lambda: shrink_to_working_set(cf("x86_64-qemu-256m/qemu-elf.vmcore"), "elf"))
    add("real-flat-F-c-d31-prefix256k", "flat",
        lambda: _prefix(cf("x86_64-kdump-320m/derived/F-c-d31.flat")))
    add("real-kdump-qemu-shrunk", "kdump",
        lambda: shrink_kdump_bytes(cf("x86_64-qemu-256m/qemu-kdump-zlib.vmcore")))
    add("real-kdump-split-part1-shrunk", "kdump",
        lambda: shrink_kdump_bytes(cf("x86_64-kdump-320m/derived/split2-c-d31.2")))
    return out


# ============================================================================================
# the generator
# ============================================================================================

STRATEGIES = (("structured", 36), ("geometry", 6), ("vmcoreinfo", 8), ("havoc", 22),
              ("boundary", 10), ("flat", 8), ("mixed", 10))


#: Opt-in strategies (``campaign.py --strategies``): not in STRATEGIES, so that adding them
#: leaves every input of the campaigns already run the same.
EXTRA_STRATEGIES = {"scale": 1}


class Generator:
    """Makes fuzz inputs from seeds; input ``i`` of seed ``s`` is always the same."""

    def __init__(self, seeds: list[Seed], strategies: tuple[tuple[str, int], ...] = STRATEGIES) -> None:
        if not seeds:
            raise ValueError("no seeds")
        self.seeds = seeds
        self._layouts: dict[str, Layout] = {}
        self._names = [n for n, _ in strategies]
        self._weights = [w for _, w in strategies]
        self._seed_weights = [s.weight for s in seeds]

    def layout(self, seed: Seed) -> Layout:
        lay = self._layouts.get(seed.name)
        if lay is None:
            lay = self._layouts[seed.name] = describe(seed.data)
        return lay

    def generate(self, seed_value: int | str, index: int) -> tuple[bytes, str]:
        """Input ``index`` of the campaign seeded with ``seed_value``: ``(bytes, description)``."""
        rng = random.Random(f"{seed_value}:{index}")
        seed = rng.choices(self.seeds, self._seed_weights)[0]
        strategy = rng.choices(self._names, self._weights)[0]
        d = bytearray(seed.data)
        lay = self.layout(seed)
        steps: list[str] = []
        if strategy == "structured":
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                steps.append(m_field(d, lay, rng))
        elif strategy == "vmcoreinfo":
            if seed.rebuild is not None and seed.vmcoreinfo is not None and rng.random() < 0.6:
                text, what = mutate_vmcoreinfo_text(seed.vmcoreinfo, rng)
                try:
                    d = bytearray(seed.rebuild(text))
                    steps.append(f"rebuilt with {what}")
                except Exception as exc:  # noqa: BLE001 - the builder refused the text
                    steps.append(f"rebuild failed ({type(exc).__name__}); {m_vmcoreinfo(d, lay, rng)}")
            else:
                steps.append(m_vmcoreinfo(d, lay, rng))
        elif strategy == "havoc":
            for _ in range(rng.choice([1, 1, 2, 3, 5])):
                steps.append(rng.choice(HAVOC)(d, lay, rng))
        elif strategy == "boundary":
            op = rng.choice([m_truncate, m_truncate, m_insert_delete, m_zero_block])
            steps.append(op(d, lay, rng))
        elif strategy == "flat":
            d, what = self._flat(seed, d, lay, rng)
            steps.append(what)
        elif strategy == "scale":
            steps.append(m_scale(d, lay, rng))
        elif strategy == "geometry":
            steps.append(m_geometry(d, lay, rng))
            if rng.random() < 0.3:
                steps.append(m_truncate(d, lay, rng))
        else:  # mixed: two or three of field, geometry, VMCOREINFO, splice, havoc
            for _ in range(rng.choice([2, 2, 3])):
                op = rng.choice(["field", "field", "geometry", "vmcoreinfo", "splice", "havoc"])
                if op == "splice":
                    other = rng.choice(self.seeds)
                    a = rng.randrange(len(other.data))
                    n = rng.choice([16, 64, 4096])
                    p = _pos(d, lay, rng) if d else 0
                    d[p:p + n] = other.data[a:a + n]
                    steps.append(f"splice {other.name}[{a:#x}+{n}] at {p:#x}")
                else:
                    fn = {"field": m_field, "geometry": m_geometry, "vmcoreinfo": m_vmcoreinfo,
                          "havoc": rng.choice(HAVOC)}[op]
                    steps.append(fn(d, lay, rng))
        if len(d) > MAX_INPUT:
            del d[MAX_INPUT:]
            steps.append(f"capped at {MAX_INPUT}")
        return bytes(d), f"{seed.name} | {strategy}: " + "; ".join(steps)

    def _flat(self, seed: Seed, d: bytearray, lay: Layout,
              rng: random.Random) -> tuple[bytearray, str]:
        """Mutate the image inside a flattened file, or flatten a mutated image."""
        if seed.fmt == "flat":
            if rng.random() < 0.5:
                return d, m_field(d, lay, rng)
            try:
                inner = bytearray(B.unflatten(bytes(d)))
            except ValueError:
                return d, m_flip(d, lay, rng)
        else:
            inner = d
        ilay = describe(inner)
        what = rng.choice([m_field, m_field, m_flip, m_truncate, m_zero_block])(inner, ilay, rng)
        rs = rng.choice([100, 512, 4096, 65536, 1 << 20])
        shuffle = random.Random(rng.random()) if rng.random() < 0.4 else None
        dup = rng.random() < 0.2
        end = rng.random() < 0.95
        out = bytearray(B.flatten(bytes(inner), record_size=rs, shuffle=shuffle,
                                  duplicate_overlaps=dup, end_marker=end))
        return out, (f"inner {what}; flatten(record_size={rs}, shuffle={shuffle is not None}, "
                     f"overlaps={dup}, end_marker={end})")


# ============================================================================================
# minimisation and regression files
# ============================================================================================


def minimize(data: bytes, signature: str, test: Callable[[bytes], bool], *,
             budget: int = 120) -> bytes:
    """Shrink ``data`` while ``test`` (same signature) holds: cut the tail, then zero blocks."""
    cur = data
    tries = 0
    chop = max(1, len(cur) // 2)
    while chop >= 1 and tries < budget and cur:
        cand = cur[:len(cur) - chop]
        tries += 1
        if test(cand):
            cur = cand
            chop = min(chop, max(1, len(cur) // 2))
        else:
            chop //= 2
    for block in (4096, 512, 64, 8):
        for at in range(0, len(cur), block):
            if tries >= budget:
                return cur
            chunk = cur[at:at + block]
            if not any(chunk):
                continue
            cand = cur[:at] + bytes(len(chunk)) + cur[at + len(chunk):]
            tries += 1
            if test(cand):
                cur = cand
    return cur


def regressions_with(directory: Path, signature: str) -> list[Path]:
    """Saved inputs whose ``.txt`` records ``signature``."""
    out = []
    for txt in sorted(directory.glob("*.txt")):
        with contextlib.suppress(OSError):
            if f"signature: {signature}\n" in txt.read_text(errors="replace"):
                out.append(txt.with_suffix(".bin"))
    return out


def kdumptool_version() -> str:
    """HEAD of the repository and whether kdumptool/ has uncommitted changes (read-only git)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), *args],
                                  capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    diff = git("diff", "--shortstat", "HEAD", "--", "kdumptool")
    return f"{head}" + (f" + uncommitted changes ({diff})" if diff else "")


def regression_name(res: OpResult) -> str:
    """File stem for a failure: kind, exception and kdumptool location."""
    parts = res.where.split(":")
    loc = ""
    if parts and parts[0]:
        mod = parts[0].removeprefix("kdumptool/").removesuffix(".py").replace("/", "_")
        loc = f"{mod}-{parts[-1]}" if res.kind in ("hang", "crash") or len(parts) < 3 else \
            f"{mod}-{parts[-1]}-L{parts[1]}"
    err = res.error.rsplit(".", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{res.kind}-{err}-{loc}".strip("-"))[:120]


def write_regression(directory: Path, res: OpResult, data: bytes, *, original_size: int,
                     description: str, extra: str = "") -> Path:
    """Save ``data`` as ``NAME.bin`` with ``NAME.txt`` saying what failed (kept if it exists)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = regression_name(res)
    k = 1
    while (directory / f"{stem}.bin").exists():  # same name, another signature (lines moved)
        k += 1
        stem = f"{regression_name(res)}-{k}"
    bin_path = directory / f"{stem}.bin"
    bin_path.write_bytes(data)
    text = (f"signature: {res.signature}\n"
            f"kind: {res.kind}\n"
            f"operation: {res.op}\n"
            f"exception: {res.error}\n"
            f"message: {res.message}\n"
            f"where: {res.where}\n"
            f"input: {len(data)} bytes (minimized from {original_size})\n"
            f"generated by: {description}\n"
            f"replay: /work/venv/bin/python fuzz/campaign.py --replay fuzz/regressions/{stem}.bin\n"
            f"{extra}"
            f"\ntraceback:\n{res.traceback}\n")
    (directory / f"{stem}.txt").write_text(text)
    return bin_path
