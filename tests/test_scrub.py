"""``kdumptool scrub`` on the real dumps: every erased range reads back as X (or zeros) through
drgn, every other byte of every page equals the source, makedumpfile reads the result and keeps
its ERASEINFO, the old kernel log and the key payload are gone, bad configurations are refused
with their line before anything is written, and corrupt lists end bounded and reported."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ours import kdumptool, read_all_pages

from corpus import corpus_text, need_corpus_file
from kdumptool.errors import ScrubConfigError
from kdumptool.metadata import source_eraseinfo
from kdumptool.open import open_dumps
from kdumptool.pipeline import Selection
from kdumptool.scrub import prepare_scrub
from kdumptool.scrub.plan import ERASE_BYTE, ErasePlan

pytestmark = pytest.mark.corpus

SET_612 = "x86_64-kdump-320m-6.12"
SET_61 = "x86_64-kdump-320m"
PROFILES = "hostname,dmesg,keys"

#: A configuration exercising every form on the 6.1 kernel: annotations, the three loops, a
#: char * string, nullify, a size read from each loop element.
CONFIG_61_COMMON = """\
# kdumptool scrub test configuration
[vmlinux]
erase init_uts_ns:struct uts_namespace.name.nodename
for m in modules.next within module:list
\terase m.name
\terase m.srcversion size m.num_kp
endfor
for r in iomem_resource:struct resource.child via sibling
\terase r.name
endfor
erase init_task.active_mm nullify
erase saved_command_line
[no_such_module]
erase whatever
"""
CONFIG_61 = CONFIG_61_COMMON.replace("erase init_task.active_mm", """\
for n in node_data:struct pglist_data*[1024]
\terase n.node_present_pages
endfor
erase init_task.active_mm""")


def _src(set_: str) -> Path:
    return need_corpus_file(f"{set_}/vmcore.elf")


def _plan(src: Path, *, level: int, **kw: Any) -> tuple[Any, Any, dict[int, bytes]]:
    """The scrub the command line makes, resolved by the library on the source, with the pages
    the output must hold (source pages with the pieces applied)."""
    with open_dumps([str(src)]) as reader:
        setup = prepare_scrub(reader, **kw)
        selection = Selection(reader, level | setup.dump_level)
        outcome = setup.plan.outcome(selection)
    return setup, outcome, {}


@pytest.fixture(scope="module")
def scrubbed_612(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """6.12 vmcore scrubbed with hostname, dmesg and keys, uncompressed (a byte search of the
    file is then a search of memory), dump level 31."""
    src = _src(SET_612)
    out = tmp_path_factory.mktemp("scrub") / "out.kdump"
    r = kdumptool("scrub", "--scrub", PROFILES, "-d", "31", src, out)
    assert r.returncode == 0, r.stderr.decode()
    setup, outcome, _ = _plan(src, level=31, profiles=PROFILES.split(","))
    return {"src": src, "out": out, "stderr": r.stderr.decode(), "setup": setup, "outcome": outcome}


def _expected_pages(src: Path, plan: ErasePlan, pfns: list[int]) -> dict[int, bytes]:
    with open_dumps([str(src)]) as reader:
        want = {}
        for pfn in pfns:
            page = bytearray(reader.read_page(pfn))
            for i in np.flatnonzero(plan.pfn == pfn).tolist():
                at = int(plan.paddr[i]) % reader.page_size
                page[at:at + int(plan.size[i])] = bytes([int(plan.fill[i])]) * int(plan.size[i])
            want[pfn] = bytes(page)
    return want


def test_every_page_is_the_source_page_with_only_the_planned_bytes_erased(
        scrubbed_612: dict[str, Any]) -> None:
    setup, outcome = scrubbed_612["setup"], scrubbed_612["outcome"]
    plan = setup.plan
    with open_dumps([str(scrubbed_612["out"])]) as out_reader:
        got = read_all_pages(out_reader)
    with open_dumps([str(scrubbed_612["src"])]) as src_reader:
        sel = Selection(src_reader, 31)
        kept = [start + int(i) for start, count in sel.windows()
                for i in np.flatnonzero(sel.masks(start, count)[1])]
    assert sorted(got) == kept  # the same pages as a plain -d 31
    touched = set(plan.pfn[outcome.in_output].tolist())
    assert len(touched) == outcome.pages > 30
    want = _expected_pages(scrubbed_612["src"], plan, sorted(touched))
    changed_bytes = 0
    with open_dumps([str(scrubbed_612["src"])]) as src_reader:
        for pfn, page in got.items():
            if pfn in touched:
                assert page == want[pfn], f"pfn {pfn:#x}"
                before = np.frombuffer(src_reader.read_page(pfn), dtype=np.uint8)
                changed_bytes += int((before != np.frombuffer(page, dtype=np.uint8)).sum())
            else:
                assert page == src_reader.read_page(pfn), f"pfn {pfn:#x} changed but holds no erased byte"
    assert 0 < changed_bytes <= outcome.bytes


def test_drgn_reads_every_erased_range_as_x(scrubbed_612: dict[str, Any]) -> None:
    from peers import _drgn_program, require_tool

    require_tool("drgn")
    setup = scrubbed_612["setup"]
    prog, before = _drgn_program(scrubbed_612["out"]), _drgn_program(scrubbed_612["src"])
    rules = set()
    for t in setup.plan.targets:
        data = prog.read(t.vaddr, t.size)  # drgn's own page-table walk
        assert data == bytes([ERASE_BYTE]) * t.size, t.rule
        assert before.read(t.vaddr, t.size) != data, t.rule
        rules.add(t.rule.split("[")[0])
    assert {"init_uts_ns.name.nodename", "init_uts_ns.name.domainname", "prb.text_data_ring.data",
            "key_serial_tree"} <= rules
    # the release and the rest of the utsname are intact: drgn still identifies the kernel
    uts = prog.read(setup.plan.targets[0].vaddr - 65, 3 * 65)
    assert uts[:6] == b"Linux\0" and uts[130:134] == b"6.12"


def test_header_and_eraseinfo(scrubbed_612: dict[str, Any]) -> None:
    with open_dumps([str(scrubbed_612["out"])]) as reader:
        assert reader.info.utsname is not None
        assert reader.info.utsname.nodename == "X" * 64 and reader.info.utsname.domainname == "X" * 64
        text = source_eraseinfo(reader).decode()
        assert reader.info.header_version == 6
    assert text == scrubbed_612["outcome"].eraseinfo.decode()
    assert text.splitlines() == ["erase init_uts_ns.name.nodename size 64",
                                 "erase init_uts_ns.name.domainname size 64",
                                 "erase prb.text_data_ring.data size 131072",
                                 "erase key_serial_tree[0x30ddef59].payload.data size 255"]
    info = json.loads(kdumptool("info", "--json", scrubbed_612["out"]).stdout)
    assert info["eraseinfo"] == text.splitlines()
    shown = kdumptool("info", scrubbed_612["out"]).stdout.decode()
    assert "eraseinfo:     erase init_uts_ns.name.nodename size 64" in shown
    assert "131455 bytes erased in 35 pages" in scrubbed_612["stderr"]


def test_no_old_log_text_is_left(scrubbed_612: dict[str, Any]) -> None:
    """Every line of the old log (24 characters or more) that is still in a page of the output
    is in a page of the kernel image: a format string the kernel prints, not the log. In the
    source most of them are also in the log ring."""
    src = scrubbed_612["src"]
    log = kdumptool("dmesg", src).stdout.decode()
    texts = sorted({line.split("] ", 1)[1] for line in log.splitlines() if "] " in line} - {""})
    texts = [t.encode() for t in texts if len(t) >= 24]
    assert len(texts) > 300
    with open_dumps([str(src)]) as reader:
        from kdumptool.kernel.session import open_kernel
        from kdumptool.vtop import translator_for

        with open_kernel(str(src)) as kernel:
            xlat = translator_for(kernel.reader)
            image = range(xlat.ranges(kernel.symbol("_text"), 1)[0][0] // 4096,
                          xlat.ranges(kernel.symbol("_end") - 1, 1)[0][0] // 4096 + 1)
        in_ring_before = {t for t in texts
                          if any(t in reader.read_page(int(p)) for p in
                                 set(scrubbed_612["setup"].plan.pfn.tolist()))}
    assert len(in_ring_before) > 200
    with open_dumps([str(scrubbed_612["out"])]) as out_reader:
        for pfn, page in read_all_pages(out_reader).items():
            if pfn in image:
                continue
            left = [t for t in texts if t in page]
            assert not left, f"pfn {pfn:#x} still holds log text {left[:3]}"
    dm = kdumptool("dmesg", scrubbed_612["out"]).stdout.decode().splitlines()
    assert len(dm) == len(log.splitlines())
    assert all(set(line.split("] ", 1)[1]) <= {"X"} for line in dm if "] " in line)


def test_key_payload_is_gone_from_every_byte(scrubbed_612: dict[str, Any]) -> None:
    """The user key's payload (\"opal-boot-pin\", 255 bytes) read from the source is in no byte
    of the output file; the key itself (its description) is still there."""
    setup = scrubbed_612["setup"]
    key = next(t for t in setup.plan.targets if t.rule.startswith("key_serial_tree"))
    out = scrubbed_612["out"].read_bytes()
    assert b"opal-boot-pin" in out
    with open_dumps([str(scrubbed_612["src"])]) as reader:
        (paddr, size), = setup.plan.pieces_of(setup.plan.targets.index(key))
        payload = reader.read(paddr, size)
        # the payload with 32 bytes of its surroundings on each side: unique in the source
        context = reader.read(paddr - 32, size + 64)
    assert size == 255 and context in scrubbed_612["src"].read_bytes()
    assert context not in out
    assert context[:32] + b"X" * 255 + context[-32:] in out
    assert len(payload) == 255


def test_makedumpfile_reads_the_scrubbed_dump_and_keeps_eraseinfo(scrubbed_612: dict[str, Any],
                                                                  tmp_path: Path) -> None:
    from peers import require_tool, run_makedumpfile

    require_tool("makedumpfile")
    out = scrubbed_612["out"]
    r = run_makedumpfile(["--dump-dmesg", out, tmp_path / "dmesg.txt"])
    assert r.returncode == 0, r.stderr.decode()
    lines = (tmp_path / "dmesg.txt").read_text(errors="replace").splitlines()
    assert len(lines) > 400 and all(set(line.split("] ", 1)[1]) <= {"X"} for line in lines if "] " in line)
    r = run_makedumpfile(["-c", "-d", "31", out, tmp_path / "refiltered.kdump"])
    assert r.returncode == 0, r.stderr.decode()
    with open_dumps([str(tmp_path / "refiltered.kdump")]) as reader:
        assert source_eraseinfo(reader) == scrubbed_612["outcome"].eraseinfo


def test_conversions_carry_eraseinfo_and_a_second_scrub_appends(scrubbed_612: dict[str, Any],
                                                                tmp_path: Path) -> None:
    out, first = scrubbed_612["out"], scrubbed_612["outcome"].eraseinfo
    elf = tmp_path / "s.elf"
    assert kdumptool("convert", "-E", out, elf).returncode == 0
    with open_dumps([str(elf)]) as reader:
        notes = [n for n in reader.info.notes if n.name == b"ERASEINFO"]
        assert len(notes) == 1 and notes[0].type == 0 and notes[0].desc.rstrip(b"\0") == first
    conf = tmp_path / "more.conf"
    conf.write_text("erase saved_command_line size saved_command_line_len:size_t\n")
    again = tmp_path / "again.kdump"
    r = kdumptool("scrub", "--config", conf, "-z", elf, again)
    assert r.returncode == 0, r.stderr.decode()
    with open_dumps([str(again)]) as reader:
        text = source_eraseinfo(reader)
        cmdline = reader.info.vmcoreinfo is not None
    assert cmdline
    assert text.startswith(first) and text[len(first):].startswith(b"erase saved_command_line size ")
    assert text.count(b"\n") == first.count(b"\n") + 1
    back = tmp_path / "back.kdump"  # and ELF -> kdump keeps it too
    assert kdumptool("convert", "-c", again, back).returncode == 0
    with open_dumps([str(back)]) as reader:
        assert source_eraseinfo(reader) == text


def test_dry_run_lists_every_range_and_writes_nothing(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src = _src(SET_612)
    monkeypatch.chdir(tmp_path)
    r = kdumptool("scrub", "--scrub", PROFILES, "--dry-run", src)  # (as convert --dry-run: IN only)
    assert r.returncode == 0, r.stderr.decode()
    text = r.stdout.decode()
    assert not list(tmp_path.iterdir())
    for rule in ("init_uts_ns.name.nodename", "prb.text_data_ring.data", "key_serial_tree["):
        assert rule in text
    assert "paddr 0x" in text and "(profile keys)" in text
    assert "scrub: 4 ranges, 131455 bytes erased in 35 pages of the output" in text
    doc = json.loads(kdumptool("scrub", "--scrub", PROFILES, "--dry-run", "--json", src).stdout)
    ranges = doc["scrub"]["ranges"]
    assert [r["rule"] for r in ranges][:2] == ["init_uts_ns.name.nodename", "init_uts_ns.name.domainname"]
    assert ranges[2]["size"] == 131072 and sum(p["size"] for p in ranges[2]["pieces"]) == 131072
    assert int(ranges[0]["vaddr"], 16) > 0 and all(p["in_output"] for r in ranges for p in r["pieces"])
    assert doc["scrub"]["bytes"] == 131455 and len(doc["scrub"]["eraseinfo"]) == 4


@pytest.mark.parametrize("config, line, words", [
    ("erase init_uts_ns.name.nodename\nerase no_such_symbol_x\n", 2, "not in the kernel's kallsyms"),
    ("\nerase init_uts_ns.name.nodenam\n", 2, "has no member 'nodenam'"),
    ("erase init_uts_ns.name.nodename nullify\n", 1, "'nullify' needs a pointer"),
    ("erase init_uts_ns:struct task_struct.comm\n", 1, "type mismatch"),
    ("erase init_uts_ns:struct no_such_struct.x\n", 1, "no type 'struct no_such_struct'"),
    ("erase iomem_resource.name\n", 1, "does not give the type of 'iomem_resource'"),
    ("erase init_task.stack\n", 1, "void *: give 'size' or 'nullify'"),
    ("erase init_uts_ns.name size init_uts_ns.name.sysname\n", 1, "not an integer"),
    ("for t in init_task.comm via next\n erase t\nendfor\n", 1, "not a struct"),
    ("for t in init_task.tasks within task_struct:comm\n erase t.comm\nendfor\n", 1, "not struct list_head"),
    ("for t in init_uts_ns\n erase t\nendfor\n", 1, "a loop needs an array"),
    ("for t in init_task.tasks within task_struct:tasks\n erase t.nosuch\nendfor\n", 2, "no member 'nosuch'"),
    ("erase runqueues\n", 1, "per-CPU"),
])
def test_bad_configs_are_refused_with_their_line_before_writing(config: str, line: int, words: str,
                                                                tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text(config)
    out = tmp_path / "out.kdump"
    r = kdumptool("scrub", "--config", conf, _src(SET_612), out)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert err.startswith(f"kdumptool: error: {conf}:{line}: ") and words in err, err
    assert err.count("\n") == 1 and not out.exists()


def test_a_config_of_every_form_on_6_1(tmp_path: Path) -> None:
    from peers import _drgn_program, require_tool

    src = _src(SET_61)
    conf = tmp_path / "all.conf"
    conf.write_text(CONFIG_61)
    out = tmp_path / "out.kdump"
    r = kdumptool("scrub", "--config", conf, "-c", "-d", "31", src, out)
    assert r.returncode == 0, r.stderr.decode()
    assert "module no_such_module is not loaded: its section is skipped" in r.stderr.decode()
    setup, outcome, _ = _plan(src, level=31, config_path=str(conf))
    with open_dumps([str(out)]) as reader:
        lines = source_eraseinfo(reader).decode().splitlines()
    assert lines == outcome.eraseinfo.decode().splitlines()
    rules = [line.split()[1] for line in lines]
    names = {t.rule for t in setup.plan.targets}
    assert {"init_uts_ns.name.nodename", "m.name", "r.name", "n.node_present_pages",
            "init_task.active_mm", "saved_command_line"} <= names
    lsmod = corpus_text(f"{SET_61}/guest-info/crash/lsmod.txt").splitlines()[1:]
    assert rules.count("m.name") == len(lsmod) == 13  # every module the guest's lsmod listed
    assert rules.count("n.node_present_pages") == 1  # one NUMA node; the NULL slots are skipped
    assert "erase init_task.active_mm nullify" in lines
    assert rules.count("r.name") >= 5
    with open_dumps([str(src)]) as reader:
        from kdumptool.kernel.session import open_kernel

        with open_kernel(str(src)) as kernel:
            for t in setup.plan.targets:
                if t.rule == "r.name":  # char *: the string, without its NUL, up to 1024 bytes
                    assert 0 < t.size == len(kernel.mem.cstr(t.vaddr, 1024)) <= 1024
    require_tool("drgn")
    prog = _drgn_program(out)
    for t in setup.plan.targets:
        assert prog.read(t.vaddr, t.size) == (b"\0" if t.nullify else b"X") * t.size, t.rule
    assert outcome.bytes == sum(t.size for t in setup.plan.targets) > 13 * 56


def test_corrupt_lists_end_bounded_and_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ring that loops back to a node other than its head, a ``via`` chain that loops, and a
    list longer than the bound: each loop erases what it reached and says why it stopped."""
    from kdumptool.kernel.memory import KernelMemory
    from kdumptool.kernel.session import open_kernel
    from kdumptool.scrub import resolve
    from kdumptool.scrub.config import parse_config

    class Patched(KernelMemory):
        patches: dict[int, bytes] = {}

        def read(self, vaddr: int, size: int, what: str = "memory") -> bytes:
            data = bytearray(super().read(vaddr, size, what))
            for at, value in self.patches.items():
                if vaddr <= at and at + len(value) <= vaddr + size:
                    data[at - vaddr:at - vaddr + len(value)] = value
            return bytes(data)

    with open_kernel(str(_src(SET_612))) as kernel:
        mods = [m.address for m in kernel.modules()]
        link = kernel.btf.offsetof("module", "list")
        tasks = [t.address for t in kernel.tasks() if t.pid == t.tgid and t.pid > 1][:2]
        parent = kernel.btf.offsetof("task_struct", "parent")
        kernel.mem = Patched(kernel.reader)
        Patched.patches = {  # module 3's next is module 1; init_task -> A -> B -> A via parent
            mods[3] + link: (mods[1] + link).to_bytes(8, "little"),
            kernel.symbol("init_task") + parent: tasks[0].to_bytes(8, "little"),
            tasks[0] + parent: tasks[1].to_bytes(8, "little"),
            tasks[1] + parent: tasks[0].to_bytes(8, "little")}
        config = parse_config("for m in modules within module:list\n erase m.name\nendfor\n"
                              "for t in init_task via parent\n erase t.comm\nendfor\n", "c.conf")
        targets, notes = resolve.resolve_config(kernel, config)
        assert [t.rule for t in targets].count("m.name") == 4  # modules 0..3, then the cycle
        assert [t.rule for t in targets].count("t.comm") == 3
        assert any("c.conf:1: the list ends early" in n and "cycle" in n for n in notes), notes
        assert any("c.conf:4: the chain through 'parent' loops back" in n for n in notes), notes
        Patched.patches = {}
        monkeypatch.setattr(resolve, "MAX_ITERATIONS", 5)
        targets, notes = resolve.resolve_config(kernel, config)
        assert [t.rule for t in targets].count("m.name") == 5
        assert any("more than 5 entries" in n for n in notes), notes


