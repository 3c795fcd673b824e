"""Peer tools used as independent judges of kdumptool's output.

* drgn (PyPI wheel, bundles its own libkdumpfile): in-process by default, or in a subprocess
  with ``isolate=True`` (drgn's libkdumpfile mmaps the dump and dies with SIGBUS on some
  damaged kdump files, e.g. a page descriptor whose size points past the end of the file).
* python3-libkdumpfile (Debian package; importable only by the system ``/usr/bin/python3``):
  always in a subprocess running ``peer_scripts/lkdf_pages.py``, so that a crash of the C
  library (SIGBUS/SIGSEGV on damaged files) becomes a :class:`PeerCrashed` exception.
* makedumpfile and ``crash --osrelease``: subprocesses, always with a timeout.
* bpftool (Debian package ``bpftool``, in ``/usr/sbin``): reads the BTF files ``kdumptool btf``
  writes (``bpftool btf dump file``), a subprocess with a timeout.

:func:`require_tool` skips the test when a tool is missing, or fails it when env ``CI`` is
set.  Tool locations can be overridden with ``KDUMPTOOL_MAKEDUMPFILE``, ``KDUMPTOOL_CRASH`` and
``KDUMPTOOL_BPFTOOL`` and ``KDUMPTOOL_LKDF_PYTHON`` (the Python that can ``import kdumpfile``).

Page digests are the sha1 hex digest of the ``page_size`` bytes at physical address
``pfn * page_size``, or None where the tool cannot read that page (excluded, not in the
dump, damaged).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import pytest
from ours import HANG_S

PEER_SCRIPTS: Path = Path(__file__).resolve().parent / "peer_scripts"
TOOLS = ("drgn", "libkdumpfile", "makedumpfile", "crash", "bpftool")
#: Python interpreter for python3-libkdumpfile (Debian installs it for the system Python only).
LKDF_PYTHON_DEFAULT = "/usr/bin/python3"


class PeerError(RuntimeError):
    """A peer tool failed in a way the caller did not ask to tolerate."""


class PeerOpenError(PeerError):
    """The peer tool refused to open the dump (the message is the tool's)."""


class PeerCrashed(PeerError):
    """The peer tool's process was killed by a signal (e.g. SIGBUS on a truncated file)."""

    def __init__(self, tool: str, signum: int, stderr: str = "") -> None:
        self.tool = tool
        self.signum = signum
        self.signal_name = _signal_name(signum)
        self.stderr = stderr
        tail = f": {stderr.strip()[-500:]}" if stderr.strip() else ""
        super().__init__(f"{tool} was killed by {self.signal_name}{tail}")


class PeerTimeout(PeerError):
    """The peer tool did not finish within its time limit (it was killed)."""

    def __init__(self, tool: str, timeout: float, stdout: bytes = b"", stderr: bytes = b"") -> None:
        self.tool = tool
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"{tool} did not finish within {timeout} s (killed)")


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class PageScan:
    """Result of reading pages with a peer tool."""

    #: pfn -> sha1 hex of the page, None when it could not be read
    digests: dict[int, str | None]
    #: pfn -> "ExceptionClass: message" for every pfn whose digest is None
    errors: dict[int, str] = field(default_factory=dict)
    #: tool-specific attributes of the opened dump (libkdumpfile attribute names)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def readable(self) -> set[int]:
        """The pfns that could be read."""
        return {pfn for pfn, d in self.digests.items() if d is not None}


# --------------------------------------------------------------------------------------------
# finding the tools


