"""Xen domain save images: migration stream v2 (libxc), its libxl wrapper and ``xl save`` files.

Spec: SPEC.md §13.2. Upstream Xen ``docs/specs/libxc-migration-stream.pandoc`` (image header,
domain header, records, PAGE_DATA and the XEN_DOMCTL_PFINFO_* page types),
``docs/specs/libxl-migration-stream.pandoc`` (``LibxlFmt`` header, LIBXC_CONTEXT),
``tools/libs/guest/xg_sr_stream_format.h`` and ``tools/libs/light/libxl_sr_stream_format.h``
(the same as C structures, ``REC_LENGTH_MAX``), ``tools/xl/xl.h`` (``struct
save_file_header``, ``XL_MANDATORY_FLAG_*``) and ``tools/xl/xl_saverestore.c`` (what ``xl
save`` writes before the libxl stream).

Three nested layers, each optional from the outside in: the ``xl`` header (32-byte magic,
byte-order word, flags, optional data = config), the libxl stream (``LibxlFmt``, records of
which LIBXC_CONTEXT hands over to libxc), the libxc stream (``0xFFFFFFFFFFFFFFFF`` + ``XENF``,
domain header, records up to END; CHECKPOINT hands back to libxl). Memory is in PAGE_DATA
records; a page sent again (live migration resends dirty pages) replaces the earlier copy,
and a later XTAB entry removes a frame. PFNs are guest-physical frames for HVM guests and
pseudo-physical frames for PV guests (page-table pages of a PV guest hold PFNs, the saver
having normalised them).

Legacy images (Xen before 4.6: xend's ``LinuxGuestRecord`` files, ``xl`` files without
``XL_MANDATORY_FLAG_STREAMv2``, libxc streams without the all-ones marker) are recognised and
refused with a clear error.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

import construct as cs
import numpy as np

from kdumptool.dump import DumpInfo, Note
from kdumptool.errors import CorruptDumpError, TruncatedDumpError, UnknownFormatError
from kdumptool.formats.pfn_index import MAX_PFN, NO_DATA, PfnIndexReader, last_wins
from kdumptool.formats.registry import ReaderEntry
from kdumptool.formats.xen_vcpu import context_to_prstatus, hvm_context_notes, parse_context
from kdumptool.schema import ints, parse_at
from kdumptool.transport.source import ByteSource

XL_MAGIC = b"Xen saved domain, xl format\n \0 \r"
XL_BYTEORDER = 0x01020304
XL_MANDATORY_JSON, XL_MANDATORY_STREAMV2 = 1 << 0, 1 << 1
LIBXL_IDENT = b"LibxlFmt"
LIBXL_VERSION = 2
LIBXL_OPT_BIG_ENDIAN, LIBXL_OPT_LEGACY = 1 << 0, 1 << 1
IHDR_MARKER = b"\xff" * 8
IHDR_ID = b"XENF"
IHDR_VERSIONS = (2, 3)
IHDR_OPT_BIG_ENDIAN = 1 << 0
LEGACY_XEND = b"LinuxGuestRecord"
#: ``REC_LENGTH_MAX`` of ``xg_sr_stream_format.h``: no libxc record is longer.
REC_LENGTH_MAX = 128 << 20
#: Upper bound for the xl optional data (a domain config) loaded into memory.
MAX_XL_OPTIONAL = 16 << 20

# libxc record types (xg_sr_stream_format.h REC_TYPE_*)
REC_TYPES = {
    0x00: "END", 0x01: "PAGE_DATA", 0x02: "X86_PV_INFO", 0x03: "X86_PV_P2M_FRAMES",
    0x04: "X86_PV_VCPU_BASIC", 0x05: "X86_PV_VCPU_EXTENDED", 0x06: "X86_PV_VCPU_XSAVE",
    0x07: "SHARED_INFO", 0x08: "X86_TSC_INFO", 0x09: "HVM_CONTEXT", 0x0A: "HVM_PARAMS",
    0x0B: "TOOLSTACK", 0x0C: "X86_PV_VCPU_MSRS", 0x0D: "VERIFY", 0x0E: "CHECKPOINT",
    0x0F: "CHECKPOINT_DIRTY_PFN_LIST", 0x10: "STATIC_DATA_END", 0x11: "X86_CPUID_POLICY",
    0x12: "X86_MSR_POLICY",
}
REC_END, REC_PAGE_DATA, REC_X86_PV_INFO, REC_X86_PV_VCPU_BASIC = 0x00, 0x01, 0x02, 0x04
REC_HVM_CONTEXT = 0x09
#: HVM context blobs larger than this are not searched for CPU records (a few KiB per vCPU).
HVM_CONTEXT_MAX = 1 << 20
REC_CHECKPOINT = 0x0E
# libxl record types (libxl_sr_stream_format.h REC_TYPE_*)
LIBXL_REC_TYPES = {0: "END", 1: "LIBXC_CONTEXT", 2: "EMULATOR_XENSTORE_DATA",
                   3: "EMULATOR_CONTEXT", 4: "CHECKPOINT_END", 5: "CHECKPOINT_STATE"}
LIBXL_END, LIBXL_LIBXC_CONTEXT, LIBXL_CHECKPOINT_END = 0, 1, 4
#: Domain header types.
DOMAIN_TYPES = {1: "x86 PV", 2: "x86 HVM"}
DHDR_X86_PV, DHDR_X86_HVM = 1, 2

# PAGE_DATA pfn entries: bits 63-60 type (XEN_DOMCTL_PFINFO_* >> 28), bits 51-0 PFN
PFN_MASK = (1 << 52) - 1
PFINFO_BROKEN, PFINFO_XALLOC, PFINFO_XTAB = 0xD, 0xE, 0xF
#: Types 0x5-0x8 are reserved: a stream using them must be refused.
PFINFO_RESERVED = (0x5, 0x6, 0x7, 0x8)
#: Offset marking an XTAB entry (the frame became invalid) until duplicates are resolved.
_REMOVED = -2


@functools.cache
def _structs(endian: str) -> dict[str, cs.Struct]:
    i, be = ints(endian), ints(">")
    return {
        "xl": cs.Struct("magic" / cs.Bytes(32), "byteorder" / i.u32, "mandatory_flags" / i.u32,
                        "optional_flags" / i.u32, "optional_data_len" / i.u32),
        "libxl": cs.Struct("ident" / cs.Bytes(8), "version" / be.u32, "options" / be.u32),
        "ihdr": cs.Struct("marker" / cs.Bytes(8), "id" / cs.Bytes(4), "version" / be.u32,
                          "options" / be.u16, "_res1" / be.u16, "_res2" / be.u32),
        "dhdr": cs.Struct("type" / i.u32, "page_shift" / i.u16, "_res1" / i.u16,
                          "xen_major" / i.u32, "xen_minor" / i.u32),
        "rhdr": cs.Struct("type" / i.u32, "length" / i.u32),
        "page_data": cs.Struct("count" / i.u32, "_res1" / i.u32),
        "x86_pv_info": cs.Struct("guest_width" / i.u8, "pt_levels" / i.u8, cs.Padding(6)),
        "vcpu_hdr": cs.Struct("vcpu_id" / i.u32, "_res1" / i.u32),
    }


def probe(head: bytes) -> bool:
    """True for an ``xl save`` file, a libxl or libxc v2 stream, or a legacy xend save file."""
    return (head.startswith(XL_MAGIC) or head.startswith(LIBXL_IDENT)
            or (head[:8] == IHDR_MARKER and head[8:12] == IHDR_ID) or head.startswith(LEGACY_XEND))


def _align8(n: int) -> int:
    return (n + 7) & ~7


@dataclass
class _Scan:
    """What the record walk collects."""

    pfns: list[np.ndarray] = field(default_factory=list)
    offs: list[np.ndarray] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=dict)
    page_copies: int = 0
    vcpus: dict[int, int] = field(default_factory=dict)  # vcpu_id -> offset of its context
    vcpu_size: dict[int, int] = field(default_factory=dict)
    hvm_context: tuple[int, int] | None = None  # (offset, length) of the last HVM_CONTEXT
    checkpoints: int = 0


class XenStreamReader(PfnIndexReader):
    """Reader of Xen save images (``xl save`` file, libxl stream or bare libxc stream)."""

    def __init__(self, source: ByteSource, *, strict: bool = True, transport: str = "plain") -> None:
        super().__init__(source, strict=strict)
        self.path = source.name
        self.size = source.size
        self.details: dict[str, object] = {}
        self.truncated_at: int | None = None
        self.scan = _Scan()
        self.dhdr: cs.Container | None = None
        self.libxc_endian = "<"
        self.guest_width: int | None = None
        head = source.pread(0, 64)
        pos = 0
        wrapper = "libxc"
        if head.startswith(LEGACY_XEND):
            self._legacy(0, "xend save file 'LinuxGuestRecord', Xen before 4.2")
        if head.startswith(XL_MAGIC):
            pos = self._xl_header()
            wrapper = "xl"
        if self.source.pread(pos, 8) == LIBXL_IDENT:
            wrapper = "libxl" if wrapper == "libxc" else "xl+libxl"
            self._libxl(pos)
        else:
            end, pos = self._libxc(pos, headers=True)
            while end == "checkpoint" and pos < self.size:  # a bare checkpointed stream
                end, pos = self._libxc(pos, headers=False)
        self._finish(wrapper, transport)

    # --- layers ---------------------------------------------------------------------------
    def _legacy(self, offset: int, what: str) -> None:
        raise UnknownFormatError(f"unsupported (legacy Xen save format: {what})", path=self.path,
                                 offset=offset, expected="a migration stream v2 (Xen 4.6 or later)",
                                 got=self.source.pread(offset, 16))

    def _read(self, offset: int, length: int, what: str) -> bytes | None:
        """``length`` bytes at ``offset``; None (tolerant) or TruncatedDumpError (strict) when
        the file ends first."""
        data = self.source.pread(offset, length)
        if len(data) < length:
            if self.strict:
                raise TruncatedDumpError(
                    f"file is truncated inside the {what}", path=self.path, offset=self.size,
                    expected=f"{length} bytes at {offset:#x}", got=f"file size {self.size:#x}")
            self.truncated_at = offset
            return None
        return data

    def _xl_header(self) -> int:
        s = _structs("<")["xl"]
        hdr = parse_at(s, self.source.pread(0, s.sizeof()), path=self.path, offset=0,
                       what="xl save file header")
        if hdr.byteorder == XL_BYTEORDER:
            endian = "<"
        elif hdr.byteorder == int.from_bytes(XL_BYTEORDER.to_bytes(4, "little"), "big"):
            endian = ">"
            hdr = _structs(">")["xl"].parse(self.source.pread(0, s.sizeof()))
        else:
            raise CorruptDumpError("bad byte-order word in the xl save header", path=self.path,
                                   offset=32, expected=f"{XL_BYTEORDER:#x}", got=hdr.byteorder)
        if not hdr.mandatory_flags & XL_MANDATORY_STREAMV2:
            self._legacy(0, "xl save file without a v2 stream (XL_MANDATORY_FLAG_STREAMv2 clear)")
        end = s.sizeof() + hdr.optional_data_len
        if end > self.size:
            raise TruncatedDumpError("xl optional data runs past the end of the file", path=self.path,
                                     offset=44, expected=f"<= {self.size - s.sizeof()} bytes",
                                     got=hdr.optional_data_len)
        d = self.details
        d["xl_mandatory_flags"] = hdr.mandatory_flags
        d["xl_byte_order"] = "little" if endian == "<" else "big"
        if hdr.optional_data_len >= 4 and hdr.optional_data_len <= MAX_XL_OPTIONAL:
            opt = self.source.pread(s.sizeof(), hdr.optional_data_len)
            cfg_len = ints(endian).u32.parse(opt[:4])
            config = opt[4:4 + cfg_len]
            d["xl_config_bytes"] = len(config)
            if hdr.mandatory_flags & XL_MANDATORY_JSON:
                try:
                    c_info = json.loads(config.rstrip(b"\0").decode("utf-8")).get("c_info", {})
                    if isinstance(c_info.get("name"), str):
                        d["guest_name"] = c_info["name"]
                    if isinstance(c_info.get("type"), str):
                        d["guest_type"] = c_info["type"]
                except (ValueError, AttributeError):
                    d["xl_config"] = "not valid JSON"
        return end

    def _libxl(self, pos: int) -> None:
        hs = _structs("<")["libxl"]
        hdr = parse_at(hs, self.source.pread(pos, hs.sizeof()), path=self.path, offset=pos,
                       what="libxl stream header")
        if hdr.version != LIBXL_VERSION:
            raise UnknownFormatError("unsupported libxl stream version", path=self.path,
                                     offset=pos + 8, expected=LIBXL_VERSION, got=hdr.version)
        endian = ">" if hdr.options & LIBXL_OPT_BIG_ENDIAN else "<"
        self.details["libxl_legacy_converted"] = bool(hdr.options & LIBXL_OPT_LEGACY)
        rs = _structs(endian)["rhdr"]
        pos += hs.sizeof()
        libxc_started = False
        resume_libxc = False
        while True:
            if resume_libxc:
                end, pos = self._libxc(pos, headers=False)
                resume_libxc = False
                if end is None:
                    return
            raw = self._read(pos, 8, "libxl record header")
            if raw is None:
                return
            rh = rs.parse(raw)
            name = LIBXL_REC_TYPES.get(rh.type, f"type {rh.type:#x}")
            self._count(f"libxl {name}")
            if rh.type == LIBXL_LIBXC_CONTEXT:
                if libxc_started:
                    raise CorruptDumpError("second LIBXC_CONTEXT record in a libxl stream",
                                           path=self.path, offset=pos, expected="one", got="two")
                libxc_started = True
                end, pos = self._libxc(pos + 8 + _align8(rh.length), headers=True)
                if end is None:
                    return
                continue
            if rh.type == LIBXL_END:
                return
            if pos + 8 + rh.length > self.size:
                self._read(pos, 8 + rh.length, f"libxl {name} record")
                return
            pos += 8 + _align8(rh.length)
            if rh.type == LIBXL_CHECKPOINT_END and libxc_started:
                resume_libxc = True  # the libxc stream goes on with its next checkpoint

    def _libxc(self, pos: int, *, headers: bool) -> tuple[str | None, int]:
        """Walk libxc records from ``pos`` until END or CHECKPOINT.

        :return: ``("end" | "checkpoint" | None, position after that record)``; None when the
            file ends first (tolerant mode)
        """
        path = self.path
        if headers:
            raw = self._read(pos, 24, "libxc image header")
            if raw is None:
                return None, pos
            ih = _structs("<")["ihdr"].parse(raw)
            if ih.marker != IHDR_MARKER:
                self._legacy(pos, "libxc stream without the all-ones marker, Xen before 4.6")
            if ih.id != IHDR_ID:
                raise CorruptDumpError("bad libxc image header id", path=path, offset=pos + 8,
                                       expected=IHDR_ID, got=ih.id)
            if ih.version not in IHDR_VERSIONS:
                raise UnknownFormatError("unsupported migration stream version", path=path,
                                         offset=pos + 12, expected="2 or 3", got=ih.version)
            self.stream_version = ih.version
            self.libxc_endian = ">" if ih.options & IHDR_OPT_BIG_ENDIAN else "<"
            raw = self._read(pos + 24, 16, "libxc domain header")
            if raw is None:
                return None, pos
            dh = _structs(self.libxc_endian)["dhdr"].parse(raw)
            if not 10 <= dh.page_shift <= 18:
                raise CorruptDumpError("bad page_shift in the domain header", path=path,
                                       offset=pos + 28, expected="10-18", got=dh.page_shift)
            self.dhdr = dh
            pos += 40
        assert self.dhdr is not None
        st = _structs(self.libxc_endian)
        while True:
            raw = self._read(pos, 8, "libxc record header")
            if raw is None:
                return None, pos
            rh = st["rhdr"].parse(raw)
            name = REC_TYPES.get(rh.type, f"type {rh.type:#x}")
            if rh.length > REC_LENGTH_MAX:
                raise CorruptDumpError(f"{name} record is longer than REC_LENGTH_MAX", path=path,
                                       offset=pos + 4, expected=f"<= {REC_LENGTH_MAX}", got=rh.length)
            self._count(name)
            body_at = pos + 8
            nxt = body_at + _align8(rh.length)
            if rh.type == REC_PAGE_DATA:
                if not self._page_data(pos, rh.length):
                    return None, pos
            elif body_at + rh.length > self.size:
                self._read(pos, 8 + rh.length, f"{name} record")
                return None, pos
            elif rh.type == REC_X86_PV_INFO and rh.length >= 8:
                self.guest_width = st["x86_pv_info"].parse(self.source.pread(body_at, 8)).guest_width
            elif rh.type == REC_HVM_CONTEXT:
                self.scan.hvm_context = (body_at, rh.length)
            elif rh.type == REC_X86_PV_VCPU_BASIC and rh.length >= 8:
                vcpu = st["vcpu_hdr"].parse(self.source.pread(body_at, 8)).vcpu_id
                self.scan.vcpus[vcpu] = body_at + 8
                self.scan.vcpu_size[vcpu] = rh.length - 8
            if rh.type == REC_END:
                return "end", nxt
            if rh.type == REC_CHECKPOINT:
                self.scan.checkpoints += 1
                return "checkpoint", nxt
            pos = nxt

    def _page_data(self, pos: int, length: int) -> bool:
        """Index one PAGE_DATA record; False when the file ends inside it (tolerant)."""
        path, ps = self.path, 1 << self.dhdr.page_shift
        body = pos + 8
        raw = self._read(body, 8, "PAGE_DATA record")
        if raw is None:
            return False
        count = _structs(self.libxc_endian)["page_data"].parse(raw).count
        if count == 0 or 8 + 8 * count > length:
            raise CorruptDumpError("PAGE_DATA count does not fit its record", path=path,
                                   offset=body, expected=f"1..{max(0, (length - 8) // 8)}", got=count)
        raw = self._read(body + 8, 8 * count, "PAGE_DATA pfn array")
        if raw is None:  # keep the entries that are in the file: their data is lost
            raw = self.source.pread(body + 8, 8 * count)
            raw = raw[:len(raw) // 8 * 8]
        entries = np.frombuffer(raw, f"{self.libxc_endian}u8").astype(np.uint64)
        types = (entries >> np.uint64(60)).astype(np.int64)
        pfns = (entries & np.uint64(PFN_MASK)).astype(np.int64)
        reserved = np.isin(types, PFINFO_RESERVED)
        if reserved.any():
            k = int(np.flatnonzero(reserved)[0])
            raise CorruptDumpError("PAGE_DATA entry with a reserved page type", path=path,
                                   offset=body + 8 + 8 * k, expected="type 0-4 or 9-15",
                                   got=int(types[k]))
        with_data = ~np.isin(types, (PFINFO_BROKEN, PFINFO_XALLOC, PFINFO_XTAB))
        n_data = int(with_data.sum()) if len(raw) == 8 * count else None
        if n_data is not None and length != 8 + 8 * count + n_data * ps:
            raise CorruptDumpError(
                "PAGE_DATA length does not match its pages", path=path, offset=pos + 4,
                expected=f"{8 + 8 * count + n_data * ps} bytes ({count} pfns, {n_data} pages)",
                got=length)
        if (pfns >= MAX_PFN).any():
            k = int(np.flatnonzero(pfns >= MAX_PFN)[0])
            raise CorruptDumpError("PAGE_DATA names an impossible frame", path=path,
                                   offset=body + 8 + 8 * k, expected=f"pfn < {MAX_PFN:#x}",
                                   got=int(pfns[k]))
        data_at = body + 8 + 8 * count
        off = np.full(len(pfns), NO_DATA, dtype=np.int64)
        off[with_data] = data_at + np.arange(int(with_data.sum()), dtype=np.int64) * ps
        off[types == PFINFO_XTAB] = _REMOVED
        self.scan.pfns.append(pfns)
        self.scan.offs.append(off)
        self.scan.page_copies += int(with_data.sum())
        if body + length > self.size:
            self._read(pos, 8 + length, "PAGE_DATA record")  # strict: raises
            return False
        return True

    def _count(self, name: str) -> None:
        self.scan.records[name] = self.scan.records.get(name, 0) + 1

    # --- result ---------------------------------------------------------------------------
    def _finish(self, wrapper: str, transport: str) -> None:
        if self.dhdr is None:
            raise TruncatedDumpError("file ends before the libxc stream headers", path=self.path,
                                     offset=self.size, expected="image and domain headers",
                                     got=f"file size {self.size:#x}")
        scan = self.scan
        if scan.pfns:
            pfn, off, dropped = last_wins(np.concatenate(scan.pfns), np.concatenate(scan.offs))
        else:
            pfn, off, dropped = np.zeros(0, np.int64), np.zeros(0, np.int64), 0
        keep = off != _REMOVED
        self.set_index(pfn[keep], off[keep])
        dh = self.dhdr
        hvm = dh.type == DHDR_X86_HVM
        if dh.type == DHDR_X86_PV:
            width = self.guest_width if self.guest_width in (4, 8) else 8
            machine = "x86_64" if width == 8 else "i386"
        elif hvm:
            width, machine = 8, "x86_64"
        else:
            width, machine = 8, ""
        self.info = DumpInfo(
            format="xen-stream", path=self.path, endian=self.libxc_endian, word_size=width,
            machine=machine, page_size=1 << dh.page_shift, max_pfn=self.index_max_pfn,
            transport=transport, incomplete=self.truncated_at is not None,
            header_version=self.stream_version,
        )
        self.info.notes = self._cpu_notes(machine)
        if self.info.notes:
            self.info.nr_cpus = len(self.info.notes)
        d = self.info.details
        d.update(self.details)
        d["wrapper"] = wrapper
        d["xen_domain"] = DOMAIN_TYPES.get(dh.type, f"type {dh.type}")
        d["xen_version"] = f"{dh.xen_major}.{dh.xen_minor}"
        if dh.xen_major == 0:
            d["xen_version_note"] = "0.x: stream made by the legacy conversion tool"
        d["pfn_space"] = ("guest physical frames (HVM)" if hvm else
                          "pseudo-physical frames of a PV guest" if dh.type == DHDR_X86_PV else "unknown")
        if hvm:
            d["guest_width"] = "not recorded for HVM guests (assumed 64-bit)"
        elif self.guest_width is not None:
            d["guest_width"] = self.guest_width
        d["records"] = [f"{k} x{v}" for k, v in sorted(scan.records.items())]
        d["page_copies"] = scan.page_copies
        d["pages_resent"] = dropped
        d["removed_frames"] = int((~keep).sum())
        d["checkpoints"] = scan.checkpoints
        if self.truncated_at is not None:
            d["truncated_at"] = self.truncated_at
        elif scan.records.get("END", 0) == 0 and scan.checkpoints == 0:
            d["truncated_at"] = self.size

    def _cpu_notes(self, machine: str) -> list[Note]:
        """PV guests: their X86_PV_VCPU_BASIC contexts as NT_PRSTATUS notes; HVM guests: the
        CPU records of the HVM_CONTEXT blob."""
        if machine == "x86_64" and not self.scan.vcpus and self.scan.hvm_context is not None:
            off, length = self.scan.hvm_context
            blob = self.source.pread(off, min(length, HVM_CONTEXT_MAX))
            return hvm_context_notes(blob, self.libxc_endian)[0]
        if machine not in ("x86_64", "i386") or not self.scan.vcpus:
            return []
        layout = "x86_64" if machine == "x86_64" else "x86_32"
        notes: list[Note] = []
        for vcpu in sorted(self.scan.vcpus):
            size = min(self.scan.vcpu_size[vcpu], 8192)
            ctx = parse_context(self.source.pread(self.scan.vcpus[vcpu], size), layout,
                                self.libxc_endian)
            if ctx is not None:
                notes.append(context_to_prstatus(ctx, layout, pid=vcpu + 1, hvm=False,
                                                 endian=self.libxc_endian))
        return notes


#: This format in the registry (:mod:`kdumptool.formats`).
ENTRY = ReaderEntry("xen-stream", probe, XenStreamReader, "Xen save", order=60,
                    lost_pages=XenStreamReader.lost_pages)  # type: ignore[arg-type]