def test_unknown_profile_and_missing_options(tmp_path: Path) -> None:
    src = _src(SET_612)
    r = kdumptool("scrub", src, tmp_path / "o")
    assert r.returncode == 2 and b"needs --config FILE or --scrub PROFILE" in r.stderr
    r = kdumptool("scrub", "--scrub", "hostname,passwords", src, tmp_path / "o")
    assert r.returncode == 2 and b"unknown scrub profile 'passwords'" in r.stderr
    assert not (tmp_path / "o").exists()
    with open_dumps([str(src)]) as reader, pytest.raises(ScrubConfigError):
        prepare_scrub(reader, profiles=["nope"])


def test_profiles_files_and_user_exclude_page_classes(tmp_path: Path) -> None:
    """files and user are dump levels 4 and 8: the guest's page-cache and user-memory markers
    are in the source and in no byte of the output."""
    src = _src(SET_612)
    out = tmp_path / "fu.kdump"
    r = kdumptool("filter", "-d", "1", "--scrub", "files,user", src, out)
    assert r.returncode == 0, r.stderr.decode()
    err = r.stderr.decode()
    assert "dump level 13" in err and "dump level bits 12 added (files, user)" in err
    whole = src.read_bytes()
    with open_dumps([str(out)]) as reader:
        assert reader.info.dump_level == 13
        data = b"".join(read_all_pages(reader).values())
    # the data, repeated lines (the marker word alone is also in the console's tty buffer, where
    # the guest's ps printed the command that made them)
    for marker in (b"CORPUS-USER-MARKER-A\n" * 2, b"CORPUS-PAGECACHE-MARKER-fedcba9876543210\n" * 2):
        assert marker in whole and marker not in data


