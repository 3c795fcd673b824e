"""dmesg: the kernel log of a dump, byte for byte as ``makedumpfile --dump-dmesg``.

Real dumps against makedumpfile 1.7.2's stored output and a fresh makedumpfile run (also
on a copy of the vmcore whose log was patched to hold bytes that need escaping), the QEMU
dump against drgn's reference, and the printk_log / plain log_buf / lockless layouts on
memory images built here from the kernel's struct layouts.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
from peers import require_tool, run_makedumpfile

from corpus import corpus_bytes, need_corpus_file
from kdumptool.dmesg import (
    LogRecord,
    dmesg_records,
    dmesg_text,
    format_record,
    log_layout,
)
from kdumptool.errors import DmesgError, KdumpToolError
from kdumptool.open import open_dumps
from kdumptool.vmcoreinfo import VmcoreInfo
from kdumptool.vtop import read_virtual, translator_for

KDUMP_REF = "x86_64-kdump-320m/derived/dmesg.txt"
KDUMP_DUMPS = [
    "x86_64-kdump-320m/vmcore.elf",
    "x86_64-kdump-320m/derived/c-d31.kdump",
    "x86_64-kdump-320m/derived/E-d31.elf",
    "x86_64-kdump-320m/derived/F-c-d31.flat",
]


# --------------------------------------------------------------------------------------------
# real dumps


@pytest.mark.parametrize("rel", KDUMP_DUMPS)
def test_kdump_set_matches_makedumpfile_172_output(rel: str) -> None:
    reader = open_dumps([str(need_corpus_file(rel))])
    assert dmesg_text(reader) == corpus_bytes(KDUMP_REF)


@pytest.mark.parametrize("rel", KDUMP_DUMPS)
def test_kdump_set_matches_makedumpfile_now(rel: str, tmp_path: Path) -> None:
    require_tool("makedumpfile")
    path = need_corpus_file(rel)
    mdf_input = path
    if path.suffix == ".flat":  # makedumpfile reads a flattened dump only through -R
        mdf_input = tmp_path / "rearranged.kdump"
        proc = run_makedumpfile(["-R", mdf_input], stdin=path)
        assert proc.returncode == 0, proc.stderr
    out = tmp_path / "dmesg.txt"
    proc = run_makedumpfile(["--dump-dmesg", mdf_input, out])
    assert proc.returncode == 0, proc.stderr
    assert dmesg_text(open_dumps([str(path)])) == out.read_bytes()


def test_qemu_elf_matches_drgn_reference() -> None:
    reader = open_dumps([str(need_corpus_file("x86_64-qemu-256m/qemu-elf.vmcore"))])
    assert dmesg_text(reader) == corpus_bytes("x86_64-qemu-256m/dmesg.txt")


def test_records_of_real_dump() -> None:
    reader = open_dumps([str(need_corpus_file("x86_64-kdump-320m/vmcore.elf"))])
    recs = dmesg_records(reader)
    assert len(recs) == corpus_bytes(KDUMP_REF).count(b"\n[")  + 1
    assert [r["seq"] for r in recs] == list(range(recs[0]["seq"], recs[0]["seq"] + len(recs)))
    first = recs[0]
    assert first["text"].startswith("Linux version 6.1.0-56-amd64")
    assert (first["ts_nsec"], first["level"], first["facility"]) == (0, 5, 0)  # pr_notice
    assert all(r["caller_id"] is not None for r in recs)
    assert log_layout(reader.info.vmcoreinfo) == "lockless"


def _elf_file_offset(path: Path, paddr: int) -> int:
    """File offset of physical address ``paddr`` in an ELF64 little-endian core file."""
    with open(path, "rb") as f:
        ehdr = f.read(64)
        phoff, = struct.unpack_from("<Q", ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _, p_offset, _, p_paddr, p_filesz = struct.unpack_from("<IIQQQQ", table, i * 56)
        if p_type == 1 and p_paddr <= paddr < p_paddr + p_filesz:
            return p_offset + paddr - p_paddr
    raise AssertionError(f"{paddr:#x} not in {path}")


def test_escapes_and_continuation_lines_match_makedumpfile(tmp_path: Path) -> None:
    """Patch one message of a copy of the vmcore with bytes makedumpfile escapes (0x00,
    0x01, 0x7f, 0xc3 0xa9) or keeps (tab, CR, VT), and a newline; both tools must agree."""
    require_tool("makedumpfile")
    src = need_corpus_file("x86_64-kdump-320m/vmcore.elf")
    reader = open_dumps([str(src)])
    vi = reader.info.vmcoreinfo
    prb = int.from_bytes(read_virtual(reader, vi.symbol("prb"), 8), "little")
    ring = prb + vi.offset("printk_ringbuffer.text_data_ring")
    size_bits = int.from_bytes(read_virtual(reader, ring + vi.offset("prb_data_ring.size_bits"), 4),
                               "little")
    data = int.from_bytes(read_virtual(reader, ring + vi.offset("prb_data_ring.data"), 8), "little")
    text = read_virtual(reader, data, 1 << size_bits)
    needle = b"BIOS-provided physical RAM map:"
    assert text.count(needle) == 1
    vaddr = data + text.index(needle)
    ((paddr, _),) = translator_for(reader).ranges(vaddr, len(needle))
    patch = b"A\x00\x01\x7f\tB\r\x0b\xc3\xa9\nsecond line \xff!"
    assert len(patch) <= len(needle)
    copy = tmp_path / "vmcore.elf"
    shutil.copyfile(src, copy)
    with open(copy, "r+b") as f:
        f.seek(_elf_file_offset(copy, paddr))
        f.write(patch)
    out = tmp_path / "dmesg.txt"
    proc = run_makedumpfile(["--dump-dmesg", copy, out])
    assert proc.returncode == 0, proc.stderr
    ours = dmesg_text(open_dumps([str(copy)]))
    assert ours == out.read_bytes()
    assert b"] A\\x00\\x01\\x7f\tB\r\x0b\\xffffffc3\\xffffffa9\n" + b" " * 15 + b"second" in ours


# --------------------------------------------------------------------------------------------
# memory images


class FakeMemory:
    """Sparse kernel virtual memory ``{vaddr: bytes}`` and a reader that carries VMCOREINFO."""

    def __init__(self, vmcoreinfo: str, endian: str = "<") -> None:
        self.regions: dict[int, bytes] = {}
        self.info = SimpleNamespace(
            vmcoreinfo=VmcoreInfo.parse(vmcoreinfo.encode()), endian=endian, word_size=8,
            path="<fake>",
        )

    def put(self, vaddr: int, data: bytes) -> None:
        self.regions[vaddr] = data

    def read(self, reader: object, vaddr: int, size: int) -> bytes:
        for start, data in self.regions.items():
            if start <= vaddr and vaddr + size <= start + len(data):
                return data[vaddr - start : vaddr - start + size]
        raise KdumpToolError(f"{vaddr:#x} not mapped")


# struct printk_log (Linux 3.5-5.9): u64 ts_nsec; u16 len, text_len, dict_len; u8 facility;
# u8 flags:5, level:3; [u32 caller_id, CONFIG_PRINTK_CALLER]; then text, dict, padding to 8.
PRINTK_LOG_VMCOREINFO = """OSRELEASE=5.4.0
SYMBOL(log_buf)=ffffffff81001000
SYMBOL(log_buf_len)=ffffffff81001008
SYMBOL(log_first_idx)=ffffffff81001010
SYMBOL(clear_idx)=ffffffff81001014
SYMBOL(log_next_idx)=ffffffff81001018
SIZE(printk_log)={size}
OFFSET(printk_log.ts_nsec)=0
OFFSET(printk_log.len)=8
OFFSET(printk_log.text_len)=10
{caller}"""
LOG_BUF = 0xFFFF888000100000


def printk_log_record(ts: int, text: bytes, *, level: int = 6, facility: int = 0,
                      dict_: bytes = b"", caller: int | None = None) -> bytes:
    head = 16 if caller is None else 20
    length = (head + len(text) + len(dict_) + 7) & ~7
    rec = struct.pack("<QHHHBB", ts, length, len(text), len(dict_), facility, level << 5)
    if caller is not None:
        rec += struct.pack("<I", caller)
    return (rec + text + dict_).ljust(length, b"\0")


def printk_log_image(buf: bytes, first: int, nxt: int, *, caller: bool = False,
                     clear: int = 0) -> FakeMemory:
    vmci = PRINTK_LOG_VMCOREINFO.format(
        size=20 if caller else 16, caller="OFFSET(printk_log.caller_id)=16\n" if caller else "")
    mem = FakeMemory(vmci)
    mem.put(0xFFFFFFFF81001000, struct.pack("<QiiIIiI", LOG_BUF, len(buf), 0, first, clear, nxt, 0))
    mem.put(LOG_BUF, buf)
    return mem


def test_printk_log_wrapped_buffer() -> None:
    """Oldest record near the end, a len-0 wrap marker, newer records from offset 0."""
    r_new1 = printk_log_record(1_500_000_000, b"new one", level=4, dict_=b"SUBSYSTEM=pci")
    r_new2 = printk_log_record(2_000_123_456, b"two\nlines\x01")
    r_old = printk_log_record(123_456_789, b"oldest", facility=1, level=3)
    free = 256 - len(r_new1) - len(r_new2) - len(r_old) - 16
    old_at = len(r_new1) + len(r_new2) + free
    buf = r_new1 + r_new2 + b"\xee" * free + r_old + bytes(16)  # zeroed header: wrap marker
    nxt = len(r_new1) + len(r_new2)
    mem = printk_log_image(buf, old_at, nxt)
    assert log_layout(mem.info.vmcoreinfo) == "printk_log"
    assert dmesg_text(mem, mem.read) == (
        b"[    0.123456] oldest\n"
        b"[    1.500000] new one\n"
        b"[    2.000123] two\n"
        b"               lines\\x01\n"
    )
    recs = dmesg_records(mem, mem.read)
    assert [(r["ts_nsec"], r["level"], r["facility"], r["text"]) for r in recs] == [
        (123_456_789, 3, 1, "oldest"),
        (1_500_000_000, 4, 0, "new one"),
        (2_000_123_456, 6, 0, "two\nlines\x01"),
    ]
    assert {r["seq"] for r in recs} == {None} and {r["caller_id"] for r in recs} == {None}
    # --partial-dmesg starts at clear_idx
    mem = printk_log_image(buf, old_at, nxt, clear=len(r_new1))
    assert dmesg_text(mem, mem.read, partial=True) == (
        b"[    2.000123] two\n               lines\\x01\n"
    )


def test_printk_log_caller_id() -> None:
    buf = (printk_log_record(10**9, b"by task", caller=42)
           + printk_log_record(2 * 10**9, b"by cpu", caller=0x80000003))
    mem = printk_log_image(buf + bytes(64), 0, len(buf), caller=True)
    assert dmesg_text(mem, mem.read) == b"[    1.000000] by task\n[    2.000000] by cpu\n"
    assert dmesg_text(mem, mem.read, caller=True) == (
        b"[    1.000000] [     T42] by task\n[    2.000000] [      C3] by cpu\n"
    )
    assert [r["caller_id"] for r in dmesg_records(mem, mem.read)] == [42, 0x80000003]


def test_printk_log_cycle_is_an_error_with_partial_output() -> None:
    a = printk_log_record(1, b"a")
    b = printk_log_record(2, b"b")
    buf = a + b + bytes(16) + bytes(32)  # zero len at 48 wraps back to 0: a cycle
    mem = printk_log_image(buf, 0, 64)
    with pytest.raises(DmesgError, match="cycle") as err:
        dmesg_text(mem, mem.read)
    assert err.value.partial == b"[    0.000000] a\n[    0.000000] b\n[    0.000000] a\n"
    # an index past the end of the buffer
    bad = bytearray(a)
    struct.pack_into("<H", bad, 8, 0x4000)
    mem = printk_log_image(bytes(bad) + bytes(64), 0, 16)
    with pytest.raises(DmesgError, match="outside"):
        dmesg_records(mem, mem.read)


PLAIN_VMCOREINFO = """OSRELEASE=3.2.0
SYMBOL(log_buf)=ffffffff81002000
SYMBOL(log_buf_len)=ffffffff81002008
SYMBOL(log_end)=ffffffff81002010
"""


def plain_image(buf: bytes, log_end: int, vmci: str = PLAIN_VMCOREINFO) -> FakeMemory:
    mem = FakeMemory(vmci)
    mem.put(0xFFFFFFFF81002000, struct.pack("<QiiQ", LOG_BUF, len(buf), 0, log_end))
    mem.put(LOG_BUF, buf)
    return mem


def test_plain_log_buf() -> None:
    text = b"<6>[    0.000000] Linux version 3.2.0\n<4>second \xc3\xa9\n"
    mem = plain_image(text.ljust(128, b"\0"), len(text))
    assert log_layout(mem.info.vmcoreinfo) == "plain"
    assert dmesg_text(mem, mem.read) == text  # printed unchanged, no escaping
    assert dmesg_records(mem, mem.read) == [
        {"seq": None, "ts_nsec": None, "level": 6, "facility": 0, "caller_id": None,
         "text": "[    0.000000] Linux version 3.2.0"},
        {"seq": None, "ts_nsec": None, "level": 4, "facility": 0, "caller_id": None,
         "text": "second \u00e9"},
    ]


def test_plain_log_buf_wrapped() -> None:
    buf = b"NEWEST\n" + b"x" * 9 + b"OLD LINE\n" + b"y" * 7  # 32 bytes, log_end past the size
    mem = plain_image(buf, 3 * 32 + 16)
    assert dmesg_text(mem, mem.read) == buf[16:] + buf[:16]
    # 2.6.24 and older: log_end is an unsigned long (here its high word is read too)
    old = PLAIN_VMCOREINFO.replace("3.2.0", "2.6.24")
    mem = plain_image(buf, (1 << 32) + 16, old)
    assert dmesg_text(mem, mem.read) == buf[16:] + buf[:16]


# lockless ring buffer (Linux 5.10+), the layout of the corpus' 6.1 kernel
LOCKLESS_VMCOREINFO = """OSRELEASE=6.1.0
SYMBOL(prb)=ffffffff81003000
SIZE(printk_ringbuffer)=88
OFFSET(printk_ringbuffer.desc_ring)=0
OFFSET(printk_ringbuffer.text_data_ring)=48
OFFSET(prb_desc_ring.count_bits)=0
OFFSET(prb_desc_ring.descs)=8
OFFSET(prb_desc_ring.infos)=16
OFFSET(prb_desc_ring.head_id)=24
OFFSET(prb_desc_ring.tail_id)=32
SIZE(prb_desc)=24
OFFSET(prb_desc.state_var)=0
OFFSET(prb_desc.text_blk_lpos)=8
OFFSET(prb_data_blk_lpos.begin)=0
OFFSET(prb_data_blk_lpos.next)=8
SIZE(printk_info)=88
OFFSET(printk_info.seq)=0
OFFSET(printk_info.ts_nsec)=8
OFFSET(printk_info.text_len)=16
OFFSET(printk_info.caller_id)=20
OFFSET(prb_data_ring.size_bits)=0
OFFSET(prb_data_ring.data)=8
OFFSET(atomic_long_t.counter)=0
"""
DESCS, INFOS, DATA, PRB = 0xFFFF888000200000, 0xFFFF888000300000, 0xFFFF888000400000, \
    0xFFFF888000500000


def test_lockless_ring() -> None:
    """4 descriptors, a 64-byte text ring: a wrapped block, a reserved descriptor (skipped),
    a data-less one (skipped), a text_len longer than its block (truncated)."""
    count_bits, size_bits, base = 2, 6, 0x100  # ids 0x100.. (ring wrapped several times)
    ids = [base + 1, base + 2, base + 3, base + 4]  # tail .. head
    text = bytearray(64)
    # (id, state, begin, next, text_len, text, ts)
    entries = [
        (ids[0], 2, 0x200 + 24, 0x200 + 48, 13, b"first record", 1_000_000),
        (ids[1], 0, 0x200 + 48, 0x200 + 56, 3, b"res", 2_000_000),  # reserved: skipped
        (ids[2], 1, 0x200 + 56, 0x240 + 24, 9, b"wrapped\n!", 3_000_000),  # data at 0
        (ids[3], 2, 0x240 + 24, 0x240 + 24, 0, b"", 4_000_000),  # data-less: skipped
    ]
    descs, infos = bytearray(24 * 4), bytearray(88 * 4)
    for i, (rid, state, begin, nxt, tlen, msg, ts) in enumerate(entries):
        slot = rid % 4
        struct.pack_into("<QQQ", descs, 24 * slot, (state << 62) | rid, begin, nxt)
        struct.pack_into("<QQHBBI", infos, 88 * slot, 100 + i, ts, tlen, 0, 6 << 5, 7 + i)
        start = 0 if begin % 64 > nxt % 64 else begin % 64
        text[start : start + 8] = struct.pack("<Q", rid)
        text[start + 8 : start + 8 + len(msg)] = msg
    mem = FakeMemory(LOCKLESS_VMCOREINFO)
    mem.put(0xFFFFFFFF81003000, struct.pack("<Q", PRB))
    prb = bytearray(88)
    struct.pack_into("<IxxxxQQQQ", prb, 0, count_bits, DESCS, INFOS, ids[3], ids[0])
    struct.pack_into("<IxxxxQ", prb, 48, size_bits, DATA)
    mem.put(PRB, bytes(prb))
    mem.put(DESCS, bytes(descs))
    mem.put(INFOS, bytes(infos))
    mem.put(DATA, bytes(text))
    assert dmesg_text(mem, mem.read) == (
        b"[    0.001000] first record\\x00\n"  # text_len 13 > 12: the NUL is printed
        b"[    0.003000] wrapped\n"
        b"               !\n"
    )
    recs = dmesg_records(mem, mem.read)
    assert [(r["seq"], r["level"], r["caller_id"]) for r in recs] == [(100, 6, 7), (102, 6, 9)]
    # a block longer than the data it holds is cut at its end
    struct.pack_into("<H", infos, 88 * (ids[0] % 4) + 16, 500)
    mem.put(INFOS, bytes(infos))
    assert dmesg_records(mem, mem.read)[0]["text"].startswith("first record\x00")
    assert len(dmesg_records(mem, mem.read)[0]["text"]) == 24 - 8  # block minus id
    # a corrupt ring size is refused before anything is read
    struct.pack_into("<I", prb, 48, 60)
    mem.put(PRB, bytes(prb))
    with pytest.raises(DmesgError, match="2\\*\\*60"):
        dmesg_text(mem, mem.read)


# --------------------------------------------------------------------------------------------
# formatting and errors


def test_format_record_escapes() -> None:
    rec = LogRecord(None, 12_345_678_901_234, 6, 0, None, b"a\x00\x7f\x80\xff\t\x0c\nb")
    assert format_record(rec) == (
        b"[12345.678901] a\\x00\\x7f\\xffffff80\\xffffffff\t\x0c\n" + b" " * 15 + b"b\n"
    )
    assert format_record(rec, signed_char=False) == (
        b"[12345.678901] a\\x00\\x7f\\x80\\xff\t\x0c\n" + b" " * 15 + b"b\n"
    )
    assert format_record(LogRecord(None, 10**15, None, None, None, b"")) == b"[1000000.000000] \n"


def test_no_log_in_vmcoreinfo() -> None:
    mem = FakeMemory("OSRELEASE=6.1.0\n")
    with pytest.raises(KdumpToolError, match="SYMBOL"):
        dmesg_text(mem, mem.read)
    mem.info.vmcoreinfo = None
    with pytest.raises(KdumpToolError, match="no VMCOREINFO"):
        dmesg_text(mem, mem.read)


_DERIVED = ["c-d0.kdump", "c-d1.kdump", "c-d2.kdump", "c-d4.kdump", "c-d8.kdump", "c-d16.kdump",
            "l-d0.kdump", "l-d1.kdump", "l-d31.kdump", "p-d31.kdump", "z-d31.kdump", "F-l-d0.flat",
            "reassembled-split2-c-d31.kdump", "split2-c-d31.1+split2-c-d31.2"]
_CAPTURE = ["capture-E-d31.elf", "capture-F-c-d31.flat", "capture-c-d31.kdump", "capture-l-d31.kdump"]


@pytest.mark.parametrize("rel", [f"derived/{n}" for n in _DERIVED]
                         + [f"capture-kernel/{n}" for n in _CAPTURE])
def test_every_dump_of_the_kdump_set_gives_the_same_log(rel: str) -> None:
    """Every dump made from the crashed kernel (every level, codec, split part pair, and the
    ones makedumpfile made inside the capture kernel) holds the log makedumpfile 1.7.2 printed."""
    folder, _, names = rel.partition("/")
    paths = [str(need_corpus_file(f"x86_64-kdump-320m/{folder}/{n}")) for n in names.split("+")]
    with open_dumps(paths) as reader:
        assert dmesg_text(reader) == corpus_bytes(KDUMP_REF)


_DERIVED_612 = ["c-d0.kdump", "c-d1.kdump", "c-d31.kdump", "l-d31.kdump", "E-d31.elf", "F-c-d31.flat",
                "split2-c-d31.1+split2-c-d31.2"]


@pytest.mark.parametrize("names", _DERIVED_612)
def test_the_612_set_gives_makedumpfile_179s_log(names: str) -> None:
    """The 6.12 kernel's dumps hold the log makedumpfile 1.7.9 printed, caller ids included."""
    paths = [str(need_corpus_file(f"x86_64-kdump-320m-6.12/derived/{n}")) for n in names.split("+")]
    with open_dumps(paths) as reader:
        assert dmesg_text(reader, caller=True) == corpus_bytes("x86_64-kdump-320m-6.12/derived/dmesg.txt")
