"""Builders of Xen guest images, written from the published specs only (the test oracle).

Like :mod:`builders`, this module never imports ``kdumptool``: it packs every structure with
:mod:`struct` at the offsets the specs give, and every field can be overridden to make
damaged variants.

* ``xl dump-core`` (xc_core ELF): Xen ``docs/misc/dump-core-format.txt``,
  ``tools/libs/guest/xg_core.h`` and the layout comment / ``xc_domain_dumpcore_via_callback``
  of ``xg_core.c`` (ELF header, section headers, ``.note.Xen``, ``.xen_prstatus``,
  ``.xen_shared_info``, padding to a page, ``.xen_pages``, ``.xen_p2m``/``.xen_pfn``,
  ``.shstrtab`` last); ``vcpu_guest_context`` from ``xen/include/public/arch-x86/xen.h`` and
  ``xen-x86_64.h``.
* migration stream v2: ``docs/specs/libxc-migration-stream.pandoc`` (image header, domain
  header, records, PAGE_DATA), ``docs/specs/libxl-migration-stream.pandoc`` (``LibxlFmt``
  header, LIBXC_CONTEXT) and ``tools/xl/xl.h`` (``struct save_file_header``).

No public sample file of either format was found (searched: libkdumpfile, crash, volatility,
drgn and Xen test data for ``.xen_pages``, ``XENF``, ``LibxlFmt``, the xl magic). The nearest
real evidence is a ``readelf -S`` listing of a real HVM dump-core file quoted in a volatility
2.x Xen ELF64 address space in the public code index (``XEN_VERSION_DESC_SIZE = 1276``,
``.note.Xen`` at 0x200 of size 0x564, ``.xen_prstatus`` of 0x1430 at 0x764,
``.xen_shared_info`` at 0x1b94, ``.xen_pages`` at 0x3000, ``.xen_pfn`` after the pages,
``.shstrtab`` last): :func:`build_xc_core` reproduces exactly that layout (see
``tests/test_xen_core.py``), and a bug report's snapshot scripts (xen-devel, April 2021,
"Windows is frozen after restore from snapshot") read a real ``xl save`` file as xl header
+ config, ``LibxlFmt``, LIBXC_CONTEXT, ``XENF`` image header, domain header, records.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

PAGE = 4096
EM_386, EM_X86_64, EM_ARM = 3, 62, 40
SHT_NULL, SHT_PROGBITS, SHT_STRTAB, SHT_NOTE = 0, 1, 3, 7
XEN_ELFNOTE_DUMPCORE_NONE = 0x2000000
XEN_ELFNOTE_DUMPCORE_HEADER = 0x2000001
XEN_ELFNOTE_DUMPCORE_XEN_VERSION = 0x2000002
XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION = 0x2000003
XC_CORE_MAGIC, XC_CORE_MAGIC_HVM = 0xF00FEBED, 0xF00FEBEE
INVALID = (1 << 64) - 1
VCPU_CONTEXT_SIZE = 5168  # sizeof(vcpu_guest_context_any_t) on x86

# --- vcpu_guest_context (x86_64) ------------------------------------------------------------

#: Byte offsets in ``struct vcpu_guest_context`` (x86_64): fpu_ctxt[512], flags, user_regs
#: (struct cpu_user_regs, 200 bytes from 520), trap_ctxt[256] (16 bytes each), ...
CTX64_REGS = {
    "r15": 520, "r14": 528, "r13": 536, "r12": 544, "rbp": 552, "rbx": 560, "r11": 568,
    "r10": 576, "r9": 584, "r8": 592, "rax": 600, "rcx": 608, "rdx": 616, "rsi": 624,
    "rdi": 632, "rip": 648, "rflags": 664, "rsp": 672,
}
CTX64_SEGS = {"cs": 656, "ss": 680, "es": 688, "ds": 696, "fs": 704, "gs": 712}
CTX64_FLAGS = 512
CTX64_CTRLREG = 4984
CTX64_FS_BASE, CTX64_GS_BASE_KERNEL, CTX64_GS_BASE_USER = 5144, 5152, 5160


def vcpu_context_x86_64(regs: Mapping[str, int] | None = None, *, flags: int = 1 | 32,
                        ctrlreg: Sequence[int] = (), fs_base: int = 0, gs_base_kernel: int = 0,
                        gs_base_user: int = 0, size: int = VCPU_CONTEXT_SIZE) -> bytes:
    """A ``vcpu_guest_context`` (x86_64) slot of ``size`` bytes; ``regs`` by register name
    (``rip``, ``rsp``, ``cs``, ...), all others zero. ``flags`` default: i387_valid|online."""
    out = bytearray(size)
    struct.pack_into("<Q", out, CTX64_FLAGS, flags)
    for name, value in (regs or {}).items():
        if name in CTX64_REGS:
            struct.pack_into("<Q", out, CTX64_REGS[name], value)
        else:
            struct.pack_into("<H", out, CTX64_SEGS[name], value)
    for k, value in enumerate(ctrlreg):
        struct.pack_into("<Q", out, CTX64_CTRLREG + 8 * k, value)
    struct.pack_into("<QQQ", out, CTX64_FS_BASE, fs_base, gs_base_kernel, gs_base_user)
    return bytes(out)


# --- xc_core ELF ----------------------------------------------------------------------------


def xen_note(ntype: int, desc: bytes, name: bytes = b"Xen\0", endian: str = "<") -> bytes:
    """``struct elfnote`` (namesz, descsz, type, name[4]) + descriptor, padded to 4."""
    out = struct.pack(f"{endian}III", len(name), len(desc), ntype) + name.ljust(4, b"\0")
    return out + desc + bytes(-len(desc) % 4)


def xen_version_desc(major: int = 4, minor: int = 17, extra: bytes = b".3", *,
                     changeset: bytes = b"abcdef123456",
                     capabilities: bytes = b"xen-3.0-x86_64 hvm-3.0-x86_64",
                     compiler: bytes = b"gcc (Debian 12.2.0-14) 12.2.0", pagesize: int = PAGE,
                     word: int = 8, endian: str = "<") -> bytes:
    """``xen_dumpcore_elfnote_xen_version_desc``: 1280 bytes from a 64-bit tool (``word`` 8),
    1276 from a 32-bit one (``virt_start`` 4 bytes, no padding before ``pagesize``)."""
    out = struct.pack(f"{endian}QQ", major, minor) + extra.ljust(16, b"\0")
    out += compiler.ljust(64, b"\0") + b"builder".ljust(16, b"\0") + b"example.org".ljust(32, b"\0")
    out += b"Mon Jan  1 00:00:00 UTC 2024".ljust(32, b"\0")
    out += capabilities.ljust(1024, b"\0") + changeset.ljust(64, b"\0")
    virt_start = 0xFFFF800000000000 if word == 8 else 0xF5800000
    out += struct.pack(f"{endian}{'Q' if word == 8 else 'I'}Q", virt_start, pagesize)
    return out


def build_xc_core(
    pages: Mapping[int, bytes] | Sequence[tuple[int, bytes]],
    *,
    hvm: bool = True,
    machine: int = EM_X86_64,
    endian: str = "<",
    elf_class: int = 2,
    page_size: int = PAGE,
    vcpus: Sequence[bytes] = (),
    nr_vcpus: int | None = None,
    invalid_slots: int = 0,
    shared_info: bool = True,
    xen_version: bytes | None = None,
    format_version: int | None = 1,
    header: Mapping[str, int] | None = None,
    notes: bytes | None = None,
    ehdr: Mapping[str, int] | None = None,
    shdr: Mapping[str, Mapping[str, int]] | None = None,
    p2m_gmfn: Mapping[int, int] | None = None,
) -> bytes:
    """An ``xl dump-core`` file laid out as ``xg_core.c`` writes it.

    :param pages: pfn -> page (a mapping is written in ascending PFN order; a sequence of
        pairs is written in the order given, duplicates and all)
    :param hvm: HVM (``.xen_pfn``, magic 0xF00FEBEE) or PV (``.xen_p2m``, 0xF00FEBED)
    :param invalid_slots: unused slots (PFN ~0, zero page) appended, as ``xg_core.c`` pads
    :param header: overrides of ``xch_magic``, ``xch_nr_vcpus``, ``xch_nr_pages``, ``xch_page_size``
    :param notes: the whole ``.note.Xen`` content instead of the four standard notes
    :param ehdr: overrides of ELF header fields (``e_shnum``, ``e_shentsize``, ...)
    :param shdr: per section name, overrides of its section header fields
    :param p2m_gmfn: PV only: pfn -> machine frame (default pfn + 0x100000)
    """
    items = sorted(pages.items()) if isinstance(pages, Mapping) else list(pages)
    items += [(INVALID, bytes(page_size))] * invalid_slots
    nr_pages = len(items)
    e = endian
    n_vcpus = len(vcpus) if nr_vcpus is None else nr_vcpus
    hdr = {"xch_magic": XC_CORE_MAGIC_HVM if hvm else XC_CORE_MAGIC, "xch_nr_vcpus": n_vcpus,
           "xch_nr_pages": nr_pages, "xch_page_size": page_size, **(header or {})}
    if notes is None:
        notes = xen_note(XEN_ELFNOTE_DUMPCORE_NONE, b"", endian=e)
        notes += xen_note(XEN_ELFNOTE_DUMPCORE_HEADER, struct.pack(
            f"{e}QQQQ", hdr["xch_magic"], hdr["xch_nr_vcpus"], hdr["xch_nr_pages"],
            hdr["xch_page_size"]), endian=e)
        notes += xen_note(XEN_ELFNOTE_DUMPCORE_XEN_VERSION,
                          xen_version if xen_version is not None else xen_version_desc(endian=e),
                          endian=e)
        if format_version is not None:
            notes += xen_note(XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION, struct.pack(f"{e}Q", format_version),
                              endian=e)
    prstatus = b"".join(vcpus)
    shinfo = bytes(page_size) if shared_info else b""
    names = [".shstrtab", ".note.Xen", ".xen_prstatus"] + ([".xen_shared_info"] if shared_info else [])
    names += [".xen_pages", ".xen_pfn" if hvm else ".xen_p2m"]
    strtab = b"\0" + b"".join(n.encode() + b"\0" for n in names)
    name_at = {n: strtab.index(n.encode() + b"\0") for n in names}
    ehsize, shsize = (64, 64) if elf_class == 2 else (52, 40)
    shnum = 1 + len(names)
    offset = ehsize + shnum * shsize
    secs: dict[str, dict[str, int]] = {}

    def add(name: str, stype: int, size: int, align: int, entsize: int) -> None:
        nonlocal offset
        secs[name] = {"sh_name": name_at[name], "sh_type": stype, "sh_flags": 0, "sh_addr": 0,
                      "sh_offset": offset, "sh_size": size, "sh_link": 0, "sh_info": 0,
                      "sh_addralign": align, "sh_entsize": entsize}
        offset += size

    add(".note.Xen", SHT_NOTE, len(notes), 0, 0)
    add(".xen_prstatus", SHT_PROGBITS, len(prstatus), 8, VCPU_CONTEXT_SIZE if vcpus else 0)
    if shared_info:
        add(".xen_shared_info", SHT_PROGBITS, len(shinfo), 8, page_size)
    pad = -offset % page_size
    offset += pad
    add(".xen_pages", SHT_PROGBITS, nr_pages * page_size, page_size, page_size)
    if hvm:
        table = b"".join(struct.pack(f"{e}Q", pfn) for pfn, _ in items)
        add(".xen_pfn", SHT_PROGBITS, len(table), 8, 8)
    else:
        gmfn = p2m_gmfn or {}
        table = b"".join(struct.pack(f"{e}QQ", pfn, INVALID if pfn == INVALID
                                     else gmfn.get(pfn, pfn + 0x100000)) for pfn, _ in items)
        add(".xen_p2m", SHT_PROGBITS, len(table), 8, 16)
    secs[".shstrtab"] = {"sh_name": name_at[".shstrtab"], "sh_type": SHT_STRTAB, "sh_flags": 0,
                         "sh_addr": 0, "sh_offset": offset, "sh_size": len(strtab), "sh_link": 0,
                         "sh_info": 0, "sh_addralign": 0, "sh_entsize": 0}
    for name, fields in (shdr or {}).items():
        secs[name].update(fields)
    eh = {"e_type": 4, "e_machine": machine, "e_version": 1, "e_entry": 0, "e_phoff": 0,
          "e_shoff": ehsize, "e_flags": 0, "e_ehsize": ehsize, "e_phentsize": 56 if elf_class == 2 else 32,
          "e_phnum": 0, "e_shentsize": shsize, "e_shnum": shnum, "e_shstrndx": 1, **(ehdr or {})}
    w = "Q" if elf_class == 2 else "I"
    ident = b"\x7fELF" + bytes([elf_class, 1 if e == "<" else 2, 1, 0, 1]) + bytes(7)
    out = bytearray(ident + struct.pack(
        f"{e}HHI{w}{w}{w}IHHHHHH", eh["e_type"], eh["e_machine"], eh["e_version"], eh["e_entry"],
        eh["e_phoff"], eh["e_shoff"], eh["e_flags"], eh["e_ehsize"], eh["e_phentsize"], eh["e_phnum"],
        eh["e_shentsize"], eh["e_shnum"], eh["e_shstrndx"]))
    out += bytes(shsize)  # null section
    for name in names:
        s = secs[name]
        out += struct.pack(f"{e}II{w}{w}{w}{w}II{w}{w}", s["sh_name"], s["sh_type"], s["sh_flags"],
                           s["sh_addr"], s["sh_offset"], s["sh_size"], s["sh_link"], s["sh_info"],
                           s["sh_addralign"], s["sh_entsize"])
    out += notes + prstatus + shinfo + bytes(pad)
    for _, data in items:
        assert len(data) == page_size
        out += data
    out += table + strtab
    return bytes(out)


def legacy_xc_core(nr_pages: int = 4, nr_vcpus: int = 1) -> bytes:
    """The pre-ELF dump-core header (crash ``xendump.h`` ``struct xc_core_header``)."""
    ctxt = 24
    index = ctxt + nr_vcpus * VCPU_CONTEXT_SIZE
    pages = -(-(index + 8 * nr_pages) // PAGE) * PAGE
    out = bytearray(struct.pack("<IIIIII", XC_CORE_MAGIC, nr_vcpus, nr_pages, ctxt, index, pages))
    out += bytes(pages - len(out)) + bytes(nr_pages * PAGE)
    return bytes(out)


# --- migration stream v2 ---------------------------------------------------------------------

REC_END, REC_PAGE_DATA, REC_X86_PV_INFO, REC_X86_PV_P2M_FRAMES = 0, 1, 2, 3
REC_X86_PV_VCPU_BASIC, REC_SHARED_INFO, REC_X86_TSC_INFO = 4, 7, 8
REC_HVM_CONTEXT, REC_HVM_PARAMS, REC_CHECKPOINT, REC_STATIC_DATA_END = 9, 10, 14, 16
DHDR_X86_PV, DHDR_X86_HVM = 1, 2
NOTAB, L1TAB, L4TAB, BROKEN, XALLOC, XTAB = 0x0, 0x1, 0x4, 0xD, 0xE, 0xF
LIBXL_END, LIBXC_CONTEXT, EMULATOR_XENSTORE_DATA, EMULATOR_CONTEXT, CHECKPOINT_END = 0, 1, 2, 3, 4
XL_MAGIC = b"Xen saved domain, xl format\n \0 \r"
XL_STREAMV2, XL_JSON = 2, 1


def image_header(*, marker: int = INVALID, ident: int = 0x58454E46, version: int = 3,
                 options: int = 0, reserved: bytes = bytes(6)) -> bytes:
    """libxc image header (always big-endian): marker, id "XENF", version, options."""
    return struct.pack(">QIIH", marker, ident, version, options) + reserved


def domain_header(*, type: int = DHDR_X86_HVM, page_shift: int = 12, xen_major: int = 4,
                  xen_minor: int = 17, endian: str = "<") -> bytes:
    """libxc domain header, in the stream's byte order."""
    return struct.pack(f"{endian}IHHII", type, page_shift, 0, xen_major, xen_minor)