def test_streaming_copies_only_windows_with_pieces() -> None:
    src = _src(SET_612)
    with open_dumps([str(src)]) as reader:
        setup = prepare_scrub(reader, profiles=["hostname"])
        wrapped = setup.reader(reader)
        pfn = int(setup.plan.pfn[0])
        far = (pfn + 4 * reader.window_pages) % reader.max_pfn
        batch = reader.read_batch(far, 64)
        assert setup.plan.apply(batch) is batch  # nothing to erase: the very same batch
        before = reader.read_batch(pfn, 1)
        after = wrapped.read_batch(pfn, 1)
        assert after.data is not before.data and before.data[0].tobytes() == reader.read_page(pfn)
        assert after.data[0].tobytes().count(b"X" * 64 + b"\0") == 2


def test_cli_help_documents_profiles() -> None:
    out = subprocess.run([*kdumptool_cmd(), "scrub", "--help"], capture_output=True, text=True).stdout
    for word in ("hostname", "dmesg", "keys", "files", "user", "ERASEINFO", "0x58"):
        assert word in out


def kdumptool_cmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "kdumptool"]


#: The debug vmlinux of the 6.1 set's kernel (``linux-image-6.1.0-56-amd64-dbg``;
#: ``../shared/corpus-tools/10-fetch-kernel.sh`` extracts it): makedumpfile needs it for --config.
DEBUG_VMLINUX_61 = os.environ.get("KDUMPTOOL_DEBUG_VMLINUX_61",
                                  "/tmp/scrub-dbg/usr/lib/debug/boot/vmlinux-6.1.0-56-amd64")


