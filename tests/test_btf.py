"""The BTF parser: every kind in both byte orders, split BTF, every header/section/record check
at its exact offset, the real vmlinux and module BTF of the 6.12 corpus kernel (layouts known
from the kernel's sources, every reference valid, every record as bpftool reads it), and
hostile input (only BtfError, bounded time)."""

from __future__ import annotations

import functools
import gzip
import subprocess
import time
from pathlib import Path

import hypothesis.strategies as st
import pytest
from builders_btf import BtfBuilder, every_kind
from hypothesis import HealthCheck, given, settings
from peers import require_tool

from corpus import CORPUS_ROOT, corpus_available, in_ci
from kdumptool.errors import BtfError, BtfLookupError, CorruptDumpError
from kdumptool.kernel.btf import Btf, BtfType

GUEST_BTF = CORPUS_ROOT / "x86_64-kdump-320m-6.12" / "guest-info" / "crash" / "btf"
MODULES = ("crc16", "crc32c_generic", "ext4", "jbd2", "libcrc32c", "mbcache", "qemu_fw_cfg", "virtio_blk")


# ---- synthetic: every kind ------------------------------------------------------------------


@pytest.fixture(params=["<", ">"], ids=["little", "big"])
def synthetic(request: pytest.FixtureRequest) -> tuple[Btf, dict[str, int]]:
    b = BtfBuilder(endian=request.param)
    ids = every_kind(b)
    return Btf.parse(b.build(), name="synthetic"), ids


def test_every_kind_decodes(synthetic: tuple[Btf, dict[str, int]]) -> None:
    btf, ids = synthetic
    t = btf.type
    assert len(btf.types) == btf.nr_types + 1 and btf.types[0].kind == "void"
    assert t(ids["int"]) == BtfType(ids["int"], "int", "int", size=4, int_encoding=1, int_bits=32)
    assert t(ids["int"]).is_signed and not t(ids["uint"]).is_signed
    assert t(ids["arr16"]).array is not None and t(ids["arr16"]).array.nelems == 16
    assert t(ids["fwd"]).kind_flag and btf.format_type(ids["fwd"]) == "union opaque"
    assert t(ids["enum"]).enumerators == (("RED", 0), ("MINUS", -2)) and t(ids["enum"]).is_signed
    assert t(ids["uenum"]).enumerators == (("TOP", 0xFFFFFFFF),)
    assert t(ids["enum64"]).enumerators == (("HUGE", 1 << 40), ("NEG", -1))
    assert t(ids["func"]).linkage == 1 and t(ids["var"]).linkage == 1
    assert [(p.name, p.type) for p in t(ids["proto"]).params] == [("arg", ids["ptr_void"]), ("", 0)]
    sec = t(ids["datasec"])
    assert sec.size == 4 and [(v.type, v.offset, v.size) for v in sec.vars] == [(ids["var"], 0, 4)]
    assert t(ids["float"]).size == 8 and t(ids["decl_tag"]).component_idx == -1
    assert t(ids["decl_tag_member"]).component_idx == 1 and t(ids["type_tag"]).name == "rcu"
    assert btf.pointer_size == 8 and btf.endian == btf.header.endian


def test_names_sizes_and_resolution(synthetic: tuple[Btf, dict[str, int]]) -> None:
    btf, ids = synthetic
    names = {
        "ptr_void": "void *", "ptr_const_char": "const char *", "arr16": "char [16]",
        "ptr_list": "struct list_head *", "ptr_proto": "int (*)(void *, ...)",
        "func": "int do_thing(void *, ...)", "var": "int counter", "const_ptr": "const char *const",
        "ptr_arr": "char (*)[16]", "restrict_ptr": "void *restrict", "anon_union": "union {...}",
        "typedef_list": "list_t", "volatile_int": "volatile int", "type_tag": "void *",
        "datasec": "section .data..percpu", "enum64": "enum e64",
    }
    assert {k: btf.format_type(ids[k]) for k in names} == names
    assert btf.resolve(ids["typedef_list"]).name == "list_head"
    assert btf.resolve(ids["volatile_int"]).id == ids["int"]
    sizes = {"arr16": 16, "ptr_proto": 8, "typedef_list": 16, "thing": 64, "enum64": 8, "var": 4}
    assert {k: btf.sizeof(ids[k]) for k in sizes} == sizes
    for no_size in ("proto", "func", "fwd"):
        with pytest.raises(BtfError, match="has no size"):
            btf.sizeof(ids[no_size])
    assert btf.find("list_t").kind == "typedef" and btf.find("struct list_head").id == ids["list_head"]
    assert btf.find("opaque").kind == "fwd"  # only a fwd exists: it is returned
    with pytest.raises(BtfLookupError, match="no struct named 'nothing'") as e:
        btf.find("nothing", "struct")
    assert isinstance(e.value, KeyError) and isinstance(e.value, CorruptDumpError)


