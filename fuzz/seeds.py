"""Seeds: the files mutations start from. Synthetic dumps of every format from the tests'
builders, real dumps of the corpus shrunk to their working set, small hypervisor images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import random
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import BUNDLED_KDUMP, PS, VTOP_ADDRESSES, B

from kdumptool.dump import DumpReader, PageBatch
from kdumptool.errors import KdumpToolError
from kdumptool.formats import READERS
from kdumptool.formats.elf import PT_LOAD
from kdumptool.open import open_dump

# ============================================================================================
# seeds
# ============================================================================================


@dataclass
class Seed:
    """A starting file. ``rebuild(vmcoreinfo)`` rebuilds a synthetic seed with other text."""

    name: str
    fmt: str
    data: bytes
    origin: str = "synthetic"
    rebuild: Callable[[bytes], bytes] | None = None
    vmcoreinfo: bytes | None = None
    weight: float = 1.0


UTS_PFN = 16
UTS_VADDR = 0xFFFFFFFF80000000 + UTS_PFN * PS


def _uts_page(release: str = "6.1.0-test", page_size: int = PS, at: int = 4) -> bytes:
    fields = [b"Linux", b"fuzzhost", release.encode(), b"#1 SMP PREEMPT_DYNAMIC fuzz", b"x86_64",
              b"(none)"]
    raw = b"".join(f.ljust(65, b"\0") for f in fields)
    page = bytearray(page_size)
    page[at:at + len(raw)] = raw
    return bytes(page)


def synthetic_vmcoreinfo(page_size: int = PS, machine: int = 62, **extra: Any) -> bytes:
    """VMCOREINFO that makes kdumptool read ``init_uts_ns`` from page :data:`UTS_PFN`."""
    ex: dict[str, Any] = {"SYMBOL(init_uts_ns)": 0xFFFFFFFF80000000 + UTS_PFN * page_size,
                          "OFFSET(uts_namespace.name)": 4, "NUMBER(phys_base)": 0,
                          "CRASHTIME": 1700000000, "BUILD-ID": "0123456789abcdef"}
    ex.update(extra)
    return B.vmcoreinfo_text(page_size=page_size, machine=machine, extra=ex)


def synthetic_pages(page_size: int = PS, *, lost: Iterable[int] = (), noisy: Iterable[int] = (),
           extra: Iterable[tuple[int, int]] = ()) -> dict[int, Any]:
    """The pages of the synthetic seeds (a few RAM runs, excluded, zero, lost and noisy pages,
    and the utsname page), for ``builders.build_kdump`` / ``build_elf``.
    """
    pages = B.make_pages([(0, 12), (UTS_PFN, UTS_PFN + 2), (20, 24), *extra], page_size,
                         excluded=[3, 21], zero=[5, 6], lost=lost, noisy=noisy)
    pages[UTS_PFN] = _uts_page(page_size=page_size)
    return pages


def _prstatus_notes() -> list[tuple[bytes, int, bytes]]:
    return [(b"CORE", 1, B.prstatus_x86_64(1, {"rip": 0xFFFFFFFF81000000})),
            (b"CORE", 1, B.prstatus_x86_64(2))]


def synthetic_seeds() -> list[Seed]:
    """Small complete dumps of every format, layout, byte order, version and codec."""
    seeds = _kdump_seeds()
    seeds += _elf_seeds()
    seeds += _flat_seeds(seeds)
    seeds += registry_seeds()
    return seeds


#: Formats whose seeds are made above, or by :func:`hypervisor_seeds` / :func:`real_seeds`.
_SEEDED_ELSEWHERE = {"kdump", "elf", "xen-core", "xen-stream", "qemu-savevm", "hyperv", "windows-dmp"}


def registry_seeds() -> list[Seed]:
    """A seed of every registered format (:data:`kdumptool.formats.READERS`) not seeded
    elsewhere, from ``fuzz_seed()`` of ``tests/builders_<name>.py``: a new format is fuzzed
    once its test builder has one."""
    out: list[Seed] = []
    for entry in READERS:
        if entry.name in _SEEDED_ELSEWHERE:
            continue
        try:
            builder = importlib.import_module(f"builders_{entry.name.replace('-', '_')}")
        except ModuleNotFoundError:
            continue
        make = getattr(builder, "fuzz_seed", None)
        if make is not None:
            out.append(Seed(f"{entry.name}-registry", entry.name, bytes(make()), origin="spec"))
    return out


def _kdump_seeds() -> list[Seed]:
    """kdump-compressed: every layout, byte order, header version and codec; split parts."""
    seeds: list[Seed] = []

    def kd(name: str, pages: dict[int, Any] | None = None, vmci: bytes | None = b"",
           **kw: Any) -> None:
        pages = pages if pages is not None else synthetic_pages(kw.get("page_size", PS))
        ps = kw.get("page_size", PS)
        text = synthetic_vmcoreinfo(ps) if vmci == b"" else vmci
        kw.setdefault("notes", _prstatus_notes())
        kw.setdefault("version", "")

        def build(v: bytes | None, pages: dict[int, Any] = pages, kw: dict[str, Any] = kw) -> bytes:
            return bytes(B.build_kdump(pages, vmcoreinfo=v, **kw))
        try:
            seeds.append(Seed(f"kdump-{name}", "kdump", build(text), rebuild=build, vmcoreinfo=text))
        except ImportError:  # a codec package is missing
            pass

    kd("64le-raw-v6")
    for codec in ("zlib", "lzo", "snappy", "zstd"):
        kd(f"64le-{codec}-v6", codec=codec)
    kd("64be-zlib-v6", endian=">", codec="zlib")
    kd("32pack-zlib-v6", layout="32pack", codec="zlib")
    kd("32pad-raw-v6", layout="32pad")
    kd("32pad-be-raw-v6", layout="32pad", endian=">")
    for v in (0, 1, 2, 3, 4, 5):
        kd(f"64le-zlib-v{v}", header_version=v, codec="zlib",
           eraseinfo=b"erase this\n" if v == 5 else None)
    kd("diskdump", signature=b"DISKDUMP", header_version=1)
    kd("incomplete", codec="zlib", incomplete_after=4)
    kd("lost", pages=synthetic_pages(lost=[8, 9]), codec="lzo")
    kd("level0-noisy", pages=synthetic_pages(noisy=[1, 2, 7]), codec="zlib", dump_level=0)
    kd("trailing-holes", codec="zstd", max_mapnr=5000)
    kd("window-edge", pages=synthetic_pages(extra=[(1020, 1030), (2047, 2049)]), codec="zlib")
    kd("ps1024", pages=synthetic_pages(1024), page_size=1024, vmci=synthetic_vmcoreinfo(1024))
    kd("ps65536", pages=B.make_pages([(0, 3)], 65536), page_size=65536, codec="zlib",
       vmci=synthetic_vmcoreinfo(65536))
    kd("no-notes", notes=(), vmci=None)
    # a valid file whose windows are large: 1024 pages of 256 KiB sharing one stored zero page
    big = {p: B.ZERO for p in range(1024)}
    seeds.append(Seed("kdump-ps256k-1024-zero-pages", "kdump",
                      bytes(B.build_kdump(big, page_size=1 << 18, dump_level=1, version="")),
                      weight=0.2))
    try:
        for i, part in enumerate(B.build_kdump_split(synthetic_pages(), 2, codec="zlib",
                                                     vmcoreinfo=synthetic_vmcoreinfo())):
            seeds.append(Seed(f"kdump-split-part{i}", "kdump", bytes(part)))
    except ImportError:
        pass
    return seeds


def _elf_seeds() -> list[Seed]:
    """ELF cores: both classes and byte orders, several machines, PN_XNUM, odd segments."""
    seeds: list[Seed] = []

    def el(name: str, pages: dict[int, Any] | None = None, vmci: bytes | None = b"",
           **kw: Any) -> None:
        pages = pages if pages is not None else synthetic_pages(kw.get("page_size", PS))
        text = synthetic_vmcoreinfo(kw.get("page_size", PS), kw.get("machine", 62)) \
            if vmci == b"" else vmci
        kw.setdefault("notes", _prstatus_notes())

        def build(v: bytes | None, pages: dict[int, Any] = pages, kw: dict[str, Any] = kw) -> bytes:
            return bytes(B.build_elf(pages, vmcoreinfo=v, **kw))
        seeds.append(Seed(f"elf-{name}", "elf", build(text), rebuild=build, vmcoreinfo=text))

    el("64le")
    el("64le-align4096", data_align=4096)
    el("32le-i386", elf_class=32, machine=B.EM_386)
    el("32be-arm", elf_class=32, endian=">", machine=B.EM_ARM)
    el("64be-s390", endian=">", machine=B.EM_S390)
    el("64le-aarch64", machine=B.EM_AARCH64)
    el("pn-xnum", use_pn_xnum=True)
    el("incomplete-flag", e_flags=1)
    el("long-excluded-run", pages=B.make_pages([(0, 306), (UTS_PFN, UTS_PFN + 1)],
                                               excluded=range(10, 300)))
    el("ps16384", pages=B.make_pages([(0, 4)], 16384), page_size=16384)
    el("ps65536", pages=B.make_pages([(0, 2)], 65536), page_size=65536)
    el("no-notes", notes=(), vmci=None)
    el("qemu-note", notes=[(b"QEMU", 0, bytes(0x1B8)), *_prstatus_notes()])
    pages = synthetic_pages()
    seg_text = B.Segment(UTS_PFN * PS, 2 * PS, 2 * PS, vaddr=UTS_VADDR)
    seg_ram = B.Segment(0, 24 * PS, 24 * PS)
    el("overlapping-segments", pages=pages, segments=[seg_text, seg_ram])
    el("memsz-gt-filesz", pages=pages, segments=[B.Segment(0, 64 * PS, 12 * PS),
                                                 B.Segment(64 * PS, PS + 100, PS)])
    return seeds


def _flat_seeds(seeds: list[Seed]) -> list[Seed]:
    """Some of ``seeds`` flattened: plainly, shuffled, with overlapping records; and one
    without its end marker."""
    out: list[Seed] = []
    flat_src = [s for s in seeds if s.name in ("kdump-64le-zlib-v6", "kdump-32pack-zlib-v6",
                                                "kdump-split-part0", "elf-64le", "elf-pn-xnum",
                                                "kdump-incomplete", "elf-long-excluded-run")]
    rng = random.Random(0xF1A7)
    for s in flat_src:
        for variant, kw in (("plain", {}), ("shuffled", {"record_size": 4096, "shuffle": rng}),
                            ("overlaps", {"record_size": 512, "duplicate_overlaps": True,
                                          "shuffle": rng})):
            if variant != "plain" and s.name not in ("kdump-64le-zlib-v6", "elf-64le"):
                continue
            out.append(Seed(f"flat-{variant}-{s.name}", "flat", bytes(B.flatten(s.data, **kw))))
    out.append(Seed("flat-no-end-marker", "flat", bytes(B.flatten(seeds[0].data, end_marker=False))))
    return out


# --- real files -----------------------------------------------------------------------------


class _Subset(DumpReader):
    """A reader that presents only some PFNs of another (to write small real dumps)."""

    def __init__(self, inner: DumpReader, keep: Iterable[int]) -> None:
        super().__init__(inner.source, strict=True)
        self.inner = inner
        self.info = dataclasses.replace(inner.info, details=dict(inner.info.details))
        self.keep = np.array(sorted(set(keep)), dtype=np.int64)

    def _mask(self, start: int, count: int) -> np.ndarray:
        m = np.zeros(count, dtype=bool)
        sel = self.keep[(self.keep >= start) & (self.keep < start + count)] - start
        m[sel] = True
        return m

    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        ram, present = self.inner.bitmaps(start, count)
        return ram, present & self._mask(start, count)

    def read_batch(self, start: int, count: int) -> PageBatch:
        ram, present = self.bitmaps(start, count)
        z = np.zeros(count, dtype=bool)
        if not present.any():
            return PageBatch(start, count, ram, present, np.empty((0, self.page_size), np.uint8), z)
        b = self.inner.read_batch(start, count)
        rows = present[b.present]
        return PageBatch(start, count, ram, b.present & present, b.data[rows], z)


def _uts_pfns(reader: DumpReader) -> list[int]:
    from kdumptool.vtop.kernel_image import kernel_image_to_phys

    vmci = reader.info.vmcoreinfo
    out = []
    with contextlib.suppress(Exception):
        v = vmci.symbol("init_uts_ns") + (vmci.offset("uts_namespace.name")
                                          if vmci.has("OFFSET(uts_namespace.name)") else 0)
        p = kernel_image_to_phys(vmci, reader.info.machine, v, reader.info.phys_base)
        out += [p // reader.page_size, (p + 6 * 65) // reader.page_size]
    with contextlib.suppress(Exception):
        v = vmci.symbol("swapper_pg_dir")
        out.append(kernel_image_to_phys(vmci, reader.info.machine, v, reader.info.phys_base)
                   // reader.page_size)
    return out


def _present_pfns(reader: DumpReader, first: int, rng: random.Random, extra: int) -> list[int]:
    found: list[int] = []
    others: list[int] = []
    for start, count in reader.windows(1 << 16):
        _, present = reader.bitmaps(start, count)
        idx = (np.flatnonzero(present) + start).tolist()
        if len(found) < first:
            found += idx[:first - len(found)]
        if idx:
            others += rng.sample(idx, min(len(idx), 2))
    return found + rng.sample(others, min(extra, len(others)))


def shrink_with_writer(path: Path, fmt: str, *, first: int = 12, extra: int = 6,
                       codec: str | None = "zlib") -> bytes:
    """A small complete dump of the real ``path`` (real notes, real pages) via kdumptool's writers."""
    with open_dump(str(path)) as inner:
        keep = _present_pfns(inner, first, random.Random(7), extra) + _uts_pfns(inner)
        return _write_subset(_Subset(inner, keep), fmt, codec)