@pytest.mark.peer
@pytest.mark.slow
def test_same_bytes_erased_as_makedumpfile_with_debug_vmlinux(tmp_path: Path) -> None:
    """makedumpfile 1.7.2 --config with the debug vmlinux and kdumptool with only the dump's
    BTF and kallsyms write the same pages and the same ERASEINFO for the same configuration
    (without the annotations makedumpfile does not know, and without the loop over
    ``node_data``, whose length makedumpfile reads as 0 from its extern declaration)."""
    from peers import require_tool, run_makedumpfile

    require_tool("makedumpfile")
    if not Path(DEBUG_VMLINUX_61).is_file():
        pytest.skip(f"no debug vmlinux at {DEBUG_VMLINUX_61} (set KDUMPTOOL_DEBUG_VMLINUX_61)")
    src = _src(SET_61)
    ours_conf = CONFIG_61_COMMON
    mdf_conf = ours_conf.replace(":struct uts_namespace", "").replace(":struct resource", "")
    (tmp_path / "ours.conf").write_text(ours_conf)
    (tmp_path / "mdf.conf").write_text(mdf_conf)
    r = run_makedumpfile(["-c", "-d", "31", "--config", tmp_path / "mdf.conf", "-x", DEBUG_VMLINUX_61,
                          src, tmp_path / "mdf.kdump"], timeout=900)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    r2 = kdumptool("scrub", "--config", tmp_path / "ours.conf", "-c", "-d", "31", src,
                   tmp_path / "ours.kdump")
    assert r2.returncode == 0, r2.stderr.decode()
    with open_dumps([str(tmp_path / "mdf.kdump")]) as a, open_dumps([str(tmp_path / "ours.kdump")]) as b:
        assert source_eraseinfo(a) == source_eraseinfo(b) and source_eraseinfo(a).count(b"\n") > 20
        pa, pb = read_all_pages(a), read_all_pages(b)
    assert pa.keys() == pb.keys()
    assert [p for p in pa if pa[p] != pb[p]] == []