def test_members_paths_anonymous_and_bitfields(synthetic: tuple[Btf, dict[str, int]]) -> None:
    btf, ids = synthetic
    assert btf.offsetof("thing", "u_b") == 8  # inside the anonymous union at bit 64
    assert btf.offsetof("thing", "node.prev") == 24  # through a typedef'd struct
    assert btf.offsetof(ids["thing"], "name") == 32 and btf.offsetof("list_t", "next") == 0
    m = btf.member("thing", "more")
    assert (m.bit_offset, m.bitfield_size, m.type) == (35, 5, ids["uint"])
    lo, hi = btf.member("old_bits", "lo"), btf.member("old_bits", "hi")  # width from the int
    assert (lo.bit_offset, lo.bitfield_size, hi.bit_offset, hi.bitfield_size) == (0, 4, 4, 4)
    with pytest.raises(BtfError, match="bitfield"):
        btf.offsetof("thing", "flags")
    with pytest.raises(BtfLookupError, match="struct thing has no member 'nope'"):
        btf.member("thing", "nope")
    with pytest.raises(BtfLookupError, match="struct list_head has no member 'nope'"):
        btf.member("thing", "node.nope")
    with pytest.raises(BtfError, match="member 'id' of struct thing is 'int', not a struct or union"):
        btf.member("thing", "id.x")
    with pytest.raises(BtfError, match="is not a struct or union"):
        btf.member(ids["int"], "x")


def test_split_btf_continues_ids_and_strings() -> None:
    base = BtfBuilder()
    ids = every_kind(base)
    split = BtfBuilder(base=base)
    own = split.struct("mod_state", 24, [("list", ids["list_head"], 0, 0), ("count", ids["int"], 128, 0)])
    ptr = split.ref("ptr", own)
    vmlinux = Btf.parse(base.build(), name="base")
    mod = Btf.parse(split.build(), base=vmlinux, name="mod")
    assert mod.start_id == len(vmlinux.types) == own and mod.str_start == len(base.strings)
    assert len(mod.types) == own + 2 and mod.types[ids["int"]].name == "int"
    assert mod.format_type(ptr) == "struct mod_state *" and mod.offsetof("mod_state", "list.prev") == 8
    assert mod.find("list_head").id == ids["list_head"] and mod.find("mod_state").id == own
    with pytest.raises(BtfError, match="does not start with the empty string"):  # not a base
        Btf.parse(split.build(), name="alone")
    with pytest.raises(BtfError, match="name offset out of range"):  # on the wrong base
        Btf.parse(split.build(), base=Btf.parse(BtfBuilder().build()), name="wrong base")


# ---- synthetic: every check, at its offset -----------------------------------------------------


def _blob(**override: int) -> bytes:
    b = BtfBuilder()
    every_kind(b)
    return b.build(**override)


def _record_offset(b: BtfBuilder, tid: int) -> int:
    return 24 + 4 * sum(len(r) for r in b.records[:tid - 1])


@pytest.mark.parametrize(("data", "offset", "match"), [
    (b"\x9f\xeb\x01", 0, "header cut short"),
    (b"\x00\x00" + _blob()[2:], 0, "bad magic"),
    (_blob(version=2), 2, "unsupported BTF version"),
    (_blob(hdr_len=20), 4, "bad BTF header length"),
    (_blob(type_len=1 << 20), 8, "type section runs past"),
    (_blob(str_len=1 << 20), 16, "string section runs past"),
    (_blob(type_off=2), 8, "4-byte words"),
    (_blob(type_len=6), 12, "4-byte words"),
    (_blob(str_off=8), 16, "overlap"),
])
def test_header_checks(data: bytes, offset: int, match: str) -> None:
    with pytest.raises(BtfError, match=match) as e:
        Btf.parse(data, name="bad.btf")
    assert e.value.offset == offset and str(e.value).startswith(f"bad.btf: offset {offset:#x}: ")