def _write_subset(sub: Any, fmt: str, codec: str | None) -> bytes:
    """``sub``'s pages written by kdumptool's ELF (``fmt == "elf"``) or kdump writer."""
    from kdumptool.codecs import get_codec
    from kdumptool.formats.elf_writer import write_elf
    from kdumptool.formats.kdump_writer import write_kdump
    from kdumptool.metadata import output_metadata
    from kdumptool.pipeline import Selection
    from kdumptool.transport.sink import BytesSink

    sink = BytesSink()
    meta = output_metadata(sub)
    if fmt == "elf":
        write_elf(Selection(sub, 0), sink, meta)
    else:
        write_kdump(Selection(sub, 0), sink, meta, get_codec(codec) if codec else None, threads=1)
    return sink.getvalue()


def _working_set(reader: DumpReader) -> list[int]:
    """The PFNs that ``dmesg`` and ``vtop`` (a few kernel addresses) read from ``reader``."""
    from kdumptool.dmesg import dmesg_text
    from kdumptool.vtop import translator_for

    touched: set[int] = set()
    inner = reader.read_batch

    def recording(start: int, count: int) -> PageBatch:
        batch = inner(start, count)
        if count <= 4096:  # random access, not a sweep
            touched.update(batch.pfns().tolist())
        return batch

    reader.read_batch = recording  # type: ignore[method-assign]
    try:
        with contextlib.suppress(KdumpToolError):
            dmesg_text(reader)
        with contextlib.suppress(KdumpToolError, ValueError):
            walker = translator_for(reader).walker
            for a in VTOP_ADDRESSES:
                with contextlib.suppress(KdumpToolError, ValueError):
                    walker.walk(int(a, 0))
    finally:
        reader.read_batch = inner  # type: ignore[method-assign]
    return sorted(touched)


