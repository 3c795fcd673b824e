"""Running inputs in isolation, and what is kept of a failure.

:class:`Worker` runs :func:`contract.run_ops` in a ``spawn``-ed process with ``RLIMIT_AS``,
``RLIMIT_FSIZE``, a per-group time limit (``SIGALRM``, then a hard kill with a ``faulthandler``
traceback) and crash detection; :func:`check_one` is the one-call form; :func:`minimize`
shrinks a failing input and :func:`write_regression` saves it.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import multiprocessing
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from common import REPO
from contract import DEFAULT_GROUPS, OpResult, Outcome, rel_path, run_ops

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
            return f"{rel_path(fn)}:{line}:{func}"
    if frames:
        fn, line, func = frames[0]
        return f"{rel_path(fn)}:{line}:{func}"
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
        """Kill the worker process and start a new one."""
        self._kill()
        self.restarts += 1
        self._start()

    def close(self) -> None:
        """Stop the worker (politely, then by force) and delete its directory."""
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
