"""Paths and constants shared by the fuzz modules; the tests' builders (``tests/builders.py``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FUZZ_DIR = REPO / "fuzz"
REGRESSIONS = FUZZ_DIR / "regressions"
BUNDLED_KDUMP = REPO / "corpus" / "x86_64-kdump-320m-c-d31.kdump"
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
B: Any = importlib.import_module("builders")  # tests/builders.py: independent dump builders

PS = 4096
#: Largest input the generators make (bytes).
MAX_INPUT = 2 << 20
#: Addresses ``vtop`` is asked for (the real kernel's direct map, text, its KASLR text and a
#: symbol; the top of the address space; a user address).
VTOP_ADDRESSES = ["0xffff888000001000", "0xffffffff81000000", "0xffffffff99bfb000",
                  "0xffffffff99a643e0", "0xffffffffffffffff", "0x1000"]
