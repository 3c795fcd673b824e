"""Which kernel is this? Every source of evidence a dump holds, cheapest first.

Sources (kdumpid's and libkdumpfile's ideas, written for kdumptool; see SPEC.md §7):

1. VMCOREINFO ``OSRELEASE`` and ``BUILD-ID`` (a BUILD-ID from a stable kernel known to
   report a wrong one is flagged);
2. the header's utsname (kdump-compressed), when it looks sane;
3. ``struct new_utsname`` found in memory: a 65-byte ``"Linux"`` field followed by a
   nodename and a release that starts with a digit (the whole structure gives the machine,
   so the architecture is known even when no header names it);
4. the ``"Linux version "`` banner found in memory.

The hypervisor of a Xen guest image is reported as one more item (``"xen version note"``
from a ``Xen``/``XEN_ELFNOTE_DUMPCORE_XEN_VERSION`` note, or ``"xen stream header"`` from a
migration stream's domain header): evidence about the dump, never a kernel release.

The memory scan reads the dump's pages window by window (one ``bytes.find`` per window),
stops at the first confident answer unless ``deep`` is set, and never reads a page twice.
"""

from __future__ import annotations

import re
from typing import Any

from kdumptool.dump import DumpInfo, DumpReader
from kdumptool.formats.notes import XEN_ELFNOTE_DUMPCORE_XEN_VERSION
from kdumptool.formats.xen_core import parse_xen_version, xen_version_string
from kdumptool.vmcoreinfo import known_broken_build_id

BANNER = b"Linux version "
UTS_LEN = 65
_RELEASE = re.compile(rb"[0-9][0-9A-Za-z._+~-]{0,63}")
MACHINES = (b"x86_64", b"aarch64", b"i686", b"i586", b"i386", b"ppc64le", b"ppc64", b"s390x",
            b"riscv64", b"armv7l", b"loongarch64", b"mips64")


def _find_utsname(blob: bytes) -> dict[str, str] | None:
    pos = blob.find(b"Linux\0")
    while pos >= 0:
        field = blob[pos:pos + 6 * UTS_LEN]
        if len(field) == 6 * UTS_LEN and field[5:UTS_LEN] == bytes(UTS_LEN - 5):
            parts = [field[i * UTS_LEN:(i + 1) * UTS_LEN].split(b"\0", 1)[0] for i in range(6)]
            release, machine = parts[2], parts[4]
            if _RELEASE.fullmatch(release) and parts[3].startswith(b"#") and machine in MACHINES:
                names = ("sysname", "nodename", "release", "version", "machine", "domainname")
                return {n: p.decode("latin-1") for n, p in zip(names, parts, strict=True)}
        pos = blob.find(b"Linux\0", pos + 1)
    return None


def _find_banner(blob: bytes) -> str | None:
    pos = blob.find(BANNER)
    while pos >= 0:
        line = blob[pos:pos + 512].split(b"\n", 1)[0].split(b"\0", 1)[0]
        m = _RELEASE.match(line[len(BANNER):])
        if m and b"(" in line:
            return line.decode("latin-1", "replace")
        pos = blob.find(BANNER, pos + 1)
    return None


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
    if info.utsname is not None and info.utsname.looks_sane():
        evidence.append({"source": "header utsname", "release": info.utsname.release,
                         "version": info.utsname.version, "machine": info.utsname.machine})
    if deep or not evidence:
        evidence.extend(_scan_memory(reader, deep=deep))
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


def _scan_memory(reader: DumpReader, *, deep: bool) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    uts = banner = None
    tail = b""
    for batch in reader.iter_batches():
        if not len(batch.data):
            continue
        blob = tail + batch.data.tobytes()
        if uts is None and (u := _find_utsname(blob)) is not None:
            uts = u
            found.append({"source": "utsname in memory", "release": u["release"],
                          "version": u["version"], "machine": u["machine"]})
        if banner is None and (b := _find_banner(blob)) is not None:
            banner = b
            release = _RELEASE.match(b[len("Linux version "):].encode("latin-1"))
            found.append({"source": "banner in memory", "banner": b,
                          "release": release.group().decode() if release else None})
        if uts is not None and banner is not None and not deep:
            break
        tail = blob[-6 * UTS_LEN:]
    return found
