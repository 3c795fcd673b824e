"""The first report a support engineer wants: what crashed, where, in which task.

:func:`triage` puts together, from nothing but the dump: the kernel (release, build id),
why it crashed (:mod:`kdumptool.kernel.crashlog` on the kernel's log), the crashing CPU
and task, that CPU's registers from its ``NT_PRSTATUS`` note with the program counter
and the return addresses found on its stack symbolized through kallsyms, the call trace
(the kernel's printed one), taint, modules, uptime, the dump's health (``fsck``), and a
crash signature (:func:`crash_signature`).  Every part that cannot be read is recorded
in ``errors`` and the rest is still reported.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from kdumptool.errors import KdumpToolError
from kdumptool.kernel.crashlog import CrashLog, Frame, parse_crash_log

#: Frames of the reporting machinery itself, left out of the signature.
GENERIC_FRAMES = frozenset("""
dump_stack dump_stack_lvl panic vpanic __warn warn_slowpath_fmt report_bug handle_bug
exc_invalid_op asm_exc_invalid_op die __die __die_body die_addr oops_end do_trap do_error_trap
crash_kexec __crash_kexec crash_setup_regs machine_kexec show_stack __show_regs show_regs
page_fault_oops kernelmode_fixup_or_oops no_context __bad_area_nosemaphore bad_area_nosemaphore
do_user_addr_fault exc_page_fault asm_exc_page_fault exc_general_protection
asm_exc_general_protection _printk printk vprintk vprintk_emit
""".split())
SIGNATURE_FRAMES = 5
_SUFFIX = re.compile(r"\.(cold|constprop|isra|part|lto_priv|llvm)(\.\d+)*$")
#: Bytes of the crashing task's stack scanned for return addresses.
STACK_BYTES = 16 << 10


def normalize_function(name: str) -> str:
    """A function name without compiler suffixes (``__handle_sysrq.cold`` -> ``__handle_sysrq``)."""
    while True:
        stripped = _SUFFIX.sub("", name)
        if stripped == name:
            return name
        name = stripped


def normalize_reason(text: str) -> str:
    """The reason with addresses, numbers and PIDs replaced, so that boots compare equal."""
    text = re.sub(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,16}\b", "ADDR", text)
    text = re.sub(r"\b\d+\b", "N", text)
    return " ".join(text.split())


def crash_signature(kind: str | None, reason: str | None, frames: list[str]) -> tuple[str, list[str]]:
    """``(signature, its inputs)``: the first 16 hex digits of the SHA-256 of the crash kind,
    the normalized reason and the first :data:`SIGNATURE_FRAMES` function names of the
    trace that are not reporting machinery (KASLR, addresses, offsets and PIDs removed)."""
    picked = []
    for name in frames:
        fn = normalize_function(name)
        if fn not in GENERIC_FRAMES and fn not in picked:
            picked.append(fn)
        if len(picked) == SIGNATURE_FRAMES:
            break
    parts = [kind or "unknown", normalize_reason(reason or "")] + picked
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16], parts


@dataclass
class TriageReport:
    """One dump's triage (see the module docstring); ``as_dict`` is its JSON form."""

    path: str
    format: str
    release: str | None = None
    build_id: str | None = None
    crash_time: int | None = None
    uptime: int | None = None
    kind: str | None = None
    reason: str | None = None
    headlines: list[str] = field(default_factory=list)
    cpu: int | None = None
    pid: int | None = None
    comm: str | None = None
    pc: str | None = None
    registers: dict[str, str] = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)
    taint: str | None = None
    modules: list[str] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)
    dump_level: int | None = None
    incomplete: bool = False
    signature: str | None = None
    signature_input: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _step(report: TriageReport, what: str, func: Any) -> Any:
    """Run one part of the triage; a kdumptool error is recorded, not raised."""
    try:
        return func()
    except KdumpToolError as exc:
        report.errors[what] = str(exc)
        return None


def _log(kernel: Any) -> CrashLog:
    from kdumptool.dmesg import dmesg_text

    text = dmesg_text(kernel.reader, partial=True).decode("utf-8", "replace")
    return parse_crash_log(text)