def record(rtype: int, body: bytes = b"", *, length: int | None = None, endian: str = "<") -> bytes:
    """A record: type, body_length, body, zero padding to 8."""
    n = len(body) if length is None else length
    return struct.pack(f"{endian}II", rtype, n) + body + bytes(-len(body) % 8)


def page_data(entries: Sequence[tuple[int, int, bytes | None]], *, endian: str = "<",
              count: int | None = None, page_size: int = PAGE) -> bytes:
    """A PAGE_DATA record from ``(pfn, type, data)`` entries; ``data`` None for types
    without data (BROKEN, XALLOC, XTAB)."""
    body = struct.pack(f"{endian}II", len(entries) if count is None else count, 0)
    body += b"".join(struct.pack(f"{endian}Q", (t << 60) | pfn) for pfn, t, _ in entries)
    for _, _, data in entries:
        if data is not None:
            assert len(data) == page_size
            body += data
    return record(REC_PAGE_DATA, body, endian=endian)


def libxc_stream(batches: Sequence[Sequence[tuple[int, int, bytes | None]]], *,
                 domain_type: int = DHDR_X86_HVM, version: int = 3, endian: str = "<",
                 xen: tuple[int, int] = (4, 17), before: Sequence[bytes] = (),
                 after: Sequence[bytes] = (), end: bool = True, ihdr: bytes | None = None,
                 dhdr: bytes | None = None) -> bytes:
    """A libxc v2/v3 stream: headers, ``before`` records (static data), one PAGE_DATA per
    batch, ``after`` records, END."""
    out = ihdr if ihdr is not None else image_header(version=version, options=int(endian == ">"))
    out += dhdr if dhdr is not None else domain_header(type=domain_type, xen_major=xen[0],
                                                        xen_minor=xen[1], endian=endian)
    if version >= 3 and not before:
        before = [record(REC_STATIC_DATA_END, endian=endian)]
    out += b"".join(before)
    out += b"".join(page_data(b, endian=endian) for b in batches)
    out += b"".join(after)
    if end:
        out += record(REC_END, endian=endian)
    return out


