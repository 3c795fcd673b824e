"""``kdumptool info``: a dump's metadata as a dictionary (for ``--json``) and as text."""

from __future__ import annotations

import datetime
from collections import Counter
from typing import Any

from kdumptool.dump import DumpReader, pfn_range_text
from kdumptool.errors import printable
from kdumptool.formats import entry_of
from kdumptool.formats.notes import NT_PRSTATUS, describe_cpus, note_kind
from kdumptool.identify import identify
from kdumptool.metadata import source_eraseinfo

#: ERASEINFO lines ``info`` prints (``--json`` has all).
ERASEINFO_LINES = 20

#: Keys of :func:`describe_cpus` dicts that are counts, not addresses or register values.
_CPU_COUNT_KEYS = frozenset({"cpu", "pid", "raw_size", "qemu_raw_size"})


def _cpu_state_json(cpu: dict[str, Any]) -> dict[str, Any]:
    """Register values as hex strings: JSON numbers above 2**53 lose precision in many parsers."""
    return {k: v if k in _CPU_COUNT_KEYS or not isinstance(v, int) else f"{v:#x}"
            for k, v in cpu.items()}


def _cpu_line(cpu: dict[str, Any]) -> str:
    """``cpu 0:        pid 1, pc 0x..., sp 0x..., cr3 0x...``"""
    parts = []
    if "pid" in cpu:
        parts += [f"pid {cpu['pid']}", f"pc {cpu['pc']}", f"sp {cpu['sp']}"]
    elif "raw_size" in cpu:
        parts.append(f"NT_PRSTATUS of {cpu['raw_size']} bytes not decoded")
    if "cr3" in cpu:
        parts += [f"cr3 {cpu['cr3']}", f"idt {cpu['idt_base']}"]
        if "pid" not in cpu:
            parts.insert(0, f"rip {cpu['rip']}")
    elif "qemu_raw_size" in cpu:
        parts.append(f"QEMU note of {cpu['qemu_raw_size']} bytes not decoded")
    return f"{'cpu ' + str(cpu['cpu']) + ':':<15}" + ", ".join(parts)


def _xen_summary(evidence: list[dict[str, Any]], details: dict[str, Any]) -> dict[str, Any] | None:
    """Hypervisor version and guest kind of a Xen guest image (None for other dumps)."""
    item = next((e for e in evidence if "xen_version" in e), None)
    if item is None:
        return None
    return {"version": item["xen_version"], "source": item["source"],
            "domain": details.get("xen_domain"), "pfn_space": details.get("pfn_space")}


def lost_pages(reader: DumpReader) -> int:
    """Pages the dump declares but whose data is not in the file (truncated or incomplete):
    the format's ``lost_pages`` hook (:class:`~kdumptool.formats.registry.ReaderEntry`)."""
    entry = entry_of(reader)
    if entry is not None:
        return int(entry.lost_pages(reader)) if entry.lost_pages is not None else 0
    counter = getattr(reader, "lost_pages", None)  # a reader of no registered format
    return int(counter()) if callable(counter) else 0


