"""Fleets: many real dumps triaged at once (``kdumptool triage PATH... --out DIR``).

The fleet is built from the shared corpus (tests/fleet_corpus.py): hard links, renamed
copies, conversions, a ``.zst`` copy, split sets and damaged files.  The same crash must
give one signature whatever the format or copy; damaged dumps must be results with
their findings, never the end of the run; resuming must give the same file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from fleet_corpus import K61, K612, build_fleet
from ours import kdumptool

from kdumptool.fleet.discover import discover
from kdumptool.fleet.engine import run_local
from kdumptool.fleet.groups import damaged, signature_groups
from kdumptool.fleet.run import run_fleet
from kdumptool.fleet.store import RESULTS_NAME, load_records

pytestmark = pytest.mark.corpus


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return build_fleet(tmp_path_factory.mktemp("fleet"))


@pytest.fixture(scope="module")
def run(fleet, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("fleet-out")
    result = run_fleet([str(fleet.root)], out=str(out), jobs=2)
    return out, result


def _by_key(records: list[dict]) -> dict[str, dict]:
    return {r["dump"]: r for r in records}


def test_discovery_groups_split_sets_and_skips_text(fleet) -> None:
    items = discover([str(fleet.root)])
    keys = [i.key for i in items]
    assert keys == sorted(keys)
    assert sorted(keys) == fleet.dumps  # texts (.json, notes.txt) left out, damaged kept
    for parts in fleet.split_sets:
        item = next(i for i in items if i.paths[0] == parts[0])
        assert item.paths == parts
    assert not any(t in i.paths for i in items for t in fleet.texts)
    # a part given alone is still recognised as (an incomplete) set of one part
    assert [i.paths for i in discover([fleet.split_sets[0][1]])] == [(fleet.split_sets[0][1],)]


def test_same_crash_one_signature_across_formats_and_copies(fleet, run) -> None:
    out, result = run
    recs = _by_key(result.records)
    assert sorted(recs) == fleet.dumps
    for set_ in (K61, K612):
        sigs = {recs[k]["signature"] for k in fleet.same_crash[set_]}
        assert len(sigs) == 1, (set_, {k: recs[k]["signature"] for k in fleet.same_crash[set_]})
        assert all(recs[k]["status"] == "ok" for k in fleet.same_crash[set_])
        assert all(recs[k]["kind"] == "sysrq" for k in fleet.same_crash[set_])
    # two boots (and two kernels) of the same sysrq crash share the signature
    assert recs[fleet.same_crash[K61][0]]["signature"] == recs[fleet.same_crash[K612][0]]["signature"]
    assert fleet.other_boot
    for key in fleet.other_boot:
        assert recs[key]["status"] == "ok" and recs[key]["transport"].startswith("zstd stream")
        assert recs[key]["signature"] == recs[fleet.same_crash[K612][0]]["signature"]
    zst = next(k for k in fleet.same_crash[K612] if k.endswith(".zst"))
    assert recs[zst]["transport"].startswith("zstd stream")
    split = next(k for k in fleet.same_crash[K612] if k.endswith("(+1 parts)"))
    assert len(recs[split]["paths"]) == 2 and recs[split]["health"]["verdict"] == "clean"
    elf = next(k for k in fleet.same_crash[K612] if k.endswith(".elf"))
    assert recs[elf]["format"].startswith("elf") and recs[elf]["page_classes"]["ram_pages"] > 0


def test_damaged_dumps_are_results_with_findings(fleet, run) -> None:
    out, result = run
    recs = _by_key(result.records)
    bad = {r["dump"]: r for r in damaged(result.records)}
    assert set(fleet.damaged) <= set(bad)
    sig = recs[next(k for k in fleet.damaged if k.endswith("bad-signature.kdump"))]
    # a damaged signature whose header, bitmaps and descriptors agree is read (repair restores it)
    assert sig["status"] == "ok" and sig["health"]["verdict"] == "repairable"
    assert any("signature damaged" in f for f in sig["health"]["findings"])
    trunc = recs[next(k for k in fleet.damaged if k.endswith("c-d31-trunc30.kdump"))]
    assert trunc["health"]["verdict"] == "data lost"
    assert any("pages have no data in the file" in f for f in trunc["health"]["findings"])
    for key in fleet.damaged:
        assert recs[key]["health"]["findings"], key


def test_results_file_is_the_records_one_per_line(run) -> None:
    out, result = run
    lines = (out / RESULTS_NAME).read_text().splitlines()
    assert len(lines) == len(result.records) == result.triaged
    assert [json.loads(x) for x in lines] == load_records(str(out / RESULTS_NAME))
    assert (out / "report.html").stat().st_size > 10_000


def test_resume_skips_done_dumps_and_repairs_a_cut_line(fleet, run, tmp_path: Path) -> None:
    out, result = run
    lines = (out / RESULTS_NAME).read_text().splitlines(keepends=True)
    (tmp_path / RESULTS_NAME).write_text("".join(lines[:-2]) + lines[-2][:40])  # killed mid-write
    again = run_fleet([str(fleet.root)], out=str(tmp_path), jobs=2, resume=True, report=False)
    assert again.skipped == len(lines) - 2 and again.triaged == 2
    assert sorted((tmp_path / RESULTS_NAME).read_text().splitlines(keepends=True)) == sorted(lines)
    with pytest.raises(Exception, match="--resume"):
        run_fleet([str(fleet.root)], out=str(tmp_path), jobs=1)


def test_signature_groups(fleet, run) -> None:
    out, result = run
    groups = signature_groups(result.records)
    crash = groups[0]
    same = set(fleet.same_crash[K61] + fleet.same_crash[K612] + fleet.other_boot)
    members = {r["dump"] for r in crash.records}
    assert crash.kind == "sysrq" and members >= same
    assert members - same <= set(fleet.damaged)  # damaged, but the crash is still readable
    assert crash.releases == ["6.1.0-56-amd64", "6.12.118+deb12-amd64"]
    assert crash.first is not None and crash.last is not None and crash.first < crash.last
    assert crash.frames[:2] == ["sysrq_handle_crash", "__handle_sysrq"]
    assert crash.example["health"]["verdict"] == "clean"


def test_cli_fleet_signatures_and_keep(fleet, run, tmp_path: Path) -> None:
    out, result = run
    proc = kdumptool("triage", "--out", out, "--signatures")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    crash = signature_groups(result.records)[0]
    assert text.splitlines()[0].startswith("SIGNATURE")
    assert f"{crash.signature} {crash.count:>5}" in text
    keep = tmp_path / "keep"
    proc = kdumptool("triage", "--out", out, "--keep-one-per-signature", keep)
    assert proc.returncode == 0, proc.stderr
    kept = sorted(p.relative_to(keep) for p in keep.rglob("*") if p.is_file())
    assert len({p.parts[0] for p in kept}) == len(signature_groups(result.records))
    example = Path(crash.example["paths"][0])
    assert os.stat(keep / crash.signature / example.name).st_ino == os.stat(example).st_ino  # a link


def test_cli_runs_a_small_fleet_and_keeps_single_dump_text(fleet, tmp_path: Path) -> None:
    one = fleet.same_crash[K61][0]
    proc = kdumptool("triage", one)
    assert proc.returncode == 0 and proc.stdout.decode().startswith("dump:      ")
    junk = tmp_path / "not-a-dump.bin"
    junk.write_bytes(bytes(range(256)) * 16)
    two = [fleet.same_crash[K61][0], str(junk)]
    proc = kdumptool("triage", "--json", "-j", "1", *two)
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(x) for x in proc.stdout.decode().splitlines()]
    assert sorted(r["dump"] for r in recs) == sorted(two)
    assert {r["status"].split(":")[0] for r in recs} == {"ok", "unreadable"}


def _exit_on_marker(item):  # type: ignore[no-untyped-def]
    """A task that kills its own worker process for one dump (as a crash in C would)."""
    from kdumptool.fleet.task import triage_item

    if item.key.endswith("vmcore-2026-11-22"):
        os._exit(9)
    return triage_item(item)


def test_local_pool_survives_a_dying_worker(fleet) -> None:
    items = [i for i in discover([str(fleet.root / "hosts")])]
    assert len(items) == 3
    sys.path.insert(0, str(Path(__file__).parent))
    recs = _by_key(list(run_local(items, 2, task=_exit_on_marker)))
    assert sorted(recs) == [i.key for i in items]
    killer = recs[next(k for k in recs if k.endswith("vmcore-2026-11-22"))]
    assert killer["status"] == "unreadable: the worker process died while triaging this dump"
    assert all(r["status"] == "ok" for k, r in recs.items() if r is not killer)


@pytest.mark.slow
def test_big_fleet(tmp_path_factory: pytest.TempPathFactory) -> None:
    big = build_fleet(tmp_path_factory.mktemp("big-fleet"), big=True)
    assert len(big.dumps) > 60
    out = tmp_path_factory.mktemp("big-out")
    result = run_fleet([str(big.root)], out=str(out), jobs=2)
    recs = _by_key(result.records)
    assert sorted(recs) == big.dumps
    for set_ in (K61, K612):
        assert len({recs[k]["signature"] for k in big.same_crash[set_]}) == 1, set_
    assert set(d["dump"] for d in damaged(result.records)) >= {
        k for k in big.damaged if recs[k]["health"]["exit_code"] != 0}
    assert len(signature_groups(result.records)) <= 3


def test_report_in_a_real_browser(fleet, run, tmp_path: Path) -> None:
    from browser import load_page

    out, result = run
    page = out / "report.html"
    html = page.read_text()
    # self-contained: nothing fetched at view time (only the SVG namespace URIs are URLs)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script" not in html
    shot = tmp_path / "fleet-report.png"
    seen = load_page(page, shot)
    artifacts = Path(__file__).resolve().parent.parent / ".cache" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, artifacts / "fleet-report.png")
    assert seen.console == []
    groups = signature_groups(result.records)
    assert seen.dom.count('<details id="d-') == len(result.records)
    for g in groups:
        assert g.signature in seen.dom
    assert seen.dom.count("<svg") >= 3  # the matplotlib charts, inline
    for key in fleet.damaged:
        assert key in seen.dom.split('id="damaged"')[1].split('id="dumps"')[0]
    assert "data-loss: offset" in seen.dom
    assert shot.stat().st_size > 50_000  # a page with charts, not a blank one


def test_browser_check_sees_console_errors(tmp_path: Path) -> None:
    """The console check above is real: a page that logs an error is caught."""
    from browser import load_page

    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><p>x</p><script>console.error("fleet-test-marker")</script>')
    seen = load_page(page, tmp_path / "bad.png", size=(200, 200))
    assert any("fleet-test-marker" in m for m in seen.console)
