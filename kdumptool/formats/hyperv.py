"""Hyper-V saved state (``.vmrs``; ``.vsv`` recognised) read as a kernel dump.

Spec: SPEC.md §11; microsoft/openvmm (MIT): ``support/hvs_file/FORMAT.md`` ("Appendix A:
Saved State Key Schema"), ``vmm_core/hyperv_dump/src/defs.rs`` (``MemoryBlockSaveStruct``),
``vmm_core/hyperv_dump/src/vmrs_writer.rs`` (RAM block layout). The record layout inside
compressed RAM blocks is not in openvmm: it comes from Pascal Beyer's reverse-engineered VMRS
parser (2024, public C source) and is unverified on real files.

Guest RAM is a list of ``RamMemoryBlock<i>`` metadata keys (a GPA range and its first index
into the sequence of saved pages) and ``RamBlock<n>`` data keys of 256 pages (1 MiB) each,
stored raw when 1 MiB long and compressed when shorter. Processor state comes from the
``partition_state`` chunk stream (:mod:`kdumptool.formats.hyperv_state`): one ``NT_PRSTATUS``
note per virtual processor (x86_64 and aarch64), the guest OS ID (which names a Linux kernel
version without reading guest memory) and the registers in ``info.details``. The key store
itself is :mod:`kdumptool.formats.hyperv_storage`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import construct as cs
import numpy as np

from kdumptool.codecs.xpress import XpressError, decompress
from kdumptool.dump import DumpInfo, DumpReader, Note, PageBatch
from kdumptool.errors import CorruptDumpError, CorruptPageError, TruncatedDumpError, UnknownFormatError
from kdumptool.formats.hyperv_state import (
    describe_guest_os_id,
    parse_partition_state,
    prstatus_note,
    vp_registers,
)
from kdumptool.formats.hyperv_storage import KEY_ARRAY, HyperVStorage, KeyValue, NumberedValues
from kdumptool.formats.hyperv_storage import probe as storage_probe
from kdumptool.formats.registry import ReaderEntry
from kdumptool.schema import ints
from kdumptool.transport.source import ByteSource

PAGE = 4096
BLOCK_PAGES = 256
BLOCK = BLOCK_PAGES * PAGE
#: Highest PFN accepted (64 TiB of guest RAM), as for ELF dumps.
MAX_PFN = 1 << 34
MEMORY_BLOCK_SAVE_VERSION = 3
#: Key paths of VM versions above 5.0; older ones lack the ``/savedstate`` prefix.
PREFIX = "/savedstate"
#: Decoded compressed blocks kept per reader.
BLOCK_CACHE = 8

_i = ints("<")
MemoryBlockSave = cs.Struct(
    "saved_state_version" / _i.u32, "flags" / _i.u32, "page_count_total" / _i.u64,
    "mbp_index_start" / _i.u64, "gpa_index_start" / _i.u64, "virtual_node" / _i.u32,
    cs.Padding(4), "ksr_block_id" / _i.u64,
)  # 48 bytes

MEMORY_BLOCK_FLAGS = {0: "hot-added", 1: "SGX", 2: "VTL2", 3: "specific-purpose"}

#: Registers shown per VP in ``info.details["vps"]`` (all of them go into NT_PRSTATUS).
DETAIL_REGS = ("rip", "rsp", "rbp", "rflags", "cr0", "cr2", "cr3", "cr4", "efer", "cs", "ss",
               "fs_base", "gs_base", "idtr_base", "gdtr_base", "xfem",
               "elr_el2", "spsr_el2", "sp_el0", "sp_el1", "sctlr_el1", "tcr_el1", "ttbr0_el1",
               "ttbr1_el1", "vbar_el1")

# records of a compressed RAM block (reverse-engineered, see the module docstring)
REC_END, REC_FILL_ONE, REC_FILL_MANY, REC_SIZED = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFC


def probe(head: bytes) -> bool:
    """True if ``head`` starts a HyperVStorage file (``.vmrs``, ``.vsv``, ``.vmcx``)."""
    return storage_probe(head)


def decode_compressed_block(data: bytes) -> tuple[np.ndarray, np.ndarray, str]:
    """Decode one compressed ``RamBlock``: ``(pages uint8[256, 4096], decoded bool[256], problem)``.

    Records: ``u32 size`` then ``size`` bytes of one page (raw when ``size == 4096``, else
    XPRESS); ``0xfffffffc, u32 out_size, u32 size`` then data of ``out_size`` bytes;
    ``0xfffffffe, u64 pattern`` one page filled with the pattern; ``0xfffffffd, u64 pattern,
    u32 count`` ``count`` such pages; ``0xffffffff`` the end. A page is decoded when its
    bytes were all produced before the end or the first damaged record (named in ``problem``).
    """
    out = np.zeros(BLOCK, dtype=np.uint8)
    produced = 0
    pos = 0
    n = len(data)
    problem = ""
    while pos + 4 <= n:
        tag = int.from_bytes(data[pos:pos + 4], "little")
        if tag == REC_END:
            break
        try:
            if tag in (REC_FILL_ONE, REC_FILL_MANY):
                if pos + (12 if tag == REC_FILL_ONE else 16) > n:
                    raise XpressError("record runs past the end of the block")
                pattern = np.frombuffer(data[pos + 4:pos + 12], dtype=np.uint8)
                count = 1 if tag == REC_FILL_ONE else int.from_bytes(data[pos + 12:pos + 16], "little")
                pos += 12 if tag == REC_FILL_ONE else 16
                if produced + count * PAGE > BLOCK:
                    raise XpressError(f"fill of {count} pages overflows the 1 MiB block")
                out[produced:produced + count * PAGE] = np.tile(pattern, count * PAGE // 8)
                produced += count * PAGE
                continue
            out_size, size, head = PAGE, tag, 4
            if tag == REC_SIZED:
                if pos + 12 > n:
                    raise XpressError("record runs past the end of the block")
                out_size = int.from_bytes(data[pos + 4:pos + 8], "little")
                size = int.from_bytes(data[pos + 8:pos + 12], "little")
                head = 12
            if size > PAGE or pos + head + size > n:
                raise XpressError(f"page record of {size} bytes does not fit")
            if out_size > BLOCK - produced:
                raise XpressError(f"page record of {out_size} output bytes overflows the 1 MiB block")
            payload = data[pos + head:pos + head + size]
            page = payload if size == out_size else decompress(payload, out_size)
            out[produced:produced + out_size] = np.frombuffer(page, dtype=np.uint8)
            produced += out_size
            pos += head + size
        except XpressError as exc:
            problem = f"record at byte {pos:#x} of the block: {exc}"
            break
    decoded = np.arange(BLOCK_PAGES) < produced // PAGE
    if not problem and produced < BLOCK and pos + 4 > n:
        problem = f"block ends after {produced // PAGE} pages without an end record"
    return out.reshape(BLOCK_PAGES, PAGE), decoded, problem


class HyperVReader(DumpReader):
    """Reader of Hyper-V saved state files (HyperVStorage with the ``/savedstate`` key schema)."""

    def __init__(self, source: ByteSource, *, strict: bool = True, transport: str = "plain") -> None:
        super().__init__(source, strict=strict)
        path = source.name
        self.store = st = HyperVStorage(source, strict=strict)
        self.notices = st.notices
        vsv = path.lower().endswith(".vsv")
        version = st.integer(f"{PREFIX}/VmVersion")
        if version is None:
            version = st.integer("/configuration/properties/version")
        prefix = PREFIX if f"{PREFIX}/RamMemoryBlock0" in st.keys else ""
        if not prefix and "/RamMemoryBlock0" not in st.keys:
            self._no_memory(vsv, version)
        if not prefix:
            raise UnknownFormatError(
                "Hyper-V saved state with the pre-v5.0 key layout (RamMemoryBlock/<n>): its memory "
                "block metadata is not published, so kdumptool cannot map its RAM", path=path,
                offset=st.keys["/RamMemoryBlock0"].entry_offset, expected="VmVersion > 0x0500",
                got=version)
        self.runs = self._memory_blocks(prefix)
        self.blocks = st.numbered.get(f"{prefix}/RamBlock") or NumberedValues(
            *(np.zeros(0, dtype=t) for t in (np.int64, np.int64, np.int64, np.int64, bool)))
        self._check_blocks()
        machine, notes, details = self._partition_state(prefix)
        starts, counts = self.runs[:, 0], self.runs[:, 1]
        max_pfn = int((starts + counts).max()) if len(starts) else 0
        self.info = DumpInfo(format="hyperv-vsv" if vsv else "hyperv-vmrs", path=path, endian="<",
                             word_size=8, machine=machine, page_size=PAGE, max_pfn=max_pfn,
                             transport=transport, notes=notes, nr_cpus=len(notes) or None)
        compressed = int((self.blocks.value_size < BLOCK).sum())
        d = self.info.details
        d["vm_version"] = f"{version >> 8}.{version & 0xFF}" if version is not None else "unknown"
        d["storage_format_version"] = f"{st.format_version >> 8}.{st.format_version & 0xFF}"
        d["header_copy"] = st.header_copy
        d["header_sequence"] = st.header.sequence
        d["replay_log"] = str(st.replay_log.get("state"))
        kind = st.string(f"{prefix}/type")
        if kind:
            d["saved_state_type"] = kind
        d["memory_blocks"] = len(self.runs)
        d["ram_blocks"] = len(self.blocks.number)
        d["compressed_ram_blocks"] = compressed  # records with XPRESS pages (not a kdump codec)
        d.update(details)
        if compressed:
            self.notices.append(f"{compressed} RAM blocks are compressed (record layout reverse-"
                                "engineered, unverified on real files); decoding is pure Python")
        d["notices"] = self.notices
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, str]] = OrderedDict()

    # --- opening ---------------------------------------------------------------------------
    def _no_memory(self, vsv: bool, version: int | None) -> None:
        path = self.source.name
        lost = self.store.lost_key_tables
        if lost or self.store.truncated:
            size = self.source.size
            where = (f"{len(lost)} key tables (the first at {lost[0]:#x}) lie" if lost
                     else "its object table runs")
            raise TruncatedDumpError(
                f"file is truncated: {where} past the end of the file, so no guest RAM can be "
                "located", path=path, offset=size,
                expected=f"file size > {max(lost):#x}" if lost else "the whole object table",
                got=f"{size:#x}")
        stem, _ = os.path.splitext(path)
        bins = [p for p in (stem + ".bin", stem + ".BIN") if os.path.exists(p)]
        if vsv and bins:
            msg = (f"Hyper-V .vsv saved state whose guest RAM is in {bins[0]}: the .bin layout is not "
                   "published (openvmm FORMAT.md describes only RAM stored as RamBlock keys), so "
                   "this pair is not supported")
        elif vsv:
            msg = ("Hyper-V .vsv saved state without guest RAM keys (older Hyper-V keeps RAM in a "
                   ".bin file beside it, whose layout is not published): not supported")
        else:
            msg = ("HyperVStorage file without guest RAM (no RamMemoryBlock0 key): a .vmcx "
                   "configuration, or the .vmrs of a VM that is running rather than saved")
        raise UnknownFormatError(msg, path=path, offset=0, expected="key /savedstate/RamMemoryBlock0",
                                 got=f"{len(self.store.keys)} keys, VmVersion {version}")

    def _memory_blocks(self, prefix: str) -> np.ndarray:
        """``int64[n, 3]`` rows ``(first pfn, pages, first saved-page index)`` sorted by pfn."""
        st = self.store
        rows: list[tuple[int, int, int]] = []
        flags_seen: set[str] = set()
        for i in range(len(st.keys)):
            key = st.keys.get(f"{prefix}/RamMemoryBlock{i}")
            if key is None:
                break
            raw = self._metadata_bytes(key)
            if raw is None:
                continue
            mb = MemoryBlockSave.parse(raw[:MemoryBlockSave.sizeof()])
            if mb.saved_state_version != MEMORY_BLOCK_SAVE_VERSION:
                self.notices.append(f"RamMemoryBlock{i} has SavedStateVersion {mb.saved_state_version} "
                                    f"(only {MEMORY_BLOCK_SAVE_VERSION} is published); read as version 3")
            flags_seen.update(name for bit, name in MEMORY_BLOCK_FLAGS.items() if mb.flags >> bit & 1)
            if mb.gpa_index_start + mb.page_count_total > MAX_PFN or mb.mbp_index_start > 1 << 50:
                self._damage(CorruptDumpError(
                    f"RamMemoryBlock{i} describes impossible memory", path=self.source.name,
                    offset=key.value_offset + 8, expected=f"GpaIndexStart + PageCountTotal <= {MAX_PFN:#x}",
                    got=f"GpaIndexStart {mb.gpa_index_start:#x}, PageCountTotal {mb.page_count_total:#x}"))
                continue
            if mb.page_count_total:
                rows.append((mb.gpa_index_start, mb.page_count_total, mb.mbp_index_start))
        runs = np.array(sorted(rows), dtype=np.int64).reshape(-1, 3)
        overlap = np.flatnonzero(runs[1:, 0] < runs[:-1, 0] + runs[:-1, 1])
        if len(overlap):
            k = int(overlap[0])
            self._damage(CorruptDumpError(
                "two RamMemoryBlock keys cover the same guest pages", path=self.source.name,
                offset=st.keys[f"{prefix}/RamMemoryBlock0"].value_offset,
                got=f"pfn {runs[k + 1, 0]:#x} inside {runs[k, 0]:#x}+{runs[k, 1]:#x}"))
            keep = np.ones(len(runs), dtype=bool)
            keep[overlap + 1] = False  # tolerant: the lower block wins
            runs = runs[keep]
        if flags_seen:
            self.notices.append("memory blocks flagged " + ", ".join(sorted(flags_seen)))
        return runs

    def _metadata_bytes(self, key: KeyValue) -> bytes | None:
        need = MemoryBlockSave.sizeof()
        try:
            raw = self.store.value(key, limit=1 << 16)
        except CorruptDumpError as exc:
            self._damage(exc)
            return None
        if key.key_type != KEY_ARRAY or len(raw) < need:
            self._damage(CorruptDumpError(f"{key.path} is not a {need}-byte array", path=self.source.name,
                                          offset=key.entry_offset, expected=f"array of {need} bytes",
                                          got=f"type {key.key_type}, {len(raw)} bytes"))
            return None
        return raw

    def _damage(self, exc: CorruptDumpError) -> None:
        self.store._damage(exc)  # raises in strict mode; else kept in store.damage and notices

    def _check_blocks(self) -> None:
        """Every RamBlock the memory blocks need exists, fits in the file and is at most 1 MiB."""
        b, size = self.blocks, self.source.size
        bad = np.flatnonzero((b.value_size > BLOCK) | (b.value_size <= 0))
        if len(bad):
            k = int(bad[0])
            self._damage(CorruptDumpError(
                f"RamBlock{int(b.number[k])} has an impossible size", path=self.source.name,
                offset=int(b.entry_offset[k]), expected=f"1..{BLOCK} bytes", got=int(b.value_size[k])))
        past = np.flatnonzero(b.value_offset + b.value_size > size)
        if len(past):
            k = int(past[0])
            end = int(b.value_offset[k] + b.value_size[k])
            self._damage(TruncatedDumpError(
                f"file is truncated: RamBlock{int(b.number[k])} ends past the end of the file",
                path=self.source.name, offset=size, expected=f"file size >= {end:#x}", got=f"{size:#x}"))
        missing = 0
        for first, pages, mbp in self.runs.tolist():
            lo, hi = mbp // BLOCK_PAGES, (mbp + pages - 1) // BLOCK_PAGES
            a, z = np.searchsorted(b.number, [lo, hi + 1])
            gap = (hi - lo + 1) - int(z - a)
            if gap and self.strict:
                have = b.number[a:z]
                expect = np.arange(lo, lo + len(have) + 1)
                first_missing = int(expect[np.flatnonzero(np.append(have, -1) != expect)[0]])
                raise CorruptDumpError(
                    f"RamBlock{first_missing} (guest pfn {first + first_missing * BLOCK_PAGES - mbp:#x}"
                    ") is missing", path=self.source.name, offset=0,
                    expected=f"RamBlock{lo}..RamBlock{hi}", got=f"{int(z - a)} of {hi - lo + 1} blocks")
            missing += gap
        if missing:
            self.notices.append(f"{missing} RamBlock keys are missing: their pages are lost")

    def _partition_state(self, prefix: str) -> tuple[str, list[Note], dict[str, Any]]:
        st = self.store
        key = st.keys.get(f"{prefix}/savedVM/partition_state")
        details: dict[str, Any] = {}
        if key is None:
            self.notices.append("no partition_state key: no processor state or guest OS ID")
            return "", [], details
        try:
            blob = st.value(key)
        except CorruptDumpError as exc:
            self._damage(exc)
            return "", [], details
        ps = parse_partition_state(blob)
        self.notices.extend(f"partition state: {p}" for p in ps["problems"])
        machine = ps["machine"]
        details["processor_vendor"] = ps["vendor"] or "unknown"
        if ps["os_id"] is not None:
            gos = describe_guest_os_id(ps["os_id"])
            details["guest_os_id"] = gos["guest_os_id"]
            details["guest_os"] = gos["text"]
            details["identification"] = [{"source": "hyper-v guest os id", **gos}]
        notes: list[Note] = []
        vps = []
        for vp in sorted(ps["vps"], key=lambda v: v["vp_index"]):
            regs = vp_registers(vp)
            note = prstatus_note(machine, vp["vp_index"], regs)
            if note is not None:
                notes.append(note)
            vps.append({"vp": vp["vp_index"], **{k: f"{regs[k]:#x}" for k in DETAIL_REGS if k in regs}})
        details["vps"] = vps
        return machine, notes, details

    # --- pages -----------------------------------------------------------------------------
    # Hyper-V saves every RAM page, so every RAM page is declared present (the kdump "2nd
    # bitmap"); one whose data is missing or cut off is *lost* (read_batch, lost_pages).
    def count_pages(self) -> tuple[int, int]:
        """``(RAM pages, pages with data)``: every page of a memory block is saved, so both are
        the blocks' page count.
        """
        ram = int(self.runs[:, 1].sum()) if len(self.runs) else 0
        return ram, ram

    def lost_pages(self) -> int:
        """RAM pages whose RamBlock is missing or lies (partly) past the end of the file."""
        return int(sum(len(m) for m in self.lost_pfns()))

    def lost_pfns(self) -> Iterator[np.ndarray]:
        """PFNs of lost pages, window by window (metadata only)."""
        for start, count in self.data_windows(1 << 16):
            loc = self._locate(start, count)
            yield np.flatnonzero(loc["ram"] & ~loc["present"]) + start

    def data_windows(self, window: int | None = None) -> Iterator[tuple[int, int]]:
        """Windows overlapping the memory blocks' GPA runs, in order."""
        window = window or self.window_pages
        pos = 0
        for first, pages, _ in self.runs.tolist():
            start = max(pos, first - first % window)
            while start < first + pages:
                yield start, min(window, self.max_pfn - start)
                start += window
            pos = max(pos, start)

    def _locate(self, start: int, count: int) -> dict[str, np.ndarray]:
        """Per page of the window: RAM, its RamBlock index in :attr:`blocks` and page slot."""
        pfn = np.arange(start, start + count, dtype=np.int64)
        runs = self.runs
        k = np.searchsorted(runs[:, 0], pfn, side="right") - 1
        kk = np.clip(k, 0, max(len(runs) - 1, 0))
        ram = (k >= 0) & (pfn < runs[kk, 0] + runs[kk, 1]) if len(runs) else np.zeros(count, bool)
        mbp = runs[kk, 2] + pfn - runs[kk, 0] if len(runs) else np.zeros(count, np.int64)
        blk, slot = mbp // BLOCK_PAGES, mbp % BLOCK_PAGES
        b = self.blocks
        bi = np.searchsorted(b.number, blk)
        bic = np.clip(bi, 0, max(len(b.number) - 1, 0))
        exists = ram & (bi < len(b.number))
        if len(b.number):
            exists &= b.number[bic] == blk
        size = b.value_size[bic] if len(b.number) else np.zeros(count, np.int64)
        off = b.value_offset[bic] if len(b.number) else np.zeros(count, np.int64)
        ok_size = (size > 0) & (size <= BLOCK)
        raw = exists & (size == BLOCK)
        page_off = off + slot * PAGE
        fsize = self.source.size
        present = (raw & (page_off + PAGE <= fsize)) | (exists & ok_size & ~raw & (off + size <= fsize))
        return {"ram": ram, "present": present, "raw": raw, "bi": bic, "slot": slot, "page_off": page_off}

    def bitmaps(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """RAM and present bits of the window: the pages of the memory blocks' GPA runs."""
        ram = self._locate(start, count)["ram"]
        return ram, ram.copy()

    def _block(self, bi: int) -> tuple[np.ndarray, np.ndarray, str]:
        if bi in self._cache:
            self._cache.move_to_end(bi)
            return self._cache[bi]
        b = self.blocks
        data = self.source.pread(int(b.value_offset[bi]), int(b.value_size[bi]))
        result = decode_compressed_block(data)
        self._cache[bi] = result
        if len(self._cache) > BLOCK_CACHE:
            self._cache.popitem(last=False)
        return result

    def read_batch(self, start: int, count: int) -> PageBatch:
        """The pages of the window: raw 1 MiB blocks read in runs, compressed blocks decoded
        (and cached); a page whose block is missing, cut off or corrupt is lost.

        :raises CorruptPageError: (strict) a compressed block does not decode
        """
        loc = self._locate(start, count)
        ram, present = loc["ram"], loc["present"].copy()
        corrupt: dict[int, str] = {}
        rows = np.zeros((count, PAGE), dtype=np.uint8)
        raw_idx = np.flatnonzero(present & loc["raw"])
        if len(raw_idx):
            offs = loc["page_off"][raw_idx]
            cut = np.flatnonzero((np.diff(offs) != PAGE) | (np.diff(raw_idx) != 1)) + 1
            for seg in np.split(np.arange(len(raw_idx)), cut):
                i0, n = int(raw_idx[seg[0]]), len(seg)
                buf = self.source.pread(int(offs[seg[0]]), n * PAGE)
                rows[i0:i0 + n] = np.frombuffer(buf, dtype=np.uint8, count=n * PAGE).reshape(n, PAGE)
        comp_idx = np.flatnonzero(present & ~loc["raw"])
        for bi in np.unique(loc["bi"][comp_idx]).tolist():
            pages, decoded, problem = self._block(bi)
            sel = comp_idx[loc["bi"][comp_idx] == bi]
            slots = loc["slot"][sel]
            rows[sel] = pages[slots]
            bad = sel[~decoded[slots]]
            if len(bad):
                msg = (f"compressed RamBlock{int(self.blocks.number[bi])} does not decode: "
                       f"{problem or 'too few pages'}")
                if self.strict:
                    raise CorruptPageError(msg, pfn=start + int(bad[0]), path=self.source.name,
                                           offset=int(self.blocks.value_offset[bi]))
                present[bad] = False
                corrupt.update({start + int(i): msg for i in bad})
        lost = ram & ~present
        for pfn in corrupt:
            lost[pfn - start] = False
        return PageBatch(start, count, ram, present, rows[present], lost, corrupt)


#: This format in the registry (:mod:`kdumptool.formats`).
ENTRY = ReaderEntry("hyperv", probe, HyperVReader, "HyperVStorage", order=40,
                    lost_pages=HyperVReader.lost_pages)  # type: ignore[arg-type]