def test_string_section_checks() -> None:
    b = BtfBuilder()
    b.int_("int", 4)
    good = b.build()
    str_at = 24 + len(b.type_section())
    with pytest.raises(BtfError, match="does not start with the empty string") as e:
        Btf.parse(good[:str_at] + b"x" + good[str_at + 1:])
    assert e.value.offset == str_at
    with pytest.raises(BtfError, match="does not end with NUL") as e:
        Btf.parse(good[:-1] + b"x")
    assert e.value.offset == len(good) - 1


def test_record_checks_name_their_offset() -> None:
    b = BtfBuilder()
    ids = every_kind(b)
    words = [list(r) for r in b.records]

    def parse_with(tid: int, index: int, value: int) -> BtfError:
        saved = b.records[tid - 1][index]
        b.records[tid - 1][index] = value
        try:
            with pytest.raises(BtfError) as e:
                Btf.parse(b.build(), name="bad")
        finally:
            b.records[tid - 1][index] = saved
        assert e.value.offset == _record_offset(b, tid) + 4 * index, str(e.value)
        return e.value

    thing = ids["thing"]
    assert "unknown kind" in str(parse_with(thing, 1, 25 << 24))
    assert "name offset out of range" in str(parse_with(thing, 0, 1 << 20))
    assert "type id out of range in type" in str(parse_with(ids["ptr_void"], 2, 5000))
    assert "array type id" in str(parse_with(ids["arr16"], 4, 5000))
    assert f"type {thing} (struct)" in str(parse_with(thing, 3 + 3 * 2 + 1, 5000))  # a member's type
    assert "name offset" in str(parse_with(ids["enum"], 3 + 2, 1 << 20))  # an enumerator's name
    assert "type id" in str(parse_with(ids["datasec"], 3, 5000))
    last = len(b.records)
    assert "runs past the end" in str(parse_with(last, 1, (4 << 24) | 1000))
    assert words == [list(r) for r in b.records]
    one = BtfBuilder()
    one.int_("int", 4)
    with pytest.raises(BtfError, match="type 1 cut short by the end of the type section") as exc:
        Btf.parse(one.build(type_len=8), name="cut")  # 8 bytes of a 16-byte record
    assert exc.value.offset == 24


def test_loops_are_errors_not_hangs() -> None:
    b = BtfBuilder()
    first = b.next_id
    b.ref("typedef", first + 1, "a")
    b.ref("typedef", first, "b")
    b.struct("self", 8, [("", first + 2, 0, 0), ("x", first, 0, 0)])  # anonymous member: itself
    btf = Btf.parse(b.build())
    with pytest.raises(BtfError, match="longer than"):
        btf.resolve(first)
    with pytest.raises(BtfError):
        btf.sizeof(first)
    assert btf.format_type(first) == "a"
    with pytest.raises(BtfLookupError, match="has no member 'missing'"):
        btf.member("self", "missing")


# ---- the real 6.12 kernel's BTF -------------------------------------------------------------------


def _need_guest_btf() -> None:
    if not corpus_available() or not (GUEST_BTF / "vmlinux.gz").is_file():
        if in_ci():
            pytest.fail(f"guest BTF missing at {GUEST_BTF} (CI is set)")
        pytest.skip(f"guest BTF missing at {GUEST_BTF}")


@functools.cache
def guest_blob(name: str) -> bytes:
    return gzip.decompress((GUEST_BTF / f"{name}.gz").read_bytes())


@functools.cache
def guest_vmlinux() -> Btf:
    return Btf.parse(guest_blob("vmlinux"), name="vmlinux")


def guest_module(name: str) -> Btf:
    return Btf.parse(guest_blob(name), base=guest_vmlinux(), name=name)


