"""What a dump level excludes, per page class, as makedumpfile's report shows it.

Used by ``convert``/``filter`` (after writing, and with ``--dry-run``) and by
``info --pages`` (the counts ``makedumpfile --mem-usage`` prints).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdumptool.pipeline import Selection, zero_rows


def exclusion_report(selection: Selection, *, zero: int | None = None) -> dict[str, Any]:
    """Page counts: pages in the dump, per excluded class, and what remains.

    :param zero: zero pages already counted by a writer; otherwise, when the level has
        bit 1, the kept pages are read once to count them
    """
    reader = selection.reader
    ram = present = kept = 0
    count_zero = zero is None and selection.exclude_zero
    zeros = 0
    for start, count in selection.windows():  # metadata only
        r, p = reader.bitmaps(start, count)
        _, keep = selection.masks(start, count)
        ram += int(np.count_nonzero(r))
        present += int(np.count_nonzero(p))
        kept += int(np.count_nonzero(keep))
    if count_zero:  # the kept pages' data, a data window at a time (memory stays flat)
        for batch, keep in selection.batches():
            rows = keep[batch.present]
            zeros += int(np.count_nonzero(zero_rows(batch.data[rows])))
    counts = dict(selection.exclusion.counts) if selection.exclusion is not None else {}
    report: dict[str, Any] = {
        "dump_level": selection.dump_level,
        "ram_pages": ram,
        "pages_in_input": present,
        "zero": zero if zero is not None else (zeros if selection.exclude_zero else None),
        "cache": counts.get("cache", 0),
        "cache_private": counts.get("cache_private", 0),
        "user": counts.get("user", 0),
        "free": counts.get("free", 0),
        "hwpoison": counts.get("hwpoison", 0),
        "offline": counts.get("offline", 0),
        "remaining": kept,
    }
    if selection.exclusion is not None:
        report["struct_page_unreadable"] = selection.exclusion.unreadable
        report["warnings"] = list(selection.exclusion.warnings)
    return report


LABELS = [("pages_in_input", "Pages in input"), ("zero", "Pages filled with zero"),
          ("cache", "Non-private cache pages"), ("cache_private", "Private cache pages"),
          ("user", "User process data pages"), ("free", "Free pages"),
          ("hwpoison", "Hwpoison pages"), ("offline", "Offline pages"),
          ("remaining", "Remaining pages")]


def format_report(report: dict[str, Any]) -> str:
    """Text like makedumpfile's ``--message-level`` report."""
    lines = [f"dump level {report['dump_level']}:"]
    for key, label in LABELS:
        value = report.get(key)
        if value is not None:
            lines.append(f"  {label:<26} : {value}")
    if report.get("struct_page_unreadable"):
        lines.append(f"  struct page unreadable (kept): {report['struct_page_unreadable']}")
    for warning in report.get("warnings", []):
        lines.append(f"  WARNING: {warning}")
    return "\n".join(lines)
