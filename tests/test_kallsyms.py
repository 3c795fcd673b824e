"""kallsyms read from the dump's memory: equal to the guest's own /proc/kallsyms on every
real dump and format, found again by scanning when VMCOREINFO does not name the tables,
judged by drgn; corrupt or hostile tables give one error, never a hang."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import require_tool

from corpus import CORPUS_ROOT, corpus_text, need_corpus_file
from kdumptool.errors import KernelDataError, KernelDataMissingError
from kdumptool.kernel.kallsyms import KallsymsLayout, load_kallsyms
from kdumptool.kernel.session import open_kernel

#: (dump files, guest-info directory) — every format of each real set.
DUMPS = [
    (["x86_64-kdump-320m/vmcore.elf"], "x86_64-kdump-320m/guest-info/crash"),
    (["x86_64-kdump-320m/derived/c-d31.kdump"], "x86_64-kdump-320m/guest-info/crash"),
    (["x86_64-kdump-320m/derived/F-c-d31.flat"], "x86_64-kdump-320m/guest-info/crash"),
    (["x86_64-kdump-320m/derived/split2-c-d31.1", "x86_64-kdump-320m/derived/split2-c-d31.2"],
     "x86_64-kdump-320m/guest-info/crash"),
    (["x86_64-kdump-320m-6.12/vmcore.elf"], "x86_64-kdump-320m-6.12/guest-info/crash"),
    (["x86_64-kdump-320m-6.12/derived/c-d31.kdump"], "x86_64-kdump-320m-6.12/guest-info/crash"),
    (["x86_64-kdump-320m-6.12/derived/E-d31.elf"], "x86_64-kdump-320m-6.12/guest-info/crash"),
    (["x86_64-kdump-320m-6.12/derived/F-l-d0.flat"], "x86_64-kdump-320m-6.12/guest-info/crash"),
    (["x86_64-kdump-320m-6.12/derived/split2-c-d31.1", "x86_64-kdump-320m-6.12/derived/split2-c-d31.2"],
     "x86_64-kdump-320m-6.12/guest-info/crash"),
    (["x86_64-qemu-256m/qemu-elf.vmcore"], "x86_64-qemu-256m/guest-info/idle"),
    (["x86_64-qemu-256m/qemu-kdump-zlib.vmcore"], "x86_64-qemu-256m/guest-info/idle"),
    (["x86_64-qemu-256m/qemu-migrate.qevm"], "x86_64-qemu-256m/guest-info/idle"),
    (["x86_64-qemu-256m-novmcoreinfo/qemu-elf.vmcore"], "x86_64-qemu-256m-novmcoreinfo/guest-info/idle"),
]


@lru_cache(maxsize=8)
def guest_core_kallsyms(info_dir: str) -> tuple[str, ...]:
    """The guest's /proc/kallsyms lines of the core kernel (no ``[module]`` lines)."""
    with gzip.open(CORPUS_ROOT / info_dir / "kallsyms.gz", "rt") as f:
        return tuple(line for line in f.read().splitlines() if "[" not in line)


def _paths(rels: list[str]) -> list[str]:
    return [str(need_corpus_file(r)) for r in rels]


@pytest.mark.corpus
@pytest.mark.parametrize(("rels", "info_dir"), DUMPS, ids=lambda v: v[0] if isinstance(v, list) else "")
def test_symbols_equal_guest_kallsyms(rels: list[str], info_dir: str) -> None:
    guest = guest_core_kallsyms(info_dir)
    with open_kernel(_paths(rels)) as kernel:
        ours = [s.kallsyms_line() for s in kernel.core_symbols]
        assert kernel.core_symbols.encoding == "absolute-percpu"
    assert len(ours) == len(guest)
    assert ours == list(guest)


@pytest.mark.corpus
@pytest.mark.parametrize("rel", ["x86_64-kdump-320m/derived/c-d31.kdump",
                                 "x86_64-kdump-320m-6.12/derived/c-d31.kdump",
                                 "x86_64-qemu-256m-novmcoreinfo/qemu-elf.vmcore"])
def test_scan_finds_the_vmcoreinfo_tables(rel: str) -> None:
    with open_kernel(_paths([rel])) as named, open_kernel(_paths([rel]), scan=True) as scanned:
        a, b = named.core_symbols, scanned.core_symbols
        assert b.layout is not None and b.layout.source == "scan"
        assert a.layout is not None and a.layout.source == "vmcoreinfo"
        assert (b.layout.names, b.layout.token_table, b.layout.offsets) == \
            (a.layout.names, a.layout.token_table, a.layout.offsets)
        assert list(a) == list(b)


