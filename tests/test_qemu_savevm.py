"""QEMU migration streams (QEVM v3) and libvirt save images.

Evidence: the real stream ``x86_64-qemu-256m/qemu-migrate.qevm`` (QEMU 7.2 ``migrate`` of a
stopped guest, see the corpus MANIFEST) against ``qemu-elf.vmcore`` = QEMU's own
``dump-guest-memory`` of the same stopped guest (read by our ELF reader, itself proven equal
to drgn); converted outputs are judged by drgn. Synthetic streams come from
``tests/builders_qemu.py`` (written from the published layout, proven against the real file
below) for what the corpus lacks: RAM above 4 GiB (pc and q35 rules), the libvirt wrapper,
compressed / XBZRLE / repeated pages, configuration subsections and damage of every kind.
Where ``qemu-system-x86_64`` is installed (Debian ``qemu-system-x86``), real streams of pc and
q35 machines with RAM above 4 GiB are made on the fly (``tests/qemu_live.py``) and checked.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import builders as B  # noqa: E402
import builders_qemu as Q  # noqa: E402
from ours import kdumptool  # noqa: E402

from corpus import corpus_text, need_corpus_file  # noqa: E402
from kdumptool.errors import (  # noqa: E402
    CorruptDumpError,
    CorruptPageError,
    TruncatedDumpError,
    UnknownFormatError,
)
from kdumptool.formats import find_reader, qemu_savevm, qemu_vmstate  # noqa: E402
from kdumptool.formats.qemu_savevm import QemuSavevmReader, ram_split  # noqa: E402
from kdumptool.open import open_bytes, open_dump  # noqa: E402
from kdumptool.transport.source import BytesSource, FileSource  # noqa: E402

SET = "x86_64-qemu-256m"
QEVM = f"{SET}/qemu-migrate.qevm"
RELEASE = "6.1.0-56-amd64"
PS = 4096
MIB = 1 << 20
#: the real stream: its first SECTION_PART (after header, configuration and the RAM setup,
#: whose footer is the 5 bytes before), and the block name of its first RAM record
PART_OFFSET = 0x11E
FIRST_NAME = PART_OFFSET + 1 + 4 + 8


@pytest.fixture(scope="module")
def qevm() -> Path:
    return need_corpus_file(QEVM)


@pytest.fixture(scope="module")
def elf() -> Path:
    return need_corpus_file(f"{SET}/qemu-elf.vmcore")


class View(FileSource):
    """A file seen cut at ``size`` and/or with bytes replaced (no copy of a 236 MB file)."""

    def __init__(self, path: Path, *, size: int | None = None,
                 patches: dict[int, bytes] | None = None) -> None:
        super().__init__(str(path))
        if size is not None:
            self.size = size
        self.patches = patches or {}

    def pread(self, offset: int, length: int) -> bytes:
        data = bytearray(super().pread(offset, length))
        for at, new in self.patches.items():
            for k, b in enumerate(new):
                if offset <= at + k < offset + len(data):
                    data[at + k - offset] = b
        return bytes(data)


def _open(blob: bytes, strict: bool = True) -> QemuSavevmReader:
    return QemuSavevmReader(BytesSource(blob, "<test>"), strict=strict)


# --- the real stream -----------------------------------------------------------------------------

def test_probe(qevm: Path, elf: Path) -> None:
    assert qemu_savevm.probe(open(qevm, "rb").read(4096))
    assert not qemu_savevm.probe(open(elf, "rb").read(4096))
    assert qemu_savevm.probe(Q.libvirt_wrap(b"QEVM"))
    assert qemu_savevm.probe(Q.libvirt_wrap(b"", magic=b"LibvirtQemudPart"))
    for junk in (b"", b"QEV", b"\0" * 64, b"LibvirtQemudSav", bytes(range(256))):
        assert not qemu_savevm.probe(junk)
    assert find_reader(open(qevm, "rb").read(4096)).name == "qemu-savevm"


def test_builder_rebuilds_real_header_and_ram_setup(qevm: Path) -> None:
    """The builder's bytes for the header, configuration and RAM setup are the real file's."""
    head = open(qevm, "rb").read(0x200)
    s = Q.QemuStream()
    s.configuration("pc-i440fx-7.2")
    blocks = [("pc.ram", 256 * MIB), ("0000:00:02.0/vga.vram", 16 * MIB),
              ("/rom@etc/acpi/tables", 128 << 10), ("pc.bios", 256 << 10),
              ("0000:00:03.0/e1000.rom", 256 << 10), ("pc.rom", 128 << 10),
              ("0000:00:02.0/vga.rom", 64 << 10), ("/rom@etc/table-loader", 4096),
              ("/rom@etc/acpi/rsdp", 4096)]
    s.ram_setup(blocks, sid=2)
    built = s.bytes()
    assert head[:len(built)] == built and len(built) == PART_OFFSET
    # the first RAM record of the first PART: a PAGE of pc.ram at offset 0, naming its block
    part = bytes([Q.PART]) + Q.be32(2) + Q.be64(Q.F_PAGE) + Q.pstr("pc.ram")
    assert head[len(built):len(built) + len(part)] == part


def test_real_pages_equal_qemu_elf_dump(qevm: Path, elf: Path) -> None:
    """Acceptance: every guest page of the stream is the same PFN of QEMU's ELF dump of the
    same stopped guest, page for page over all of RAM; the present pages are the ELF's
    within pc.ram (the ELF also has vga.vram and the BIOS ROM, which are not guest RAM)."""
    with open_dump(str(qevm)) as q, open_dump(str(elf)) as e:
        assert q.info.max_pfn == 256 * MIB // PS
        compared = 0
        for start, count in q.windows():
            qb, eb = q.read_batch(start, count), e.read_batch(start, count)
            assert not qb.lost.any() and not qb.corrupt
            assert (qb.present == (eb.present & qb.ram)).all(), hex(start)
            qa = np.zeros((count, PS), np.uint8)
            ea = np.zeros((count, PS), np.uint8)
            qa[qb.present], ea[eb.present] = qb.data, eb.data
            bad = np.flatnonzero((qa[qb.present] != ea[qb.present]).any(axis=1))
            assert not len(bad), f"pfn {start + int(np.flatnonzero(qb.present)[bad[0]]):#x} differs"
            compared += int(qb.present.sum())
        assert compared == q.count_pages()[1] == 65536 - 32  # all of pc.ram but the VGA window
        # the VGA window 0xa0000-0xbffff is MMIO for the guest: QEMU's dump has no PT_LOAD there
        ram, present = q.bitmaps(0xA0, 0x20)
        assert not ram.any() and not present.any()


def test_real_notes_are_qemus(qevm: Path, elf: Path) -> None:
    """CPU notes built from the migrated vCPU state are byte-identical to those QEMU's
    dump-guest-memory wrote; VMCOREINFO comes from the guest note the vmcoreinfo device
    points at and is the corpus's vmcoreinfo.txt."""
    with open_dump(str(qevm)) as q, open_dump(str(elf)) as e:
        assert [(n.name, n.type) for n in q.info.notes] == [(n.name, n.type) for n in e.info.notes]
        for ours, theirs in zip(q.info.notes, e.info.notes, strict=True):
            assert ours.desc == theirs.desc, ours.name
        assert q.info.vmcoreinfo.raw == corpus_text(f"{SET}/vmcoreinfo.txt").encode()
        assert q.info.nr_cpus == 2 and q.info.release == RELEASE
        d = q.info.details
        assert d["machine_type"] == "pc-i440fx-7.2" and d["ram_block"] == "pc.ram"
        assert d["cpu_state"] == "decoded" and d["complete"] and d["vmdesc"]
        assert "confirmed by the CMOS" in d["ram_split_from"]
        assert d["vmcoreinfo_from"].startswith("vmcoreinfo device")
        assert any(b.startswith("0000:00:02.0/vga.vram: 0x1000000 bytes") and "not mapped" in b
                   for b in d["ram_blocks"])


