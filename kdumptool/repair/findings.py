"""Findings of ``fsck`` and their exit codes.

Exit codes (stable, documented in the README):

====  ==============================================================
 0    clean: no finding above ``notice``
 1    problems ``repair`` can fix without losing data
 2    damage that loses data (pages that cannot be read back)
 3    not a dump, or a dump whose structure cannot be read at all
====  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEVERITIES = {"notice": 0, "repairable": 1, "data-loss": 2, "fatal": 3}


@dataclass
class Finding:
    """One problem: how bad, where in the file, what, and the PFNs it costs."""

    severity: str
    code: str
    message: str
    offset: int | None = None
    lost: list[tuple[int, int]] = field(default_factory=list)  # [start, end) PFN ranges

    def as_dict(self) -> dict[str, Any]:
        """The finding for ``--json``."""
        return {"severity": self.severity, "code": self.code, "offset": self.offset,
                "message": self.message, "lost_pfn_ranges": [list(r) for r in self.lost]}

    def __str__(self) -> str:
        where = f"offset {self.offset:#x}: " if self.offset is not None else ""
        pages = sum(b - a for a, b in self.lost)
        tail = f" [{pages} pages lost]" if pages else ""
        return f"{self.severity}: {where}{self.message}{tail}"


@dataclass
class Report:
    """What ``fsck`` found in one dump: its findings (worst severity gives the exit code) and
    facts.
    """

    path: str
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, severity: str, code: str, message: str, offset: int | None = None,
            lost: list[tuple[int, int]] | None = None) -> Finding:
        """Record a finding. :return: it"""
        f = Finding(severity, code, message, offset, lost or [])
        self.findings.append(f)
        return f

    @property
    def exit_code(self) -> int:
        """The exit status: that of the worst severity found (0 when nothing was)."""
        return max((SEVERITIES[f.severity] for f in self.findings), default=0)

    def lost_ranges(self) -> list[tuple[int, int]]:
        """Every PFN range a finding says is lost, merged."""
        return merge_ranges([r for f in self.findings for r in f.lost])

    def as_dict(self) -> dict[str, Any]:
        """The report for ``--json``."""
        return {"file": self.path, "exit_code": self.exit_code, "facts": self.facts,
                "findings": [f.as_dict() for f in self.findings],
                "lost_pfn_ranges": [list(r) for r in self.lost_ranges()]}


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged ``[start, end)`` ranges."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def ranges_of(pfns: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` runs of a sorted array of PFNs."""
    if not len(pfns):
        return []
    breaks = np.flatnonzero(np.diff(pfns) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(pfns)]))
    return [(int(pfns[a]), int(pfns[b - 1]) + 1) for a, b in zip(starts, ends, strict=True)]
