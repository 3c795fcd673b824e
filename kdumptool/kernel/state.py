"""Small facts about the dumped kernel's state: taint, uptime, the CPU that panicked.

* taint: ``tainted_mask`` (``kernel/panic.c``) decoded with the kernel's own
  ``taint_flags`` table (:func:`kdumptool.kernel.modules.taint_letters`), printed as the
  kernel prints it (``print_tainted``: ``Not tainted`` or ``Tainted:`` and one column per
  flag, its letter when set, else the table's ``c_false``);
* uptime: the timekeeper (``tk_core.timekeeper``; ``kernel/time/timekeeping.c``):
  ``ktime_sec`` (monotonic seconds) plus ``offs_boot`` (time spent suspended), which is
  what ``/proc/uptime`` shows; ``xtime_sec`` is the wall clock;
* panic CPU: ``panic_cpu`` (``kernel/panic.c``), -1 when no CPU panicked.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdumptool.errors import KdumpToolError
from kdumptool.kernel.modules import taint_letters
from kdumptool.kernel.structs import Fields


@dataclass(frozen=True)
class Taint:
    """``mask`` (``tainted_mask``), ``letters`` of the set flags, ``text`` as the kernel
    prints it, ``source`` of the letters (``"taint_flags"`` or ``"fallback"``)."""

    mask: int
    letters: str
    text: str
    source: str


def read_taint(kernel: object) -> Taint:
    """The kernel's taint.

    :raises KdumpToolError: ``tainted_mask`` is not in the symbols or the dump
    """
    mask = kernel.mem.u64(kernel.symbol("tainted_mask"), "tainted_mask")  # type: ignore[attr-defined]
    flags, source = taint_letters(kernel)
    letters = "".join(c for bit, (c, _, _) in enumerate(flags) if mask >> bit & 1)
    if not mask:
        text = "Not tainted"
    else:
        text = "Tainted: " + "".join(c_true if mask >> bit & 1 else c_false
                                     for bit, (c_true, c_false, _) in enumerate(flags))
    return Taint(mask, letters, text, source)


@dataclass(frozen=True)
class Clock:
    """``uptime`` in seconds (monotonic plus suspended time) and ``wall`` (Unix seconds)."""

    uptime: int
    wall: int


def read_clock(kernel: object) -> Clock:
    """The timekeeper's clocks at the time of the dump.

    :raises KdumpToolError: the timekeeper cannot be read
    """
    btf = kernel.btf  # type: ignore[attr-defined]
    tk = Fields(btf, "timekeeper", ("ktime_sec", "offs_boot", "xtime_sec"))
    try:  # static struct { seqcount_raw_spinlock_t seq; struct timekeeper timekeeper; } tk_core
        seq = btf.sizeof(btf.find("seqcount_raw_spinlock_t", "typedef"))
        where = kernel.symbol("tk_core") + (seq + 7) // 8 * 8  # type: ignore[attr-defined]
    except KdumpToolError:
        where = kernel.symbol("shadow_timekeeper")  # type: ignore[attr-defined]
    raw = kernel.mem.read(where, tk.size, "timekeeper")  # type: ignore[attr-defined]
    boot = tk.int(raw, "offs_boot")
    return Clock(tk.int(raw, "ktime_sec") + max(boot, 0) // 1_000_000_000, tk.int(raw, "xtime_sec"))


def panic_cpu(kernel: object) -> int | None:
    """The CPU that called ``panic()``, or ``None`` (no panic, or not readable)."""
    try:
        value = kernel.mem.u32(kernel.symbol("panic_cpu"), "panic_cpu")  # type: ignore[attr-defined]
    except KdumpToolError:
        return None
    return None if value >= 1 << 31 else value