def test_real_device_sizes_and_fallback_layouts(qevm: Path) -> None:
    """The sizes from the JSON description end at each section's footer; the fixed layouts
    used without a description match the real description."""
    with open_dump(str(qevm)) as q:
        devs = [s for s in q.sections if s.type == qemu_savevm.FULL]
        assert len(devs) == 41
        for s in devs:
            assert qemu_vmstate.desc_size(q.vmdesc.find(s.idstr, s.instance_id)) == s.size
        cpu = q.vmdesc.find("cpu", 0)
        real = [(f["name"], f["size"], f.get("array_len", 1)) for f in cpu["fields"]]
        assert tuple(real[:len(qemu_vmstate.X86_64_CPU_V12)]) == qemu_vmstate.X86_64_CPU_V12
        assert tuple(real[:len(Q.CPU_V12)]) == Q.CPU_V12
        vmci = q.vmdesc.find("vmcoreinfo", 0)
        assert tuple((f["name"], f["size"], 1) for f in vmci["fields"]) == qemu_vmstate.VMCOREINFO_V1
        # decoding without the description gives the same registers
        for k in (0, 1):
            data = q._dev_data[("cpu", k)]
            assert (qemu_vmstate.parse_x86_cpu(data, k, None)
                    == qemu_vmstate.parse_x86_cpu(data, k, q.vmdesc.find("cpu", k)))


