"""The README's Python API section runs as written (with CORPUS pointing at the shared
corpus), and drgn_program gives drgn a program over dumps drgn alone refuses."""

from __future__ import annotations

import contextlib
import io
import os
import re

import pytest
from peers import require_tool

from corpus import CORPUS_ROOT, REPO_ROOT, need_corpus_file


def readme_python_blocks() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.corpus
def test_readme_python_api_example_runs() -> None:
    need_corpus_file("x86_64-kdump-320m-6.12/derived/c-d31.kdump")
    blocks = readme_python_blocks()
    assert blocks, "the README has a Python API example"
    out = io.StringIO()
    scope = {"CORPUS": str(CORPUS_ROOT)}
    # the example names the corpus file; the test reads the unpacked copy of it
    code = blocks[0].replace('CORPUS + "/x86_64-kdump-320m-6.12/derived/c-d31.kdump"',
                             repr(str(need_corpus_file("x86_64-kdump-320m-6.12/derived/c-d31.kdump"))))
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    printed = out.getvalue()
    assert "schedule+0x34/0xc0" in printed
    assert "b'Linux'" in printed
    assert "sysrq triggered crash" in printed
    assert scope["kept"] > 10000
    assert "Kernel panic - not syncing: sysrq triggered crash" in scope["log"]
    result = scope["result"]  # convert's typed result: level 1 fit, zlib, pages counted
    assert result.dump_level == 31 and result.retried == () and result.codec == "zlib"
    assert result.kind == "kdump-compressed (zlib)" and result.pages > 10000 and not result.cut
    assert "True" in printed.splitlines()  # triage of the converted dump: the same signature
    assert any(line.startswith(scope["small"]) and "exists" in line for line in printed.splitlines())
    assert not os.path.exists(scope["tmp"].name)  # the example leaves nothing behind


@pytest.mark.corpus
@pytest.mark.peer
@pytest.mark.parametrize("rel", ["x86_64-qemu-256m/qemu-migrate.qevm",
                                 "x86_64-qemu-256m-novmcoreinfo/qemu-elf.vmcore",
                                 "x86_64-kdump-320m-6.12/derived/split2-c-d31.1"])
def test_drgn_program_over_dumps_drgn_refuses(rel: str) -> None:
    drgn = require_tool("drgn")
    import kdumptool

    path = str(need_corpus_file(rel))
    if rel.endswith(".qevm"):  # drgn alone cannot open a migration stream
        with pytest.raises(Exception):  # noqa: B017 - whatever drgn raises
            drgn.Program().set_core_dump(path)
    paths: str | list[str] = path
    if rel.endswith(".1"):
        paths = [path, str(need_corpus_file(rel[:-1] + "2"))]
    prog = kdumptool.drgn_program(paths)
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    sched = prog.symbol("schedule")
    assert sched.kind == drgn.SymbolKind.FUNC and sched.size > 0
    assert prog.symbol(sched.address + 4).name == "schedule"
    uts = prog.symbol("init_uts_ns").address
    assert prog.read(uts, 6) == b"Linux\0"  # a virtual read: drgn walks the page tables
