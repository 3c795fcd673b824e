"""Field-aware fuzzing of real dump headers, driven by hypothesis (issue 8, ``fuzz/README.md``).

The headers of real dumps (the bundled makedumpfile kdump and, with ``../shared/corpus``, the
kernel's ELF ``/proc/vmcore``, makedumpfile's ``-E`` and ``-F`` files, QEMU's ELF and kdump
dumps and a split part; each shrunk to a few real pages, headers, notes and bitmaps kept byte
for byte) are mapped into fields by kdumptool's own construct schemas (``harness.describe``:
``disk_dump_header``, ``kdump_sub_header``, page descriptors, ``Ehdr``/``Phdr``/``Nhdr``, the
flattened headers). Hypothesis sets one to three of those fields to a boundary value (0, 1,
-1, max, page size and file size +-1, 2^32, 2^63, the original +-1...) or any value of the
field's width, and every command of the fuzz contract runs on the result in a worker process
with 512 MiB of address space: a result or a kdumptool error, nothing else. A failure shrinks
to the fewest, simplest field changes that still break the contract.

Deterministic in the suite (``derandomize``); ``KDUMPTOOL_FUZZ_EXAMPLES=N`` runs N random
examples instead (the million-input campaign in ``fuzz/campaign.py`` makes the same kind of
mutation among others, from its own seeded generator).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "fuzz") not in sys.path:
    sys.path.insert(0, str(REPO / "fuzz"))
H: Any = importlib.import_module("harness")

_RANDOM_EXAMPLES = int(os.environ.get("KDUMPTOOL_FUZZ_EXAMPLES", "0"))
EXAMPLES = _RANDOM_EXAMPLES or 300


@pytest.fixture(scope="module")
def worker() -> Any:
    w = H.Worker(**H.SUITE_LIMITS)  # CPU-time limits: see harness.SUITE_LIMITS
    yield w
    w.close()


class _Seeds(list):  # type: ignore[type-arg]
    """A list whose repr is short: hypothesis prints the test's arguments when it fails."""

    def __repr__(self) -> str:
        return f"<{len(self)} real seeds: {', '.join(name for name, _, _ in self)}>"


@pytest.fixture(scope="module")
def real_headers() -> list[tuple[str, bytes, Any]]:
    """Real seeds with their schema fields: (name, bytes, layout), the integer fields only."""
    out = _Seeds()
    for seed in H.real_seeds(shared=True):
        if any(w in seed.name for w in ("rewritten", "as-elf", "dmesg-set")):
            continue  # their headers were written by kdumptool, not by the kernel or makedumpfile
        lay = H.describe(seed.data)
        lay.fields = [f for f in lay.fields if f.kind != "bytes"]
        if lay.fields:
            out.append((seed.name, seed.data, lay))
    return out


def test_real_headers_are_mapped_from_the_schemas(real_headers: list[tuple[str, bytes, Any]]) -> None:
    """The seeds are real files and their fields are found (a mapping that found nothing would
    leave the hypothesis test below mutating nothing)."""
    names = {name for name, _, _ in real_headers}
    assert {"real-kdump-prefix256k", "real-kdump-shrunk"} <= names
    from corpus import corpus_available  # type: ignore[import-not-found]
    if corpus_available():
        assert {"real-elf-vmcore-shrunk", "real-elf-E-d31-shrunk", "real-elf-qemu-elf-shrunk",
                "real-kdump-qemu-shrunk", "real-flat-F-c-d31-prefix256k"} <= names
    for name, data, lay in real_headers:
        fields = {f.name for f in lay.fields}
        if lay.fmt == "kdump":
            assert {"disk_dump_header.block_size", "disk_dump_header.max_mapnr",
                    "kdump_sub_header.offset_vmcoreinfo", "page_desc[0].offset"} <= fields, name
            block_size = next(f for f in lay.fields if f.name == "disk_dump_header.block_size")
            assert block_size.read(data) == lay.page_size == 4096, name
        elif lay.fmt == "elf":
            assert {"ehdr.e_phnum", "phdr[1].p_offset", "phdr[1].p_filesz"} <= fields, name
            phnum = next(f for f in lay.fields if f.name == "ehdr.e_phnum")
            assert phnum.read(data) >= 2, name


@st.composite
def header_changes(draw: st.DrawFn, real_headers: list[tuple[str, bytes, Any]]
                   ) -> tuple[int, list[tuple[int, int]]]:
    """Which real seed, and 1-3 (field index, new value) changes: small, so hypothesis prints
    and shrinks the plan, not the bytes."""
    k = draw(st.integers(0, len(real_headers) - 1))
    _, data, lay = real_headers[k]
    changes = []
    for _ in range(draw(st.integers(1, 3))):
        j = draw(st.integers(0, len(lay.fields) - 1))
        f = lay.fields[j]
        width = (1 << (8 * f.size)) - 1
        boundary = [v & width for v in H.boundary_values(f, f.read(data), len(data), lay.page_size)]
        changes.append((j, draw(st.one_of(st.sampled_from(boundary), st.integers(0, width)))))
    return k, changes


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not _RANDOM_EXAMPLES, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_field_mutations_of_real_headers_keep_the_contract(
        data: st.DataObject, real_headers: list[tuple[str, bytes, Any]], worker: Any) -> None:
    k, changes = data.draw(header_changes(real_headers))
    name, original, lay = real_headers[k]
    mutated = bytearray(original)
    for j, value in changes:
        lay.fields[j].write(mutated, value)
    out = worker.check(bytes(mutated))
    failures = out.signatures(H.FAILURE_KINDS)
    said = ", ".join(f"{lay.fields[j].name}={v:#x}" for j, v in changes)
    assert not failures, f"{name} with {said}: " + "; ".join(
        f"{sig} [{r.op}] {r.message[:160]}" for sig, r in failures.items())