def test_real_info_cli(qevm: Path) -> None:
    r = kdumptool("info", "--json", qevm)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["format"] == "qemu-savevm" and s["arch"] == "x86_64"
    assert s["kernel"]["release"] == RELEASE
    assert s["kernel"]["version"].startswith("#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2")
    assert s["pages"] == {"ram": 65504, "present": 65504, "excluded": 0, "lost": 0}
    assert s["cpus"] == 2 and s["cpus_state"][0]["cr3"] == "0xf702000"
    assert s["details"]["machine_type"] == "pc-i440fx-7.2"
    text = kdumptool("info", qevm).stdout.decode()
    assert f"kernel:        {RELEASE}" in text and "qemu-savevm v3" in text


def test_real_convert_opens_in_drgn(qevm: Path, tmp_path: Path) -> None:
    """kdump (zlib) and ELF made from the stream: drgn reads the kernel release through the
    page tables, and both hold exactly the stream's pages."""
    from peers import drgn_open_ok, require_tool

    require_tool("drgn")
    kd, el = tmp_path / "q.kdump", tmp_path / "q.elf"
    for args in (("-c", qevm, kd), ("-E", qevm, el)):
        r = kdumptool("convert", *args)
        assert r.returncode == 0, r.stderr
    for out in (kd, el):
        ok, release = drgn_open_ok(out, isolate=True)
        assert ok and release == RELEASE, release
    with open_dump(str(qevm)) as q, open_dump(str(kd)) as k, open_dump(str(el)) as e:
        assert k.info.vmcoreinfo.raw == q.info.vmcoreinfo.raw
        assert [n.desc for n in e.info.notes if n.name == b"QEMU"] == \
               [n.desc for n in q.info.notes if n.name == b"QEMU"]
        for start, count in q.data_windows():
            qb, kb, eb = q.read_batch(start, count), k.read_batch(start, count), e.read_batch(start, count)
            assert (qb.present == kb.present).all() and (qb.present == eb.present).all()
            assert np.array_equal(qb.data, kb.data) and np.array_equal(qb.data, eb.data)


def _first_device(path: Path) -> int:
    """File offset of the first device section of the real stream."""
    with open_dump(str(path)) as q:
        return min(s.offset for s in q.sections if s.type == qemu_savevm.FULL)


def test_real_truncated_in_ram_section(qevm: Path) -> None:
    cut = 100 * MIB + 1234
    with pytest.raises(TruncatedDumpError) as exc:
        QemuSavevmReader(View(qevm, size=cut))
    assert exc.value.offset is not None and cut - PS - 64 <= exc.value.offset <= cut
    assert "before the end of the RAM section" in str(exc.value)
    assert f"offset {exc.value.offset:#x}" in str(exc.value)
    with QemuSavevmReader(View(qevm, size=cut), strict=False) as t, open_dump(str(qevm)) as full:
        assert t.info.incomplete and "problem" in t.info.details
        ram, present = t.count_pages()
        assert ram == 65504 and 0 < present < ram
        lost = 0
        for start, count in t.windows():
            tb, fb = t.read_batch(start, count), full.read_batch(start, count)
            assert not (tb.present & ~fb.present).any()
            assert np.array_equal(tb.data, fb.data[tb.present[fb.present]])
            assert (tb.lost == (tb.ram & ~tb.present)).all()
            lost += int(tb.lost.sum())
        assert lost == ram - present
    r = kdumptool("info", "--json", qevm)  # the CLI's tolerant path on the whole file still works
    assert r.returncode == 0


def test_real_truncated_in_device_state(qevm: Path) -> None:
    first_dev = _first_device(qevm)
    cut = first_dev + 3000  # inside cpu#0's state
    with pytest.raises(TruncatedDumpError) as exc:
        QemuSavevmReader(View(qevm, size=cut))
    assert "RAM section" not in str(exc.value)
    with QemuSavevmReader(View(qevm, size=cut), strict=False) as t:
        assert t.info.incomplete and not t._missing_lost
        assert t.count_pages() == (65504, 65504)
        assert t.read_page(0x1234) == open_dump(str(qevm)).read_page(0x1234)


