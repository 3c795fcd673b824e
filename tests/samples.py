"""Real sample dumps committed in the repository (``corpus/<set>/``), unpacked lazily.

Each set directory holds a ``manifest.json`` (written by ``corpus/recipes/pack.py``) whose
``dumps`` list every dump as ``{"name", "stored", "patch_from", "size", "sha256", ...}``:
the dump is stored as ``stored`` (``zstd --long``), or, when ``patch_from`` names another dump
of the set, as a zstd patch against that one (``--patch-from``).  :func:`sample_file`
decompresses a dump on first use into the shared cache (``KDUMPTOOL_CACHE``, under
``repo/<set>/``), checks size and sha256 and leaves a stamp, with the same locking as
:mod:`corpus`.  Text files (``guest-info/``, ``dmesg.txt`` ...) are read in place with
:func:`sample_path`.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from corpus import (
    CACHE_ROOT,
    REPO_ROOT,
    ZSTD_TIMEOUT,
    CorpusError,
    _locked,
    _missing,
    _sha256_file,
    _stamp_file,
    _stamp_valid,
    _write_stamp,
)

SAMPLES_ROOT: Path = REPO_ROOT / "corpus"


@functools.lru_cache(maxsize=8)
def sample_manifest(set_name: str) -> dict[str, Any]:
    """The parsed ``corpus/<set_name>/manifest.json``."""
    with open(SAMPLES_ROOT / set_name / "manifest.json", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def dump_entry(set_name: str, name: str) -> dict[str, Any]:
    """The manifest entry of dump ``name`` of set ``set_name``."""
    for d in sample_manifest(set_name)["dumps"]:
        if d["name"] == name:
            return d
    raise KeyError(f"{name!r} is not a dump of corpus/{set_name} (see its manifest.json)")


def sample_path(set_name: str, rel: str) -> Path:
    """A file of the set as stored (text files, ``kallsyms.gz`` ...)."""
    p = SAMPLES_ROOT / set_name / rel
    if not p.is_file():
        raise FileNotFoundError(f"corpus/{set_name}/{rel} not found")
    return p


def _unpack(set_name: str, entry: dict[str, Any], target: Path) -> None:
    stored = SAMPLES_ROOT / set_name / entry["stored"]
    zstd = shutil.which("zstd")
    if zstd is None:
        raise CorpusError("the zstd command is needed to unpack corpus/ (apt-get install zstd)")
    cmd = [zstd, "-q", "-d", "-f", "--long=31"]
    if entry.get("patch_from"):
        cmd.append(f"--patch-from={sample_file(set_name, entry['patch_from'])}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        proc = subprocess.run([*cmd, str(stored), "-o", str(tmp)], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=ZSTD_TIMEOUT, check=False)
        if proc.returncode != 0:
            raise CorpusError(f"{stored}: zstd failed ({proc.returncode}): {proc.stderr.strip()}")
        digest = _sha256_file(tmp)
        if tmp.stat().st_size != entry["size"] or digest != entry["sha256"]:
            raise CorpusError(f"{stored}: unpacked file does not match manifest.json")
        tmp.chmod(0o444)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(target, digest)


def sample_file(set_name: str, name: str) -> Path:
    """The unpacked dump ``name`` of ``corpus/<set_name>``, unpacked and verified on first use.

    :raises CorpusError: zstd missing, or the result does not match the manifest
    """
    entry = dump_entry(set_name, name)
    target = CACHE_ROOT / "repo" / set_name / name
    if _stamp_valid(target, entry):
        return target
    with _locked(target):
        if not _stamp_valid(target, entry):
            target.unlink(missing_ok=True)
            _stamp_file(target).unlink(missing_ok=True)
            _unpack(set_name, entry, target)
    return target


def need_sample(set_name: str, name: str) -> Path:
    """:func:`sample_file`, skipping the test (failing it under CI) when zstd is missing."""
    if shutil.which("zstd") is None:
        _missing("the zstd command is needed to unpack corpus/ (apt-get install zstd)")
    return sample_file(set_name, name)