#: ``struct hvm_hw_cpu`` as Xen 4.17 saves it (the real PVH save of corpus/xen-4.17-domu-96m:
#: a CPU record of 1032 bytes); ``HVM_CPU_FIELDS`` are the 64-bit fields from ``rax`` on, in
#: ``public/arch-x86/hvm/save.h`` order, at offset 512 (after ``fpu_regs``).
HVM_CPU_SIZE = 1032
HVM_CPU_FIELDS = ("rax", "rbx", "rcx", "rdx", "rbp", "rsi", "rdi", "rsp", "r8", "r9", "r10",
                  "r11", "r12", "r13", "r14", "r15", "rip", "rflags", "cr0", "cr2", "cr3", "cr4")
HVM_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldtr")


def hvm_cpu_record(regs: Mapping[str, int], endian: str = "<") -> bytes:
    """One ``hvm_hw_cpu``: registers by name (``HVM_CPU_FIELDS``, ``<seg>_sel``, ``<seg>_base``)."""
    e = endian
    out = bytearray(HVM_CPU_SIZE)
    struct.pack_into(f"{e}{len(HVM_CPU_FIELDS)}Q", out, 512, *(regs.get(f, 0) for f in HVM_CPU_FIELDS))
    sel_at = 512 + 8 * len(HVM_CPU_FIELDS) + 6 * 8  # after dr0-dr3, dr6, dr7
    struct.pack_into(f"{e}8I", out, sel_at, *(regs.get(f"{s}_sel", 0) for s in HVM_SEGMENTS))
    base_at = sel_at + 8 * 4 + 10 * 4  # after the 8 selectors and the 10 limits
    struct.pack_into(f"{e}8Q", out, base_at, *(regs.get(f"{s}_base", 0) for s in HVM_SEGMENTS))
    return bytes(out)


