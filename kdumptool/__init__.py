"""kdumptool: convert, filter, validate and repair Linux kernel crash dumps.

The package reads the formats described in ``SPEC.md`` and registered in
:data:`kdumptool.formats.READERS` -- ELF core files (``/proc/vmcore``, ``makedumpfile -E``,
QEMU ``dump-guest-memory``), makedumpfile's kdump-compressed format (also split sets),
QEMU migration streams and libvirt save images, Xen dump-core and save images, Hyper-V saved
state, Windows complete memory dumps and LiME images -- under any transport (makedumpfile's
flattened stream, whole-file zstd / xz / gzip / lz4), and writes ELF and kdump-compressed
files, plain or flattened.

Typical use::

    import kdumptool
    with kdumptool.open_dump("vmcore") as dump:
        print(dump.info.release, dump.read(0x1000, 16))
    with kdumptool.open_kernel("vmcore") as kernel:
        print(kernel.symbols.address("schedule"), kdumptool.triage(kernel).signature)
    result = kdumptool.convert("vmcore", "small.kdump", level="11,31", codec="zstd")
    print(result.dump_level, result.pages, result.retried)
    print(kdumptool.fsck("small.kdump").exit_code, kdumptool.triage("small.kdump").signature)

The commands of the ``kdumptool`` program are functions of :mod:`kdumptool.api` returning
typed results; here are ``convert``, ``filter``, ``split``, ``reassemble``, ``info``,
``fsck``, ``triage``, and ``repair_dump`` and ``scrub_dump`` (``kdumptool.repair`` and
``kdumptool.scrub`` are the packages that do that work; ``dmesg``, ``vtop``, ``vmcoreinfo``
and ``ikconfig`` stay in :mod:`kdumptool.api`, their names here being modules).

The names below are imported on first use (``kdumptool --help`` loads none of them).
"""

from __future__ import annotations

from typing import Any

#: The library commands (:mod:`kdumptool.api`) by their name here.
_API = {"convert": "convert", "filter": "filter", "split": "split", "reassemble": "reassemble",
        "info": "info", "fsck": "fsck", "triage": "triage", "repair_dump": "repair",
        "scrub_dump": "scrub", "parse_size": "parse_size", "parse_levels": "parse_levels",
        "ConvertResult": "ConvertResult", "SplitResult": "SplitResult", "InfoResult": "InfoResult",
        "RepairResult": "RepairResult", "ReassembleResult": "ReassembleResult"}

__all__ = ["open_dump", "open_dumps", "open_kernel", "Kernel", "dmesg_text", "drgn_program", *_API]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """The public names are imported on first use: ``kdumptool --help`` does not load NumPy."""
    if name in ("open_dump", "open_dumps"):
        from kdumptool import open as opening

        return getattr(opening, name)
    if name in ("open_kernel", "Kernel"):
        from kdumptool.kernel import session

        return getattr(session, name)
    if name in _API:
        from kdumptool import api

        return getattr(api, _API[name])
    if name == "dmesg_text":
        from kdumptool.dmesg import dmesg_text

        return dmesg_text
    if name == "drgn_program":
        from kdumptool.drgn_bridge import drgn_program

        return drgn_program
    raise AttributeError(f"module 'kdumptool' has no attribute {name!r}")
