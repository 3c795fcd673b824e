"""The built-in profiles on the real 6.12 kernel, with kernel objects the corpus guest did not
have planted in its memory as the kernel would lay them out (every offset from the dump's BTF):
keys of types encrypted, trusted, big_key and logon, and a task in a UTS namespace of its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from corpus import need_corpus_file
from kdumptool.kernel.memory import KernelMemory
from kdumptool.kernel.session import Kernel, open_kernel
from kdumptool.kernel.structs import Fields
from kdumptool.scrub.profiles import parse_profiles, run_profiles

pytestmark = pytest.mark.corpus

#: Where planted objects live: kernel addresses no page table of the dump maps.
FAKE = 0xFFFFC9FF00000000


class PlantedMemory(KernelMemory):
    """The dump's memory, with ``patches`` over real bytes and ``blobs`` at fake addresses."""

    def __init__(self, reader: Any) -> None:
        super().__init__(reader)
        self.patches: dict[int, bytes] = {}
        self.blobs: dict[int, bytes] = {}

    def read(self, vaddr: int, size: int, what: str = "memory") -> bytes:
        for base, blob in self.blobs.items():
            if base <= vaddr and vaddr + size <= base + len(blob):
                return blob[vaddr - base:vaddr - base + size]
        data = bytearray(super().read(vaddr, size, what))
        for at, value in self.patches.items():  # the part of each patch inside the read
            lo, hi = max(at, vaddr), min(at + len(value), vaddr + size)
            if lo < hi:
                data[lo - vaddr:hi - vaddr] = value[lo - at:hi - at]
        return bytes(data)


def _q(value: int) -> bytes:
    return value.to_bytes(8, "little")


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    with open_kernel(str(need_corpus_file("x86_64-kdump-320m-6.12/vmcore.elf"))) as k:
        k.mem = PlantedMemory(k.reader)
        yield k


def _user_key(kernel: Kernel) -> tuple[int, Fields]:
    """The guest's one user key ("opal-boot-pin") and struct key's fields."""
    from kdumptool.scrub.profiles import _rb_inorder

    k = Fields(kernel.btf, "key", ("serial", "type", "serial_node", "payload"))
    btf = kernel.btf
    for node in _rb_inorder(kernel, kernel.symbol("key_serial_tree"), btf.offsetof("rb_node", "rb_left"),
                            btf.offsetof("rb_node", "rb_right")):
        key = node - k.offset("serial_node")
        if k.int(kernel.mem.read(key, k.size), "serial") == 0x30DDEF59:
            return key, k
    raise AssertionError("the corpus' user key is missing")


@pytest.mark.parametrize("type_name, payload, want_offset, want_size, rule", [
    ("logon", {16: (40).to_bytes(2, "little")}, 24, 40, "payload.data"),
    ("encrypted", {60: (77).to_bytes(2, "little")}, 72, 77, "payload.payload_data"),
    ("big_key", None, 0, 300, "payload.data"),
])
def test_key_payloads_by_type(kernel: Kernel, type_name: str, payload: dict[int, bytes] | None,
                              want_offset: int, want_size: int, rule: str) -> None:
    mem = kernel.mem
    assert isinstance(mem, PlantedMemory)
    key, k = _user_key(kernel)
    ktype, name, blob = FAKE, FAKE + 0x1000, FAKE + 0x2000
    mem.blobs = {ktype: _q(name) + bytes(200), name: type_name.encode().ljust(64, b"\0"),
                 blob: bytes(4096)}
    mem.patches = {key + k.offset("type"): _q(ktype)}
    if payload is not None:  # payload.data[0] -> the payload struct (offsets: 6.12's BTF)
        raw = bytearray(4096)
        for at, value in payload.items():
            raw[at:at + len(value)] = value
        mem.blobs[blob] = bytes(raw)
        mem.patches[key + k.offset("payload")] = _q(blob)
    else:  # big_key: {data, path.mnt, path.dentry, length} inline in payload.data[]
        mem.patches[key + k.offset("payload")] = _q(blob) + _q(0) + _q(0) + _q(300)
    try:
        result = run_profiles(kernel, ["keys"])
    finally:
        mem.blobs, mem.patches = {}, {}
    (t,) = result.targets
    assert (t.vaddr, t.size) == (blob + want_offset, want_size)
    assert t.rule == f"key_serial_tree[0x30ddef59].{rule}" and t.origin == "profile keys"


def test_file_backed_big_key_erases_its_encryption_key(kernel: Kernel) -> None:
    mem = kernel.mem
    assert isinstance(mem, PlantedMemory)
    key, k = _user_key(kernel)
    mem.blobs = {FAKE: _q(FAKE + 0x1000) + bytes(64), FAKE + 0x1000: b"big_key".ljust(64, b"\0")}
    mem.patches = {key + k.offset("type"): _q(FAKE),
                   key + k.offset("payload"): _q(FAKE + 0x2000) + _q(FAKE + 8) + _q(FAKE + 16) + _q(1 << 20)}
    try:
        (t,) = run_profiles(kernel, ["keys"]).targets
    finally:
        mem.blobs, mem.patches = {}, {}
    assert (t.vaddr, t.size) == (FAKE + 0x2000, 32)  # the chacha20poly1305 key, not the file


