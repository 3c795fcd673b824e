"""Tests of the test infrastructure itself: lazy unpacking of the shared real corpus
(``tests/corpus.py``), the peer-tool judges (``tests/peers.py``) and the bundled sample dump
(``corpus/``).  The peer tools are compared with each other only; nothing here decodes dumps.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import peers
import pytest
from ours import HANG_S

import corpus

SET = "x86_64-kdump-320m"
C31 = f"{SET}/derived/c-d31.kdump"
C0 = f"{SET}/derived/c-d0.kdump"
FLAT = f"{SET}/derived/F-c-d31.flat"
BROKEN = f"{SET}/broken"
RELEASE = "6.1.0-56-amd64"

TESTS_DIR = Path(__file__).resolve().parent
BUNDLE_DIR = TESTS_DIR.parent / "corpus"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def need_zstd_corpus() -> None:
    corpus.need_corpus()
    if not shutil.which("zstd"):
        corpus.need_corpus_file(C0)  # skips / fails with the zstd message


# --------------------------------------------------------------------------------------------
# tests/corpus.py


def test_missing_corpus_skips_or_fails_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus, "CORPUS_ROOT", tmp_path / "no-corpus")
    assert not corpus.corpus_available()
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="KDUMPTOOL_CORPUS"):
        corpus.need_corpus_file(C31)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="KDUMPTOOL_CORPUS"):
        corpus.need_corpus_file(C31)


@pytest.mark.corpus
def test_manifest_lookup() -> None:
    corpus.need_corpus()
    entry = corpus.dump_entry(C31)
    assert entry["size"] == 17592980
    assert entry["stored"]["patch_from"] == C0
    assert corpus.dump_entry(C0)["stored"]["patch_from"] is None
    assert C31 in corpus.dump_rels()
    with pytest.raises(KeyError):
        corpus.dump_entry(f"{SET}/derived/no-such.kdump")
    assert corpus.cache_path(C31) == corpus.CACHE_ROOT / C31


@pytest.mark.corpus
def test_small_files_are_read_in_place() -> None:
    corpus.need_corpus()
    text = corpus.corpus_text(f"{SET}/vmcoreinfo.txt")
    assert text.startswith(f"OSRELEASE={RELEASE}\n")
    # a text file the corpus stores gzip'ed comes back as the original bytes
    log = f"{SET}/derived/logs/E-d31.log"
    assert corpus.corpus_path(log).name == "E-d31.log.gz"
    assert hashlib.sha256(corpus.corpus_bytes(log)).hexdigest() == corpus.other_entry(log)["sha256"]
    damage = corpus.corpus_json(f"{BROKEN}/c-d31-bad-page-data.kdump.json")
    assert damage["pfn"] == 0x1EC8
    with pytest.raises(corpus.CorpusError, match="corpus_file"):
        corpus.corpus_path(C31)


@pytest.mark.corpus
def test_lazy_unpack_from_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_zstd_corpus()
    cache = tmp_path / "cache"
    monkeypatch.setattr(corpus, "CACHE_ROOT", cache)
    target = cache / C31
    target.parent.mkdir(parents=True)
    leftover = target.with_name(f".{target.name}.tmp.interrupted")
    leftover.write_bytes(b"half-written by a killed run")

    path = corpus.need_corpus_file(C31)

    assert path == target
    assert sha256(path) == corpus.dump_entry(C31)["sha256"]
    # the patch reference was unpacked (and verified) first
    assert sha256(cache / C0) == corpus.dump_entry(C0)["sha256"]
    assert not list(cache.rglob("*.tmp.*")), "temporary files left behind"
    assert path.stat().st_mode & 0o222 == 0  # cached dumps are read-only

    # second use: nothing is redone (same file, not replaced)
    ino = path.stat().st_ino
    assert corpus.corpus_file(C31) == path and path.stat().st_ino == ino

    # stamp lost: the file is checked once and kept
    corpus._stamp_file(path).unlink()
    assert corpus.corpus_file(C31) == path and path.stat().st_ino == ino
    assert corpus._stamp_file(path).is_file()

    # damaged in place (size kept, mtime changed): noticed and unpacked again
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(100_000)
        f.write(b"\xff" * 64)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert sha256(path) != corpus.dump_entry(C31)["sha256"]
    assert sha256(corpus.corpus_file(C31)) == corpus.dump_entry(C31)["sha256"]


@pytest.mark.corpus
def test_unpack_waits_for_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_zstd_corpus()
    monkeypatch.setattr(corpus, "CACHE_ROOT", tmp_path)
    target = corpus.cache_path(C31)
    target.parent.mkdir(parents=True)
    result: dict[str, Any] = {}

    def worker() -> None:
        try:
            result["path"] = corpus.corpus_file(C31)
        except Exception as e:  # reported by the main thread
            result["error"] = e

    with open(corpus._lock_file(target), "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        t = threading.Thread(target=worker)
        t.start()
        time.sleep(0.5)
        assert t.is_alive(), f"corpus_file did not wait for the lock: {result}"
        assert not target.exists() and not corpus.cache_path(C0).exists()
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    t.join(120)
    assert not t.is_alive()
    assert result.get("path") == target, result
    assert sha256(target) == corpus.dump_entry(C31)["sha256"]


@pytest.mark.corpus
def test_concurrent_processes_unpack_once(tmp_path: Path) -> None:
    need_zstd_corpus()
    code = f"import corpus; print(corpus.corpus_file({C31!r}))"
    env = {
        **os.environ,
        "KDUMPTOOL_CACHE": str(tmp_path),
        "KDUMPTOOL_CORPUS": str(corpus.CORPUS_ROOT),
        "PYTHONPATH": str(TESTS_DIR),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=HANG_S) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
        assert out.decode().strip() == str(tmp_path / C31)
    assert sha256(tmp_path / C31) == corpus.dump_entry(C31)["sha256"]
    assert not list(tmp_path.rglob("*.tmp.*"))


# --------------------------------------------------------------------------------------------
# tests/peers.py


def test_require_tool_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDUMPTOOL_MAKEDUMPFILE", "/nonexistent/makedumpfile")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="makedumpfile"):
        peers.require_tool("makedumpfile")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="makedumpfile"):
        peers.require_tool("makedumpfile")
    with pytest.raises(ValueError):
        peers.require_tool("gdb")


def test_subprocess_crash_is_reported_with_its_signal() -> None:
    cmd = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGBUS)"]
    with pytest.raises(peers.PeerCrashed, match="SIGBUS") as info:
        peers._run_json("fake", cmd, {}, timeout=30)
    assert info.value.signal_name == "SIGBUS"
    with pytest.raises(peers.PeerTimeout):
        peers._run_json("fake", [sys.executable, "-c", "import time; time.sleep(60)"], {}, 1)


@pytest.mark.corpus
@pytest.mark.peer
def test_drgn_and_libkdumpfile_agree_on_every_pfn() -> None:
    path = corpus.need_corpus_file(C31)
    peers.require_tool("drgn")
    peers.require_tool("libkdumpfile")
    entry = corpus.dump_entry(C31)
    max_mapnr = entry["header"]["max_mapnr_64"]

    lk = peers.lkdf_scan(path)  # every pfn 0 .. max_pfn-1
    assert set(lk.digests) == set(range(max_mapnr))
    assert len(lk.readable) == entry["pages_in_file"]["dumpable_pages_in_bitmap"] == 21097
    assert len(set(lk.digests.values())) > 10_000  # real, varied pages

    dr = peers.drgn_scan(path, range(max_mapnr))
    assert dr.digests == lk.digests

    excluded = set(range(max_mapnr)) - lk.readable
    assert len(excluded) == max_mapnr - 21097
    assert all("Excluded page" in lk.errors[p] for p in excluded)
    assert all("Excluded page" in dr.errors[p] for p in excluded)

    # the plain-dict API, with explicit pfns including some beyond max_mapnr
    sample = sorted(lk.readable)[:5] + sorted(excluded)[:5] + [max_mapnr, max_mapnr + 999]
    d1 = peers.drgn_page_digests(path, sample)
    d2 = peers.lkdf_page_digests(path, sample)
    assert d1 == d2 == {p: lk.digests.get(p) for p in sample}
    assert d1[max_mapnr] is None and d1[sorted(excluded)[0]] is None


@pytest.mark.corpus
@pytest.mark.peer
def test_drgn_isolated_worker() -> None:
    path = corpus.need_corpus_file(C31)
    peers.require_tool("drgn")
    pfns = list(range(4000, 4200))
    assert peers.drgn_scan(path, pfns, isolate=True).digests == peers.drgn_page_digests(path, pfns)
    assert peers.drgn_open_ok(path, isolate=True) == (True, RELEASE)
    # drgn 0.3.0 reads a page descriptor whose size points past EOF through mmap: SIGBUS.
    # Isolated, that must come back as PeerCrashed (or as an unreadable page if fixed).
    bad = corpus.need_corpus_file(f"{BROKEN}/c-d31-bad-pd-size.kdump")
    pfn = corpus.corpus_json(f"{BROKEN}/c-d31-bad-pd-size.kdump.json")["pfn"]
    try:
        scan = peers.drgn_scan(bad, [pfn], isolate=True)
    except peers.PeerCrashed as e:
        assert e.signal_name == "SIGBUS"
    else:
        assert scan.digests[pfn] is None


@pytest.mark.corpus
@pytest.mark.peer
def test_drgn_open_ok_reads_memory() -> None:
    peers.require_tool("drgn")
    assert peers.drgn_open_ok(corpus.need_corpus_file(C31)) == (True, RELEASE)
    assert RELEASE in peers.drgn_vmcoreinfo(corpus.need_corpus_file(C31)).splitlines()[0]
    ok, msg = peers.drgn_open_ok(corpus.need_corpus_file(f"{BROKEN}/c-d31-bad-signature.kdump"))
    assert not ok and msg.startswith("open:")
    # opens, but the page tables needed to reach init_uts_ns are hidden by the zeroed bitmap
    ok, msg = peers.drgn_open_ok(corpus.need_corpus_file(f"{BROKEN}/c-d31-bitmap2-zeroed4k.kdump"))
    assert not ok and msg.startswith("init_uts_ns:")


@pytest.mark.corpus
@pytest.mark.peer
def test_lkdf_attrs_and_open_errors() -> None:
    path = corpus.need_corpus_file(C31)
    peers.require_tool("libkdumpfile")
    header = corpus.dump_entry(C31)["header"]
    attrs = peers.lkdf_attrs(path)
    assert attrs["file.format"] == "diskdump"
    assert attrs["arch.name"] == "x86_64"
    assert attrs["arch.page_size"] == header["block_size"] == 4096
    assert attrs["linux.uts.release"] == header["utsname.release"] == RELEASE
    assert attrs["cpu.number"] == header["nr_cpus"] == 2
    assert attrs["max_pfn"] == header["max_mapnr_64"]
    assert attrs["linux.vmcoreinfo.raw"] == corpus.corpus_text(f"{SET}/vmcoreinfo.txt")
    with pytest.raises(peers.PeerOpenError, match="Unknown file format"):
        peers.lkdf_attrs(corpus.need_corpus_file(f"{BROKEN}/c-d31-bad-signature.kdump"))


@pytest.mark.corpus
@pytest.mark.peer
@pytest.mark.parametrize(
    ("name", "signal_name"),
    [("c-d31-trunc30.kdump", "SIGBUS"), ("c-d31-bad-blocksize.kdump", "SIGSEGV")],
)
def test_lkdf_crash_becomes_exception(name: str, signal_name: str) -> None:
    """python3-libkdumpfile 0.5.1 (Debian 12) dies on these files (see the corpus MANIFEST)."""
    peers.require_tool("libkdumpfile")
    path = corpus.need_corpus_file(f"{BROKEN}/{name}")
    with pytest.raises(peers.PeerCrashed) as info:
        peers.lkdf_scan(path)
    assert info.value.signal_name == signal_name


@pytest.mark.corpus
@pytest.mark.peer
def test_lkdf_without_mmap_reads_truncated_file() -> None:
    peers.require_tool("libkdumpfile")
    scan = peers.lkdf_scan(corpus.need_corpus_file(f"{BROKEN}/c-d31-trunc30.kdump"), mmap=False)
    assert 0 < len(scan.readable) < 21097
    assert any(e.startswith("CorruptException") for e in scan.errors.values())


@pytest.mark.corpus
@pytest.mark.peer
def test_crash_osrelease() -> None:
    peers.require_tool("crash")
    assert peers.run_crash_osrelease(corpus.need_corpus_file(C31)) == RELEASE
    bad = corpus.need_corpus_file(f"{BROKEN}/c-d31-bad-signature.kdump")
    assert peers.run_crash_osrelease(bad, check=False) != RELEASE
    with pytest.raises(peers.PeerError):
        peers.run_crash_osrelease(bad)


@pytest.mark.corpus
@pytest.mark.peer
def test_makedumpfile_reassembles_and_times_out(tmp_path: Path) -> None:
    peers.require_tool("makedumpfile")
    out = tmp_path / "re.kdump"
    proc = peers.run_makedumpfile(["-R", out], stdin=corpus.need_corpus_file(FLAT))
    assert proc.returncode == 0, proc.stderr.decode()
    assert sha256(out) == corpus.dump_entry(C31)["sha256"]
    # makedumpfile -R never ends on a truncated flattened stream: the time limit stops it
    truncated = corpus.need_corpus_file(f"{BROKEN}/F-c-d31-trunc50.flat").read_bytes()
    t0 = time.monotonic()
    with pytest.raises(peers.PeerTimeout):
        peers.run_makedumpfile(["-R", tmp_path / "cut.kdump"], timeout=2, stdin=truncated)
    assert time.monotonic() - t0 < 30


# --------------------------------------------------------------------------------------------
# the bundled sample dump (corpus/): needs no shared corpus


def bundle_manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((BUNDLE_DIR / "manifest.json").read_text())
    return data


def test_bundled_files_match_their_manifest() -> None:
    m = bundle_manifest()
    dump = BUNDLE_DIR / m["file"]
    assert dump.stat().st_size == m["size"]
    assert sha256(dump) == m["sha256"]
    for key in ("vmcoreinfo", "dmesg"):
        f = BUNDLE_DIR / m[key]["file"]
        assert f.stat().st_size == m[key]["size"] and sha256(f) == m[key]["sha256"]
    vmcoreinfo = (BUNDLE_DIR / m["vmcoreinfo"]["file"]).read_text()
    assert f"OSRELEASE={m['kernel_release']}\n" in vmcoreinfo
    assert f"PAGESIZE={m['page_size']}\n" in vmcoreinfo
    assert m["max_mapnr"] - m["dumpable_pages_in_bitmap"] == m["not_dumped_pfns"]
    assert (BUNDLE_DIR / m["dmesg"]["file"]).read_text().count("\n") == m["dmesg"]["lines"]


@pytest.mark.corpus
def test_bundled_dump_is_the_shared_corpus_file() -> None:
    corpus.need_corpus()
    m = bundle_manifest()
    entry = corpus.dump_entry(m["origin"]["corpus_path"])
    assert (m["sha256"], m["size"]) == (entry["sha256"], entry["size"])
    assert m["makedumpfile_report"] == entry["makedumpfile_report"]
    assert m["dumpable_pages_in_bitmap"] == entry["pages_in_file"]["dumpable_pages_in_bitmap"]
    h = entry["header"]
    assert (m["max_mapnr"], m["nr_cpus"], m["dump_level"], m["compression"]) == (
        h["max_mapnr_64"],
        h["nr_cpus"],
        h["dump_level"],
        h["compression"],
    )
    assert m["vmcoreinfo"]["sha256"] == corpus.other_entry(f"{SET}/vmcoreinfo.txt")["sha256"]
    assert m["dmesg"]["sha256"] == corpus.other_entry(f"{SET}/derived/dmesg.txt")["sha256"]


@pytest.mark.peer
def test_bundled_dump_facts_agree_with_peers() -> None:
    peers.require_tool("libkdumpfile")
    peers.require_tool("crash")
    m = bundle_manifest()
    dump = BUNDLE_DIR / m["file"]
    attrs = peers.lkdf_attrs(dump)
    assert attrs["linux.uts.release"] == m["kernel_release"]
    assert attrs["arch.name"] == m["arch"]
    assert attrs["arch.page_size"] == m["page_size"]
    assert attrs["cpu.number"] == m["nr_cpus"]
    assert attrs["max_pfn"] == m["max_mapnr"]
    assert attrs["linux.vmcoreinfo.raw"] == (BUNDLE_DIR / m["vmcoreinfo"]["file"]).read_text()
    assert len(peers.lkdf_scan(dump).readable) == m["dumpable_pages_in_bitmap"]
    assert peers.run_crash_osrelease(dump) == m["kernel_release"]
