"""The contract kdumptool must keep for any input, and the operations that check it.

For **any** input bytes, opening a dump, reading it, the summary and every command either
succeed or raise a :class:`kdumptool.errors.KdumpToolError`: :func:`run_ops` runs every
operation group in-process and classifies each step (:class:`OpResult`, :class:`Outcome`);
what a command writes must read back (``bad_output`` otherwise). See ``fuzz/README.md``.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import resource
import shutil
import signal
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import REPO, VTOP_ADDRESSES, B
from seeds import synthetic_pages, synthetic_vmcoreinfo

from kdumptool.dump import DumpReader, PageBatch
from kdumptool.errors import KdumpToolError
from kdumptool.open import open_bytes, open_dump, open_dumps
from kdumptool.summary import dump_summary, format_summary

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
        """The steps whose kind is one of ``kinds``."""
        kinds = tuple(kinds)
        return [r for r in self.results if r.kind in kinds]

    def signatures(self, kinds: Iterable[str] = FAILURE_KINDS) -> dict[str, OpResult]:
        """Distinct failure signatures, each with its first step."""
        out: dict[str, OpResult] = {}
        for r in self.failures(kinds):
            out.setdefault(r.signature, r)
        return out

    def handled(self) -> list[str]:
        """The error class of every step that ended in a kdumptool error."""
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
    return f"{rel_path(pick.filename)}:{pick.lineno}:{pick.name}"


def rel_path(filename: str) -> str:
    """``filename`` relative to the repository (or from ``site-packages/``), for signatures."""
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
            synthetic_pages(), 2, codec="zlib", vmcoreinfo=synthetic_vmcoreinfo()))
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
        c, "vtop", ["vtop", str(c.path), VTOP_ADDRESSES[(c.variant >> 2) % len(VTOP_ADDRESSES)]]),
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
    """True in the main thread (only there can ``signal`` set a time limit)."""
    import threading

    return threading.current_thread() is threading.main_thread()
