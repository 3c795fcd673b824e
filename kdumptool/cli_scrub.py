"""Command-line pieces of scrubbing: the ``--config``/``--scrub`` options shared by ``convert``,
``filter`` and ``scrub``, and the text they print. Thin: the work is in :mod:`kdumptool.scrub`
(resolved for a write by :func:`kdumptool.api.write.selected`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

#: The built-in profiles' names, for the help text: kept here (equal to
#: :data:`kdumptool.scrub.profiles.PROFILES`, a test checks it) so that starting the command
#: line does not import the scrub and kernel packages.
PROFILES = ("hostname", "dmesg", "keys", "files", "user", "free")

SCRUB_HELP = ("Erase by meaning (repeatable, or a comma list): "
              + ", ".join(PROFILES) + ", all. See 'kdumptool scrub --help'.")


def scrub_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--config FILE`` and ``--scrub PROFILE``."""
    func = click.option("--scrub", "profiles", multiple=True, metavar="PROFILE", help=SCRUB_HELP)(func)
    return click.option(
        "--config", "config", type=click.Path(dir_okay=False), default=None, metavar="FILE",
        help="Erase what this makedumpfile filter configuration names (makedumpfile.conf(5): "
        "erase/for/endfor; types from the dump's BTF, no vmlinux).")(func)


def dry_run_report(classes: dict[str, Any], setup: Any, outcome: Any, as_json_: bool) -> str:
    """What ``--dry-run`` prints: the page classes and every range (text), or JSON."""
    from kdumptool.report import format_report

    if as_json_:
        doc: dict[str, Any] = {"page_classes": classes}
        if setup is not None:
            doc["scrub"] = as_json(setup, outcome)
        return json.dumps(doc, indent=1)
    return format_report(classes) + ("\n" + format_ranges(setup, outcome) if setup is not None else "")


def format_ranges(setup: Any, outcome: Any) -> str:
    """The ``--dry-run`` listing: every range, its physical pieces, and the totals."""
    lines = []
    for r in setup.ranges(outcome):
        mark = "nullify" if r["nullify"] else "X"
        lines.append(f"{r['vaddr']:#018x} {r['size']:>8} {mark:7} {r['rule']}  ({r['origin']})")
        for p in merge_pieces(r["pieces"]):
            where = "" if p["in_output"] in (None, True) else "  (page not in the output)"
            lines.append(f"    paddr {p['paddr']:#014x} {p['size']:>8} bytes{where}")
    lines.append(summary(setup, outcome))
    return "\n".join(lines)


def as_json(setup: Any, outcome: Any) -> dict[str, Any]:
    """The ``--dry-run --json`` document: every range (addresses as hex strings), the totals,
    the ERASEINFO lines this run would write, and the notes."""
    ranges = []
    for r in setup.ranges(outcome):
        ranges.append({**r, "vaddr": f"{r['vaddr']:#x}",
                       "pieces": [{**p, "paddr": f"{p['paddr']:#x}"} for p in merge_pieces(r["pieces"])]})
    return {"ranges": ranges, "bytes": outcome.bytes, "pages": outcome.pages,
            "eraseinfo": outcome.eraseinfo.decode().splitlines(), "dump_level_added": setup.dump_level,
            "pcp_free_pages_excluded": len(setup.exclude),
            "header_fields": list(setup.header_fields), "notes": setup.notes}


def merge_pieces(pieces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pieces that continue each other in physical memory (and are alike in or out of the
    output) as one."""
    out: list[dict[str, Any]] = []
    for p in pieces:
        last = out[-1] if out else None
        if (last is not None and last["paddr"] + last["size"] == p["paddr"]
                and last["in_output"] == p["in_output"]):
            last["size"] += p["size"]
        else:
            out.append(dict(p))
    return out


def summary(setup: Any, outcome: Any) -> str:
    """One line: ranges, bytes and pages erased in the output, dump-level bits added."""
    text = (f"scrub: {len(setup.plan.targets)} ranges, {outcome.bytes} bytes erased in "
            f"{outcome.pages} pages of the output")
    if setup.dump_level:
        classes = ", ".join(p for p in setup.profiles if p in ("files", "user", "free"))
        text += f"; dump level bits {setup.dump_level} added ({classes})"
    if len(setup.exclude):
        text += f"; {len(setup.exclude)} pages of the per-CPU free lists left out"
    if setup.header_fields:
        text += f"; header utsname {'/'.join(setup.header_fields)} blanked"
    return text
