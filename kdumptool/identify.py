"""Which kernel is this? Every source of evidence a dump holds, cheapest first.

Sources (kdumpid's and libkdumpfile's ideas, written for kdumptool; see SPEC.md §10):

1. VMCOREINFO ``OSRELEASE`` and ``BUILD-ID`` (a BUILD-ID from a stable kernel known to
   report a wrong one is flagged);
2. the header's utsname (kdump-compressed), when it looks sane;
3. ``init_uts_ns.name`` at ``SYMBOL(init_uts_ns)`` (kernel-image address to physical,
   :mod:`kdumptool.vtop.kernel_image`): the utsname the kernel uses; otherwise (or with
   ``deep``) a ``struct new_utsname`` image found in memory: a 65-byte ``"Linux"`` field
   followed by a nodename and a release that starts with a digit (the whole structure gives
   the machine, so the architecture is known even when no header names it). The scan may
   find another copy first (Linux 6.1+ keeps the unused ``__weak`` one of ``init/version.c``,
   whose version reads ``"# SMP ..."``): each item gives its physical address, and one that
   is not at ``init_uts_ns`` says so;
4. the ``"Linux version "`` banner found in memory;
5. the kernel's own configuration (``IKCFG_ST`` gzip blob, :mod:`kdumptool.ikconfig`) found
   in memory: architecture, version and key options;
6. CPU state (QEMU's ``QEMUCPUState`` notes): CR3 → the kernel image mapping → the KASLR
   offset and ``phys_base`` (:mod:`kdumptool.vtop.kaslr`), read from 3-4 page-table pages;
7. evidence a format reader found in its own headers (``info.details["identification"]``:
   Xen version notes, Hyper-V's guest OS ID...).

The hypervisor of a Xen guest image is reported as one more item (``"xen version note"``
from a ``Xen``/``XEN_ELFNOTE_DUMPCORE_XEN_VERSION`` note, or ``"xen stream header"`` from a
migration stream's domain header): evidence about the dump, never a kernel release.

The memory scan reads the dump's pages window by window (one ``bytes.find`` per window),
stops at the first confident answer unless ``deep`` is set, and never reads a page twice.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from kdumptool.dump import UTS_LEN, DumpInfo, DumpReader, PageBatch
from kdumptool.formats.notes import XEN_ELFNOTE_DUMPCORE_XEN_VERSION
from kdumptool.formats.xen_core import parse_xen_version, xen_version_string
from kdumptool.ikconfig import ConfigScanner, KernelConfig
from kdumptool.metadata import read_init_uts_ns
from kdumptool.vmcoreinfo import known_broken_build_id

BANNER = b"Linux version "
_RELEASE = re.compile(rb"[0-9][0-9A-Za-z._+~-]{0,63}")
MACHINES = (b"x86_64", b"aarch64", b"i686", b"i586", b"i386", b"ppc64le", b"ppc64", b"s390x",
            b"riscv64", b"armv7l", b"loongarch64", b"mips64")


def _find_utsname(blob: bytes) -> tuple[int, dict[str, str]] | None:
    """The first ``struct new_utsname`` image in ``blob``: its offset and its fields."""
    pos = blob.find(b"Linux\0")
    while pos >= 0:
        field = blob[pos:pos + 6 * UTS_LEN]
        if len(field) == 6 * UTS_LEN and field[5:UTS_LEN] == bytes(UTS_LEN - 5):
            parts = [field[i * UTS_LEN:(i + 1) * UTS_LEN].split(b"\0", 1)[0] for i in range(6)]
            release, machine = parts[2], parts[4]
            if _RELEASE.fullmatch(release) and parts[3].startswith(b"#") and machine in MACHINES:
                names = ("sysname", "nodename", "release", "version", "machine", "domainname")
                return pos, {n: p.decode("latin-1") for n, p in zip(names, parts, strict=True)}
        pos = blob.find(b"Linux\0", pos + 1)
    return None


def _find_banner(blob: bytes) -> tuple[int, str] | None:
    """The first ``Linux version`` banner in ``blob``: its offset and its line."""
    pos = blob.find(BANNER)
    while pos >= 0:
        line = blob[pos:pos + 512].split(b"\n", 1)[0].split(b"\0", 1)[0]
        m = _RELEASE.match(line[len(BANNER):])
        if m and b"(" in line:
            return pos, line.decode("latin-1", "replace")
        pos = blob.find(BANNER, pos + 1)
    return None


def kernel_utsname_evidence(reader: DumpReader) -> dict[str, Any] | None:
    """The utsname the kernel uses, read at ``SYMBOL(init_uts_ns)`` (None when VMCOREINFO
    does not name it, its page is not in the dump, or it does not hold a release)."""
    found = read_init_uts_ns(reader)
    if found is None or not _RELEASE.fullmatch(found.utsname.release.encode("latin-1")):
        return None
    u = found.utsname
    return {"source": "init_uts_ns", "release": u.release, "version": u.version,
            "machine": u.machine, "vaddr": hex(found.vaddr), "paddr": hex(found.paddr)}


def identify(reader: DumpReader, *, deep: bool = False) -> dict[str, Any]:
    """The best answer (release, machine) and the evidence behind it."""
    info = reader.info
    evidence: list[dict[str, Any]] = []
    vmci = info.vmcoreinfo
    if vmci is not None and vmci.osrelease:
        item: dict[str, Any] = {"source": "vmcoreinfo", "release": vmci.osrelease,
                                "build_id": vmci.build_id}
        if vmci.build_id and known_broken_build_id(vmci.osrelease):
            item["build_id_note"] = "this stable kernel reports a wrong BUILD-ID in VMCOREINFO"
        evidence.append(item)
    kernel_uts = kernel_utsname_evidence(reader)
    if kernel_uts is not None:
        evidence.append(kernel_uts)
    if info.utsname is not None and info.utsname.looks_sane():
        evidence.append({"source": "header utsname", "release": info.utsname.release,
                         "version": info.utsname.version, "machine": info.utsname.machine})
    evidence.extend(cpu_state_evidence(reader))
    # evidence the format itself carries (e.g. the Hyper-V guest OS ID: a kernel version, not
    # a release string, so it does not make the memory scan unnecessary)
    extra = info.details.get("identification")
    if isinstance(extra, list):
        evidence.extend(item for item in extra if isinstance(item, dict))
    if deep or not any(item.get("release") for item in evidence):
        evidence.extend(_scan_memory(reader, deep=deep, kernel=kernel_uts))
    xen = xen_evidence(info)
    if xen is not None:
        evidence.append(xen)
    best: dict[str, Any] = {"release": None, "machine": info.machine or None, "source": None}
    for item in evidence:
        if item.get("release"):
            best.update(release=item["release"], source=item["source"])
            break
    for item in evidence:
        if item.get("machine"):
            best["machine"] = best["machine"] or item["machine"]
            break
    return {"best": best, "evidence": evidence}


def cpu_state_evidence(reader: DumpReader) -> list[dict[str, Any]]:
    """x86_64: the kernel image found through each distinct CR3 of QEMU's CPU notes."""
    from kdumptool.formats.notes import describe_cpus
    from kdumptool.vtop.kaslr import kernel_image_from_cr3

    info = reader.info
    if info.machine != "x86_64":
        return []
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for cpu in describe_cpus(info.notes, info.machine, info.endian):
        cr3 = cpu.get("cr3")
        if not cr3 or cr3 in seen:
            continue
        seen.add(cr3)
        image = kernel_image_from_cr3(reader, cr3, cpu.get("cr4") or 0)
        if image is None:
            continue
        out.append({"source": "QEMU CPU state", "cpu": cpu["cpu"], "machine": "x86_64",
                    "cr3": hex(cr3), "idt_base": hex(cpu.get("idt_base") or 0),
                    "paging_levels": image.levels, "kernel_text": hex(image.text),
                    "kernel_text_phys": hex(image.text_phys),
                    "kaslr_offset": hex(image.kaslr_offset), "phys_base": hex(image.phys_base)})
        break  # every CPU maps the kernel the same way: one walk is enough
    return out