@pytest.mark.corpus
def test_scan_is_used_when_vmcoreinfo_lacks_kallsyms(tmp_path) -> None:
    """A VMCOREINFO of a kernel before 6.0 (no kallsyms lines): the scan finds the table."""
    text = corpus_text("x86_64-kdump-320m-6.12/vmcoreinfo.txt")
    stripped = "\n".join(line for line in text.splitlines() if "kallsyms" not in line) + "\n"
    (tmp_path / "vmci").write_text(stripped)
    rel = "x86_64-kdump-320m-6.12/derived/c-d31.kdump"
    with open_kernel(_paths([rel]), vmcoreinfo_file=str(tmp_path / "vmci")) as kernel:
        table = kernel.core_symbols
        assert table.layout is not None and table.layout.source == "scan"
        assert [s.kallsyms_line() for s in table] == list(
            guest_core_kallsyms("x86_64-kdump-320m-6.12/guest-info/crash"))


@pytest.mark.corpus
def test_address_lookups_match_a_plain_search() -> None:
    guest = guest_core_kallsyms("x86_64-kdump-320m-6.12/guest-info/crash")
    text = sorted({int(line.split()[0], 16) for line in guest if line.split()[1] in "tT"})
    with open_kernel(_paths(["x86_64-kdump-320m-6.12/derived/c-d31.kdump"])) as kernel:
        table = kernel.core_symbols
        sched = table.address("schedule")
        assert sched == 0xffffffff952ee1d0
        assert table.format_address(sched + 0x34) == "schedule+0x34/0xc0"
        rng = np.random.default_rng(7)
        for addr in rng.choice(text[:-1], 200).tolist():
            sym, off, size = table.symbolize(addr + 1)
            assert sym.address == addr and off == 1
            assert 0 < size


@pytest.mark.corpus
@pytest.mark.peer
def test_drgn_agrees_on_lookups() -> None:
    """drgn 0.3.0, given only the dump (its own kallsyms reader), resolves the same way."""
    drgn = require_tool("drgn")
    from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

    path = _paths(["x86_64-kdump-320m-6.12/derived/c-d31.kdump"])[0]
    prog = drgn.Program()
    prog.set_core_dump(path)
    prog.register_symbol_finder("kallsyms", load_vmlinux_kallsyms(prog), enable_index=0)
    with open_kernel([path]) as kernel:
        table = kernel.core_symbols
        for name in ("schedule", "init_task", "sysrq_handle_crash", "panic", "__start_BTF"):
            ours = table.address(name)
            assert ours == prog.symbol(name).address, name
        for name in ("schedule", "sysrq_handle_crash", "panic", "do_exit"):
            addr = table.address(name) + 5
            found = table.symbolize(addr)
            theirs = prog.symbol(addr)
            assert found is not None
            assert (found[0].name, found[0].address, found[2]) == (theirs.name, theirs.address,
                                                                  theirs.size)


def test_cli_symbols_lookups() -> None:
    path = _paths(["x86_64-kdump-320m-6.12/derived/c-d31.kdump"])[0]
    run = subprocess.run([sys.executable, "-m", "kdumptool", "symbols", path, "schedule",
                          "0xffffffff952ee204", "ffffffff952ee204"], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["ffffffff952ee1d0 T schedule",
                                       "0xffffffff952ee204 schedule+0x34/0xc0",
                                       "0xffffffff952ee204 schedule+0x34/0xc0"]
    miss = subprocess.run([sys.executable, "-m", "kdumptool", "symbols", path, "no_such_symbol"],
                          capture_output=True, text=True, check=False)
    assert miss.returncode == 1
    assert miss.stderr.count("\n") == 1 and "no_such_symbol" in miss.stderr


# ----------------------------------------------------------------------------------------
# synthetic tables: encodings, long names, hostile bytes


class FakeMemory:
    """Kernel memory backed by one bytes object at ``base`` (what KernelMemory offers)."""

    def __init__(self, blob: bytes, base: int) -> None:
        self.blob, self.base, self.endian, self.path = blob, base, "<", "<fake>"

    def read(self, vaddr: int, size: int, what: str = "") -> bytes:
        off = vaddr - self.base
        if size < 0 or size > 64 << 20 or off < 0 or off + size > len(self.blob):
            raise KernelDataMissingError(f"{what} at {vaddr:#x} not in the fake dump")
        return self.blob[off:off + size]

    def u32(self, vaddr: int, what: str = "") -> int:
        return int(struct.unpack("<I", self.read(vaddr, 4, what))[0])

    def u64(self, vaddr: int, what: str = "") -> int:
        return int(struct.unpack("<Q", self.read(vaddr, 8, what))[0])


BASE = 0xffffffff81000000


def build_table(symbols: list[tuple[int, str, str]], encoding: str) -> tuple[bytes, KallsymsLayout]:
    """Tables as ``scripts/kallsyms.c`` lays them out (names uncompressed: every used byte is
    its own token), in the pre-6.2 order: offsets, relative_base, num_syms, names, tokens."""
    count = len(symbols)
    relbase = min(a for a, t, _ in symbols if t not in "aA")
    words = []
    for i, (addr, typ, _) in enumerate(symbols):
        if encoding == "base-relative":
            words.append(addr - relbase)
        elif encoding == "absolute-percpu":
            words.append(addr if typ in "aA" else relbase - addr - 1)
        else:  # place-relative
            words.append((addr - (BASE + 4 * i) + (1 << 63)) % (1 << 64) - (1 << 63))
    offsets = b"".join(struct.pack("<i" if w < 0 else "<I", w) for w in words)
    offsets += b"\0" * (-len(offsets) % 8)
    names = b""
    for _, typ, name in symbols:
        text = (typ + name).encode()
        n = len(text)
        names += (bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7])) + text
    names += b"\0" * (-len(names) % 8)
    tokens = b"".join(bytes([c, 0]) if c else b"\0" for c in range(256))
    index = struct.pack("<256H", *[0] + [1 + 2 * (c - 1) for c in range(1, 256)])
    head = offsets + struct.pack("<Q", relbase) + struct.pack("<I", count) + b"\0" * 4
    blob = head + names + tokens + b"\0" * (-len(tokens) % 8) + index
    o = BASE
    rb = o + len(offsets)
    num = rb + 8
    nm = num + 8
    tt = nm + len(names)
    ti = tt + len(tokens) + (-len(tokens) % 8)
    return blob, KallsymsLayout(num_syms=num, names=nm, token_table=tt, token_index=ti, offsets=o,
                                relative_base=None if encoding == "place-relative" else rb)


