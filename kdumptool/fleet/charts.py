"""The fleet report's charts, drawn with matplotlib as SVG text to inline in the page.

matplotlib (Agg backend, no display) writes SVG with the text kept as text
(``svg.fonttype = none``), a fixed hash salt and no date, so the same records give
byte-identical SVG and the page needs no script and no network to show it.
"""

from __future__ import annotations

import datetime
import io
from collections import Counter
from collections.abc import Callable
from typing import Any

Record = dict[str, Any]

#: Series drawn one by one in a time chart; the rest are summed as "other".
MAX_SERIES = 8
#: A qualitative palette (colour-blind safe; Okabe & Ito) and a grey for "other".
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
OTHER = "#999999"


def _bucket(times: list[int]) -> tuple[str, Callable[[int], str]]:
    """A time unit fitting the span of ``times`` and the label function for it."""
    span = max(times) - min(times) if times else 0

    def fmt(pattern: str) -> Callable[[int], str]:
        return lambda t: datetime.datetime.fromtimestamp(t, datetime.UTC).strftime(pattern)

    if span <= 2 * 86400:
        return "hour (UTC)", fmt("%Y-%m-%d %H:00")
    if span <= 90 * 86400:
        return "day (UTC)", fmt("%Y-%m-%d")
    return "week (ISO, UTC)", fmt("%G-W%V")


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "kdumptool",
                                "font.family": "sans-serif", "font.size": 9})
    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML declaration and DOCTYPE: inline SVG


def time_chart(records: list[Record], series_of: Callable[[Record], str | None], title: str,
               legend_title: str) -> str | None:
    """A stacked bar chart of crashes per time bucket, one colour per series (the
    :data:`MAX_SERIES` largest; the rest as "other"); None when no record has a crash time
    and a series."""
    points = [(r["crash_time"], s) for r in records if r.get("crash_time") and (s := series_of(r))]
    if not points:
        return None
    unit, label = _bucket([t for t, _ in points])
    totals = Counter(s for _, s in points)
    top = [s for s, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_SERIES]]
    buckets = sorted({label(t) for t, _ in points})
    counts: dict[str, Counter[str]] = {s: Counter() for s in [*top, "other"]}
    for t, s in points:
        counts[s if s in top else "other"][label(t)] += 1
    fig = _figure(9.0, 3.2)
    ax = fig.add_subplot()
    bottom = [0] * len(buckets)
    for i, s in enumerate([*top, "other"]):
        heights = [counts[s][b] for b in buckets]
        if not any(heights):
            continue
        colour = PALETTE[i] if s != "other" else OTHER
        ax.bar(range(len(buckets)), heights, bottom=bottom, label=f"{s} ({sum(heights)})", color=colour,
               width=0.6)
        bottom = [a + b for a, b in zip(bottom, heights, strict=True)]
    ax.set_xticks(range(len(buckets)), buckets, rotation=30 if len(buckets) > 4 else 0, ha="right"
                  if len(buckets) > 4 else "center")
    ax.set_ylabel("crashes")
    ax.set_xlabel(f"crash time, per {unit}")
    ax.set_title(title)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(title=legend_title, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title_fontsize=8)
    return _svg(fig)


def signature_bar_chart(groups: list[Any]) -> str | None:
    """Horizontal bars: dumps per signature (the largest groups)."""
    shown = groups[:12]
    if not shown:
        return None
    fig = _figure(9.0, 0.45 * len(shown) + 0.9)
    ax = fig.add_subplot()
    labels = [f"{g.signature}  {g.kind or 'unknown'}: {(g.reason or 'no crash in the log')[:40]}"
              for g in shown]
    ax.barh(range(len(shown)), [g.count for g in shown], color=PALETTE[0], height=0.6)
    ax.set_yticks(range(len(shown)), labels, fontsize=8, fontfamily="monospace")
    ax.invert_yaxis()
    ax.set_xlabel("dumps")
    ax.set_title("Dumps per crash signature")
    ax.xaxis.get_major_locator().set_params(integer=True)
    for i, g in enumerate(shown):
        ax.text(g.count, i, f" {g.count}", va="center", fontsize=8)
    return _svg(fig)