def find_config(reader: DumpReader) -> KernelConfig | None:
    """The first kernel configuration blob in the dump's memory (reads until found)."""
    config = ConfigScanner()
    for batch in reader.iter_batches():
        _feed_config(config, batch, reader.page_size)
        if config.found is not None:
            break
    return config.found


def _feed_config(config: ConfigScanner, batch: PageBatch, page_size: int) -> None:
    """Give the scanner each run of physically contiguous pages of ``batch``."""
    pfns = batch.pfns()
    for a, b in _runs(pfns):
        config.feed(batch.data[a:b].tobytes(), int(pfns[a]) * page_size)


def _runs(pfns: np.ndarray) -> list[tuple[int, int]]:
    """``[(first_row, end_row)]`` of consecutive PFNs."""
    if not len(pfns):
        return []
    cut = np.flatnonzero(np.diff(pfns) != 1) + 1
    edges = [0, *cut.tolist(), len(pfns)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def xen_evidence(info: DumpInfo) -> dict[str, Any] | None:
    """The Xen hypervisor version a guest image names (its XEN_VERSION note, else the version
    a migration stream's domain header gives), None for other dumps."""
    for note in info.notes:
        if note.name == b"Xen" and note.type == XEN_ELFNOTE_DUMPCORE_XEN_VERSION:
            v = parse_xen_version(note.desc, info.endian)
            if v is not None:
                return {"source": "xen version note", "xen_version": xen_version_string(v),
                        "changeset": v["changeset"], "capabilities": v["capabilities"],
                        "compiler": v["compiler"]}
    version = info.details.get("xen_version")
    if info.format == "xen-stream" and isinstance(version, str):
        return {"source": "xen stream header", "xen_version": version}
    return None


def _paddr_in_blob(pos: int, tail_len: int, tail_at: int, pfns: np.ndarray, page_size: int) -> str:
    """Physical address (hex) of byte ``pos`` of a scan blob: the previous blob's last
    ``tail_len`` bytes (from ``tail_at``), then the batch's pages ``pfns``."""
    if pos < tail_len:
        return hex(tail_at + pos)
    row, off = divmod(pos - tail_len, page_size)
    return hex(int(pfns[row]) * page_size + off)


def _scan_memory(reader: DumpReader, *, deep: bool,
                 kernel: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Evidence found by reading memory: a utsname image, the banner, the kernel config.

    :param kernel: the ``init_uts_ns`` evidence, when known: a utsname image found elsewhere
        (or a banner with another version) is marked as another copy; one found at
        ``init_uts_ns`` is not repeated
    """
    found: list[dict[str, Any]] = []
    uts = banner = None
    config = ConfigScanner()
    tail = b""
    tail_at = 0  # physical address of the first byte of ``tail``
    ps = reader.page_size
    for batch in reader.iter_batches():
        if not len(batch.data):
            continue
        _feed_config(config, batch, ps)
        if config.found is not None and not any(e["source"] == "kernel config in memory" for e in found):
            cfg = config.found
            header = cfg.header
            found.append({"source": "kernel config in memory", "paddr": hex(cfg.paddr),
                          "machine": cfg.machine, "config_version": header[1] if header else None,
                          "options": cfg.key_options(), "option_count": len(cfg.options)})
        blob = tail + batch.data.tobytes()
        pfns = batch.pfns()
        where = (len(tail), tail_at, pfns, ps)
        if uts is None and (hit := _find_utsname(blob)) is not None:
            uts = hit[1]
            item = {"source": "utsname in memory", "release": uts["release"], "version": uts["version"],
                    "machine": uts["machine"], "paddr": _paddr_in_blob(hit[0], *where)}
            if kernel is not None and item["paddr"] != kernel["paddr"]:
                item["copy"] = "another copy, not init_uts_ns"
            if kernel is None or item["paddr"] != kernel["paddr"]:
                found.append(item)
        if banner is None and (b := _find_banner(blob)) is not None:
            banner = b[1]
            release = _RELEASE.match(banner[len("Linux version "):].encode("latin-1"))
            item = {"source": "banner in memory", "banner": banner, "paddr": _paddr_in_blob(b[0], *where),
                    "release": release.group().decode() if release else None}
            if kernel is not None and not banner.endswith(f") {kernel['version']}"):
                item["copy"] = "another copy: its version is not init_uts_ns's"
            found.append(item)
        if uts is not None and banner is not None and not deep:
            break  # the config is only looked for until the release is known
        tail = blob[-6 * UTS_LEN:]
        tail_at = int(pfns[-1]) * ps + ps - len(tail)
    return found
