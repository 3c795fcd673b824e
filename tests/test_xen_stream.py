"""Xen save images: migration stream v2 (libxc), the libxl wrapper, ``xl save`` files.

Evidence: no public sample file exists (see ``tests/builders_xen.py``); images are built from
``libxc-migration-stream.pandoc``, ``libxl-migration-stream.pandoc`` and ``tools/xl/xl.h`` by
``builders_xen``, and the realistic image holds real guest memory (``xen_corpus``).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
from builders import page_for
from builders_xen import (
    BROKEN,
    CHECKPOINT_END,
    DHDR_X86_PV,
    L1TAB,
    L4TAB,
    NOTAB,
    REC_CHECKPOINT,
    REC_END,
    REC_PAGE_DATA,
    REC_X86_PV_INFO,
    REC_X86_PV_VCPU_BASIC,
    XALLOC,
    XTAB,
    domain_header,
    emulator_context,
    hvm_tail,
    image_header,
    libxc_stream,
    libxl_stream,
    page_data,
    record,
    vcpu_context_x86_64,
    xl_save_file,
)
from ours import kdumptool, our_digests, read_all_pages
from xen_corpus import RELEASE, corpus_pages

from kdumptool.errors import CorruptDumpError, TruncatedDumpError, UnknownFormatError
from kdumptool.formats import find_reader, xen_stream
from kdumptool.formats.notes import parse_prstatus
from kdumptool.open import open_bytes

PAGES = {p: page_for(p) for p in range(64)}
BATCHES = [[(p, NOTAB, PAGES[p]) for p in range(k, min(k + 24, 64))] for k in range(0, 64, 24)]


def _err(img: bytes, cls: type[Exception] = CorruptDumpError) -> Exception:
    with pytest.raises(cls) as e:
        open_bytes(img)
    return e.value


LIBXC = libxc_stream(BATCHES, after=hvm_tail())
LIBXL = libxl_stream(LIBXC, after=[emulator_context()])
XL = xl_save_file(LIBXL, config={"c_info": {"type": "hvm", "name": "debian12"}})


# --- probe, layers -----------------------------------------------------------------------------


def test_probe_and_registry() -> None:
    for img in (LIBXC, LIBXL, XL, b"LinuxGuestRecord" + bytes(64)):
        assert xen_stream.probe(img[:4096]) and find_reader(img[:4096]).name == "xen-stream"
    for junk in (b"", bytes(4096), b"\xff" * 8 + b"XENX", b"LibxlFm", b"Xen saved domain"):
        assert not xen_stream.probe(junk)


@pytest.mark.parametrize("img,wrapper", [(LIBXC, "libxc"), (LIBXL, "libxl"), (XL, "xl+libxl")])
def test_every_layer_reads_the_same_pages(img: bytes, wrapper: str) -> None:
    r = open_bytes(img)
    info = r.info
    assert info.format == "xen-stream" and info.header_version == 3 and info.machine == "x86_64"
    assert info.page_size == 4096 and info.max_pfn == 64 and not info.incomplete
    assert read_all_pages(r) == PAGES and r.count_pages() == (64, 64)
    d = info.details
    assert d["wrapper"] == wrapper and d["xen_domain"] == "x86 HVM" and d["xen_version"] == "4.17"
    assert d["pfn_space"] == "guest physical frames (HVM)" and d["pages_resent"] == 0
    assert "PAGE_DATA x3" in d["records"] and "HVM_CONTEXT x1" in d["records"]
    if wrapper == "xl+libxl":
        assert d["guest_name"] == "debian12" and d["xl_mandatory_flags"] == 3


def test_version_2_stream_and_big_endian_stream() -> None:
    r = open_bytes(libxc_stream(BATCHES, version=2))
    assert r.info.header_version == 2 and read_all_pages(r) == PAGES
    r = open_bytes(libxc_stream(BATCHES, endian=">"))
    assert r.info.endian == ">" and read_all_pages(r) == PAGES


def test_later_copies_win_and_page_types_are_honoured() -> None:
    """Live migration: pass 1 sends everything, later passes resend dirty pages; XTAB drops a
    frame, XALLOC and BROKEN are RAM without data, page-table types carry data."""
    new3, new9 = page_for(1003), page_for(1009)
    batches = BATCHES + [
        [(3, NOTAB, new3), (9, L1TAB, new9), (10, XTAB, None), (11, XALLOC, None)],
        [(12, BROKEN, None), (70, L4TAB, page_for(70)), (71, XALLOC, None)],
    ]
    r = open_bytes(libxc_stream(batches))
    got = read_all_pages(r)
    want = {**PAGES, 3: new3, 9: new9, 70: page_for(70)}
    for p in (10, 11, 12):
        del want[p]
    assert got == want
    ram, present = r.bitmaps(8, 8)
    assert ram.tolist() == [1, 1, 0, 1, 1, 1, 1, 1] and present.tolist() == [1, 1, 0, 0, 0, 1, 1, 1]
    d = r.info.details
    assert d["pages_resent"] == 5 and d["removed_frames"] == 1 and d["page_copies"] == 67
    assert r.count_pages() == (65, 62)


def test_pv_stream_carries_width_and_vcpu_state() -> None:
    ctx = vcpu_context_x86_64({"rip": 0xFFFFFFFF81000000, "rsp": 0xFFFFC90000004000, "cs": 0xE033},
                              flags=1 | 4 | 32, gs_base_kernel=0xFFFF888000001000, gs_base_user=5)
    info = record(REC_X86_PV_INFO, bytes([8, 4]) + bytes(6))
    vcpus = [record(REC_X86_PV_VCPU_BASIC, struct.pack("<II", k, 0) + ctx) for k in (0, 1)]
    r = open_bytes(libxc_stream(BATCHES, domain_type=DHDR_X86_PV, before=[info], after=vcpus))
    assert r.info.machine == "x86_64" and r.info.nr_cpus == 2
    pr = [parse_prstatus(n.desc, "x86_64", "<") for n in r.info.notes]
    assert [p.pr_pid for p in pr] == [1, 2] and pr[0].pr_reg.rip == 0xFFFFFFFF81000000
    assert pr[0].pr_reg.gs_base == 0xFFFF888000001000  # VGCF_in_kernel
    assert r.info.details["pfn_space"] == "pseudo-physical frames of a PV guest"
    info32 = record(REC_X86_PV_INFO, bytes([4, 3]) + bytes(6))
    r = open_bytes(libxc_stream(BATCHES, domain_type=DHDR_X86_PV, before=[info32]))
    assert r.info.machine == "i386" and r.info.word_size == 4


def test_hvm_stream_cpu_records_become_prstatus_notes() -> None:
    """The HVM_CONTEXT blob's CPU records (hvm_hw_cpu, one per vCPU; shaped as in the real PVH
    save of corpus/xen-4.17-domu-96m) become NT_PRSTATUS notes."""
    cpus = [{"rip": 0xFFFFFFFF81A43C83 + k, "rsp": 0xFFFFC90000093E40, "rax": 7, "r15": 15,
             "cs_sel": 0x10, "ss_sel": 0x18, "gs_base": 0xFFFF888005A00000 + k, "fs_base": 3,
             "cr3": 0x2A0C000} for k in (0, 1)]
    r = open_bytes(libxc_stream(BATCHES, after=hvm_tail(cpus=cpus)))
    assert r.info.nr_cpus == 2
    pr = [parse_prstatus(n.desc, "x86_64", "<").pr_reg for n in r.info.notes]
    assert [p.rip for p in pr] == [0xFFFFFFFF81A43C83, 0xFFFFFFFF81A43C84]
    assert (pr[1].rsp, pr[1].rax, pr[1].r15, pr[1].cs, pr[1].ss, pr[1].fs_base, pr[1].gs_base) == \
        (0xFFFFC90000093E40, 7, 15, 0x10, 0x18, 3, 0xFFFF888005A00001)
    assert [n.desc[32:36] for n in r.info.notes] == [b"\x01\0\0\0", b"\x02\0\0\0"]  # pr_pid
    assert open_bytes(libxc_stream(BATCHES, after=hvm_tail())).info.notes == []  # no CPU record


def test_checkpointed_libxl_stream_resumes_libxc_after_checkpoint_end() -> None:
    first = libxc_stream(BATCHES, end=False) + record(REC_CHECKPOINT)
    second = page_data([(5, NOTAB, page_for(505))]) + record(REC_END)
    img = libxl_stream(first, after=[emulator_context(), record(CHECKPOINT_END), second])
    r = open_bytes(img)
    assert read_all_pages(r) == {**PAGES, 5: page_for(505)} and r.info.details["checkpoints"] == 1


# --- legacy and damaged images ---------------------------------------------------------------


def test_legacy_images_are_refused_by_name() -> None:
    e = _err(b"LinuxGuestRecord" + bytes(4096), UnknownFormatError)
    assert e.offset == 0 and "unsupported (legacy Xen save format" in str(e)
    e = _err(xl_save_file(b"\x00" * 64, mandatory_flags=1), UnknownFormatError)
    assert e.offset == 0 and "STREAMv2" in str(e)
    legacy = struct.pack("<Q", 0x40000) + bytes(64)  # p2m_size: zero bits in the first 8 octets
    e = _err(libxl_stream(legacy), UnknownFormatError)
    assert e.offset == 24 and "legacy Xen save format" in str(e)


def test_truncated_images_name_the_offset() -> None:
    for cut in (30, 50, 40 + 8 + 4, len(LIBXC) // 2, len(LIBXC) - 8):
        e = _err(LIBXC[:cut], TruncatedDumpError)
        assert e.offset == cut and "truncated" in str(e), (cut, str(e))
    e = _err(XL[:len(XL) - 8], TruncatedDumpError)
    assert "libxl record header" in str(e)


def test_truncated_image_reads_what_is_there_when_tolerant() -> None:
    cut = 40 + 8 + 8 + 24 * 8 + 10 * 4096 + 100  # inside the 11th page of the first record
    r = open_bytes(LIBXC[:cut], strict=False)
    assert r.info.incomplete and r.info.details["truncated_at"] == 48  # after STATIC_DATA_END
    batch = r.read_batch(0, 64)
    assert batch.present.sum() == 10 and batch.lost.sum() == 14
    assert read_all_pages(r) == {p: PAGES[p] for p in range(10)}


@pytest.mark.parametrize("img,offset,words", [
    (image_header(version=4) + domain_header(), 12, "unsupported migration stream version"),
    (libxl_stream(image_header(ident=0x58454E47) + domain_header(), end=False), 16 + 8 + 8,
     "bad libxc image header id"),
    (image_header() + domain_header(page_shift=40), 28, "page_shift"),
    (image_header() + domain_header() + page_data([(1, 6, page_for(1))]), 40 + 16, "reserved page type"),
    (image_header() + domain_header() + record(REC_PAGE_DATA, struct.pack("<II", 2, 0) + bytes(16)
                                               + page_for(0)), 44, "does not match"),
    (image_header() + domain_header() + record(REC_PAGE_DATA, struct.pack("<II", 0, 0)), 48, "count"),
    (image_header() + domain_header() + struct.pack("<II", 7, 200 << 20), 44, "REC_LENGTH_MAX"),
    (image_header() + domain_header() + page_data([(1 << 40, NOTAB, page_for(0))]), 56, "impossible"),
    (xl_save_file(LIBXL, byteorder=0x11223344), 32, "byte-order"),
    (xl_save_file(LIBXL, optional_data_len=1 << 30), 44, "optional data"),
    (libxl_stream(LIBXC)[:8] + struct.pack(">II", 3, 0), 8, "libxl stream version"),
])
def test_corrupt_images_name_the_offset(img: bytes, offset: int, words: str) -> None:
    with pytest.raises((CorruptDumpError, UnknownFormatError)) as e:
        open_bytes(img + record(REC_END))
    assert e.value.offset == offset and words in str(e.value), str(e.value)


# --- a realistic image: real guest memory, saved live ---------------------------------------------


@pytest.fixture(scope="module")
def real_save(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``xl save`` of the real guest: pass 1 sends every page, some still stale (zeros); pass 2
    resends those with their final contents, as live migration does."""
    pages = corpus_pages()
    pfns = sorted(pages)
    stale = set(pfns[::7])
    first = [(p, NOTAB, bytes(4096) if p in stale else pages[p]) for p in pfns]
    resend = [(p, NOTAB, pages[p]) for p in sorted(stale)]
    batches = [first[k:k + 1024] for k in range(0, len(first), 1024)]
    batches += [resend[k:k + 1024] for k in range(0, len(resend), 1024)]
    path = tmp_path_factory.mktemp("xen") / "guest.save"
    path.write_bytes(xl_save_file(libxl_stream(libxc_stream(batches, after=hvm_tail()),
                                               after=[emulator_context()])))
    return path


def test_real_save_is_identified(real_save: Path) -> None:
    proc = kdumptool("info", "--json", real_save)
    assert proc.returncode == 0, proc.stderr.decode()
    s = json.loads(proc.stdout)
    assert s["format"] == "xen-stream" and s["kernel"]["release"] == RELEASE
    assert s["xen"] == {"version": "4.17", "source": "xen stream header", "domain": "x86 HVM",
                        "pfn_space": "guest physical frames (HVM)"}
    assert s["pages"]["present"] == len(corpus_pages())


@pytest.mark.parametrize("fmt", [[], ["-E"]])
def test_real_save_converts_page_for_page(real_save: Path, tmp_path: Path, fmt: list[str]) -> None:
    out = tmp_path / "out"
    proc = kdumptool("convert", "-q", *fmt, real_save, out)
    assert proc.returncode == 0, proc.stderr.decode()
    want = {p: hashlib.sha1(d).hexdigest() for p, d in corpus_pages().items()}
    assert our_digests(real_save) == want
    assert our_digests(out) == want
    s = json.loads(kdumptool("info", "--json", out).stdout)
    assert s["kernel"]["release"] == RELEASE