def _stored(reader: Any, pfn: int) -> tuple[int, bytes]:
    """A kdump page as stored: its descriptor's flags and its bytes in the file."""
    d = reader._descs(reader.rank(pfn), 1)[0]
    return int(d["flags"]), reader.source.pread(int(d["offset"]), int(d["size"]))


def test_untouched_pages_are_stored_as_they_were(tmp_path: Path) -> None:
    """Scrubbing makedumpfile's own zlib kdump file with zlib: every page the scrub does not
    touch is stored with the very bytes makedumpfile stored (same codec, same zlib); the
    touched ones differ."""
    src = need_corpus_file(f"{SET_61}/derived/c-d31.kdump")
    out = tmp_path / "out.kdump"
    r = kdumptool("scrub", "--scrub", PROFILES, "-c", src, out)
    assert r.returncode == 0, r.stderr.decode()
    setup, outcome, _ = _plan(src, level=0, profiles=PROFILES.split(","))
    touched = set(setup.plan.pfn[outcome.in_output].tolist())
    assert len(touched) == outcome.pages > 30
    with open_dumps([str(src)]) as a, open_dumps([str(out)]) as b:
        assert a.info.dump_level == b.info.dump_level == 31
        same = differ = 0
        for start, count in b.data_windows():
            for pfn in (start + np.flatnonzero(b.bitmaps(start, count)[1])).tolist():
                if pfn in touched:
                    assert _stored(a, pfn) != _stored(b, pfn)
                    differ += 1
                else:
                    assert _stored(a, pfn) == _stored(b, pfn), f"pfn {pfn:#x}"
                    same += 1
    assert differ == len(touched) and same > 20000