def hvm_context_blob(cpus: Sequence[Mapping[str, int]] = (), endian: str = "<") -> bytes:
    """``XEN_DOMCTL_gethvmcontext``'s blob: ``hvm_save_descriptor`` {u16 typecode, u16 instance,
    u32 length} + data for HEADER (1; magic 0x54381286, version 1), one CPU (2) per vCPU, END (0)."""
    e = endian
    out = struct.pack(f"{e}HHI", 1, 0, 24) + struct.pack(f"{e}IIQII", 0x54381286, 1, 0, 0x906ED, 0)
    for k, regs in enumerate(cpus):
        out += struct.pack(f"{e}HHI", 2, k, HVM_CPU_SIZE) + hvm_cpu_record(regs, e)
    return out + struct.pack(f"{e}HHI", 0, 0, 0)


def hvm_tail(endian: str = "<", cpus: Sequence[Mapping[str, int]] = ()) -> list[bytes]:
    """Records an HVM save puts after the pages: TSC_INFO, HVM_PARAMS, HVM_CONTEXT."""
    tsc = struct.pack(f"{endian}IIQII", 0, 2000000, 123456789, 1, 0)
    params = struct.pack(f"{endian}II", 1, 0) + struct.pack(f"{endian}QQ", 2, 0xFEFFF)
    return [record(REC_X86_TSC_INFO, tsc, endian=endian), record(REC_HVM_PARAMS, params, endian=endian),
            record(REC_HVM_CONTEXT, hvm_context_blob(cpus, endian), endian=endian)]