def _prstatus(kernel: Any, pid: int | None, cpu: int | None) -> dict[str, int] | None:
    """Registers of the crashing CPU: the note whose ``pr_pid`` is the crashing task, else
    the ``cpu``-th note."""
    from kdumptool.formats.notes import NT_PRSTATUS, parse_prstatus

    info = kernel.reader.info
    notes = [n for n in info.notes if n.name == b"CORE" and n.type == NT_PRSTATUS]
    parsed = [parse_prstatus(n.desc, info.machine, info.endian) for n in notes]
    regs = [p for p in parsed if p is not None]
    chosen = next((p for p in regs if pid and p.pr_pid == pid), None)
    if chosen is None and cpu is not None and cpu < len(regs):
        chosen = regs[cpu]
    if chosen is None:
        return None
    return {k: int(v) for k, v in chosen.pr_reg.items() if not k.startswith("_")}


def _stack_scan(kernel: Any, sp: int) -> list[str]:
    """Text addresses found on the stack from ``sp`` to the end of its 16 KiB block."""
    table = kernel.symbols
    end = (sp | (STACK_BYTES - 1)) + 1
    out: list[str] = []
    pos = sp & ~7
    while pos < end and len(out) < 64:
        step = min(end - pos, 4096 - (pos & 4095))
        try:
            chunk = kernel.mem.read(pos, step, "stack")
        except KdumpToolError:
            break
        for i in range(0, len(chunk) - 7, 8):
            word = int.from_bytes(chunk[i:i + 8], "little")
            found = table.symbolize(word) if word >> 47 else None
            if found and found[0].type in "tTwW" and 0 < found[1] < found[2]:
                out.append(table.format_address(word))
        pos += step
    return out


def _registers(kernel: Any, report: TriageReport) -> None:
    regs = _prstatus(kernel, report.pid, report.cpu)
    if regs is None:
        report.errors["registers"] = "no NT_PRSTATUS note for the crashing CPU"
        return
    report.registers = {k: f"{v:#018x}" for k, v in regs.items()}
    pc = regs.get("rip", regs.get("pc"))
    sp = regs.get("rsp", regs.get("sp"))
    if pc is not None:
        report.pc = kernel.symbols.format_address(pc)
    if sp:
        report.stack = _stack_scan(kernel, sp)


def _fill_log(kernel: Any, report: TriageReport) -> CrashLog | None:
    log = _step(report, "log", lambda: _log(kernel))
    if log is None:
        return None
    report.kind, report.reason, report.headlines = log.kind, log.reason, log.headlines
    report.cpu, report.pid, report.comm = log.cpu, log.pid, log.comm
    report.trace = [_symbolized(kernel, f) for f in log.trace]
    return log


def _symbolized(kernel: Any, frame: Frame) -> str:
    if frame.function is None and frame.address is not None:
        try:
            text = kernel.symbols.format_address(frame.address)
        except KdumpToolError:
            return frame.text()
        return ("? " if not frame.reliable else "") + text
    return frame.text()


def triage(kernel: Any, *, paths: list[str] | None = None, health: bool = True) -> TriageReport:
    """The triage of the dump behind ``kernel`` (:class:`kdumptool.kernel.session.Kernel`).

    :param paths: the dump's files, for the ``fsck`` health check (skipped without them)
    """
    info = kernel.reader.info
    vmci = info.vmcoreinfo
    report = TriageReport(path=info.path, format=info.format, release=info.release,
                          build_id=vmci.build_id if vmci is not None else None,
                          crash_time=vmci.crash_time if vmci is not None else None,
                          dump_level=info.dump_level, incomplete=info.incomplete)
    log = _fill_log(kernel, report)
    if report.cpu is None:
        from kdumptool.kernel.state import panic_cpu

        report.cpu = panic_cpu(kernel)
    _step(report, "registers", lambda: _registers(kernel, report))
    taint = _step(report, "taint", kernel.taint)
    report.taint = taint.text if taint is not None else None
    clock = _step(report, "uptime", kernel.clock)
    report.uptime = clock.uptime if clock is not None else None
    mods = _step(report, "modules", kernel.modules)
    report.modules = [m.name for m in mods] if mods is not None else []
    if health and paths:
        report.health = _step(report, "health", lambda: _health(paths)) or {}
    frames = [f.function for f in log.trace if f.function and f.reliable] if log else []
    if not frames and report.pc:
        frames = [report.pc.split("+")[0]] + [s.split("+")[0] for s in report.stack]
    report.signature, report.signature_input = crash_signature(report.kind, report.reason, frames)
    return report


def _health(paths: list[str]) -> dict[str, Any]:
    from kdumptool.repair.checks import fsck

    rep = fsck(paths)
    verdict = {0: "clean", 1: "repairable", 2: "data lost", 3: "unreadable"}.get(rep.exit_code, "?")
    return {"verdict": verdict, "exit_code": rep.exit_code,
            "findings": [str(f) for f in rep.findings][:20]}
