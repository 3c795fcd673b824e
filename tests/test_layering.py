"""The house rules that hold the package together, checked from the source (``ast``, no import):

* no package cycle: ``kdumptool``'s sub-packages and top-level modules form a directed acyclic
  graph, every import counted (top-level, inside functions, under ``TYPE_CHECKING``);
* no lazy import that only dodges a cycle: an import inside a function whose target, imported
  at the top, would close a cycle of modules;
* every public exception class in ``errors.py``;
* no module over 600 lines and no function over 80 lines (``kdumptool/`` and ``fuzz/``);
* a docstring on every public function, method and class (``kdumptool/`` and ``fuzz/``);
* no dispatch on a format's reader class outside the format's own modules: the commands ask
  the registry (:func:`kdumptool.formats.entry_of` and the entry's hooks), never
  ``isinstance(reader, SomeFormatReader)``.

What other branches still own is named below with the rule it breaks (:data:`OVER_SIZE`,
:data:`EXCEPTIONS_ELSEWHERE`, :data:`UNDOCUMENTED`, :data:`LAZY_CYCLES`,
:data:`FORMAT_ISINSTANCE`); each list may only shrink: an entry that no longer breaks its rule
fails the test until it is removed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "kdumptool"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
#: ``cli.py`` parses options and prints (issue 22): the work is in ``kdumptool.api``.
MAX_CLI_LINES = 400

#: Over a size limit, in files other branches are changing (issue 22): ``path`` for a module,
#: ``path:qualified.name`` for a function.
OVER_SIZE: frozenset[str] = frozenset()

#: Exception classes outside ``errors.py``, in files other branches own.
EXCEPTIONS_ELSEWHERE: frozenset[str] = frozenset()

#: Public names without a docstring, in files other branches own.
UNDOCUMENTED: frozenset[str] = frozenset()

#: Cycles of modules closed only by imports inside functions or under ``TYPE_CHECKING``, in a
#: package another branch owns: ``(module, module)`` pairs, each importing the other.
LAZY_CYCLES: frozenset[tuple[str, str]] = frozenset()


#: ``isinstance`` on a format's reader class outside the format's own modules, ``path:Class``,
#: where it is not dispatch on the format of an input.
FORMAT_ISINSTANCE: frozenset[str] = frozenset({
    # a split set is made of kdump-compressed files: each part's class is checked when the
    # set is assembled (validation of its members, not a choice between formats)
    "kdumptool/formats/split.py:KdumpReader",
})


# --- reading the source -----------------------------------------------------------------------

@dataclass(frozen=True)
class Import:
    """One ``import`` statement's target module, seen from the importing module."""

    source: str  # dotted module name
    target: str  # dotted module name (the longest prefix that is a module of the package)
    line: int
    lazy: bool  # inside a function or under ``if TYPE_CHECKING``


