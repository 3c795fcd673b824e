"""Fleet answers from triage records: which crashes are the same bug, which dumps are
damaged, and one dump to keep per crash.

A group is every record with one crash signature
(:func:`kdumptool.kernel.triage.crash_signature`); dumps that could not be opened, or
whose kernel could not be read at all, have no signature and are in no group.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from kdumptool.errors import OutputError

Record = dict[str, Any]


@dataclass
class SignatureGroup:
    """The dumps of one crash signature."""

    signature: str
    kind: str | None
    reason: str | None
    frames: list[str]
    records: list[Record] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Dumps with this signature."""
        return len(self.records)

    @property
    def crash_times(self) -> list[int]:
        """Known crash times (seconds since the epoch), sorted."""
        return sorted(r["crash_time"] for r in self.records if r.get("crash_time"))

    @property
    def first(self) -> int | None:
        """The earliest crash time, if any is known."""
        times = self.crash_times
        return times[0] if times else None

    @property
    def last(self) -> int | None:
        """The latest crash time, if any is known."""
        times = self.crash_times
        return times[-1] if times else None

    @property
    def releases(self) -> list[str]:
        """Kernel releases of the group's dumps, sorted."""
        return sorted({r["release"] for r in self.records if r.get("release")})

    @property
    def example(self) -> Record:
        """The dump to look at (and keep): the healthiest, then the smallest, then by name."""
        return min(self.records, key=_example_rank)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"signature": self.signature, "count": self.count, "kind": self.kind,
                "reason": self.reason, "frames": self.frames, "first": self.first,
                "last": self.last, "releases": self.releases, "example": self.example["dump"]}


def _example_rank(r: Record) -> tuple[int, int, int, str]:
    health = (r.get("health") or {}).get("exit_code", 3)
    return (health, len(r.get("errors") or {}), r.get("size") or 0, r["dump"])


def signature_groups(records: list[Record]) -> list[SignatureGroup]:
    """Records grouped by signature, the largest group first (then by signature)."""
    groups: dict[str, SignatureGroup] = {}
    for r in sorted(records, key=lambda r: r["dump"]):
        sig = r.get("signature")
        if not sig:
            continue
        g = groups.get(sig)
        if g is None:
            inputs = r.get("signature_input") or []
            g = groups[sig] = SignatureGroup(sig, r.get("kind"), r.get("reason"), list(inputs[2:]))
        g.records.append(r)
    return sorted(groups.values(), key=lambda g: (-g.count, g.signature))


def damaged(records: list[Record]) -> list[Record]:
    """Records of dumps that are not clean (fsck found something, or they could not be
    opened), sorted by name."""
    out = []
    for r in records:
        health = r.get("health") or {}
        if r["status"].startswith("unreadable") or health.get("exit_code", 0) != 0:
            out.append(r)
    return sorted(out, key=lambda r: r["dump"])


def format_signatures(groups: list[SignatureGroup], unsigned: int = 0) -> str:
    """The signature table as text (``triage --signatures``)."""
    from kdumptool.fleet.task import iso_time

    lines = [f"{'SIGNATURE':<16} {'COUNT':>5}  {'FIRST':<20} {'LAST':<20} KIND: REASON / FRAMES"]
    for g in groups:
        first, last = iso_time(g.first) or "-", iso_time(g.last) or "-"
        lines.append(f"{g.signature:<16} {g.count:>5}  {first:<20} {last:<20} "
                     f"{g.kind or 'unknown'}: {g.reason or '-'}")
        lines.append(f"{'':<16} {'':>5}  kernels: {', '.join(g.releases) or '-'}")
        lines.append(f"{'':<16} {'':>5}  frames:  {' < '.join(g.frames) or '-'}")
        lines.append(f"{'':<16} {'':>5}  example: {g.example['dump']}")
    if unsigned:
        lines.append(f"{unsigned} dump(s) without a signature (unreadable)")
    return "\n".join(lines)


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
        return "linked"
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
    shutil.copy2(src, dst)
    return "copied"


def keep_one_per_signature(records: list[Record], dest: str) -> list[tuple[str, str, str]]:
    """Hard-link (or copy, across file systems) each group's example into
    ``dest/SIGNATURE/``: ``[(signature, source path, how)]``.  Files already there are left.

    :raises OutputError: ``dest`` cannot be written
    """
    done: list[tuple[str, str, str]] = []
    for g in signature_groups(records):
        target = os.path.join(dest, g.signature)
        try:
            os.makedirs(target, exist_ok=True)
            for src in g.example["paths"]:
                dst = os.path.join(target, os.path.basename(src))
                how = "kept" if os.path.exists(dst) else _link_or_copy(src, dst)
                done.append((g.signature, src, how))
        except OSError as exc:
            raise OutputError(f"{target}: cannot keep {g.example['dump']}: {exc.strerror or exc}") from None
    return done
