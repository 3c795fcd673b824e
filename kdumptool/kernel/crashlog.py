"""What the kernel's own log says about the crash: the reason, the report block, the
call trace, and the ``CPU: N PID: P Comm: C`` line.

The kernel prints an oops or panic as a block of lines (``lib/dump_stack.c``,
``arch/x86/kernel/dumpstack.c``): a headline (``BUG: ...``, ``Oops: ...``, ``WARNING: ...``,
``general protection fault``, ``kernel BUG at``, ``sysrq: Trigger a crash``, ``Kernel
panic - not syncing: ...``), the ``CPU:`` line, ``Hardware name:``, registers, and
``Call Trace:`` with one frame per line (``name+0x1a/0x20 [module]``; a leading ``?`` marks
a frame found on the stack that the unwinder could not prove, and ``[<ffffffff...>]`` bare
addresses appear on kernels built without symbolic traces).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Headlines that start a report block, most specific first.
HEADLINES = (
    ("panic", re.compile(r"Kernel panic - not syncing: (.*)")),
    ("bug", re.compile(r"(kernel BUG at .*|BUG: .*)")),
    ("oops", re.compile(r"(Oops: .*|general protection fault.*|Unable to handle kernel .*)")),
    ("warning", re.compile(r"(WARNING: .*)")),
    ("sysrq", re.compile(r"(sysrq: Trigger a crash.*)")),
)
_CPU_LINE = re.compile(r"CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (\S+)")
_FRAME = re.compile(r"^\s*(\?\s+)?([A-Za-z_.$][\w.$]*)\+0x([0-9a-f]+)/0x([0-9a-f]+)(?:\s+\[(\S+)\])?")
_BARE = re.compile(r"\[<([0-9a-f]{8,16})>\]")
_STRIP_PREFIX = re.compile(r"^\[\s*\d+\.\d+\]\s?(\[\s*[TC]\d+\])?\s?")
MAX_FRAMES = 64


@dataclass(frozen=True)
class Frame:
    """One call-trace frame: ``function`` (``None`` when only an address is known),
    ``offset``/``size``, ``module``, ``reliable`` (not marked ``?``), ``address`` if printed."""

    function: str | None
    offset: int = 0
    size: int = 0
    module: str | None = None
    reliable: bool = True
    address: int | None = None

    def text(self) -> str:
        """``name+0x1a/0x20 [module]`` (``?`` first when unreliable)."""
        head = "? " if not self.reliable else ""
        if self.function is None:
            return f"{head}{self.address or 0:#x}"
        mod = f" [{self.module}]" if self.module else ""
        return f"{head}{self.function}+{self.offset:#x}/{self.size:#x}{mod}"


@dataclass
class CrashLog:
    """The crash as the log tells it."""

    kind: str | None = None  # panic, bug, oops, warning, sysrq
    reason: str | None = None  # the panic message, else the headline
    headlines: list[str] = field(default_factory=list)
    block: list[str] = field(default_factory=list)
    cpu: int | None = None
    pid: int | None = None
    comm: str | None = None
    trace: list[Frame] = field(default_factory=list)


def strip_prefix(line: str) -> str:
    """A log line without its ``[  12.345678]`` timestamp and ``[T123]`` caller id."""
    return _STRIP_PREFIX.sub("", line)


def parse_frame(line: str) -> Frame | None:
    """A call-trace line as a :class:`Frame`, or ``None``."""
    m = _FRAME.match(line)
    if m:
        return Frame(m.group(2), int(m.group(3), 16), int(m.group(4), 16), m.group(5),
                     reliable=m.group(1) is None)
    b = _BARE.search(line)
    if b and line.strip().startswith(("[<", "?")):
        return Frame(None, address=int(b.group(1), 16), reliable=not line.strip().startswith("?"))
    return None


def _hits(lines: list[str]) -> list[tuple[int, str, str]]:
    found: list[tuple[int, str, str]] = []
    for i, line in enumerate(lines):
        for kind, rx in HEADLINES:
            m = rx.search(line)
            if m:
                found.append((i, kind, m.group(1)))
                break
    return found


def parse_crash_log(text: str) -> CrashLog:
    """The crash found in a kernel log (``dmesg`` text): the last panic (else the last
    report), and the report lines up to 200 lines before it that belong to it."""
    lines = [strip_prefix(line) for line in text.splitlines()]
    log = CrashLog()
    hits = _hits(lines)
    if not hits:
        return log
    panics = [h for h in hits if h[1] == "panic"]
    anchor = panics[-1] if panics else hits[-1]
    near = [h for h in hits if anchor[0] - 200 <= h[0] <= anchor[0]]
    first = min(h[0] for h in near)
    log.reason = anchor[2]
    kinds = [h[1] for h in near]
    log.kind = next((k for k in ("bug", "oops", "warning", "sysrq") if k in kinds), anchor[1])
    log.block = lines[first:anchor[0] + 400]
    log.headlines = [h[2] for h in near]
    for ln in log.block:
        m = _CPU_LINE.search(ln)
        if m:
            log.cpu, log.pid, log.comm = int(m.group(1)), int(m.group(2)), m.group(3)
            break
    log.trace = _first_trace(log.block)
    return log


def _first_trace(block: list[str]) -> list[Frame]:
    frames: list[Frame] = []
    inside = False
    for ln in block:
        stripped = ln.strip()
        if stripped.startswith("Call Trace:"):
            if frames:
                break
            inside = True
            continue
        if not inside or stripped in ("<TASK>", "<IRQ>", "</IRQ>", "<NMI>", "</NMI>"):
            continue
        if stripped == "</TASK>" or stripped.startswith(("RIP:", "---[", "Modules linked")):
            if frames:
                break
            continue
        frame = parse_frame(ln)
        if frame is not None and len(frames) < MAX_FRAMES:
            frames.append(frame)
    return frames