@dataclass
class Source:
    """The modules of one package tree."""

    root: Path  # the directory holding the package directory
    modules: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def scan(cls, package_dir: Path) -> Source:
        """Every ``*.py`` file under ``package_dir``, by dotted module name."""
        src = cls(package_dir.parent)
        for path in sorted(package_dir.rglob("*.py")):
            parts = list(path.relative_to(src.root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            src.modules[".".join(parts)] = path
        return src

    def resolve(self, name: str) -> str | None:
        """The module a dotted name lies in (``a.b.func`` -> ``a.b``), None if outside."""
        while name and name not in self.modules:
            name = name.rpartition(".")[0]
        return name or None

    def imports(self) -> Iterator[Import]:
        """Every import of a module of the package by another one."""
        for module, path in self.modules.items():
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            yield from self._walk(ast.parse(path.read_text()), module, package, lazy=False)

    def _walk(self, node: ast.AST, module: str, package: str, *, lazy: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for name in _targets(child, package):
                    target = self.resolve(name)
                    if target is not None and target != module:
                        yield Import(module, target, child.lineno, lazy)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from self._walk(child, module, package, lazy=True)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                yield from self._walk(child, module, package, lazy=True)
            else:
                yield from self._walk(child, module, package, lazy=lazy)


def _targets(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = package.split(".")
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join([*parts, *([node.module] if node.module else [])])
    return [f"{base}.{alias.name}" for alias in node.names]


def unit(module: str) -> str:
    """The package-level unit of a module: its sub-package, or itself when top-level
    (``kdumptool.formats.elf`` -> ``formats``, ``kdumptool.dump`` -> ``dump``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def package_graph(src: Source) -> dict[str, set[str]]:
    """Unit -> units it imports (every import counted; the root ``__init__`` left out: it is
    the public facade and imports whatever it exports)."""
    graph: dict[str, set[str]] = {}
    for imp in src.imports():
        a, b = unit(imp.source), unit(imp.target)
        if a and b and a != b:
            graph.setdefault(a, set()).add(b)
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    nodes = set(graph) | {w for targets in graph.values() for w in targets}
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return sorted(found)


def _is_parent(a: str, b: str) -> bool:
    return b.startswith(a + ".") or a.startswith(b + ".")


def lazy_cycles(src: Source) -> set[tuple[str, str]]:
    """Pairs of modules on a cycle of imports, ``(a, b)`` with ``a`` importing ``b`` and ``b``
    reaching ``a``, every import counted: a cycle that only a lazy import keeps from failing at
    import time is still a cycle (a package and its own modules left out)."""
    every: dict[str, set[str]] = {}
    for imp in src.imports():
        if not _is_parent(imp.source, imp.target):
            every.setdefault(imp.source, set()).add(imp.target)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo.extend(every.get(m, ()))
        return False

    return {(min(a, b), max(a, b)) for a, targets in every.items() for b in targets if reaches(b, a)}


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield prefix + node.name, node
            yield from _functions(node, prefix + node.name + ".")
        else:
            yield from _functions(node, prefix)


def oversized(paths: list[Path]) -> set[str]:
    """Modules over :data:`MAX_MODULE_LINES` and functions over :data:`MAX_FUNCTION_LINES`."""
    found = set()
    for path in paths:
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            found.add(rel)
        for name, node in _functions(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:  # type: ignore[operator]
                    found.add(f"{rel}:{name}")
    return found


def undocumented(paths: list[Path]) -> set[str]:
    """Public module-level functions and classes, and public methods of public classes,
    without a docstring (a module whose name starts with ``_`` is private, ``__init__``
    excepted)."""
    found = set()

    def visit(node: ast.AST, prefix: str, rel: str) -> None:
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if child.name.startswith("_"):
                continue
            if ast.get_docstring(child) is None:
                found.add(f"{rel}:{prefix}{child.name}")
            if isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".", rel)

    for path in paths:
        if path.name.startswith("_") and path.name != "__init__.py":
            continue
        visit(ast.parse(path.read_text()), "", path.relative_to(REPO).as_posix())
    return found


def exceptions_outside_errors(paths: list[Path]) -> set[str]:
    """Public classes deriving from an exception, defined elsewhere than ``errors.py`` (a
    private class, ``_Name``, used as control flow inside one module may stay there)."""
    known = {"Exception", "BaseException", "ValueError", "KeyError", "OSError", "RuntimeError"}
    classes: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                classes[node.name] = [ast.unparse(b).rpartition(".")[2] for b in node.bases]
                where.setdefault(node.name, path.relative_to(REPO).as_posix())

    def is_exception(name: str, depth: int = 0) -> bool:
        if name in known or name.endswith("Error"):
            return True
        return depth < 20 and any(is_exception(b, depth + 1) for b in classes.get(name, ()))

    return {f"{where[name]}:{name}" for name, bases in classes.items()
            if not name.startswith("_") and where[name] != "kdumptool/errors.py"
            and any(is_exception(b) for b in bases)}


def format_reader_classes(formats_dir: Path) -> dict[str, str]:
    """Reader classes of the formats (classes of ``formats/*.py`` deriving from a ``*Reader``,
    Protocols left out), by name -> the module stem that defines them (``KdumpReader`` ->
    ``kdump``)."""
    found: dict[str, str] = {}
    for path in sorted(formats_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b).rpartition(".")[2] for b in node.bases]
                if "Protocol" not in bases and any(b.endswith("Reader") for b in bases):
                    found.setdefault(node.name, path.stem)
    return found


def _own_module(rel: str, stem: str) -> bool:
    """Whether ``rel`` is one of the modules of the format defined in ``formats/<stem>.py``
    (``formats/<stem>.py``, ``formats/<stem>_*.py``), or the registry (``formats/__init__``)."""
    name = rel.rpartition("/")[2].removesuffix(".py")
    return rel.startswith("kdumptool/formats/") and (
        name == stem or name.startswith(stem + "_") or name == "__init__")


def format_isinstance(paths: list[Path], classes: Mapping[str, str]) -> set[str]:
    """``path:Class`` of every ``isinstance(x, Class)`` (also in a tuple or ``A | B``) on a
    format's reader class outside that format's own modules."""
    found = set()
    for path in paths:
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "isinstance" and len(node.args) == 2):
                continue
            for name in ast.walk(node.args[1]):
                cls = name.attr if isinstance(name, ast.Attribute) else getattr(name, "id", None)
                if cls in classes and not _own_module(rel, classes[cls]):
                    found.add(f"{rel}:{cls}")
    return found


# --- the checks -------------------------------------------------------------------------------

SOURCE = Source.scan(PACKAGE)
OWN_FILES = sorted(SOURCE.modules.values())
SIZE_FILES = OWN_FILES + sorted((REPO / "fuzz").glob("*.py"))


def test_no_package_cycle() -> None:
    found = cycles(package_graph(SOURCE))
    assert not found, f"package cycles (move the shared piece down a layer): {found}"


def test_the_cycle_check_finds_a_planted_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "kdumptool"
    for rel, text in {
        "__init__.py": "",
        "a/__init__.py": "",
        "a/x.py": "from kdumptool.b.y import thing\n",
        "b/__init__.py": "",
        "b/y.py": "def thing():\n    from kdumptool.a import x\n    return x\n",
        "c.py": "from kdumptool.a.x import thing\n",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    src = Source.scan(pkg)
    assert cycles(package_graph(src)) == [["a", "b"]]  # the lazy import counts too
    assert lazy_cycles(src) == {("kdumptool.a.x", "kdumptool.b.y")}
    (pkg / "b/y.py").write_text("def thing():\n    return 1\n")
    assert cycles(package_graph(Source.scan(pkg))) == []


def test_the_real_graph_is_layered() -> None:
    graph = package_graph(SOURCE)
    # the core imports nothing above it; formats and vtop do not import the filters
    assert "errors" not in graph
    assert graph["dump"] <= {"errors", "schema", "transport", "vmcoreinfo"}
    assert "filters" not in graph.get("vtop", set()) and "filters" not in graph.get("formats", set())
    assert "vtop" in graph["filters"]  # the filters use the page tables, not the reverse


def test_no_lazy_import_only_dodges_a_cycle() -> None:
    found = lazy_cycles(SOURCE)
    assert found - LAZY_CYCLES == set(), "modules importing each other through a lazy import"
    assert LAZY_CYCLES - found == set(), "fixed: remove from LAZY_CYCLES"


def test_every_exception_class_is_in_errors_py() -> None:
    found = exceptions_outside_errors(OWN_FILES)
    assert found - EXCEPTIONS_ELSEWHERE == set(), "define exception classes in kdumptool/errors.py"
    assert EXCEPTIONS_ELSEWHERE - found == set(), "moved: remove from EXCEPTIONS_ELSEWHERE"


def test_no_isinstance_dispatch_on_formats() -> None:
    classes = format_reader_classes(PACKAGE / "formats")
    assert {"KdumpReader", "ElfReader", "SplitSetReader", "HyperVReader"} <= set(classes)
    found = format_isinstance(OWN_FILES, classes)  # (fuzz seeds assert what they built)
    assert found - FORMAT_ISINSTANCE == set(), ("ask the format registry (formats.entry_of and "
                                                "the entry's hooks), not the reader's class")
    assert FORMAT_ISINSTANCE - found == set(), "gone: remove from FORMAT_ISINSTANCE"


def test_the_isinstance_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "kdumptool/formats").mkdir(parents=True)
    (tmp_path / "kdumptool/formats/kdump.py").write_text(
        "class KdumpReader(DumpReader):\n    pass\n\n\nclass KdumpReaderish(Protocol):\n    pass\n")
    (tmp_path / "kdumptool/formats/kdump_writer.py").write_text("isinstance(r, KdumpReader)\n")
    (tmp_path / "kdumptool/summary.py").write_text(
        "isinstance(r, fmt.KdumpReader | Other)\nisinstance(r, KdumpReaderish)\n")
    classes = format_reader_classes(tmp_path / "kdumptool/formats")
    assert classes == {"KdumpReader": "kdump"}
    paths = sorted((tmp_path / "kdumptool").rglob("*.py"))
    assert format_isinstance(paths, classes) == {"kdumptool/summary.py:KdumpReader"}


def test_modules_and_functions_are_small() -> None:
    found = oversized(SIZE_FILES)
    assert found - OVER_SIZE == set(), (f"over {MAX_MODULE_LINES} lines per module or "
                                        f"{MAX_FUNCTION_LINES} per function")
    assert OVER_SIZE - found == set(), "now small enough: remove from OVER_SIZE"


def test_the_command_line_stays_thin() -> None:
    """``cli.py`` holds no policy: at most :data:`MAX_CLI_LINES` lines, no dump opened by hand
    (the library opens inputs, so errors name them without a global of opened files)."""
    source = (PACKAGE / "cli.py").read_text()
    assert len(source.splitlines()) <= MAX_CLI_LINES
    for name in ("open_dumps", "open_dump(", "_OPENED_INPUTS", "write_kdump", "write_elf", "scan_vmcoreinfo"):
        assert name not in source, name


def test_public_names_have_docstrings() -> None:
    found = undocumented(SIZE_FILES)
    assert found - UNDOCUMENTED == set(), "public names without a docstring"
    assert UNDOCUMENTED - found == set(), "documented now: remove from UNDOCUMENTED"


@pytest.mark.parametrize("text, expected", [
    ("def f():\n    pass\n", {"m.py:f"}),
    ('def f():\n    """Doc."""\n', set()),
    ("def _f():\n    pass\n", set()),
    ('class C:\n    """Doc."""\n\n    def m(self):\n        pass\n\n    def _p(self):\n        pass\n',
     {"m.py:C.m"}),
    ("class _C:\n    def m(self):\n        pass\n", set()),
])
def test_the_docstring_check(tmp_path: Path, text: str, expected: set[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "m.py").write_text(text)
    assert undocumented([tmp_path / "m.py"]) == expected


def test_the_size_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    body = "".join(f"    x = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"def long():\n{body}\n\ndef short():\n    pass\n")
    assert oversized([tmp_path / "m.py"]) == {"m.py:long"}


def test_readme_layout_names_every_package_and_module() -> None:
    text = (REPO / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    layout = layout[:layout.index("```", layout.index("```") + 3)]
    missing = [p.name + "/" for p in sorted(PACKAGE.iterdir()) if (p / "__init__.py").is_file()
               and p.name + "/" not in layout]
    missing += [p.name for p in sorted(PACKAGE.glob("*.py")) if p.name not in layout]
    missing += [f"formats/{p.name}" for p in sorted((PACKAGE / "formats").glob("*.py"))
                if p.name != "__init__.py" and p.name not in layout]
    assert not missing, f"README's Layout section does not name: {missing}"
