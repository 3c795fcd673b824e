"""Tasks, modules, taint, uptime and the triage report read from real dumps with the dump's
own kallsyms and BTF, against what the guest itself said (guest-info: ps, lsmod, tainted,
dmesg)."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

import pytest

from corpus import CORPUS_ROOT, REPO_ROOT, corpus_text, need_corpus_file
from kdumptool.errors import KernelDataError
from kdumptool.kernel.crashlog import parse_crash_log
from kdumptool.kernel.session import open_kernel
from kdumptool.kernel.state import read_taint
from kdumptool.kernel.structs import walk_list
from kdumptool.kernel.triage import crash_signature, normalize_function, triage

SETS = ["x86_64-kdump-320m", "x86_64-kdump-320m-6.12"]
#: every format of one dump: the triage must not depend on the container
FORMATS = ["vmcore.elf", "derived/c-d31.kdump", "derived/l-d31.kdump", "derived/E-d31.elf",
           "derived/F-c-d31.flat", "derived/split2-c-d31.1+derived/split2-c-d31.2"]


def _paths(set_: str, rel: str) -> list[str]:
    return [str(need_corpus_file(f"{set_}/{r}")) for r in rel.split("+")]


def guest_ps(set_: str) -> dict[int, str]:
    """pid -> comm from the guest's busybox ``ps`` (comm in [], {} or the command's name)."""
    out = {}
    for line in corpus_text(f"{set_}/guest-info/crash/ps.txt").splitlines()[1:]:
        pid, _user, cmd = line.split(None, 2)
        m = re.match(r"[\[{]([^\]}]*)[\]}]", cmd)
        out[int(pid)] = m.group(1) if m else Path(cmd.split()[0]).name
    return out


def guest_lsmod(set_: str) -> dict[str, int]:
    lines = corpus_text(f"{set_}/guest-info/crash/lsmod.txt").splitlines()[1:]
    return {ln.split()[0]: int(ln.split()[1]) for ln in lines}


@pytest.mark.corpus
@pytest.mark.parametrize("set_", SETS)
def test_ps_equals_guest_ps(set_: str) -> None:
    with open_kernel(_paths(set_, "derived/c-d31.kdump")) as kernel:
        tasks = kernel.tasks()
    ours = {t.pid: t.comm for t in tasks if t.pid == t.tgid and t.pid}
    guest = guest_ps(set_)
    common = set(ours) & set(guest)
    assert len(common) >= 0.9 * len(guest)
    for pid in common:  # /proc adds a workqueue worker's current work to its name: "-events"
        assert guest[pid] == ours[pid] or (ours[pid].startswith("kworker/")
                                           and guest[pid].startswith(ours[pid] + "-")), pid
    # the guest's ps ran seconds before the crash, before the scratch disk was unmounted:
    # only that ps, short-lived sleeps and the unmounted ext4's threads may differ
    transient = {"ps", "sleep", "ext4-rsv-conver", "ext4lazyinit", "kworker/R-ext4-"}
    assert {guest[p] for p in set(guest) - common} <= transient
    assert {ours[p] for p in set(ours) - common} <= transient | {"kworker/1:2"}
    idle = sorted(t.comm for t in tasks if t.pid == 0)
    assert idle == ["swapper/0", "swapper/1"]
    running = {t.pid for t in tasks if t.running}
    assert 1 in running  # init wrote to /proc/sysrq-trigger
    assert all(t.state in "RSDTtXZPI" for t in tasks)


@pytest.mark.corpus
@pytest.mark.parametrize("set_", SETS)
def test_modules_equal_guest_lsmod(set_: str) -> None:
    with open_kernel(_paths(set_, "derived/c-d31.kdump")) as kernel:
        mods = kernel.modules()
        taint = kernel.taint()
    assert {m.name: m.size for m in mods} == guest_lsmod(set_)
    assert [m.name for m in mods] == list(guest_lsmod(set_))  # newest first, as lsmod
    assert taint.source == "taint_flags"
    tainted = CORPUS_ROOT / set_ / "guest-info/crash/tainted.txt"
    if tainted.exists():
        assert taint.mask == int(tainted.read_text().split()[0])
    assert taint.text == "Not tainted"


@pytest.mark.corpus
@pytest.mark.parametrize("set_", SETS)
def test_triage_names_the_sysrq_crash(set_: str) -> None:
    paths = _paths(set_, "derived/c-d31.kdump")
    with open_kernel(paths) as kernel:
        report = triage(kernel, paths=paths)
    log = parse_crash_log(corpus_text(f"{set_}/derived/dmesg.txt"))
    assert report.kind == "sysrq" and report.reason == "sysrq triggered crash"
    assert (report.cpu, report.pid, report.comm) == (log.cpu, 1, "init")
    assert any(f.startswith("sysrq_handle_crash+") for f in report.trace)
    assert report.pc is not None and report.pc.startswith("__crash_kexec+")
    assert any(s.startswith("sysrq_handle_crash+") for s in report.stack)
    assert report.taint == "Not tainted" and report.health["verdict"] == "clean"
    assert report.uptime is not None and abs(report.uptime - int(float(
        re.search(r"\[\s*(\d+\.\d+)\].*sysrq triggered crash", corpus_text(
            f"{set_}/derived/dmesg.txt")).group(1)))) <= 1
    assert "sysrq_handle_crash" in report.signature_input
    assert not report.errors


@pytest.mark.corpus
@pytest.mark.slow
@pytest.mark.parametrize("set_", SETS)
def test_signature_is_the_same_in_every_format(set_: str) -> None:
    sigs = set()
    for rel in FORMATS:
        with open_kernel(_paths(set_, rel)) as kernel:
            sigs.add(triage(kernel, health=False).signature)
    assert len(sigs) == 1


def test_signature_ignores_addresses_pids_and_suffixes() -> None:
    a, _ = crash_signature("bug", "unable to handle page fault for address: ffffa1b2c3d40000 pid 77",
                           ["dump_stack_lvl", "panic", "foo.cold", "bar.constprop.0", "baz"])
    b, parts = crash_signature("bug", "unable to handle page fault for address: ffff99887766000 pid 12",
                               ["panic", "foo", "bar", "baz"])
    assert a == b and parts[2:] == ["foo", "bar", "baz"]
    c, _ = crash_signature("bug", "unable to handle page fault", ["foo", "other"])
    assert c != a
    assert normalize_function("x.isra.0.cold") == "x"


@pytest.mark.corpus
def test_cli_ps_modules_triage() -> None:
    path = _paths("x86_64-kdump-320m-6.12", "derived/c-d31.kdump")[0]

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "kdumptool", *args], capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    ps = run("ps", path).splitlines()
    assert ps[0].split() == ["PID", "PPID", "CPU", "ST", "TASK", "COMM"]
    assert any(line.startswith(">") and line.split()[1] == "1" and line.endswith("init") for line in ps)
    mods = run("modules", path)
    assert "virtio_blk" in mods and "kernel: Not tainted" in mods
    text = run("triage", path)
    assert "reason:    sysrq: sysrq triggered crash" in text
    assert "crashed:   CPU 0, PID 1 (init)" in text


class _RingMemory:
    """A fake kernel memory: a dict of 8-byte words (list nodes)."""

    path, endian = "<fake>", "<"

    def __init__(self, words: dict[int, int]) -> None:
        self.words = words

    def u64(self, vaddr: int, what: str = "") -> int:
        return self.words[vaddr]


def test_walk_list_stops_on_cycles_and_bounds() -> None:
    ring = _RingMemory({0x100: 0x200, 0x200: 0x300, 0x300: 0x100})
    assert list(walk_list(ring, 0x100, what="t")) == [0x200, 0x300]
    loop = _RingMemory({0x100: 0x200, 0x200: 0x300, 0x300: 0x200})
    with pytest.raises(KernelDataError, match="cycle"):
        list(walk_list(loop, 0x100, what="t"))
    null = _RingMemory({0x100: 0x200, 0x200: 0})
    with pytest.raises(KernelDataError, match="null"):
        list(walk_list(null, 0x100, what="t"))
    long = _RingMemory({0x100: 0x108, **{0x100 + 8 * i: 0x108 + 8 * i for i in range(1, 50)}})
    with pytest.raises(KernelDataError, match="more than 10"):
        list(walk_list(long, 0x100, what="t", limit=10))


class _TaintKernel:
    def __init__(self, mask: int) -> None:
        self.mask = mask
        self.mem = self

    def u64(self, vaddr: int, what: str = "") -> int:
        return self.mask

    def symbol(self, name: str) -> int:
        return 0x1000

    @property
    def btf(self):  # noqa: ANN201 - no BTF: the documented fallback letters are used
        from kdumptool.errors import KdumpToolError

        raise KdumpToolError("no BTF")


def test_taint_text_as_the_kernel_prints_it() -> None:
    t = read_taint(_TaintKernel((1 << 0) | (1 << 9) | (1 << 12)))
    assert t.letters == "PWO" and t.source == "fallback"
    assert t.text == "Tainted: P        W  O       "
    assert read_taint(_TaintKernel(0)).text == "Not tainted"


@pytest.mark.corpus
@pytest.mark.slow
@pytest.mark.parametrize(("cmd", "only"), [("triage", ""), ("ps", "trunc")])
def test_damaged_dumps_give_one_line_or_a_result(cmd: str, only: str) -> None:
    """Every damaged dump of the corpus: the kernel commands answer, or fail with one error
    line naming the file (no traceback), within a generous CPU-time bound."""
    import resource

    pattern = f"*{only}*.zst" if only else "*.zst"
    broken = sorted((CORPUS_ROOT / "x86_64-kdump-320m-6.12" / "broken").glob(pattern))
    assert broken
    for zst in broken:
        path = need_corpus_file(f"x86_64-kdump-320m-6.12/broken/{zst.name[:-4]}")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        done = subprocess.run([sys.executable, "-m", "kdumptool", cmd, str(path)], capture_output=True,
                              text=True, check=False, timeout=600)
        used = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before
        assert used < 60, (zst.name, used)
        assert "Traceback" not in done.stderr, (zst.name, done.stderr[-2000:])
        if done.returncode:
            assert done.stderr.count("\n") <= 2 and "error:" in done.stderr, (zst.name, done.stderr)


BOOT2 = REPO_ROOT / "corpus" / "x86_64-kdump-384m-6.12-boot2"


@pytest.mark.corpus
def test_same_crash_on_another_boot_has_the_same_signature() -> None:
    """The corpus 6.12 kernel crashed by sysrq on two boots (320 and 384 MiB: other KASLR
    offsets, other memory): addresses differ, the signature does not."""
    second = str(BOOT2 / "capture-E-d31.elf.zst")
    with open_kernel([second]) as kernel:
        two = triage(kernel, health=False)
        with gzip.open(BOOT2 / "kallsyms.gz", "rt") as f:
            guest = [ln for ln in f.read().splitlines() if "[" not in ln]
        assert [s.kallsyms_line() for s in kernel.core_symbols] == guest
        stext_two = kernel.symbol("_stext")
    with open_kernel(_paths("x86_64-kdump-320m-6.12", "derived/c-d31.kdump")) as kernel:
        one = triage(kernel, health=False)
        stext_one = kernel.symbol("_stext")
    assert stext_one != stext_two  # KASLR put the kernel elsewhere
    assert one.release == two.release and one.build_id == two.build_id
    assert one.signature == two.signature
    assert one.pc == two.pc  # the same function and offset, at another address