SYMS = [(0x0, "A", "fixed_percpu_data"), (0x1000, "A", "cpu_debug_store"),
        (0xffffffff81000000, "T", "_stext"), (0xffffffff81000010, "T", "x" * 200),
        (0xffffffff81000400, "t", "helper"), (0xffffffff82000000, "D", "init_task")]


@pytest.mark.parametrize("encoding", ["base-relative", "absolute-percpu", "place-relative"])
def test_synthetic_encodings_and_long_names(encoding: str) -> None:
    syms = SYMS if encoding == "absolute-percpu" else SYMS[2:]
    blob, layout = build_table(syms, encoding)
    table = load_kallsyms(FakeMemory(blob, BASE), layout, stext=0xffffffff81000000)
    assert table.encoding == encoding
    assert [(s.address, s.type, s.name) for s in table] == syms
    assert table.format_address(0xffffffff81000011) == f"{'x' * 200}+0x1/0x3f0"


def test_zero_length_and_huge_count_are_one_error() -> None:
    blob, layout = build_table(SYMS[2:], "base-relative")
    bad = bytearray(blob)
    bad[layout.names - BASE] = 0
    with pytest.raises(KernelDataError, match="length 0"):
        load_kallsyms(FakeMemory(bytes(bad), BASE), layout, stext=None)
    bad = bytearray(blob)
    struct.pack_into("<I", bad, layout.num_syms - BASE, 0xFFFFFFFF)
    with pytest.raises(KernelDataError, match="kallsyms_num_syms"):
        load_kallsyms(FakeMemory(bytes(bad), BASE), layout, stext=None)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=8))
def test_mutated_tables_only_raise_kernel_errors(edits: list[tuple[int, int]]) -> None:
    blob, layout = build_table(SYMS, "absolute-percpu")
    bad = bytearray(blob)
    for pos, value in edits:
        bad[pos % len(bad)] = value
    try:
        load_kallsyms(FakeMemory(bytes(bad), BASE), layout, stext=0xffffffff81000000)
    except (KernelDataError, KernelDataMissingError):
        pass


class _Mutated:
    """A real dump's kernel memory with some bytes of the kallsyms tables replaced."""

    def __init__(self, mem: object, edits: dict[int, int]) -> None:
        self.inner, self.edits = mem, edits
        self.endian, self.path = "<", "<mutated>"

    def read(self, vaddr: int, size: int, what: str = "") -> bytes:
        data = bytearray(self.inner.read(vaddr, size, what))  # type: ignore[attr-defined]
        for addr, value in self.edits.items():
            if vaddr <= addr < vaddr + size:
                data[addr - vaddr] = value
        return bytes(data)

    def u32(self, vaddr: int, what: str = "") -> int:
        return int(struct.unpack("<I", self.read(vaddr, 4, what))[0])

    def u64(self, vaddr: int, what: str = "") -> int:
        return int(struct.unpack("<Q", self.read(vaddr, 8, what))[0])


@pytest.mark.corpus
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["num_syms", "names", "token_table", "token_index",
                                           "offsets", "relative_base"]),
                          st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=6))
def test_real_tables_mutated_only_raise_kernel_errors(edits: list[tuple[str, int, int]]) -> None:
    """Bytes of the real 6.12 tables changed in memory: a result or one kernel-data error,
    never another exception, within a CPU-time bound."""
    import time

    with open_kernel(_paths(["x86_64-kdump-320m-6.12/derived/c-d31.kdump"])) as kernel:
        layout = kernel.core_symbols.layout
        assert layout is not None
        where = {name: getattr(layout, name) for name, _, _ in edits}
        mem = _Mutated(kernel.mem, {where[n] + off: v for n, off, v in edits})
        start = time.process_time()
        try:
            load_kallsyms(mem, layout, stext=kernel._stext())  # type: ignore[arg-type]
        except (KernelDataError, KernelDataMissingError):
            pass
        assert time.process_time() - start < 30
