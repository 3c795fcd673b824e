"""Fleets on a real Dask cluster: a ``distributed.LocalCluster`` of two worker processes
on loopback (no mocks).  The cluster must give the same ``triage.jsonl`` (lines sorted)
as the local process pool, and a worker killed mid-run must not lose a dump.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from fleet_corpus import K61, K612, _link, _split

from corpus import need_corpus_file
from kdumptool.fleet.run import run_fleet
from kdumptool.fleet.store import RESULTS_NAME

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.corpus


@pytest.fixture(scope="module")
def small_fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight dumps: copies of both crashes, two split sets, damaged files."""
    root = tmp_path_factory.mktemp("dask-fleet")
    for set_ in (K61, K612):
        c = need_corpus_file(f"{set_}/derived/c-d31.kdump")
        for i in range(2):
            _link(c, root / set_ / f"host{i}" / "vmcore")
        _split(root, f"{set_}/split", set_)
    _link(need_corpus_file(f"{K61}/broken/c-d31-bad-signature.kdump"), root / "broken/bad-signature.kdump")
    _link(need_corpus_file(f"{K612}/broken/c-d31-trunc30.kdump"), root / "broken/trunc30.kdump")
    return root


@pytest.fixture(scope="module")
def local_lines(small_fleet: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("local")
    run_fleet([str(small_fleet)], out=str(out), jobs=2, report=False)
    return sorted((out / RESULTS_NAME).read_text().splitlines())


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=50) as c:
        yield c


def test_cluster_output_equals_local(small_fleet: Path, local_lines: list[str], cluster,
                                     tmp_path: Path) -> None:
    assert len(local_lines) == 8
    res = run_fleet([str(small_fleet)], out=str(tmp_path), dask=cluster.scheduler_address, report=False)
    assert res.triaged == 8
    assert sorted((tmp_path / RESULTS_NAME).read_text().splitlines()) == local_lines


def test_killing_a_worker_mid_run_loses_nothing(small_fleet: Path, local_lines: list[str], cluster,
                                                 tmp_path: Path) -> None:
    killed: list[tuple[str, int]] = []
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as watcher:
        pids = watcher.run(os.getpid)

        def kill_busy_worker(rec: dict, done: int, total: int) -> None:
            if killed:
                return
            busy = {w: keys for w, keys in watcher.processing().items() if keys}
            if not busy:
                return
            worker = sorted(busy)[0]
            os.kill(pids[worker], signal.SIGKILL)
            killed.append((worker, len(busy[worker])))

        res = run_fleet([str(small_fleet)], out=str(tmp_path), dask=cluster.scheduler_address,
                        report=False, on_record=kill_busy_worker)
    assert killed and killed[0][1] >= 1  # a worker died with a dump in its hands
    assert res.triaged == 8
    assert sorted((tmp_path / RESULTS_NAME).read_text().splitlines()) == local_lines


def test_convert_split_on_the_cluster_is_byte_identical(cluster, tmp_path: Path) -> None:
    from ours import kdumptool

    src = need_corpus_file(f"{K612}/derived/c-d31.kdump")
    local = [tmp_path / f"local.{i}" for i in (1, 2, 3)]
    remote = [tmp_path / f"dask.{i}" for i in (1, 2, 3)]
    common = ["convert", "-q", "--split", "--splitblock-size", "4096", "-c", "-d", "31", "--threads", "1"]
    proc = kdumptool(*common, src, *local)
    assert proc.returncode == 0, proc.stderr
    proc = kdumptool(*common[:1], *common[2:], "--dask", cluster.scheduler_address, src, *remote)
    assert proc.returncode == 0, proc.stderr
    assert b"written by a task on tcp://127.0.0.1" in proc.stderr
    sizes = [p.stat().st_size for p in remote]
    assert len(set(sizes)) == 3 and min(sizes) > 1 << 20  # three real parts, not empty ones
    for a, b in zip(local, remote, strict=True):
        assert a.read_bytes() == b.read_bytes(), b
    assert not list(tmp_path.glob(".*kdumptool-tmp"))
    proc = kdumptool("info", "--json", *remote)  # the parts form one dump again
    assert proc.returncode == 0 and b'"incomplete": false' in proc.stdout


def test_convert_dask_needs_split(cluster, tmp_path: Path) -> None:
    from ours import kdumptool

    src = need_corpus_file(f"{K612}/derived/c-d31.kdump")
    proc = kdumptool("convert", "--dask", cluster.scheduler_address, src, tmp_path / "out")
    assert proc.returncode == 2 and b"needs --split" in proc.stderr
