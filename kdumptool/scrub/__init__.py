"""Scrubbing: secrets taken out of a dump by meaning, with the dump's own symbols and BTF.

Spec: SPEC.md §19. The pieces: :mod:`~kdumptool.scrub.config` parses makedumpfile's filter
configuration, :mod:`~kdumptool.scrub.resolve` gives it meaning through kallsyms, BTF and
memory, :mod:`~kdumptool.scrub.profiles` holds the built-in profiles, and
:mod:`~kdumptool.scrub.plan` places the erased bytes on physical pages and erases them as
the pipeline reads (:class:`~kdumptool.scrub.plan.ScrubReader`).

:func:`prepare_scrub` does everything that can fail on bad input (a config error, a symbol
or member that does not exist, a kernel whose structures cannot be read) before any output
is opened; :meth:`ScrubSetup.finish` then completes the output's metadata: the ERASEINFO
record (appended to the source's) and the header fields the hostname profile blanks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdumptool.dump import DumpReader
from kdumptool.metadata import OutputMeta
from kdumptool.pipeline import Selection
from kdumptool.scrub.plan import ErasePlan, Outcome, ScrubReader

#: What the hostname profile writes into the kdump header's utsname fields it blanks.
HEADER_MARK = "X" * 64


@dataclass
class ScrubSetup:
    """A resolved scrub: the plan, the dump-level bits of page-class profiles, notes.

    :ivar plan: where the erased bytes are
    :ivar dump_level: bits to add to the output's dump level (``files``: 4, ``user``: 8,
        ``free``: 16)
    :ivar exclude: PFNs left out besides the dump level's classes (``free``: the per-CPU
        free lists)
    :ivar header_fields: utsname fields of the kdump header to blank (hostname profile)
    :ivar notes: what could not be followed (skipped pointers, lists cut short...)
    """

    plan: ErasePlan
    dump_level: int = 0
    exclude: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    header_fields: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    profiles: tuple[str, ...] = ()
    config: str | None = None

    def reader(self, source: DumpReader) -> ScrubReader:
        """The source as the output holds it: the plan's bytes erased, :attr:`exclude` left
        out (see :class:`~kdumptool.scrub.plan.ScrubReader`; call :meth:`attach` with the
        output's selection)."""
        return ScrubReader(source, self.plan, self.exclude)

    @staticmethod
    def attach(selection: Selection) -> None:
        """Tell the scrubbing reader which pages the output holds: the others read as zeros."""
        if isinstance(selection.reader, ScrubReader):
            selection.reader.selection = selection

    def finish(self, meta: OutputMeta, selection: Selection) -> Outcome:
        """What the output holds of the plan; appends this run's ERASEINFO lines to
        ``meta.eraseinfo`` and blanks the header fields."""
        outcome = self.plan.outcome(selection)
        meta.eraseinfo += outcome.eraseinfo
        if self.header_fields:
            meta.utsname = dataclasses.replace(meta.utsname, **{f: HEADER_MARK for f in self.header_fields})
        return outcome

    def ranges(self, outcome: Outcome | None = None) -> list[dict[str, Any]]:
        """Every range (``--dry-run``, ``--json``): virtual address, size, rule, where the rule
        comes from, and its physical pieces with whether each is in the output."""
        plan = self.plan
        order = np.lexsort((plan.voffset, plan.target))
        bounds = np.searchsorted(plan.target[order], np.arange(len(plan.targets) + 1))
        out = []
        for i, t in enumerate(plan.targets):
            rows = order[bounds[i]:bounds[i + 1]].tolist()
            out.append({
                "vaddr": t.vaddr, "size": t.size, "rule": t.rule, "origin": t.origin,
                "nullify": t.nullify,
                "pieces": [{"paddr": int(plan.paddr[r]), "size": int(plan.size[r]),
                            "in_output": None if outcome is None else bool(outcome.in_output[r])}
                           for r in rows]})
        return out


def prepare_scrub(reader: DumpReader, *, profiles: list[str] | tuple[str, ...] = (),
                  config_path: str | None = None) -> ScrubSetup:
    """Resolve profiles and a filter configuration against the dump (nothing is written).

    :param profiles: profile names (see :mod:`kdumptool.scrub.profiles`; ``all`` allowed)
    :param config_path: a makedumpfile filter configuration file
    :raises ScrubConfigError: a bad configuration (its line named) or an unknown profile
    :raises KdumpToolError: the kernel's symbols, BTF or structures cannot be read
    """
    from kdumptool.errors import ScrubConfigError
    from kdumptool.kernel.session import Kernel, ensure_vmcoreinfo
    from kdumptool.scrub.config import read_config
    from kdumptool.scrub.profiles import parse_profiles, run_profiles
    from kdumptool.scrub.resolve import resolve_config

    config = read_config(config_path) if config_path else None
    try:
        names = parse_profiles(list(profiles))
    except ValueError as exc:
        raise ScrubConfigError(str(exc)) from None
    kernel = Kernel(reader, ensure_vmcoreinfo(reader))
    prof = run_profiles(kernel, names)
    targets, notes = list(prof.targets), list(prof.notes)
    if config is not None:
        more, config_notes = resolve_config(kernel, config, command_base=prof.commands)
        targets += more
        notes += config_notes
    plan = ErasePlan(reader, targets)
    return ScrubSetup(plan, prof.dump_level, prof.exclude, prof.header_fields, notes + plan.notes,
                      tuple(names), config_path)