def test_real_corrupt_section_type_and_footer(qevm: Path) -> None:
    part = PART_OFFSET
    with pytest.raises(CorruptDumpError) as exc:
        QemuSavevmReader(View(qevm, patches={part: b"\x09"}))
    assert exc.value.offset == part and "bad section type" in str(exc.value)
    assert f"offset {part:#x}" in str(exc.value)
    with pytest.raises(CorruptDumpError) as exc:
        QemuSavevmReader(View(qevm, patches={part - 1: b"\x05"}))  # the RAM setup's footer
    assert exc.value.offset == part - 5 and "footer" in str(exc.value)
    with pytest.raises(CorruptDumpError) as exc:  # a PAGE record's block name
        QemuSavevmReader(View(qevm, patches={FIRST_NAME + 1: b"pX"}))
    assert exc.value.offset == FIRST_NAME and "unknown block" in str(exc.value)
    # tolerant: a damaged record in the first PART leaves no page (all lost), still opens
    with QemuSavevmReader(View(qevm, patches={FIRST_NAME + 1: b"pX"}), strict=False) as t:
        assert t.count_pages()[1] == 0 and t.read_batch(0, 64).lost.all()


def test_real_bad_magic_and_version(qevm: Path) -> None:
    with pytest.raises(UnknownFormatError) as exc:
        QemuSavevmReader(View(qevm, patches={0: b"QEVX"}))
    assert exc.value.offset == 0
    for version, words in ((4, "unsupported QEMU stream version"), (2, "obsolete")):
        with pytest.raises(UnknownFormatError) as exc:
            QemuSavevmReader(View(qevm, patches={4: struct.pack(">I", version)}))
        assert exc.value.offset == 4 and words in str(exc.value) and "expected 3" in str(exc.value)


# --- synthetic streams ---------------------------------------------------------------------------