def libxl_stream(libxc: bytes, *, version: int = 2, options: int = 0, ident: bytes = b"LibxlFmt",
                 after: Sequence[bytes] = (), end: bool = True) -> bytes:
    """libxl stream: header (big-endian), LIBXC_CONTEXT (body 0) with the libxc stream behind
    it, then ``after`` libxl records (emulator context ...) and END."""
    out = ident + struct.pack(">II", version, options)
    out += record(LIBXC_CONTEXT) + libxc + b"".join(after)
    if end:
        out += record(LIBXL_END)
    return out


def emulator_context(blob: bytes = b"QEVM" + bytes(60)) -> bytes:
    """An EMULATOR_CONTEXT record for QEMU upstream (emulator_id 2, index 0)."""
    return record(EMULATOR_CONTEXT, struct.pack("<II", 2, 0) + blob)


def xl_save_file(libxl: bytes, *, config: dict[str, Any] | bytes | None = None,
                 mandatory_flags: int | None = None, optional_flags: int = 0,
                 byteorder: int = 0x01020304, magic: bytes = XL_MAGIC,
                 optional_data_len: int | None = None) -> bytes:
    """An ``xl save`` file: ``struct save_file_header`` (``tools/xl/xl.h``), the optional data
    (u32 config length + config, JSON with ``XL_MANDATORY_FLAG_JSON``), then the libxl stream."""
    if config is None:
        config = {"c_info": {"type": "hvm", "name": "guest"}, "b_info": {"max_memkb": 262144}}
    cfg = config if isinstance(config, bytes) else json.dumps(config).encode() + b"\0"
    opt = struct.pack("<I", len(cfg)) + cfg
    flags = XL_STREAMV2 | (XL_JSON if cfg else 0) if mandatory_flags is None else mandatory_flags
    hdr = magic + struct.pack("<IIII", byteorder, flags, optional_flags,
                              len(opt) if optional_data_len is None else optional_data_len)
    return hdr + opt + libxl
