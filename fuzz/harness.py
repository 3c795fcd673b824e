"""Fuzz harness for kdumptool: structured input generators and an isolated checker.

This module gathers the harness's parts under one name (``import harness as H``):
:mod:`contract` (what must hold, and the operations that check it), :mod:`strategies` (the
mutations and the :class:`Generator`) over :mod:`structure` (field maps) and :mod:`seeds`,
:mod:`runner` (the isolated :class:`Worker`, minimisation, regression files) and :mod:`common`.

The contract checked (see ``fuzz/README.md``): for ANY input bytes, opening a dump
(:func:`kdumptool.open.open_bytes` strict and tolerant, :func:`kdumptool.open.open_dump`
through the command line), reading every batch, ``read_page``, ``count_pages``, the
summary (:func:`kdumptool.summary.dump_summary`) and every command (``info`` in its
forms, ``vmcoreinfo``, ``convert`` to kdump / ELF / flattened / a split set, ``filter``,
``dmesg``, ``vtop``, ``fsck``, ``repair``, ``ikconfig``, ``reassemble``) either succeed or raise a
:class:`kdumptool.errors.KdumpToolError` -- no other exception, no hang, no allocation
past the worker's address-space limit, no crash.

Generators (:class:`Generator`)
    * *structured*: field-aware mutation of real and synthetic files. The fields come from
      kdumptool's own construct schemas (``kdump_structs`` DiskDumpHeader / KdumpSubHeader /
      PageDesc, ``elf_structs`` Ehdr / Phdr / Shdr / Nhdr, the flattened
      ``MakedumpfileHeader`` / ``MakedumpfileDataHeader``); values are boundaries (0, 1, -1,
      max, page size +-1, file size +-1, huge) or random. VMCOREINFO text is mutated key by key.
    * *havoc*: bit flips, byte runs, zeroed blocks, truncations, insertions and deletions,
      anywhere and at structure boundaries; splices between seeds; re-flattening.

Checker
    :func:`run_ops` runs every operation in-process and classifies each step;
    :class:`Worker` runs it in a ``spawn``-ed process with ``RLIMIT_AS`` (default 512 MiB),
    ``RLIMIT_FSIZE``, a per-group time limit (``SIGALRM`` raising :class:`OpTimeout`, plus a
    hard kill with a ``faulthandler`` traceback when the process is stuck in C code) and crash
    detection; :func:`check_one` is the one-call form.

Outcome kinds, worst first: ``crash``, ``hang``, ``memory``, ``unhandled`` (the contract is
broken), ``bad_output`` (``convert`` succeeded but kdumptool cannot re-read what it wrote),
``handled`` (a kdumptool error), ``ok``.
"""

from __future__ import annotations

from common import (  # noqa: F401 - the harness's names, re-exported
    BUNDLED_KDUMP,
    FUZZ_DIR,
    MAX_INPUT,
    PS,
    REGRESSIONS,
    REPO,
    VTOP_ADDRESSES,
    B,
)
from contract import (  # noqa: F401 - the harness's names, re-exported
    _RANK,
    ALL_GROUPS,
    CONTRACT_FAILURES,
    DEFAULT_GROUPS,
    EXTRA_GROUPS,
    FAILURE_KINDS,
    GROUPS,
    LostPagesDiffer,
    OpResult,
    OpTimeout,
    Outcome,
    PageDataDiffer,
    PresentPagesDiffer,
    rel_path,
    run_ops,
    threading_main,
    worst,
)
from runner import (  # noqa: F401 - the harness's names, re-exported
    SUITE_LIMITS,
    Worker,
    check_one,
    kdumptool_version,
    minimize,
    regression_name,
    regressions_with,
    write_regression,
)
from seeds import (  # noqa: F401 - the harness's names, re-exported
    UTS_PFN,
    UTS_VADDR,
    Seed,
    hypervisor_seeds,
    real_seeds,
    shrink_elf_bytes,
    shrink_kdump_bytes,
    shrink_to_working_set,
    shrink_with_writer,
    synthetic_pages,
    synthetic_seeds,
    synthetic_vmcoreinfo,
)
from strategies import (  # noqa: F401 - the harness's names, re-exported
    EXTRA_STRATEGIES,
    HAVOC,
    STRATEGIES,
    Generator,
    boundary_values,
    field_value,
    interesting,
    m_byte,
    m_copy,
    m_extend,
    m_field,
    m_flip,
    m_geometry,
    m_insert_delete,
    m_run,
    m_scale,
    m_truncate,
    m_vmcoreinfo,
    m_zero_block,
    mutate_vmcoreinfo_text,
)
from structure import (  # noqa: F401 - the harness's names, re-exported
    Field,
    Layout,
    describe,
    parse_field,
    schema_fields,
)
