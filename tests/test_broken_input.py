"""Damaged real dumps: the right error class, at the right offset, in one line, no output.

The files in the corpus's broken/ folder were damaged on purpose; each ``.json`` says
exactly which bytes changed. Reading them strictly (as ``convert`` does) must fail
with an error from kdumptool's hierarchy that points at the damage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ours import kdumptool

from corpus import corpus_path, need_corpus_file
from kdumptool.errors import (
    CorruptDumpError,
    CorruptPageError,
    TruncatedDumpError,
    UnknownFormatError,
)
from kdumptool.open import open_dump

B = "x86_64-kdump-320m/broken"
#: both real kdump sets (the 6.12 kernel's files were made by makedumpfile 1.7.9)
SETS = ("x86_64-kdump-320m", "x86_64-kdump-320m-6.12")


def _damage(name: str, kset: str = SETS[0]) -> dict:
    return json.loads(corpus_path(f"{kset}/broken/{name}.json").read_text())


def _offset(name: str, key: str, kset: str = SETS[0]) -> int:
    d = _damage(name, kset)
    if key == "desc":
        return d["page_desc"]["desc_file_offset"]
    if key == "data":
        return d["page_desc"]["offset"]
    return d[key]


# file, error class, where the error must point (json key), pfn (for page errors)
CASES = [
    ("c-d31-bad-signature.kdump", UnknownFormatError, "patched_at", None),
    ("c-d31-bad-blocksize.kdump", CorruptDumpError, "patched_at", None),
    ("c-d31-bad-page-data.kdump", CorruptPageError, "data", 0x1EC8),
    ("c-d31-bad-pd-flags.kdump", CorruptPageError, "data", 0x1AE0),
    ("c-d31-bad-pd-offset.kdump", CorruptPageError, "desc", 0x1310),
    ("c-d31-bad-pd-size.kdump", CorruptPageError, "desc", 0x16F8),
    ("c-d31-pd-table-zeroed64.kdump", CorruptPageError, "patched_at", 0x1),
    ("c-d31-bitmap2-zeroed4k.kdump", CorruptDumpError, "patched_at", None),
    ("c-d31-trunc30.kdump", TruncatedDumpError, "truncated_at", None),
    ("c-d31-trunc60.kdump", TruncatedDumpError, "truncated_at", None),
    ("l-d31-trunc50.kdump", TruncatedDumpError, "truncated_at", None),
    ("F-c-d31-trunc50.flat", TruncatedDumpError, "truncated_at", None),
    ("E-d31-headers-only.elf", TruncatedDumpError, "truncated_at", None),
    ("E-d31-trunc60.elf", TruncatedDumpError, "truncated_at", None),
    ("vmcore-trunc50.elf", TruncatedDumpError, "truncated_at", None),
    ("E-d31-phnum0.elf", CorruptDumpError, "patched_at", None),
    ("E-d31-poffset-past-eof.elf", CorruptDumpError, "patched_at", None),
    ("E-d31-poffset-past-eof-mid.elf", CorruptDumpError, "patched_at", None),
]


def _read_everything(path: Path) -> None:
    with open_dump(str(path)) as reader:
        for _ in reader.iter_batches():
            pass


@pytest.mark.parametrize("kset", SETS)
@pytest.mark.parametrize("name,cls,where,pfn", CASES, ids=[c[0] for c in CASES])
def test_error_class_and_offset(kset: str, name: str, cls: type, where: str | None,
                                pfn: int | None) -> None:
    path = need_corpus_file(f"{kset}/broken/{name}")
    with pytest.raises(cls) as info:
        _read_everything(path)
    err = info.value
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    assert err.path == str(path)
    assert err.offset is not None
    if where is not None:
        assert err.offset == _offset(name, where, kset), str(err)
    if pfn is not None:  # (the damaged page's, which the record names, on the other set)
        assert err.pfn == (pfn if kset == SETS[0] else _damage(name, kset).get("pfn", pfn))


@pytest.mark.parametrize("name,cls,where,pfn", CASES, ids=[c[0] for c in CASES])
def test_cli_one_line_no_traceback_no_output(tmp_path: Path, name: str, cls: type,
                                             where: str | None, pfn: int | None) -> None:
    path = need_corpus_file(f"{B}/{name}")
    before = path.stat().st_mtime_ns, path.stat().st_size
    out = tmp_path / "out.kdump"
    proc = kdumptool("convert", path, out)
    err = proc.stderr.decode()
    assert proc.returncode == cls.exit_code, err
    assert err.count("\n") == 1 and err.startswith("kdumptool: error: ")
    assert str(path) in err and "offset 0x" in err
    assert "Traceback" not in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either
    assert (path.stat().st_mtime_ns, path.stat().st_size) == before  # input untouched


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    path = need_corpus_file(f"{B}/c-d31-bad-blocksize.kdump")
    proc = kdumptool("--debug", "convert", path, tmp_path / "o")
    assert proc.returncode != 0
    assert b"Traceback" in proc.stderr


def test_info_reports_lost_pages_of_truncated_files() -> None:
    """info reads damaged files tolerantly and counts what is lost."""
    proc = kdumptool("info", "--json", need_corpus_file(f"{B}/c-d31-trunc30.kdump"))
    assert proc.returncode == 0, proc.stderr.decode()
    summary = json.loads(proc.stdout)
    assert summary["pages"]["present"] == 21097
    assert 0 < summary["pages"]["lost"] < 21097


@pytest.mark.parametrize("args", [
    ("dmesg",), ("info", "--pages"), ("vtop", "FILE", "0xffffffff98000000"), ("ikconfig",),
], ids=lambda a: a[0])
def test_memory_commands_name_the_file(args: tuple[str, ...]) -> None:
    """Errors found below the reader (a page-table walk, a kernel-log page that was lost)
    still come out as one line that names the file."""
    path = need_corpus_file(f"{B}/c-d31-trunc30.kdump")
    argv = [str(path) if a == "FILE" else a for a in args]
    proc = kdumptool(*argv, *([] if "FILE" in args else [path]))
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.startswith(f"kdumptool: error: {path}: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("loads", [5, 30])
def test_fsck_lists_shared_file_bytes_up_to_a_bound(tmp_path: Path, loads: int) -> None:
    """PT_LOADs that share file bytes are listed pair by pair up to MAX_LISTED, then one line
    counts the rest (a crafted file may hold a million such pairs)."""
    import struct

    import builders as b

    from kdumptool.repair.checks import MAX_LISTED, fsck

    image = bytearray(b.build_elf({pfn: b.page_for(pfn) for pfn in range(0, 2 * loads, 2)}))
    phoff, = struct.unpack_from("<Q", image, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", image, 0x36)
    rows = [phoff + k * phentsize for k in range(phnum)]
    loads_at = [r for r in rows if struct.unpack_from("<I", image, r)[0] == 1]  # PT_LOAD
    assert len(loads_at) == loads  # one page each: every other pfn
    shared, = struct.unpack_from("<Q", image, loads_at[0] + 8)
    for r in loads_at:
        struct.pack_into("<Q", image, r + 8, shared)  # every p_offset at the first's data
    path = tmp_path / "shared.elf"
    path.write_bytes(image)
    lines = [f.message for f in fsck([str(path)]).findings if f.code == "elf-file-overlap"]
    pairs = loads - 1
    assert len(lines) == min(pairs, MAX_LISTED) + (pairs > MAX_LISTED)
    assert all("share file bytes at" in line for line in lines[:MAX_LISTED])
    if pairs > MAX_LISTED:
        assert lines[-1].startswith(f"{pairs - MAX_LISTED} more pairs of PT_LOADs")


def test_nothing_in_a_dump_can_become_a_command_or_code() -> None:
    """Issue 8's safety rule, checked on the source: kdumptool starts no process and runs
    no code it builds at run time (no subprocess, os.system/exec*/spawn*, eval, exec, the
    builtin compile, pickle, marshal or ctypes), so no byte of a dump can reach a shell or an
    interpreter. The dynamic imports: optional codec packages, by literal names only; and the
    format registry (``formats/__init__.py``), which imports the modules of its own directory
    that declare an ``ENTRY`` (names from the installed package's files, never from input).
    One use of ctypes: ``allocator.py`` calls the C library's ``mallopt`` with two constants
    (no byte of input reaches it)."""
    import ast

    import kdumptool

    banned_modules = {"subprocess", "pickle", "marshal", "ctypes", "shelve", "pty"}
    banned_calls = {"eval", "exec", "system", "popen", "execv", "execve", "execvp", "spawnv", "spawnl",
                    "startfile", "import_module"}
    found = []
    for path in sorted(Path(kdumptool.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names]
                if isinstance(node, ast.ImportFrom) and node.module:
                    names.append(node.module)
                found += [f"{where}: import {n}" for n in names if n.split(".")[0] in banned_modules
                          and not (path.name == "allocator.py" and n == "ctypes")]
            elif isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                registry = name == "import_module" and path.parent.name == "formats" \
                    and path.name == "__init__.py"
                if (name in banned_calls and not registry) or (isinstance(f, ast.Name) and name == "compile"):
                    found.append(f"{where}: {name}()")
                elif name == "__import__" and not (path.parent.name == "codecs" and isinstance(
                        node.args[0], ast.Name) and node.args[0].id == "module"):
                    found.append(f"{where}: __import__()")
                elif name == "_import" and not (node.args and isinstance(node.args[0], ast.Constant)):
                    found.append(f"{where}: _import() of a name that is not a literal")
    assert not found, found
    allocator = (Path(kdumptool.__file__).parent / "allocator.py").read_text()
    assert allocator.count("libc.") == 1 and "libc.mallopt" in allocator  # its one C function
