"""The command line's process settings, made before NumPy is first imported.

kdumptool does no linear algebra, but NumPy's OpenBLAS starts a thread per core when it
loads (0.07 s of CPU on every run, measured on 2 cores): the command line asks it for one.
A program that imports the library keeps its own settings (this module is the command
line's only).
"""

from __future__ import annotations

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

__all__: list[str] = []