def test_a_task_in_its_own_uts_namespace(kernel: Kernel) -> None:
    """init_uts_ns, then each other namespace a task's nsproxy reaches: both fields each."""
    mem = kernel.mem
    assert isinstance(mem, PlantedMemory)
    btf = kernel.btf
    task = next(t for t in kernel.tasks() if t.pid > 1)
    proxy, ns = FAKE, FAKE + 0x1000
    mem.blobs = {proxy: bytes(btf.offsetof("nsproxy", "uts_ns")) + _q(ns) + bytes(64), ns: bytes(512)}
    mem.patches = {task.address + btf.offsetof("task_struct", "nsproxy"): _q(proxy)}
    try:
        result = run_profiles(kernel, ["hostname"])
    finally:
        mem.blobs, mem.patches = {}, {}
    rules = [(t.rule, t.size) for t in result.targets]
    assert rules == [("init_uts_ns.name.nodename", 64), ("init_uts_ns.name.domainname", 64),
                     ("t.nsproxy.uts_ns.name.nodename", 64), ("t.nsproxy.uts_ns.name.domainname", 64)]
    nodename = btf.offsetof("uts_namespace", "name.nodename")
    assert result.targets[2].vaddr == ns + nodename
    assert result.header_fields == ("nodename", "domainname")
    assert len({t.command for t in result.targets}) == 4


def test_a_key_tree_that_loops_is_reported_not_followed(kernel: Kernel) -> None:
    mem = kernel.mem
    assert isinstance(mem, PlantedMemory)
    key, k = _user_key(kernel)
    node = key + k.offset("serial_node")
    root = kernel.symbol("key_serial_tree")
    mem.patches = {node + kernel.btf.offsetof("rb_node", "rb_left"): _q(mem.u64(root))}
    try:
        result = run_profiles(kernel, ["keys"])
    finally:
        mem.patches = {}
    assert result.targets == [] and any("repeats" in n for n in result.notes)


def test_profile_names() -> None:
    assert parse_profiles(["all"]) == ["hostname", "dmesg", "keys", "files", "user", "free"]
    assert parse_profiles(["user,hostname", "keys"]) == ["hostname", "keys", "user"]
    with pytest.raises(ValueError, match="unknown scrub profile 'x'"):
        parse_profiles(["x"])


def test_a_key_type_whose_payload_struct_no_btf_has_is_reported(kernel: Kernel) -> None:
    """trusted keys need ``struct trusted_key_payload`` (module trusted): this kernel's BTF
    has it nowhere, so the key is reported, not guessed at."""
    mem = kernel.mem
    assert isinstance(mem, PlantedMemory)
    key, k = _user_key(kernel)
    mem.blobs = {FAKE: _q(FAKE + 0x1000) + bytes(64), FAKE + 0x1000: b"trusted".ljust(64, b"\0")}
    mem.patches = {key + k.offset("type"): _q(FAKE)}
    try:
        result = run_profiles(kernel, ["keys"])
    finally:
        mem.blobs, mem.patches = {}, {}
    assert result.targets == []
    assert any("struct trusted_key_payload is in no BTF of the dump" in n for n in result.notes), result.notes


def test_per_cpu_free_list_pages_are_free_and_not_buddy_pages(kernel: Kernel) -> None:
    """Every page on a per-CPU free list has ``_refcount`` 0 and is not a buddy page (so dump
    level 16 keeps it); the free profile leaves them out."""
    from kdumptool.pipeline import Selection
    from kdumptool.scrub.pcp import page_to_pfn, pcp_free_pages

    pfns, notes = pcp_free_pages(kernel)
    assert notes == [] and 100 < len(pfns) < 5000
    btf = kernel.btf
    size = btf.sizeof(btf.find("page", "struct"))
    ref, mapcount = btf.offsetof("page", "_refcount"), btf.offsetof("page", "_mapcount")
    to_pfn = page_to_pfn(kernel)
    vmemmap = kernel.mem.u64(kernel.symbol("vmemmap_base"))
    assert to_pfn(vmemmap + 5 * size) == 5 and to_pfn(vmemmap + 5 * size + 8) is None
    buddy = kernel.vmcoreinfo.number("PAGE_BUDDY_MAPCOUNT_VALUE")
    for pfn in pfns.tolist():
        raw = kernel.mem.read(vmemmap + pfn * size, size)
        assert int.from_bytes(raw[ref:ref + 4], "little") == 0, hex(pfn)
        assert int.from_bytes(raw[mapcount:mapcount + 4], "little", signed=True) != buddy, hex(pfn)
    sel = Selection(kernel.reader, 16)
    start = int(pfns[0]) // 8 * 8
    kept = sel.masks(start, 8)[1]
    assert kept[int(pfns[0]) - start]  # level 16 alone keeps it
    result = run_profiles(kernel, ["free"])
    assert result.dump_level == 16 and np.array_equal(result.exclude, pfns)