def test_elf_output_and_split_sets(tmp_path: Path) -> None:
    """scrub -E: drgn reads the nodename as X through the ELF file, whose ERASEINFO note holds
    the record; --split: part 1 carries the record, part 2 none, and reassembling gives it once."""
    from peers import _drgn_program, require_tool

    src = _src(SET_61)
    elf = tmp_path / "s.elf"
    r = kdumptool("scrub", "--scrub", "hostname", "-E", "-d", "31", src, elf)
    assert r.returncode == 0, r.stderr.decode()
    with open_dumps([str(elf)]) as reader:
        assert source_eraseinfo(reader) == (b"erase init_uts_ns.name.nodename size 64\n"
                                            b"erase init_uts_ns.name.domainname size 64\n")
        vmci = reader.info.vmcoreinfo
        assert vmci is not None
        nodename = vmci.symbol("init_uts_ns") + 65
    require_tool("drgn")
    assert _drgn_program(elf).read(nodename, 65) == b"X" * 64 + b"\0"
    parts = [tmp_path / "p1", tmp_path / "p2"]
    r = kdumptool("scrub", "--scrub", "hostname", "--split", "--splitblock-size", "4096", "-c", "-d", "31",
                  src, *parts)
    assert r.returncode == 0, r.stderr.decode()
    from kdumptool.open import open_dump

    texts = []
    for p in parts:  # each part on its own
        with open_dump(str(p)) as reader:
            texts.append(source_eraseinfo(reader))
    assert texts[0].count(b"\n") == 2 and texts[1] == b""
    assert kdumptool("reassemble", *parts, tmp_path / "whole.kdump").returncode == 0
    with open_dumps([str(tmp_path / "whole.kdump")]) as reader:
        assert source_eraseinfo(reader) == texts[0]