def stream(machine: str = "pc-i440fx-7.2", ram: int = 64 * MIB, records: list | None = None, *,
           footers: bool = True, vmdesc: bool = True, devices: list | None = None,
           subsections: tuple = (), extra_blocks: tuple = (("pc.bios", 256 << 10),)) -> Q.QemuStream:
    s = Q.QemuStream(footers=footers)
    s.configuration(machine, subsections=subsections)
    s.ram_setup([("pc.ram", ram), *extra_blocks])
    if records is None:
        records = [("page", "pc.ram", k * PS, B.page_for(k)) for k in range(16)]
    s.ram_part(records[: len(records) // 2])
    s.ram_part(records[len(records) // 2:], end=True)
    for args in devices or []:
        s.device(*args[:2], **args[2] if len(args) > 2 else {})
    s.eof(vmdesc=vmdesc)
    return s


LAYOUTS = [
    # machine type, RAM, expected below 4 GiB (QEMU's own examples: pc-1.7 -m 4G -> 3584M low,
    # pc -m 4G -> 3072M low; hw/i386/pc_piix.c)
    ("pc-i440fx-7.2", 0xE0000000, 0xC0000000),
    ("pc-i440fx-7.2", 0xDF000000, 0xDF000000),
    ("pc", 4 << 30, 0xC0000000),
    ("pc-1.7", 4 << 30, 0xE0000000),
    ("pc-i440fx-2.0", 0xF0000000, 0xE0000000),
    ("pc-i440fx-2.1", 0xF0000000, 0xC0000000),
    ("pc-q35-7.2", 0xB0000000, 0x80000000),
    ("pc-q35-7.2", 0xAF000000, 0xAF000000),
    ("q35", 8 << 30, 0x80000000),
    ("pc-q35-2.0", 0xC0000000, 0xB0000000),
    ("isapc", 512 * MIB, 512 * MIB),
]


@pytest.mark.parametrize(("machine", "ram", "below"), LAYOUTS)
def test_ram_above_4g(machine: str, ram: int, below: int) -> None:
    assert ram_split(machine, ram) == (below, ram - below)
    high = (1 << 32) // PS
    expect = {0: 0, below - PS: (below - PS) // PS, ram - PS: (ram - below - PS) // PS + high
              if ram > below else (ram - PS) // PS}
    if ram > below:
        expect[below] = high
    recs = [("page", "pc.ram", off, B.page_for(pfn)) for off, pfn in sorted(expect.items())]
    with _open(stream(machine, ram, recs).bytes()) as r:
        for pfn in expect.values():
            assert B.pfn_of_page(r.read_page(pfn)) == pfn
        assert r.info.max_pfn == (high + (ram - below) // PS if ram > below else ram // PS)
        ram_pages, present = r.count_pages()
        assert ram_pages == ram // PS - 0x20 and present == len(expect)
        if ram > below:
            rb, _ = r.bitmaps(below // PS - 1, 2)
            assert rb.tolist() == [True, below // PS >= high]
            rb, _ = r.bitmaps(high - 1, 2)
            assert rb.tolist() == [below == 1 << 32, True]
        assert r.info.details["below_4g"] == f"{below:#x}"


def test_cmos_split_overrides_the_rule() -> None:
    """-M pc,max-ram-below-4g=2G -m 4G -> 2048M low, 2048M high (QEMU's example): the CMOS
    bytes the BIOS reads tell the split the machine type cannot."""
    ram, below = 4 << 30, 2 << 30
    rtc, fields = Q.rtc_content(below, ram - below)
    recs = [("page", "pc.ram", below, B.page_for(0x100000))]
    with _open(stream("pc-i440fx-7.2", ram, recs, devices=[
            ("mc146818rtc", rtc, {"version": 3, "desc_fields": fields})]).bytes()) as r:
        assert r.info.details["ram_split_from"].startswith("CMOS")
        assert B.pfn_of_page(r.read_page(0x100000)) == 0x100000
    rtc, fields = Q.rtc_content(below, 1 << 30)  # does not add up to the RAM size: ignored
    with _open(stream("pc-i440fx-7.2", ram, recs, devices=[
            ("mc146818rtc", rtc, {"version": 3, "desc_fields": fields})]).bytes()) as r:
        assert r.info.details["ram_split_from"] == "machine type"
        assert r.info.details["below_4g"] == "0xc0000000"


def test_unknown_machine_type() -> None:
    with pytest.raises(UnknownFormatError, match="virt-7.2"):
        _open(stream("virt-7.2").bytes())


def test_page_kinds_and_last_copy_wins() -> None:
    p = B.page_for
    recs = [
        ("page", "pc.ram", 0, p(100)), ("zero", "pc.ram", PS, 0), ("zero", "pc.ram", 2 * PS, 0x5A),
        ("zlib", "pc.ram", 3 * PS, p(3)), ("page", "pc.bios", 0, p(999)),
        ("page", "pc.ram", 4 * PS, p(4)),
        # later copies replace earlier ones, whatever their kind
        ("page", "pc.ram", 0, p(0)), ("page", "pc.ram", PS, p(1)), ("zero", "pc.ram", 4 * PS, 7),
    ]
    with _open(stream(records=recs).bytes()) as r:
        assert r.read_page(0) == p(0) and r.read_page(1) == p(1)
        assert r.read_page(2) == b"\x5a" * PS and r.read_page(3) == p(3)
        assert r.read_page(4) == b"\x07" * PS
        ram, present = r.bitmaps(0, 8)
        assert present.tolist() == [True] * 5 + [False] * 3 and ram.all()
        batch = r.read_batch(0, 8)
        assert not batch.lost.any()  # a complete stream: unsent pages are excluded, not lost
        assert "pc.bios: 0x40000 bytes, 1 pages + 0 zero (not mapped)" in r.info.details["ram_blocks"]
        assert r.info.details["ram_records"] == 8


def test_compressed_and_xbzrle_pages() -> None:
    bad = Q.QemuStream().record("zlib", "pc.ram", PS, (b"", zlib.compress(b"short")))
    recs = [("zlib", "pc.ram", 0, B.page_for(0)), bad, ("xbzrle", "pc.ram", 2 * PS, b"\x01\x02")]
    blob = stream(records=recs).bytes()
    with pytest.raises(UnknownFormatError, match="XBZRLE"):
        _open(blob)
    with _open(blob, strict=False) as r:
        b = r.read_batch(0, 4)
        assert b.present.tolist() == [True, False, False, False]
        assert set(b.corrupt) == {1, 2} and "5 bytes" in b.corrupt[1] and "XBZRLE" in b.corrupt[2]
        assert b.data[0].tobytes() == B.page_for(0)
    with _open(stream(records=recs[:2]).bytes()) as r:
        with pytest.raises(CorruptPageError, match="pfn 0x1"):
            r.read_page(1)


def test_vmcoreinfo_and_cpu_from_device_state() -> None:
    text = B.vmcoreinfo_text("6.1.0-synthetic")
    note = Q.elf_note_le(b"VMCOREINFO", 0, text)
    page = (bytes(0x80) + note).ljust(PS, b"\0")
    recs = [("page", "pc.ram", 5 * PS, page), ("page", "pc.ram", 0, B.page_for(0))]
    vmci, vfields = Q.vmcoreinfo_content(5 * PS + 0x80, len(note) + 100)
    regs = [0x1000 + k for k in range(16)]
    segs = [Q.seg(0x10 + k, base=k << 20) for k in range(6)]
    cpu, cfields = Q.cpu_content({"env.regs": regs, "env.eip": 0xFFFFFFFF81000000, "env.eflags": 0x246,
                                  "env.segs": segs, "env.cr[3]": 0x1234000, "env.cr[0]": 0x80050033,
                                  "env.idt": Q.seg(0, base=0xFFFFFE0000000000, limit=0xFFF),
                                  "env.kernelgsbase": 0xFFFF888000000000})
    devices = [("cpu", cpu, {"version": 12, "desc_fields": cfields}),
               ("vmcoreinfo", vmci, {"desc_fields": vfields})]
    for vmdesc in (True, False):
        with _open(stream(records=recs, devices=devices, vmdesc=vmdesc).bytes()) as r:
            assert r.info.release == "6.1.0-synthetic"
            assert r.info.vmcoreinfo.raw == text
            assert r.info.details["vmdesc"] is vmdesc
            from kdumptool.formats.notes import describe_cpus

            (c,) = describe_cpus(r.info.notes, "x86_64", "<")
            assert c["pid"] == 1 and c["pc"] == 0xFFFFFFFF81000000 and c["sp"] == 0x1004
            assert c["cr3"] == 0x1234000 and c["idt_base"] == 0xFFFFFE0000000000
    # the vmcoreinfo device pointing outside RAM: no VMCOREINFO, still opens
    vmci, vfields = Q.vmcoreinfo_content(1 << 40, 100)
    with _open(stream(devices=[("vmcoreinfo", vmci, {"desc_fields": vfields})]).bytes()) as r:
        assert r.info.vmcoreinfo is None and r.info.details["vmcoreinfo_from"] == "none"


def test_device_sections_without_description_or_footers() -> None:
    # serial's state holds its own footer (section id 4) followed by an impossible header
    fake = b"\x7e\0\0\0\x04" + b"\x04\0\0\0\x09\xff\x01\x02" + b"tail"
    blob_dev = [("timer", bytes(24)), ("serial", fake),
                ("cpu", Q.cpu_content()[0], {"version": 12})]
    with _open(stream(devices=blob_dev, vmdesc=False).bytes()) as r:
        sizes = {s.idstr: s.size for s in r.sections if s.type == qemu_savevm.FULL}
        assert sizes == {"timer": 24, "serial": 17, "cpu": len(Q.cpu_content()[0])}
        assert r.info.details["cpu_state"] == "decoded" and r.info.details["complete"]
    with _open(stream(devices=blob_dev, footers=False).bytes()) as r:  # sizes from the JSON
        assert not r.info.details["section_footers"] and r.info.details["complete"]
    blob = stream(devices=blob_dev, footers=False, vmdesc=False).bytes()
    with pytest.raises(UnknownFormatError, match="neither a device description nor section footers"):
        _open(blob)
    with _open(blob, strict=False) as r:  # the RAM is complete: its pages are all there
        assert r.info.incomplete and r.count_pages()[1] == 16 and not r._missing_lost


def test_configuration_subsections() -> None:
    subs = (("configuration/target-page-bits", 1, Q.be32(12)),
            ("configuration/capabilities", 1, Q.be32(2) + Q.pstr("xbzrle") + Q.pstr("events")),
            ("configuration/uuid", 1, bytes(range(16))))
    with _open(stream(subsections=subs).bytes()) as r:
        assert r.info.details["capabilities"] == ["xbzrle", "events"]
        assert r.read_page(3) == B.page_for(3)
    s = stream(subsections=(("configuration/something-new", 1, b""),))
    with pytest.raises(UnknownFormatError, match="something-new") as exc:
        _open(s.bytes())
    assert exc.value.offset == s.marks["config"] + 1 + 4 + len("pc-i440fx-7.2")
    with pytest.raises(UnknownFormatError, match="mapped-ram"):
        _open(stream(subsections=(("configuration/capabilities", 1,
                                   Q.be32(1) + Q.pstr("mapped-ram")),)).bytes())
    with pytest.raises(CorruptDumpError, match="target page bits"):
        _open(stream(subsections=(("configuration/target-page-bits", 1, Q.be32(40)),)).bytes())


def test_block_list_extras_and_damage() -> None:
    # postcopy page size / ignore-shared address fields after a block, and a command
    s = Q.QemuStream()
    s.configuration()
    s.ram_setup([("pc.ram", 4 * MIB), ("pc.bios", 256 << 10)],
                extras={"pc.ram": [0x200000], "pc.bios": [0xFFFC0000]})
    s.command(2, Q.be32(7))  # MIG_CMD_PING
    s.ram_part([("page", "pc.ram", PS, B.page_for(1))], end=True)
    s.eof()
    with _open(s.bytes()) as r:
        assert r.read_page(1) == B.page_for(1)
        assert r.blocks[b"pc.ram"].extra == [0x200000]
    # the MEM_SIZE total does not match the blocks
    s = Q.QemuStream()
    s.configuration()
    s.ram_setup([("pc.ram", 4 * MIB)], total=2 * MIB)
    with pytest.raises(CorruptDumpError, match="MEM_SIZE total") as exc:
        _open(s.bytes())
    assert exc.value.offset == s.marks["ram_start"] + 1 + 4 + 4 + 8 + 8
    # a page offset beyond its block, unknown flags, a PART of an unknown section
    for rec, words in (
            (Q.QemuStream().record("page", "pc.ram", 64 * MIB, B.page_for(0)), "beyond its block"),
            (Q.be64(0x1000 | 0x400) + Q.pstr("pc.ram"), "bad RAM record flags"),
            (Q.be64(0x80) + Q.pstr("pc.ram"), "RDMA")):
        with pytest.raises((CorruptDumpError, UnknownFormatError), match=words):
            _open(stream(records=[rec, rec]).bytes())
    s = stream()
    blob = bytearray(s.bytes())
    blob[s.marks["ram_part1"] + 4] = 9  # section id of the END
    with pytest.raises(CorruptDumpError, match="not started") as exc:
        _open(bytes(blob))
    assert exc.value.offset == s.marks["ram_part1"] + 1


def test_iterative_sections_other_than_ram() -> None:
    s = Q.QemuStream()
    s.configuration()
    s.buf += bytes([Q.START]) + Q.be32(5) + Q.pstr("block") + Q.be32(0) + Q.be32(1)
    with pytest.raises(UnknownFormatError, match="'block'"):
        _open(s.bytes())


def test_truncation_at_every_structure_boundary() -> None:
    """Every cut of a small stream either opens tolerantly with the pages before the cut, or
    (strict) raises TruncatedDumpError naming an offset inside the file."""
    cpu, cfields = Q.cpu_content()
    s = stream(devices=[("cpu", cpu, {"version": 12, "desc_fields": cfields})])
    blob = s.bytes()
    cuts = sorted({*s.marks.values(), *(v + 1 for v in s.marks.values()), 9, 20, 200,
                   s.marks["ram_part0"] + 20, s.marks["ram_part1"] + 5000, len(blob) - 1})
    cuts.remove(s.marks["vmdesc"])  # a stream ending right after EOF is valid (no description)
    for cut in cuts:
        with pytest.raises(TruncatedDumpError) as exc:
            _open(blob[:cut])
        assert exc.value.offset is not None and exc.value.offset <= cut, cut
        try:
            r = _open(blob[:cut], strict=False)
        except TruncatedDumpError:
            assert cut < s.marks["ram_part0"]  # before the end of the block list: nothing to read
            continue
        with r:
            assert r.info.incomplete
            for batch in r.iter_batches():
                for pfn, row in zip(batch.pfns().tolist(), batch.data, strict=True):
                    assert row.tobytes() == B.page_for(pfn)


# --- libvirt ---------------------------------------------------------------------------------------

def test_libvirt_wrapper() -> None:
    inner = stream().bytes()
    for kw in ({}, {"endian": ">"}, {"version": 1, "fmt": 7}, {"cookie": b"<cookie/>"}):
        blob = Q.libvirt_wrap(inner, **kw)
        with open_bytes(blob) as r:
            assert r.info.format == "qemu-savevm"
            assert r.read_page(5) == B.page_for(5)
            d = r.info.details
            assert d["libvirt_domain"] == "guest1" and "complete" in d["libvirt"]
            assert not r.info.incomplete
    with open_bytes(Q.libvirt_wrap(inner, magic=b"LibvirtQemudPart")) as r:
        assert r.info.incomplete and "partial" in r.info.details["libvirt"]


def test_libvirt_wrapper_rejected() -> None:
    inner = stream().bytes()
    with pytest.raises(UnknownFormatError, match="gzip-compressed") as exc:
        open_bytes(Q.libvirt_wrap(inner, fmt=1))
    assert exc.value.offset == 28 and "gzip -dc" in str(exc.value)
    assert f"tail -c +{92 + 64 * 1024 + 48 + 1} " in str(exc.value)
    with pytest.raises(UnknownFormatError, match="mapped-ram"):
        open_bytes(Q.libvirt_wrap(inner, fmt=6))
    with pytest.raises(CorruptDumpError, match="version") as exc:
        open_bytes(Q.libvirt_wrap(inner, version=3))
    assert exc.value.offset == 16
    with pytest.raises(TruncatedDumpError, match="domain XML") as exc:
        open_bytes(Q.libvirt_wrap(inner, data_len=1 << 30))
    assert exc.value.offset == 20
    with pytest.raises(UnknownFormatError, match="not a QEMU migration stream") as exc:
        open_bytes(Q.libvirt_wrap(b"QEVX" + inner[4:], padding=100))
    assert exc.value.offset == 92 + 48 + 100


def test_synthetic_convert_round_trip(tmp_path: Path) -> None:
    text = B.vmcoreinfo_text("6.1.0-synthetic")
    note = Q.elf_note_le(b"VMCOREINFO", 0, text)
    vmci, vfields = Q.vmcoreinfo_content(0x3000, len(note))
    recs = [("page", "pc.ram", k * PS, B.page_for(k)) for k in (0, 1, 2)]
    recs += [("page", "pc.ram", 0x3000, note.ljust(PS, b"\0")), ("zero", "pc.ram", 0x4000, 0)]
    src = tmp_path / "s.qevm"
    src.write_bytes(Q.libvirt_wrap(stream(records=recs, devices=[
        ("vmcoreinfo", vmci, {"desc_fields": vfields})]).bytes()))
    for flags, out in ((("-c",), tmp_path / "o.kdump"), (("-E",), tmp_path / "o.elf")):
        r = kdumptool("convert", *flags, src, out)
        assert r.returncode == 0, r.stderr
        with open_dump(str(out)) as o, open_dump(str(src)) as q:
            assert o.info.vmcoreinfo.raw == text
            for pfn in range(5):
                assert o.read_page(pfn) == q.read_page(pfn)
    r = kdumptool("info", src)
    assert r.returncode == 0 and b"6.1.0-synthetic" in r.stdout
    bad = tmp_path / "bad.qevm"
    bad.write_bytes(Q.libvirt_wrap(stream().bytes(), fmt=5))
    r = kdumptool("info", bad)
    assert r.returncode == 3 and b"zstd-compressed" in r.stderr


def test_implausible_ram_size_and_sparse_windows() -> None:
    with pytest.raises(CorruptDumpError, match="implausible guest RAM size"):
        _open(stream(ram=1 << 50).bytes())
    # 8 GiB declared, 3 pages sent: only the windows holding them are read
    recs = [("page", "pc.ram", off, B.page_for(pfn)) for off, pfn in
            ((0, 0), (0x7FFFF000, 0x7FFFF), (0x80000000, 0x100000))]
    with _open(stream("q35", 8 << 30, recs).bytes()) as r:
        wins = list(r.data_windows())
        assert [w[0] for w in wins] == [0, 0x7FFFF000 // PS // 1024 * 1024, 0x100000]
        got = {int(p) for b in r.iter_batches() for p in b.pfns()}
        assert got == {0, 0x7FFFF, 0x100000}


# --- real streams made by the installed QEMU (skipped when it is not installed) -------------------

REAL_LAYOUTS = [
    # machine, RAM, marker addresses (first / last page below 4 GiB, first / last above), below_4g
    ("pc-i440fx-7.2", "4G", [0x1000, 0xBFFFF000, 0x100000000, 0x13FFFF000], 0xC0000000,
     "confirmed by the CMOS"),
    ("pc-q35-7.2", "3G", [0x1000, 0x7FFFF000, 0x100000000, 0x13FFFF000], 0x80000000,
     "confirmed by the CMOS"),
    ("pc-q35-7.2", "2560M", [0x9FFFF000], 0xA0000000, "confirmed by the CMOS"),
    ("pc-i440fx-7.2,max-ram-below-4g=2G", "3G", [0x7FFFF000, 0x100000000], 0x80000000, "CMOS"),
]


@pytest.mark.parametrize(("machine", "mem", "addrs", "below", "source"), REAL_LAYOUTS)
def test_real_qemu_ram_layout(tmp_path: Path, machine: str, mem: str, addrs: list[int],
                              below: int, source: str) -> None:
    """QEMU itself puts marker pages at guest-physical addresses (generic loader) in a stopped
    guest and migrates it: each marker is read back at its address, and nowhere else."""
    import qemu_live

    if not qemu_live.available():
        from corpus import in_ci

        if in_ci():
            pytest.fail("qemu-system-x86_64 is not installed (CI is set)", pytrace=False)
        pytest.skip("qemu-system-x86_64 is not installed")
    out = tmp_path / "s.qevm"
    qemu_live.save_stream(tmp_path, machine, mem, addrs, out)
    with open_dump(str(out)) as r:
        d = r.info.details
        assert d["below_4g"] == f"{below:#x}" and source in d["ram_split_from"]
        for a in addrs:
            assert r.read_page(a // PS) == qemu_live.marker(a)
        found = {}
        for b in r.iter_batches():
            rows = np.flatnonzero((b.data[:, :3] == np.frombuffer(b"GPA", np.uint8)).all(axis=1))
            for k in rows.tolist():
                found[int(b.pfns()[k]) * PS] = b.data[k, :16].tobytes()
        assert found == {a: b"GPA%013x" % a for a in addrs}
        assert d["cpu_state"] == "decoded" and d["complete"] and r.info.nr_cpus == 1
