"""The library behind every ``kdumptool`` command: each is a function that takes paths and
options and returns a typed result (a frozen dataclass of :mod:`kdumptool.api.results`); the
command line only parses options, calls it and prints.

* :mod:`kdumptool.api.write` -- :func:`convert`, :func:`filter`, :func:`scrub`, :func:`split`:
  the dump-level list and its retry, the writer registry, VMCOREINFO recovery, split sets;
* :mod:`kdumptool.api.reading` -- :func:`info`, :func:`fsck`, :func:`repair`,
  :func:`reassemble`, :func:`triage`, :func:`dmesg`, :func:`vtop`, :func:`vmcoreinfo`,
  :func:`ikconfig`;
* :mod:`kdumptool.api.inputs` -- opening inputs so that errors name them
  (:func:`error_text`), :func:`parse_levels` and :func:`parse_size`.

The same names are importable from :mod:`kdumptool` itself (``kdumptool.convert(...)``).
"""

from __future__ import annotations

from kdumptool.api.inputs import Notify, error_text, naming_inputs, opened, parse_levels, parse_size
from kdumptool.api.reading import (
    FoundText,
    dmesg,
    dmesg_log_records,
    fsck,
    ikconfig,
    info,
    reassemble,
    repair,
    triage,
    vmcoreinfo,
    vtop,
)
from kdumptool.api.results import (
    ConvertResult,
    InfoResult,
    ReassembleResult,
    RepairResult,
    Retry,
    SplitPart,
    SplitResult,
    VtopResult,
    WalkStep,
)
from kdumptool.api.write import convert, filter, scrub, split  # noqa: A004

__all__ = [
    "convert", "filter", "scrub", "split", "info", "fsck", "repair", "reassemble", "triage",
    "dmesg", "dmesg_log_records", "vtop", "vmcoreinfo", "ikconfig", "parse_levels", "parse_size",
    "error_text", "naming_inputs", "opened", "Notify", "ConvertResult", "SplitResult", "SplitPart",
    "Retry", "InfoResult", "RepairResult", "ReassembleResult", "VtopResult", "WalkStep", "FoundText",
]
