"""Locate the shared real-dump corpus and unpack its dumps lazily into a cache.

The shared corpus (see ``MANIFEST.md`` in it) stores every dump as ``NAME.zst`` made with
``zstd -19 --long=31``; many are zstd *patches* (``--patch-from``) of another dump of the
corpus.  :func:`corpus_file` decompresses one dump on first use into :data:`CACHE_ROOT`
(decompressing its patch reference first, recursively), checks its size and sha256 against
``manifest.json`` and records the check in a stamp file so that later runs only compare the
size and mtime.  Writes go to a temporary name in the same directory followed by
:func:`os.replace`, under an exclusive :func:`fcntl.flock` lock per file, so an interrupted
run leaves nothing half-written and concurrent test processes do not race.

Small text files of the corpus (``vmcoreinfo.txt``, ``dmesg.txt``, ``broken/*.json`` ...) are
read where they are, with :func:`corpus_path` / :func:`corpus_text` / :func:`corpus_json`.

Paths called ``rel`` are relative to the corpus root and include the set, e.g.
``"x86_64-kdump-320m/derived/c-d31.kdump"``.

Environment: ``KDUMPTOOL_CORPUS`` (corpus root, default ``<repo>/../shared/corpus``),
``KDUMPTOOL_CACHE`` (cache root, default ``<repo>/.cache/corpus``), ``CI`` (when set, a missing
corpus makes :func:`need_corpus_file` fail instead of skip).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
CORPUS_ROOT: Path = Path(
    os.environ.get("KDUMPTOOL_CORPUS") or (REPO_ROOT.parent / "shared" / "corpus")
).absolute()
CACHE_ROOT: Path = Path(
    os.environ.get("KDUMPTOOL_CACHE") or (REPO_ROOT / ".cache" / "corpus")
).absolute()

#: Seconds allowed for one ``zstd`` decompression (the biggest file is ~290 MB).
ZSTD_TIMEOUT = 600


class CorpusError(RuntimeError):
    """The corpus is inconsistent or a file of it cannot be unpacked."""


def in_ci() -> bool:
    """True when running under CI (env ``CI`` set to anything but empty, ``0``, ``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def corpus_available() -> bool:
    """True when :data:`CORPUS_ROOT` holds a corpus (its ``manifest.json`` exists)."""
    return (CORPUS_ROOT / "manifest.json").is_file()


@functools.lru_cache(maxsize=4)
def _load_manifest(root: Path) -> dict[str, Any]:
    with open(root / "manifest.json", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def manifest() -> dict[str, Any]:
    """The corpus' ``manifest.json`` (parsed once per corpus root)."""
    if not corpus_available():
        raise CorpusError(f"shared corpus not found at {CORPUS_ROOT}: set KDUMPTOOL_CORPUS")
    return _load_manifest(CORPUS_ROOT)


def _rel_of(entry: dict[str, Any]) -> str:
    return f"{entry['set']}/{entry['path']}"


def dump_rels() -> list[str]:
    """The ``rel`` names of all dumps of the corpus, in manifest order."""
    return [_rel_of(d) for d in manifest()["dumps"]]


def dump_entry(rel: str) -> dict[str, Any]:
    """The manifest entry of dump ``rel`` (keys: set, path, size, sha256, format, header,
    stored, libkdumpfile, drgn, ...)."""
    for d in manifest()["dumps"]:
        if _rel_of(d) == rel:
            return d
    raise KeyError(f"{rel!r} is not a dump of the corpus at {CORPUS_ROOT} (see manifest.json)")


def other_entry(rel: str) -> dict[str, Any]:
    """The manifest entry of the non-dump file ``rel`` (keys: set, path, size, sha256, stored)."""
    for d in manifest()["other_files"]:
        if _rel_of(d) == rel:
            return d
    raise KeyError(f"{rel!r} is not a non-dump file of the corpus at {CORPUS_ROOT}")


# --------------------------------------------------------------------------------------------
# unpacking


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _stamp_file(target: Path) -> Path:
    return target.with_name(f".{target.name}.verified")


def _lock_file(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


def _stamp_valid(target: Path, entry: dict[str, Any]) -> bool:
    """True when ``target`` exists, has the manifest size and a stamp recording a successful
    sha256 check of exactly this file (same size, mtime and inode)."""
    try:
        st = target.stat()
        stamp = json.loads(_stamp_file(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        st.st_size == entry["size"]
        and stamp.get("sha256") == entry["sha256"]
        and stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
        and stamp.get("ino") == st.st_ino
    )


def _write_stamp(target: Path, sha256: str) -> None:
    st = target.stat()
    stamp = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
    tmp = target.with_name(f".{target.name}.verified.tmp.{os.getpid()}")
    tmp.write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    os.replace(tmp, _stamp_file(target))


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(_lock_file(target), "a+b") as lf:
        fcntl.flock(lf.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lf.fileno(), fcntl.LOCK_UN)


def _zstd() -> str:
    exe = shutil.which("zstd")
    if exe is None:
        raise CorpusError("the zstd command is needed to unpack the corpus (apt-get install zstd)")
    return exe


def _unpack(rel: str, entry: dict[str, Any], target: Path) -> None:
    """Decompress dump ``rel`` to ``target`` (caller holds the lock of ``target``)."""
    stored = CORPUS_ROOT / entry["set"] / entry["stored"]["file"]
    if not stored.is_file():
        raise CorpusError(f"{rel}: stored file {stored} is missing")
    cmd = [_zstd(), "-q", "-d", "-f", "--long=31"]
    ref_rel = entry["stored"].get("patch_from")
    if ref_rel:
        cmd.append(f"--patch-from={corpus_file(ref_rel)}")
    # remove leftovers of interrupted runs (safe: we hold the lock of this target)
    for stale in target.parent.glob(f".{target.name}.tmp.*"):
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        proc = subprocess.run(
            [*cmd, str(stored), "-o", str(tmp)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=ZSTD_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise CorpusError(
                f"{rel}: {' '.join(cmd)} failed (exit status {proc.returncode}): "
                f"{proc.stderr.strip()}"
            )
        size = tmp.stat().st_size
        if size != entry["size"]:
            raise CorpusError(f"{rel}: unpacked {size} bytes, manifest says {entry['size']}")
        digest = _sha256_file(tmp)
        if digest != entry["sha256"]:
            raise CorpusError(f"{rel}: unpacked sha256 {digest}, manifest says {entry['sha256']}")
        tmp.chmod(0o444)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(target, digest)


def cache_path(rel: str) -> Path:
    """Where :func:`corpus_file` puts dump ``rel`` (whether or not it is there yet)."""
    return CACHE_ROOT / rel


def corpus_file(rel: str) -> Path:
    """The unpacked dump ``rel`` in the cache, unpacking (and verifying) it on first use.

    Raises :class:`CorpusError` if the corpus or ``zstd`` is missing or the result does not
    match the manifest, :class:`KeyError` if ``rel`` is not a dump of the corpus.
    """
    entry = dump_entry(rel)
    target = cache_path(rel)
    if _stamp_valid(target, entry):
        return target
    with _locked(target):
        if _stamp_valid(target, entry):  # another process did it while we waited
            return target
        if target.is_file() and target.stat().st_size == entry["size"]:
            digest = _sha256_file(target)  # e.g. stamp lost: check the file once
            if digest == entry["sha256"]:
                _write_stamp(target, digest)
                return target
        target.unlink(missing_ok=True)
        _stamp_file(target).unlink(missing_ok=True)
        _unpack(rel, entry, target)
    return target


# --------------------------------------------------------------------------------------------
# small files, read in place


def corpus_path(rel: str) -> Path:
    """The file ``rel`` of the corpus as stored (for a text file the corpus keeps gzip'ed,
    the ``.gz``: use :func:`corpus_text` to read it).  Not for dumps: see :func:`corpus_file`."""
    p = CORPUS_ROOT / rel
    if p.is_file():
        return p
    if corpus_available():
        with contextlib.suppress(KeyError):
            entry = other_entry(rel)
            return CORPUS_ROOT / entry["set"] / entry["stored"]
        if rel in dump_rels():
            raise CorpusError(f"{rel} is a dump stored compressed: use corpus_file({rel!r})")
    raise FileNotFoundError(f"{rel} not found in the corpus at {CORPUS_ROOT}")


def corpus_bytes(rel: str) -> bytes:
    """The content of the non-dump file ``rel`` (gunzipped if the corpus stores it as .gz)."""
    p = corpus_path(rel)
    data = p.read_bytes()
    if p.name.endswith(".gz") and not rel.endswith(".gz"):
        data = gzip.decompress(data)
    return data


def corpus_text(rel: str) -> str:
    """The content of the non-dump text file ``rel`` (UTF-8, undecodable bytes replaced)."""
    return corpus_bytes(rel).decode("utf-8", errors="replace")


def corpus_json(rel: str) -> Any:
    """The parsed JSON file ``rel`` of the corpus (e.g. ``.../broken/NAME.json``)."""
    return json.loads(corpus_bytes(rel))


# --------------------------------------------------------------------------------------------
# pytest integration


def _missing(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


def need_corpus() -> Path:
    """:data:`CORPUS_ROOT`, or skip the test (fail it when ``CI`` is set) if it is absent."""
    if not corpus_available():
        _missing(f"shared corpus not found at {CORPUS_ROOT}: set KDUMPTOOL_CORPUS")
    return CORPUS_ROOT


def need_corpus_file(rel: str) -> Path:
    """:func:`corpus_file`, skipping the test (failing it when ``CI`` is set) when the corpus
    or the ``zstd`` command is not there."""
    need_corpus()
    if shutil.which("zstd") is None:
        _missing("the zstd command is needed to unpack the shared corpus (apt-get install zstd)")
    return corpus_file(rel)