@functools.cache
def _lkdf_python(candidate: str) -> tuple[Path | None, str]:
    exe = shutil.which(candidate)
    if exe is None:
        return None, f"{candidate} not found (needed to run python3-libkdumpfile)"
    try:
        proc = subprocess.run(
            [exe, "-I", "-c", "import kdumpfile"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=HANG_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"{exe} -c 'import kdumpfile' timed out"
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()[-1:] or ["?"]
        return None, (
            f"python3-libkdumpfile not importable by {exe} ({err[0]}); "
            "apt-get install python3-libkdumpfile or set KDUMPTOOL_LKDF_PYTHON"
        )
    return Path(exe), ""


def _find_tool(name: str) -> tuple[ModuleType | Path | None, str]:
    if name == "drgn":
        try:
            import drgn
        except ImportError as e:
            return None, f"drgn is not importable ({e}); pip install drgn"
        return drgn, ""
    if name == "libkdumpfile":
        return _lkdf_python(os.environ.get("KDUMPTOOL_LKDF_PYTHON") or LKDF_PYTHON_DEFAULT)
    if name in ("makedumpfile", "crash", "bpftool"):
        candidate = os.environ.get(f"KDUMPTOOL_{name.upper()}") or name
        # Debian installs bpftool in /usr/sbin, which a user's PATH may lack
        exe = shutil.which(candidate) or shutil.which(candidate, path="/usr/sbin:/sbin")
        if exe is None:
            return None, f"{candidate} not found; apt-get install {name}"
        return Path(exe), ""
    raise ValueError(f"unknown peer tool {name!r}; known: {', '.join(TOOLS)}")


def require_tool(name: str) -> Any:
    """What is needed to use peer tool ``name``: the ``drgn`` module for "drgn", the Path of
    the Python that imports ``kdumpfile`` for "libkdumpfile", the Path of the executable for
    "makedumpfile", "crash" and "bpftool".  A missing tool skips the test, or fails it when ``CI`` is set.
    """
    tool, reason = _find_tool(name)
    if tool is None:
        if _in_ci():
            pytest.fail(f"peer tool {name} missing: {reason} (CI is set)", pytrace=False)
        pytest.skip(f"peer tool {name} missing: {reason}")
    return tool


def _tool_or_raise(name: str) -> Any:
    tool, reason = _find_tool(name)
    if tool is None:
        raise PeerError(f"peer tool {name} missing: {reason}")
    return tool


# --------------------------------------------------------------------------------------------
# subprocess plumbing


def _run_json(tool: str, cmd: Sequence[str], request: dict[str, Any], timeout: float) -> Any:
    try:
        proc = subprocess.run(
            list(cmd),
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise PeerTimeout(tool, timeout, e.stdout or b"", e.stderr or b"") from None
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode < 0:
        raise PeerCrashed(tool, -proc.returncode, stderr)
    if proc.returncode != 0:
        raise PeerError(f"{tool} worker exited with status {proc.returncode}: {stderr[-2000:]}")
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise PeerError(
            f"{tool} worker printed no JSON: {proc.stdout[:500]!r} {stderr[-2000:]}"
        ) from None


def _int_keys(d: dict[str, Any]) -> dict[int, Any]:
    return {int(k): v for k, v in d.items()}


# --------------------------------------------------------------------------------------------
# drgn


def _drgn_program(path: str | os.PathLike[str]) -> Any:
    drgn = _tool_or_raise("drgn")
    prog = drgn.Program()
    prog.set_core_dump(os.fspath(path))
    return prog


def drgn_scan_inprocess(
    path: str | os.PathLike[str], pfns: Iterable[int], page_size: int = 4096
) -> PageScan:
    """:func:`drgn_scan` in this process (used by the isolated worker too)."""
    drgn = _tool_or_raise("drgn")
    prog = _drgn_program(path)
    digests: dict[int, str | None] = {}
    errors: dict[int, str] = {}
    for pfn in pfns:
        try:
            data = prog.read(pfn * page_size, page_size, True)
        except drgn.FaultError as e:
            digests[pfn] = None
            errors[pfn] = f"FaultError: {e}"
        else:
            digests[pfn] = hashlib.sha1(data).hexdigest()
    return PageScan(digests, errors, {"platform": str(prog.platform)})


def drgn_scan(
    path: str | os.PathLike[str],
    pfns: Iterable[int],
    page_size: int = 4096,
    *,
    isolate: bool = False,
    timeout: float = HANG_S,
) -> PageScan:
    """Read each physical page ``pfn`` of ``path`` with drgn (no debug info needed).

    Opening errors propagate (drgn's ValueError/Exception, or :class:`PeerError` subclasses
    with ``isolate=True``); a drgn FaultError on a page gives digest None and an error entry.
    ``isolate=True`` runs drgn in a subprocess: a crash becomes :class:`PeerCrashed`.
    """
    pfn_list = [int(p) for p in pfns]
    if not isolate:
        return drgn_scan_inprocess(path, pfn_list, page_size)
    res = _drgn_worker(
        {"op": "pages", "path": os.fspath(path), "pfns": pfn_list, "page_size": page_size},
        timeout,
    )
    return PageScan(_int_keys(res["digests"]), _int_keys(res["errors"]), res.get("attrs", {}))


def drgn_page_digests(
    path: str | os.PathLike[str],
    pfns: Iterable[int],
    page_size: int = 4096,
    *,
    isolate: bool = False,
) -> dict[int, str | None]:
    """pfn -> sha1 hex of the page read by drgn at physical address ``pfn * page_size``,
    None where drgn raises FaultError.  See :func:`drgn_scan`."""
    return drgn_scan(path, pfns, page_size, isolate=isolate).digests


def _vmcoreinfo_dict(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def drgn_open_inprocess(path: str | os.PathLike[str]) -> tuple[bool, str]:
    """:func:`drgn_open_ok` in this process."""
    try:
        prog = _drgn_program(path)
    except Exception as e:
        return False, f"open: {type(e).__name__}: {e}"
    try:
        vmcoreinfo = prog["VMCOREINFO"].string_().decode("latin1")
    except Exception as e:
        return False, f"VMCOREINFO: {type(e).__name__}: {e}"
    info = _vmcoreinfo_dict(vmcoreinfo)
    if "SYMBOL(init_uts_ns)" not in info:
        return True, info.get("OSRELEASE", "")
    # struct uts_namespace { struct new_utsname name; ... }: sysname[65], nodename[65], release
    addr = int(info["SYMBOL(init_uts_ns)"], 16) + int(info.get("OFFSET(uts_namespace.name)", "0"))
    try:
        raw = prog.read(addr + 2 * 65, 65)
    except Exception as e:
        return False, f"init_uts_ns: {type(e).__name__}: {e}"
    return True, raw.split(b"\0", 1)[0].decode("latin1")


def drgn_open_ok(
    path: str | os.PathLike[str], *, isolate: bool = False, timeout: float = HANG_S
) -> tuple[bool, str]:
    """Open ``path`` with drgn (without debug info) and read the kernel release from
    ``init_uts_ns`` in the dump's memory (address from VMCOREINFO's ``SYMBOL(init_uts_ns)``,
    so the page tables must be readable; if VMCOREINFO has no such symbol, its OSRELEASE).
    Returns (True, release) or (False, "stage: Error: message")."""
    if not isolate:
        return drgn_open_inprocess(path)
    res = _drgn_worker({"op": "open", "path": os.fspath(path)}, timeout)
    return bool(res["ok"]), str(res["message"])


def drgn_vmcoreinfo(path: str | os.PathLike[str]) -> str:
    """The VMCOREINFO text drgn finds in the dump (raises if it has none)."""
    prog = _drgn_program(path)
    return str(prog["VMCOREINFO"].string_().decode("latin1"))


def _drgn_worker(request: dict[str, Any], timeout: float) -> Any:
    _tool_or_raise("drgn")
    cmd = [sys.executable, str(PEER_SCRIPTS / "drgn_worker.py")]
    res = _run_json("drgn", cmd, request, timeout)
    if "exception" in res:
        raise PeerOpenError(f"drgn: {res['exception']}")
    return res


# --------------------------------------------------------------------------------------------
# python3-libkdumpfile


def _lkdf_run(
    path: str | os.PathLike[str],
    op: str,
    pfns: Iterable[int] | None,
    timeout: float,
    mmap: bool,
) -> Any:
    python = _tool_or_raise("libkdumpfile")
    request = {
        "path": os.fspath(path),
        "op": op,
        "pfns": None if pfns is None else [int(p) for p in pfns],
        "mmap": mmap,
    }
    res = _run_json(
        "libkdumpfile", [str(python), "-I", str(PEER_SCRIPTS / "lkdf_pages.py")], request, timeout
    )
    if not res.get("ok"):
        raise PeerOpenError(f"libkdumpfile ({res.get('stage')}): {res.get('error')}")
    return res


def lkdf_scan(
    path: str | os.PathLike[str],
    pfns: Iterable[int] | None = None,
    timeout: float = HANG_S,
    *,
    mmap: bool = True,
) -> PageScan:
    """Read physical pages of ``path`` with python3-libkdumpfile in a subprocess.

    ``pfns`` None reads every pfn from 0 to the file's ``max_pfn`` - 1.  The page size is the
    file's ``arch.page_size``.  ``mmap=False`` makes libkdumpfile read() instead of mmap()
    the file (KDUMP_MMAP_NEVER): truncated files then give read errors instead of SIGBUS.
    Raises :class:`PeerOpenError` when libkdumpfile cannot open the file,
    :class:`PeerCrashed` when the process dies by a signal, :class:`PeerTimeout`.
    """
    res = _lkdf_run(path, "pages", pfns, timeout, mmap)
    return PageScan(_int_keys(res["digests"]), _int_keys(res["errors"]), res["attrs"])


def lkdf_page_digests(
    path: str | os.PathLike[str],
    pfns: Iterable[int] | None = None,
    timeout: float = HANG_S,
    *,
    mmap: bool = True,
) -> dict[int, str | None]:
    """pfn -> sha1 hex of the page python3-libkdumpfile reads (KDUMP_KPHYSADDR), None where it
    raises (NoDataException for excluded/absent pages, CorruptException ...).
    See :func:`lkdf_scan`."""
    return lkdf_scan(path, pfns, timeout, mmap=mmap).digests


def lkdf_attrs(
    path: str | os.PathLike[str], timeout: float = HANG_S, *, mmap: bool = True
) -> dict[str, Any]:
    """Attributes python3-libkdumpfile gives for ``path``, under libkdumpfile's names:
    ``file.format`` ("diskdump", "elf", ...), ``file.description``, ``arch.name``,
    ``arch.page_size``, ``arch.page_shift``, ``linux.uts.sysname``/``release``/``version``/
    ``machine``, ``cpu.number``, ``max_pfn``, ``linux.phys_base``, ``linux.vmcoreinfo.raw``
    (None when libkdumpfile has no value), plus ``ostype_error`` when setting
    ``addrxlat.ostype`` to "linux" failed."""
    return dict(_lkdf_run(path, "attrs", None, timeout, mmap)["attrs"])


# --------------------------------------------------------------------------------------------
# makedumpfile, crash

StdinArg = bytes | str | os.PathLike[str] | IO[bytes] | None


def run_makedumpfile(
    args: Sequence[str | os.PathLike[str]],
    timeout: float = HANG_S,
    stdin: StdinArg = None,
    *,
    stdout_path: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``makedumpfile ARGS`` with a time limit (``makedumpfile -R`` never ends on a
    truncated flattened stream) and return the CompletedProcess (stdout/stderr as bytes; the
    exit status is not checked).  ``stdin``: bytes to feed, a file path (str/PathLike) or a
    binary file object; None means /dev/null.  ``stdout_path``: write stdout there (e.g. for
    ``-F``) instead of capturing it.  Raises :class:`PeerTimeout` when the limit is hit."""
    exe = _tool_or_raise("makedumpfile")
    cmd = [str(exe), *(os.fspath(a) for a in args)]
    env = {**os.environ, "LC_ALL": "C"}
    opened: list[IO[bytes]] = []
    try:
        input_data: bytes | None = None
        stdin_arg: Any = subprocess.DEVNULL
        if isinstance(stdin, bytes):
            input_data, stdin_arg = stdin, None
        elif isinstance(stdin, str | os.PathLike):
            stdin_arg = open(stdin, "rb")  # closed below
            opened.append(stdin_arg)
        elif stdin is not None:
            stdin_arg = stdin
        stdout_arg: Any = subprocess.PIPE
        if stdout_path is not None:
            stdout_arg = open(stdout_path, "wb")  # closed below
            opened.append(stdout_arg)
        try:
            kwargs: dict[str, Any] = {} if input_data is not None else {"stdin": stdin_arg}
            return subprocess.run(
                cmd,
                input=input_data,
                stdout=stdout_arg,
                stderr=subprocess.PIPE,
                timeout=timeout,
                cwd=cwd,
                env=env,
                check=False,
                **kwargs,
            )
        except subprocess.TimeoutExpired as e:
            raise PeerTimeout("makedumpfile", timeout, e.stdout or b"", e.stderr or b"") from None
    finally:
        for f in opened:
            f.close()


def run_crash_osrelease(
    path: str | os.PathLike[str], timeout: float = HANG_S, *, check: bool = True
) -> str:
    """``crash --osrelease FILE``: the kernel release crash finds in the dump (stripped).
    With ``check`` (default) a non-zero exit status raises :class:`PeerError` (crash prints
    "unknown" and exits 1 on a file it does not recognise); otherwise its output is returned
    whatever the status."""
    exe = _tool_or_raise("crash")
    try:
        proc = subprocess.run(
            [str(exe), "--osrelease", os.fspath(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise PeerTimeout("crash", timeout) from e
    if proc.returncode < 0:
        raise PeerCrashed("crash", -proc.returncode, proc.stderr)
    out = proc.stdout.strip()
    if check and proc.returncode != 0:
        raise PeerError(
            f"crash --osrelease exited with status {proc.returncode}: {out} {proc.stderr.strip()}"
        )
    return out