def shrink_to_working_set(path: Path, fmt: str) -> bytes:
    """A small real dump holding what ``dmesg``, ``vtop`` and the utsname need (kdump: zlib)."""
    with open_dump(str(path)) as inner:
        from kdumptool.scan import scan_vmcoreinfo

        keep = _working_set(inner) + _uts_pfns(inner)
        keep += [f.paddr // inner.page_size for f in scan_vmcoreinfo(inner, first_only=True)]
        return _write_subset(_Subset(inner, keep), fmt, "zlib")


def shrink_kdump_bytes(path: Path, *, first: int = 16, extra: int = 6) -> bytes:
    """The real kdump ``path`` cut to a few pages, keeping its header, notes and bitmap bytes.

    Everything before the bitmaps and the 1st bitmap are copied verbatim; the 2nd bitmap
    keeps only the chosen PFNs; their descriptors and stored (compressed) data follow.
    """
    from kdumptool.formats.kdump import KdumpReader

    with open_dump(str(path)) as r:
        assert isinstance(r, KdumpReader) and r.two_bitmaps
        keep = sorted(set(_present_pfns(r, first, random.Random(11), extra) + _uts_pfns(r)))
        _, present = r.bitmaps(0, r.max_pfn)
        keep = [p for p in keep if 0 <= p < r.max_pfn and present[p]]
        src = r.source
        out = bytearray(src.pread(0, r.bitmap_offset))
        sub = r.sub
        if sub is not None and sub.offset_eraseinfo:  # eraseinfo was at the end of the file
            s = r.structs
            c = dict(sub)
            c.pop("_io", None)
            c.update(offset_eraseinfo=0, size_eraseinfo=0)
            raw = s.KdumpSubHeader.build(c)
            out[r.block_size:r.block_size + len(raw)] = raw
        out += src.pread(r.bitmap_offset, r.bitmap_len)
        bm2 = bytearray(r.bitmap_len)
        for p in keep:
            bm2[p // 8] |= 1 << (p % 8)
        out += bm2
        out += bytes(r.desc_offset - len(out))
        dtype = r.structs.page_desc_dtype
        descs = np.zeros(len(keep), dtype=dtype)
        data = bytearray()
        base = r.desc_offset + 24 * len(keep)
        placed: dict[tuple[int, int], int] = {}
        for i, p in enumerate(keep):
            d = r._descs(r.rank(p), 1)[0]
            k = (int(d["offset"]), int(d["size"]))
            if k not in placed:
                placed[k] = base + len(data)
                data += src.pread(*k)
            descs[i] = (placed[k], k[1], int(d["flags"]), int(d["page_flags"]))
        return bytes(out + descs.tobytes() + data)


def shrink_elf_bytes(path: Path, *, pages: int = 2) -> bytes:
    """The real ELF ``path`` with its headers and notes verbatim and ``pages`` pages per PT_LOAD."""
    from kdumptool.formats.elf import ElfReader

    with open_dump(str(path)) as r:
        assert isinstance(r, ElfReader)
        eh, s = r.ehdr, r.structs
        ends = [eh.e_phoff + len(r.phdrs) * eh.e_phentsize]
        ends += [off + n for off, n in r.note_segments]
        if eh.e_shoff:
            ends.append(eh.e_shoff + s.Shdr.sizeof())
        out = bytearray(r.source.pread(0, max(ends)))
        for k in range(len(r.phdrs)):
            ph = r.phdr(k)
            if ph.p_type != PT_LOAD:
                continue
            n = min(ph.p_filesz, pages * r.page_size)
            c = dict(ph)
            c.update(p_offset=len(out) if n else 0, p_filesz=n)
            out += r.source.pread(ph.p_offset, n)
            raw = s.Phdr.build(c)
            at = eh.e_phoff + k * eh.e_phentsize
            out[at:at + len(raw)] = raw
        return bytes(out)


def _prefix(path: Path, n: int = 256 << 10) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def hypervisor_seeds(*, shared: bool = True, log: Callable[[str], None] | None = None) -> list[Seed]:
    """Small QEMU savevm, libvirt, Xen dump-core / save and Hyper-V images.

    Built with the tests' spec builders (``tests/builders_{qemu,xen,hyperv}.py``) around real
    pages (the bundled kdump's working set, so identification and ``dmesg`` run on them), and,
    with the shared corpus, the first 256 KiB of the real migration stream.
    """
    out: list[Seed] = []

    def add(name: str, fmt: str, make: Callable[[], bytes]) -> None:
        try:
            out.append(Seed(name, fmt, make(), origin="spec"))
        except Exception as exc:  # noqa: BLE001 - a builder change: skip the seed, say so
            if log is not None:
                log(f"seed {name} skipped: {type(exc).__name__}: {exc}")

    X: Any = importlib.import_module("builders_xen")
    Q: Any = importlib.import_module("builders_qemu")
    HV: Any = importlib.import_module("builders_hyperv")
    from kdumptool.scan import scan_vmcoreinfo

    with open_dump(str(BUNDLED_KDUMP)) as real:
        keep = _working_set(real) + _uts_pfns(real)
        keep += [f.paddr // PS for f in scan_vmcoreinfo(real, first_only=True)]
        pages = {p: real.read_page(p) for p in sorted(set(keep))}
    small = dict(list(pages.items())[:6])

    add("xen-core-hvm", "xen", lambda: X.build_xc_core(pages, vcpus=[X.vcpu_context_x86_64()],
                                                        xen_version=X.xen_version_desc()))
    add("xen-core-pv", "xen", lambda: X.build_xc_core(small, hvm=False, vcpus=[X.vcpu_context_x86_64()],
                                                       invalid_slots=2))
    batches = [[(p, 0, d) for p, d in list(small.items())[:3]], [(p, 0, d) for p, d in small.items()]]
    add("xen-stream-xl", "xen", lambda: X.xl_save_file(X.libxl_stream(X.libxc_stream(
        batches, after=X.hvm_tail()), after=[X.emulator_context()]), config={"name": "fuzz"}))
    add("xen-stream-libxc", "xen", lambda: X.libxc_stream(batches, version=2))

    def qemu(libvirt: bool) -> bytes:
        st = Q.QemuStream()
        st.configuration("pc-i440fx-7.2")
        st.ram_setup([("pc.ram", 320 << 20), ("pc.bios", 256 << 10)])
        recs = [("page", "pc.ram", p * PS, d) for p, d in pages.items()]
        recs += [("zero", "pc.ram", 0x3000 * PS, 0), ("zlib", "pc.ram", 0x3001 * PS, bytes(PS))]
        st.ram_part(recs[:3])
        st.ram_part(recs[3:], end=True)
        content, fields = Q.cpu_content({"env.eflags": 0x246})
        st.device("cpu", content, version=12, desc_fields=fields)
        st.eof()
        return Q.libvirt_wrap(st.bytes()) if libvirt else st.bytes()

    add("qemu-savevm", "qemu", lambda: qemu(False))
    add("qemu-libvirt", "qemu", lambda: qemu(True))

    def vmrs() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "seed.vmrs"
            mem = bytearray(1 << 20)
            for p, d in small.items():
                mem[(p % 256) * PS:(p % 256 + 1) * PS] = d
            HV.build_vmrs(path, [(0, 1 << 20), (1 << 20, 1 << 20)],
                          lambda gpa, n: bytes(mem[gpa % (1 << 20):gpa % (1 << 20) + n]),
                          os_id=HV.linux_guest_os_id(6, 1, 192), compress=[1])
            return path.read_bytes()

    add("hyperv-vmrs", "hyperv", vmrs)
    W: Any = importlib.import_module("builders_windows")
    add("windows-dmp", "windows", lambda: W.build_win_dmp64(
        [(1, 0x1F), (0x100, 8)], lambda pfn: pages.get(pfn, bytes(PS))))
    if shared:
        with contextlib.suppress(Exception):
            corpus = importlib.import_module("corpus")
            qevm = Path(corpus.corpus_file("x86_64-qemu-256m/qemu-migrate.qevm"))
            add("real-qemu-migrate-prefix256k", "qemu", lambda: _prefix(qevm))
    return out


def real_seeds(*, shared: bool = True, log: Callable[[str], None] | None = None) -> list[Seed]:
    """Seeds from real dumps: the bundled kdump always, the shared corpus when ``shared``."""
    out: list[Seed] = []

    def add(name: str, fmt: str, make: Callable[[], bytes]) -> None:
        try:
            out.append(Seed(name, fmt, make(), origin="real"))
        except Exception as exc:  # noqa: BLE001 - a missing file or a reader change: skip it
            if log is not None:
                log(f"seed {name} skipped: {type(exc).__name__}: {exc}")

    k = BUNDLED_KDUMP
    add("real-kdump-prefix256k", "kdump", lambda: _prefix(k))
    add("real-kdump-shrunk", "kdump", lambda: shrink_kdump_bytes(k))
    add("real-kdump-rewritten", "kdump", lambda: shrink_with_writer(k, "kdump"))
    add("real-kdump-as-elf", "elf", lambda: shrink_with_writer(k, "elf"))
    add("real-kdump-dmesg-set", "kdump", lambda: shrink_to_working_set(k, "kdump"))
    add("real-kdump-dmesg-set-elf", "elf", lambda: shrink_to_working_set(k, "elf"))
    if out:
        first = out[1].data if len(out) > 1 else out[0].data
        add("real-kdump-shrunk-flat", "flat", lambda: bytes(B.flatten(first, record_size=4096)))
    if not shared:
        return out
    try:
        corpus = importlib.import_module("corpus")
        if not corpus.corpus_available():
            raise FileNotFoundError(corpus.CORPUS_ROOT)
    except Exception as exc:  # noqa: BLE001
        if log is not None:
            log(f"shared corpus not used: {exc}")
        return out

    def cf(rel: str) -> Path:
        return Path(corpus.corpus_file(rel))

    for rel, name in (("x86_64-kdump-320m/vmcore.elf", "vmcore"),
                      ("x86_64-kdump-320m/derived/E-d31.elf", "E-d31"),
                      ("x86_64-qemu-256m/qemu-elf.vmcore", "qemu-elf")):
        add(f"real-elf-{name}-prefix256k", "elf", lambda rel=rel: _prefix(cf(rel)))
        add(f"real-elf-{name}-shrunk", "elf", lambda rel=rel: shrink_elf_bytes(cf(rel)))
    add("real-elf-vmcore-rewritten", "elf",
        lambda: shrink_with_writer(cf("x86_64-kdump-320m/vmcore.elf"), "elf"))
    add("real-elf-qemu-dmesg-set", "elf",
        lambda: shrink_to_working_set(cf("x86_64-qemu-256m/qemu-elf.vmcore"), "elf"))
    add("real-flat-F-c-d31-prefix256k", "flat",
        lambda: _prefix(cf("x86_64-kdump-320m/derived/F-c-d31.flat")))
    add("real-kdump-qemu-shrunk", "kdump",
        lambda: shrink_kdump_bytes(cf("x86_64-qemu-256m/qemu-kdump-zlib.vmcore")))
    add("real-kdump-split-part1-shrunk", "kdump",
        lambda: shrink_kdump_bytes(cf("x86_64-kdump-320m/derived/split2-c-d31.2")))
    return out