@pytest.mark.corpus
def test_vmlinux_btf_counts_and_known_layouts() -> None:
    _need_guest_btf()
    blob = guest_blob("vmlinux")
    t0 = time.process_time()
    btf = Btf.parse(blob, name="vmlinux")
    assert time.process_time() - t0 < 2.0  # measured ~0.05 s CPU; generous for a busy machine
    assert (btf.nr_types, len(blob), btf.endian, btf.start_id) == (112806, 4919552, "<", 1)
    assert btf.sizeof(btf.find("list_head")) == 16 and btf.offsetof("list_head", "prev") == 8
    assert btf.offsetof("task_struct", "pid") == 2432  # bpftool: bits_offset=19456
    assert btf.format_type(btf.member("task_struct", "comm").type) == "char [16]"  # TASK_COMM_LEN
    assert btf.format_type(btf.member("task_struct", "mm").type) == "struct mm_struct *"
    assert btf.sizeof(btf.member("module", "name").type) == 56  # MODULE_NAME_LEN on 64-bit
    assert btf.find("pid_type").enumerators == (
        ("PIDTYPE_PID", 0), ("PIDTYPE_TGID", 1), ("PIDTYPE_PGID", 2), ("PIDTYPE_SID", 3), ("PIDTYPE_MAX", 4))
    assert [m.name for m in btf.find("btf_module").members][:3] == ["list", "module", "btf"]
    assert btf.find("task_struct").size == 9792 and btf.pointer_size == 8
    assert btf.format_type(btf.find("schedule")) == "void schedule(void)"
    with pytest.raises(BtfLookupError, match="struct task_struct has no member 'no_such'"):
        btf.offsetof("task_struct", "no_such")


def _references(btf: Btf, t: BtfType) -> list[int]:
    refs = [t.ref, *(m.type for m in t.members), *(p.type for p in t.params), *(v.type for v in t.vars)]
    if t.array is not None:
        refs += [t.array.type, t.array.index_type]
    return refs


@pytest.mark.corpus
@pytest.mark.parametrize("name", ("vmlinux", *MODULES))
def test_every_reference_is_valid(name: str) -> None:
    _need_guest_btf()
    btf = guest_vmlinux() if name == "vmlinux" else guest_module(name)
    if name != "vmlinux":
        assert btf.start_id == 112807 and btf.nr_types > 0
    kinds: dict[str, int] = {}
    for t in btf.iter_types():
        kinds[t.kind] = kinds.get(t.kind, 0) + 1
        assert all(0 <= r < len(btf.types) for r in _references(btf, t)), t
        if t.kind == "var":
            assert btf.type(t.ref).kind != "void"
        for v in t.vars:
            assert btf.type(v.type).kind == "var"
    assert sum(kinds.values()) == btf.nr_types
    if name == "vmlinux":
        assert kinds["struct"] == 9911 and kinds["func"] == 49780 and kinds["enum64"] == 7
    if name == "ext4":
        assert btf.offsetof("ext4_sb_info", "s_es") > 0 and btf.find("ext4_sb_info").id >= 112807


def bpftool_raw(btf: Btf) -> list[str]:
    """Our decoding written as ``bpftool btf dump file X`` (raw format) writes it."""
    enc = {0: "(none)", 1: "SIGNED", 2: "CHAR", 4: "BOOL"}
    linkage = {0: "static", 1: "global", 2: "extern"}
    out: list[str] = []
    for t in btf.iter_types():
        head = f"[{t.id}] {t.kind.upper()} '{t.name or '(anon)'}'"
        k = t.kind
        if k == "int":
            head += (f" size={t.size} bits_offset={t.int_offset} nr_bits={t.int_bits}"
                     f" encoding={enc[t.int_encoding]}")
        elif k in ("ptr", "typedef", "volatile", "const", "restrict", "type_tag"):
            head += f" type_id={t.ref}"
        elif k == "array" and t.array is not None:
            head += f" type_id={t.array.type} index_type_id={t.array.index_type} nr_elems={t.array.nelems}"
        elif k in ("struct", "union", "datasec"):
            head += f" size={t.size} vlen={len(t.members) or len(t.vars)}"
        elif k in ("enum", "enum64"):
            sign = "SIGNED" if t.kind_flag else "UNSIGNED"
            head += f" encoding={sign} size={t.size} vlen={len(t.enumerators)}"
        elif k == "fwd":
            head += f" fwd_kind={'union' if t.kind_flag else 'struct'}"
        elif k == "func":
            head += f" type_id={t.ref} linkage={linkage[t.linkage]}"
        elif k == "func_proto":
            head += f" ret_type_id={t.ref} vlen={len(t.params)}"
        elif k == "var":
            head += f" type_id={t.ref}, linkage={linkage[t.linkage]}"
        elif k == "float":
            head += f" size={t.size}"
        elif k == "decl_tag":
            head += f" type_id={t.ref} component_idx={t.component_idx}"
        out.append(head)
        for m in t.members:
            out.append(f"\t'{m.name or '(anon)'}' type_id={m.type} bits_offset={m.bit_offset}"
                       + (f" bitfield_size={m.bitfield_size}" if m.bitfield_size else ""))
        suffix = "LL" if t.kind_flag else "ULL"
        out += [f"\t'{n}' val={v}{suffix if k == 'enum64' else ''}" for n, v in t.enumerators]
        out += [f"\t'{p.name or '(anon)'}' type_id={p.type}" for p in t.params]
        out += [f"\ttype_id={v.type} offset={v.offset} size={v.size} (VAR '{btf.type(v.type).name}')"
                for v in t.vars]
    return out


