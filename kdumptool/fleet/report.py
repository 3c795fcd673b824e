"""``report.html``: one self-contained page about a fleet (no script, no network).

Rendered with Jinja2 (``templates/report.html.j2``, autoescaped: every dump-supplied
string is text, never markup) from the triage records: the crash signatures (count,
first and last crash, kernels, an example), the charts of :mod:`kdumptool.fleet.charts`
(inline SVG), the damaged dumps with their ``fsck`` findings, and one section per dump
with its triage and a page-class bar (drawn as SVG by the template; the sections of the
groups' examples are open).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from kdumptool.fleet.charts import PALETTE, signature_bar_chart, time_chart
from kdumptool.fleet.groups import damaged, signature_groups
from kdumptool.fleet.task import iso_time

Record = dict[str, Any]

#: Dumps given a section of their own (the rest are counted): keeps a huge fleet's page small.
MAX_DUMP_SECTIONS = 2000
#: Page classes of the per-dump bar: (key in ``page_classes``, label, colour).
PAGE_CLASSES = [
    ("not_in_dump", "not in the dump", "#d9d9d9"),
    ("zero", "zero", "#56B4E9"),
    ("cache", "page cache", "#E69F00"),
    ("cache_private", "private cache", "#F0E442"),
    ("user", "user data", "#CC79A7"),
    ("free", "free", "#009E73"),
    ("hwpoison_offline", "hwpoison/offline", "#D55E00"),
    ("kept", "kept at level 31", "#0072B2"),
]


def dump_id(key: str) -> str:
    """The HTML id of a dump's section."""
    return "d-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def page_segments(pc: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The page-class bar of one dump: ``[{label, colour, pages, percent}]`` summing to
    its RAM pages; ``[]`` without a breakdown."""
    if not pc or not pc.get("ram_pages"):
        return []
    ram = pc["ram_pages"]
    zero = pc.get("zero") or 0
    values = {
        "not_in_dump": max(0, ram - pc.get("pages_in_input", 0)),
        "zero": zero,
        "cache": pc.get("cache", 0),
        "cache_private": pc.get("cache_private", 0),
        "user": pc.get("user", 0),
        "free": pc.get("free", 0),
        "hwpoison_offline": pc.get("hwpoison", 0) + pc.get("offline", 0),
        "kept": max(0, pc.get("remaining", 0) - zero),
    }
    out, x = [], 0.0
    for key, label, colour in PAGE_CLASSES:
        n = values[key]
        if n <= 0:
            continue
        pct = 100.0 * n / ram
        out.append({"label": label, "colour": colour, "pages": n, "x": round(x, 3),
                    "percent": round(pct, 3)})
        x += pct
    return out


def _dump_view(r: Record) -> dict[str, Any]:
    health = r.get("health") or {}
    return {**r, "id": dump_id(r["dump"]), "crash": iso_time(r.get("crash_time")) or r.get("crash_time_iso"),
            "verdict": health.get("verdict", "unknown"), "findings": health.get("findings", []),
            "segments": page_segments(r.get("page_classes"))}


def _environment() -> Any:
    import jinja2

    here = os.path.join(os.path.dirname(__file__), "templates")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(here), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["iso"] = lambda t: iso_time(t) or "-"
    env.filters["size"] = _human_size
    return env


def _human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def render_report(records: list[Record]) -> str:
    """The HTML page for ``records`` (deterministic: equal records give equal bytes)."""
    records = sorted(records, key=lambda r: r["dump"])
    groups = signature_groups(records)
    sig_of = {g.signature: g for g in groups}
    top = {g.signature: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
    unreadable = [r for r in records if r["status"].startswith("unreadable")]
    charts = {
        "per_signature": signature_bar_chart(groups),
        "signature_time": time_chart(records, lambda r: r.get("signature"),
                                     "Crashes over time, per signature", "signature (dumps)"),
        "release_time": time_chart(records, lambda r: r.get("release"),
                                   "Crashes over time, per kernel release", "kernel release (dumps)"),
    }
    views = [_dump_view(r) for r in records[:MAX_DUMP_SECTIONS]]
    html: str = _environment().get_template("report.html.j2").render(
        records=records, groups=groups, sig_of=sig_of, colours=top, charts=charts,
        damaged=[_dump_view(r) for r in damaged(records)], unreadable=unreadable, dumps=views,
        hidden=max(0, len(records) - MAX_DUMP_SECTIONS), page_classes=PAGE_CLASSES,
        releases=sorted({r["release"] for r in records if r.get("release")}),
        dump_id=dump_id, examples={g.example["dump"] for g in groups})
    return html