def _iso_time(seconds: int) -> str | None:
    """ISO 8601 UTC time, or None for a value no calendar holds (hostile headers)."""
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def kernel_utsname(reader: DumpReader, evidence: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """The utsname ``info`` shows and which copy it is: the kernel's own ``init_uts_ns``
    (when its release is VMCOREINFO's), else the header's, else a copy a memory scan found.

    :return: the chosen evidence item (``release``, ``version``, ``machine``, maybe ``paddr``)
        and its source, ``({}, None)`` when the dump holds no utsname at all
    """
    osrelease = reader.info.vmcoreinfo.osrelease if reader.info.vmcoreinfo is not None else None
    by_source = {e["source"]: e for e in evidence}
    kernel = by_source.get("init_uts_ns")
    if kernel is not None and (not osrelease or kernel["release"] == osrelease):
        return kernel, "init_uts_ns"
    uts = reader.info.utsname
    if uts is not None and uts.looks_sane() and uts.version:
        return {"release": uts.release, "version": uts.version, "machine": uts.machine}, "header utsname"
    for source in ("utsname in memory", "header utsname"):
        if source in by_source:
            return by_source[source], source
    return {}, None


def dump_summary(reader: DumpReader, *, deep: bool = False) -> dict[str, Any]:
    """Everything ``info`` reports, as JSON-ready values.

    :param deep: scan all of memory for identification evidence (else stop at the first
        confident answer, and scan only when the headers do not name the kernel)
    """
    info = reader.info
    ident = identify(reader, deep=deep)
    ram, present = reader.count_pages()
    lost = lost_pages(reader)
    uts, uts_source = kernel_utsname(reader, ident["evidence"])
    notes = Counter(note_kind(n.name, n.type) for n in info.notes)
    vmci = info.vmcoreinfo
    crash_time = None
    if info.timestamp and info.timestamp[0] > 0:
        crash_time = _iso_time(info.timestamp[0])
    elif vmci is not None and vmci.crash_time:
        crash_time = _iso_time(vmci.crash_time)
    cpus = info.nr_cpus
    if cpus is None:
        cpus = sum(1 for n in info.notes if n.name == b"CORE" and n.type == NT_PRSTATUS) or None
    return {
        "file": info.path,
        "format": info.format,
        "transport": info.transport,
        "header_version": info.header_version,
        "incomplete": info.incomplete,
        "arch": info.machine or ident["best"]["machine"],
        "byte_order": "little" if info.endian == "<" else "big",
        "word_size": info.word_size,
        "page_size": info.page_size,
        "kernel": {
            "release": info.release or ident["best"]["release"],
            "release_source": ident["best"]["source"],
            "version": uts.get("version") or None,
            "machine": uts.get("machine") or ident["best"]["machine"],
            "utsname_source": uts_source,
            "utsname_paddr": uts.get("paddr"),
        },
        "identification": ident["evidence"],
        "xen": _xen_summary(ident["evidence"], info.details),
        "crash_time": crash_time,
        "cpus": cpus,
        "cpus_state": [_cpu_state_json(c) for c in describe_cpus(info.notes, info.machine, info.endian)],
        "pfn_range": [0, info.max_pfn],
        "pages": {"ram": ram, "present": present, "excluded": ram - present if ram >= present else 0,
                  "lost": lost},
        "codecs": sorted(info.codecs),
        "dump_level": info.dump_level,
        "split": list(info.split) if info.split else None,
        "phys_base": f"{info.phys_base:#x}" if info.phys_base is not None else None,
        "vmcoreinfo": {"present": vmci is not None,
                       "osrelease": vmci.osrelease if vmci else None,
                       "build_id": vmci.build_id if vmci else None,
                       "page_size": vmci.page_size if vmci else None,
                       "kerneloffset": f"{vmci.kernel_offset:#x}" if vmci and vmci.kernel_offset
                       is not None else None},
        "notes": dict(sorted(notes.items())),
        "eraseinfo": source_eraseinfo(reader).decode("utf-8", "replace").splitlines(),
        "details": {k: v for k, v in info.details.items() if isinstance(v, (int, str, bool, list))},
    }


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable text of :func:`dump_summary`; strings read from the dump are printed
    escaped (:func:`~kdumptool.errors.printable`): garbage cannot drive the terminal."""
    k = s["kernel"]
    p = s["pages"]
    lines = [
        f"file:          {s['file']}",
        f"format:        {s['format']}" + (f" v{s['header_version']}" if s["header_version"] else "")
        + (f" ({s['transport']})" if s["transport"] != "plain" else "")
        + (" INCOMPLETE" if s["incomplete"] else ""),
        f"arch:          {s['arch'] or 'unknown'} ({s['byte_order']}-endian, {8 * s['word_size']}-bit)",
        f"page size:     {s['page_size']}",
        f"kernel:        {printable(k['release'] or 'unknown', 128)}"
        + (f" (from {k['release_source']})" if k.get("release_source") not in (None, "vmcoreinfo") else ""),
    ]
    if k["version"]:
        lines.append(f"version:       {printable(k['version'], 128)} (from {_utsname_where(k)})")
    if s.get("xen"):
        x = s["xen"]
        lines.append(f"xen:           {x['version']} (from {x['source']})"
                     + (f", {x['domain']} guest" if x.get("domain") else "")
                     + (f"; PFNs are {x['pfn_space']}" if x.get("pfn_space") else ""))
    lines += [
        f"crash time:    {s['crash_time'] or 'unknown'}",
        f"cpus:          {s['cpus'] if s['cpus'] is not None else 'unknown'}",
        *(_cpu_line(c) for c in s.get("cpus_state", [])),
        f"pfn range:     {pfn_range_text(*s['pfn_range'])}",
        f"pages:         {p['ram']} RAM, {p['present']} in file, {p['excluded']} excluded, "
        f"{p['lost']} lost",
        f"compression:   {', '.join(s['codecs']) or 'none'}",
        f"dump level:    {s['dump_level'] if s['dump_level'] is not None else 'unknown'}",
    ]
    if s["split"]:
        lines.append(f"split part:    PFNs {pfn_range_text(*s['split'])}")
    v = s["vmcoreinfo"]
    lines.append("vmcoreinfo:    " + (f"yes (OSRELEASE {v['osrelease']}, BUILD-ID {v['build_id']})"
                                      if v["present"] else "no"))
    if s["notes"]:
        lines.append("notes:         " + ", ".join(f"{n} x{c}" for n, c in s["notes"].items()))
    erased = s.get("eraseinfo") or []
    for i, line in enumerate(erased[:ERASEINFO_LINES]):
        lines.append(("eraseinfo:     " if i == 0 else " " * 15) + line)
    if len(erased) > ERASEINFO_LINES:
        lines.append(" " * 15 + f"({len(erased) - ERASEINFO_LINES} more lines: see --json)")
    ev = [_evidence_line(e) for e in s.get("identification", []) if e.get("source") != "vmcoreinfo"]
    for i, line in enumerate(ev):
        lines.append(("evidence:      " if i == 0 else " " * 15) + printable(line))
    notices = s["details"].get("notices")
    for notice in notices if isinstance(notices, list) else []:
        lines.append(f"notice:        {printable(str(notice))}")
    return "\n".join(lines)


def _utsname_where(k: dict[str, Any]) -> str:
    """Which copy of utsname the ``version:`` line shows, in words."""
    source = k["utsname_source"]
    if source == "init_uts_ns":
        return f"init_uts_ns at {k['utsname_paddr']}"
    if source == "utsname in memory":
        return f"a utsname copy in memory at {k['utsname_paddr']}"
    return "the header's utsname"


def _evidence_line(e: dict[str, Any]) -> str:
    """One identification source in a line of text (everything is in ``--json``)."""
    src = e.get("source", "?")
    if "paddr" in e and src in ("init_uts_ns", "utsname in memory", "banner in memory"):
        src = f"{src} at {e['paddr']}"
    if "copy" in e:  # another copy than the kernel's own
        src = f"{src} ({e['copy']})"
    if src == "QEMU CPU state":
        return (f"{src}: KASLR offset {e['kaslr_offset']}, kernel text {e['kernel_text']} (phys "
                f"{e['kernel_text_phys']}), phys_base {e['phys_base']}; CR3 {e['cr3']} of cpu {e['cpu']}")
    if src == "kernel config in memory":
        return (f"{src}: {e.get('machine') or 'unknown arch'}, version {e.get('config_version') or '?'}, "
                f"{e.get('option_count', 0)} options at {e.get('paddr')}")
    if "banner" in e:
        return f"{src}: {e['banner'][:100]}"
    if e.get("text"):  # evidence a format carries, already in words
        return f"{src}: {e['text']}"
    parts = [f"{k} {v}" for k, v in e.items()
             if k not in ("source", "paddr", "vaddr", "copy") and isinstance(v, (str, int)) and v != ""]
    return f"{src}: " + ", ".join(parts)[:140]