def bpftool_path() -> str:
    """bpftool (Debian package ``bpftool``); skips, or fails under CI, when it is missing."""
    return str(require_tool("bpftool"))


@pytest.mark.corpus
@pytest.mark.peer
@pytest.mark.parametrize("name", ("vmlinux", "ext4", "jbd2", "virtio_blk"))
def test_bpftool_reads_every_record_as_we_do(name: str, tmp_path: Path) -> None:
    _need_guest_btf()
    exe = bpftool_path()
    (tmp_path / "vmlinux").write_bytes(guest_blob("vmlinux"))
    cmd = [exe, "btf", "dump", "file", str(tmp_path / name)]
    if name != "vmlinux":
        (tmp_path / name).write_bytes(guest_blob(name))
        cmd += ["--base-btf", str(tmp_path / "vmlinux")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    btf = guest_vmlinux() if name == "vmlinux" else guest_module(name)
    theirs = proc.stdout.splitlines()
    ours = bpftool_raw(btf)
    assert len(ours) == len(theirs)
    assert [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b][:5] == []


# ---- hostile input ------------------------------------------------------------------------------


def _exercise(btf: Btf) -> None:
    """Every query a caller may make of every type: only BtfError may come out."""
    for tid in range(btf.start_id, len(btf.types)):
        try:
            t = btf.type(tid)
            btf.format_type(t)
            btf.resolve(t)
            btf.sizeof(t)
        except BtfError:
            continue
        for m in t.members[:64]:
            try:
                btf.offsetof(t, m.name or "x")
            except BtfError:
                pass


HOSTILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_MUTATIONS = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8)


@HOSTILE
@given(mutations=_MUTATIONS, cut=st.one_of(st.none(), st.integers(0, 1 << 16)),
       endian=st.sampled_from("<>"))
def test_mutated_synthetic_blobs_only_raise_btf_error(mutations: list[tuple[int, int]], cut: int | None,
                                                      endian: str) -> None:
    b = BtfBuilder(endian=endian)
    every_kind(b)
    data = bytearray(b.build())
    for at, value in mutations:
        data[at % len(data)] = value
    if cut is not None:
        data = data[:cut % (len(data) + 1)]
    t0 = time.process_time()
    try:
        _exercise(Btf.parse(bytes(data), name="mutated"))
    except BtfError:
        pass
    assert time.process_time() - t0 < 5


@pytest.mark.corpus
@HOSTILE
@given(name=st.sampled_from(("mbcache", "virtio_blk", "qemu_fw_cfg")), mutations=_MUTATIONS,
       cut=st.one_of(st.none(), st.integers(0, 1 << 16)))
def test_mutated_module_blobs_only_raise_btf_error(name: str, mutations: list[tuple[int, int]],
                                                   cut: int | None) -> None:
    _need_guest_btf()
    data = bytearray(guest_blob(name))
    for at, value in mutations:
        data[at % len(data)] = value
    if cut is not None:
        data = data[:cut % (len(data) + 1)]
    t0 = time.process_time()
    try:
        _exercise(Btf.parse(bytes(data), base=guest_vmlinux(), name=name))
    except BtfError:
        pass
    assert time.process_time() - t0 < 5
