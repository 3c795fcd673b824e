"""A filter configuration given meaning: symbols from kallsyms, types from BTF, memory read.

Spec: SPEC.md §19.2 (how each ``erase`` and ``for`` resolves, after makedumpfile's
``resolve_config_entry``, ``get_config_symbol_addr``/``_size``, ``get_next_list_entry`` and
``update_filter_info``).

Two passes. :meth:`Resolver.check` follows every expression through the *types* only (a
symbol exists and has a type, each member exists, a size expression is an integer, a
``nullify`` target is a pointer, a loop's list is what its form needs) and refuses the
first problem with its line: nothing has been written then. :meth:`Resolver.targets` then
follows the same expressions through memory and returns the byte ranges to erase; what
cannot be followed there (a page not in the dump, a null pointer, a list that loops) is
skipped and reported in :attr:`Resolver.notes`, never a crash or a hang.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from kdumptool.errors import KdumpToolError, KernelDataError, ScrubConfigError
from kdumptool.kernel.btf import Btf
from kdumptool.kernel.session import Kernel
from kdumptool.kernel.structs import walk_list
from kdumptool.scrub.config import Config, Erase, Expr, Loop
from kdumptool.scrub.typed import (
    KNOWN_GLOBALS,
    CType,
    TypeMismatch,
    ctype,
    ctype_from_text,
    member,
    same_struct,
)

#: makedumpfile's limit for the string a ``char *`` points to (``BUFSIZE``).
MAX_STRING = 1024
#: Most iterations of one loop (arrays, ``via`` chains, ``list_head`` rings).
MAX_ITERATIONS = 1 << 20
#: A ``size EXPR`` read from memory larger than this is taken as corrupt and skipped.
MAX_SIZE_FROM_MEMORY = 16 << 20


@dataclass(frozen=True)
class EraseTarget:
    """One virtual range to erase.

    :ivar rule: the expression ERASEINFO names (``init_uts_ns.name.nodename``)
    :ivar command: the erase command's number: ERASEINFO writes one group of lines per command
    :ivar origin: where the rule comes from (``FILE:LINE``, ``profile hostname``)
    """

    vaddr: int
    size: int
    nullify: bool
    rule: str
    command: int
    origin: str


@dataclass(frozen=True)
class Loc:
    """An object of type ``type`` at ``addr`` (None in the type-only pass)."""

    addr: int | None
    type: CType


@dataclass
class _Scope:
    btf: Btf
    module: str
    var: str | None = None
    var_type: CType | None = None


class Resolver:
    """Resolves a :class:`~kdumptool.scrub.config.Config` against one dump's kernel.

    :param kernel: the dump's kernel (symbols, BTF, memory)
    :param command_base: number of the first erase command (profiles and configs share the
        ERASEINFO numbering)
    """

    def __init__(self, kernel: Kernel, *, command_base: int = 0) -> None:
        self.kernel = kernel
        self.command_base = command_base
        self.notes: list[str] = []
        self.path = "<config>"
        self._btfs: dict[str, Btf] = {}
        self._loaded: set[str] | None = None
        self._symbols: dict[tuple[str, str, str | None], Loc] = {}

    # ---- names ----------------------------------------------------------------------------

    def module_loaded(self, module: str) -> bool:
        """Whether the section's module is loaded (``vmlinux`` always is)."""
        if module == "vmlinux":
            return True
        if self._loaded is None:
            self._loaded = {m.name for m in self.kernel.modules()}
        return module in self._loaded

    def btf(self, module: str) -> Btf:
        """The BTF for a section: vmlinux's, or the module's (split on vmlinux's)."""
        if module not in self._btfs:
            if module == "vmlinux":
                self._btfs[module] = self.kernel.btf
            else:
                kbtf = self.kernel.read_btf(modules=[module])
                self._btfs[module] = kbtf.module(module).parse(self.kernel.btf)
        return self._btfs[module]

    def symbol(self, module: str, name: str) -> tuple[int, int | None]:
        """``(address, extent)`` of a symbol: the module's first, then vmlinux's (as
        makedumpfile's ``sym_in_module``); the extent runs to the next symbol.

        :raises TypeMismatch: no such symbol
        """
        table = self.kernel.symbols
        found = [s for s in table.lookup(name) if s.module == module] if module != "vmlinux" else []
        if not found:
            found = [s for s in table.lookup(name) if s.module is None]
        if not found:
            raise TypeMismatch(f"symbol {name!r} is not in the kernel's kallsyms"
                               + (f" (nor in module {module})" if module != "vmlinux" else ""))
        sym = found[0]
        if sym.type in "aA":
            raise TypeMismatch(f"symbol {name!r} is absolute (a per-CPU variable?): not supported")
        where = table.symbolize(sym.address)
        extent = where[2] if where is not None and where[1] == 0 else None
        return sym.address, extent

    def symbol_loc(self, scope: _Scope, expr: Expr, *, static: bool) -> Loc:
        """The symbol an expression starts from, with its type (annotation, BTF, or the
        built-in table), checked against the symbol's extent (each looked up once)."""
        key = (scope.module, expr.symbol, expr.type_hint)
        if key not in self._symbols:
            self._symbols[key] = self._symbol_loc(scope, expr)
        loc = self._symbols[key]
        return Loc(None, loc.type) if static else loc

    def _symbol_loc(self, scope: _Scope, expr: Expr) -> Loc:
        addr, extent = self.symbol(scope.module, expr.symbol)
        hint = expr.type_hint or (KNOWN_GLOBALS.get(expr.symbol) if scope.module == "vmlinux" else None)
        if hint is None:
            hint_t = self._btf_var_type(scope.btf, expr.symbol)
            if hint_t is None:
                raise TypeMismatch(f"the dump's BTF does not give the type of {expr.symbol!r}: name it "
                                   f"as {expr.symbol}:struct TYPE (or {expr.symbol}:TYPE)")
            t = hint_t
        else:
            t = ctype_from_text(scope.btf, hint, extent=extent)
        if extent is not None and t.size > extent:
            raise TypeMismatch(f"{t} is {t.size} bytes but symbol {expr.symbol!r} spans only "
                               f"{extent} bytes (type mismatch)")
        return Loc(addr, t)

    @staticmethod
    def _btf_var_type(btf: Btf, name: str) -> CType | None:
        for t in btf.find_all(name, "var"):
            secs = [s for s in btf.iter_types("datasec") if any(v.type == t.id for v in s.vars)]
            if any(s.name == ".data..percpu" for s in secs):
                raise TypeMismatch(f"{name!r} is a per-CPU variable: not supported")
            return ctype(btf, t.ref)
        return None

    # ---- expressions ----------------------------------------------------------------------

    def _pointer(self, addr: int, btf: Btf, what: str) -> int:
        mem = self.kernel.mem
        return mem.u64(addr, what) if btf.pointer_size == 8 else mem.u32(addr, what)

    def walk(self, scope: _Scope, start: Loc, members: tuple[str, ...],
             what: str) -> tuple[Loc, Loc | None] | None:
        """Follow ``members`` from ``start`` (pointers dereferenced, as makedumpfile's ``.``
        does). Returns ``(final, parent)`` (parent: the struct holding the last member), or
        None when a pointer on the way is null."""
        loc, parent = start, None
        for name in members:
            t = loc.type
            if t.kind == "ptr" and t.target is not None:
                if loc.addr is not None:
                    p = self._pointer(loc.addr, scope.btf, what)
                    if p == 0:
                        return None
                    loc = Loc(p, t.target)
                else:
                    loc = Loc(None, t.target)
            off, mt = member(scope.btf, loc.type, name)
            parent = loc
            loc = Loc(None if loc.addr is None else loc.addr + off, mt)
        return loc, parent

    def _start(self, scope: _Scope, expr: Expr, static: bool, loop_loc: Loc | None) -> Loc:
        if scope.var is not None and expr.symbol == scope.var:
            if expr.type_hint is not None:
                raise TypeMismatch(f"the loop variable {scope.var!r} cannot carry a type")
            assert scope.var_type is not None
            return loop_loc if loop_loc is not None else Loc(None, scope.var_type)
        return self.symbol_loc(scope, expr, static=static)

    def _check_target(self, cmd: Erase, final: CType) -> None:
        """The static rules for what an erase lands on."""
        if cmd.nullify:
            if final.kind != "ptr":
                raise TypeMismatch(f"'nullify' needs a pointer, {cmd.target.text} is {final}")
            return
        if cmd.size is not None or cmd.size_expr is not None:
            return
        if final.is_void_pointer:
            raise TypeMismatch(f"{cmd.target.text} is void *: give 'size' or 'nullify'")
        size_of = final.target if final.kind == "ptr" and final.target is not None else final
        if not final.is_char_pointer and (size_of.kind in ("void", "fwd", "func") or size_of.size <= 0):
            raise TypeMismatch(f"{cmd.target.text} is {final}: its size is not known (give 'size')")

    def _check_erase(self, scope: _Scope, cmd: Erase) -> None:
        found = self.walk(scope, self._start(scope, cmd.target, True, None), cmd.target.members, "")
        assert found is not None
        self._check_target(cmd, found[0].type)
        if cmd.size_expr is not None:
            sfound = self.walk(scope, self._start(scope, cmd.size_expr, True, None),
                               cmd.size_expr.members, "")
            assert sfound is not None
            st = sfound[0].type
            if not st.is_integer or st.size > 8:
                raise TypeMismatch(f"size expression {cmd.size_expr.text} is {st}, not an integer")

    # ---- loops ----------------------------------------------------------------------------

    def loop_type(self, scope: _Scope, loop: Loop) -> CType:
        """The type of the loop variable, checking the loop's form against its list's type."""
        found = self.walk(scope, self._start(scope, loop.source, True, None), loop.source.members, "")
        assert found is not None
        t = found[0].type
        if loop.within is not None:
            struct, link = loop.within
            target = ctype_from_text(scope.btf, f"struct {struct}")
            lt = member(scope.btf, target, link)[1]
            if lt.kind != "struct" or lt.name != "list_head":
                raise TypeMismatch(f"member {link!r} of struct {struct} is {lt}, not struct list_head")
            if not _is_list_head(t) and not (t.kind == "ptr" and t.target is not None
                                             and _is_list_head(t.target)):
                raise TypeMismatch(f"{loop.source.text} is {t}, not a struct list_head ('within' "
                                   "walks a list_head ring)")
            return target
        if loop.via is not None:
            st = t.target if t.kind == "ptr" and t.target is not None else t
            if st.kind not in ("struct", "union"):
                raise TypeMismatch(f"{loop.source.text} is {t}, not a struct or a pointer to one "
                                   "('via' follows a member)")
            nt = member(scope.btf, st, loop.via)[1]
            if nt.kind != "ptr" or nt.target is None or not same_struct(nt.target, st):
                raise TypeMismatch(f"member {loop.via!r} of {st} is {nt}, not a pointer to {st}")
            return st
        if t.kind != "array" or t.target is None:
            raise TypeMismatch(f"{loop.source.text} is {t}: a loop needs an array, 'via MEMBER' or "
                               "'within STRUCT:MEMBER'")
        e = t.target
        if e.kind == "ptr" and e.target is not None and e.target.kind in ("struct", "union"):
            return e.target  # an array of struct pointers: the variable is each struct
        return e

    def iterate(self, scope: _Scope, loop: Loop) -> Iterator[Loc]:
        """The loop variable's values (bounded; a cycle or a corrupt link ends the loop and is
        reported in :attr:`notes`)."""
        assert scope.var_type is not None
        found = self.walk(scope, self._start(scope, loop.source, False, None), loop.source.members,
                          f"line {loop.line} list")
        if found is None:
            return
        loc, parent = found
        if loop.within is not None:
            yield from self._iterate_within(scope, loop, loc, parent)
        elif loop.via is not None:
            yield from self._iterate_via(scope, loop, loc)
        else:
            yield from self._iterate_array(scope, loop, loc)

    def _iterate_within(self, scope: _Scope, loop: Loop, loc: Loc, parent: Loc | None) -> Iterator[Loc]:
        assert loop.within is not None and loc.addr is not None and scope.var_type is not None
        if _is_list_head(loc.type):
            head = loc.addr
        elif (loop.source.members and loop.source.members[-1] in ("next", "prev") and parent is not None
              and _is_list_head(parent.type) and parent.addr is not None):
            head = parent.addr  # "LIST.next within S:M", as makedumpfile.conf(5) writes it
        else:
            head = self._pointer(loc.addr, scope.btf, f"line {loop.line} list head pointer")
            if head == 0:
                return
        link = member(scope.btf, scope.var_type, loop.within[1])[0]
        try:
            for node in walk_list(self.kernel.mem, head, what=f"line {loop.line}: {loop.source.text}",
                                  limit=MAX_ITERATIONS):
                yield Loc(node - link, scope.var_type)
        except KernelDataError as exc:
            self.notes.append(f"{self.path}:{loop.line}: the list ends early: {exc}")

    def _iterate_via(self, scope: _Scope, loop: Loop, loc: Loc) -> Iterator[Loc]:
        assert loop.via is not None and loc.addr is not None and scope.var_type is not None
        cur = loc.addr
        if loc.type.kind == "ptr":
            cur = self._pointer(loc.addr, scope.btf, f"line {loop.line} pointer")
        link = member(scope.btf, scope.var_type, loop.via)[0]
        first, seen = cur, set()
        while cur:
            if cur in seen:
                self.notes.append(f"{self.path}:{loop.line}: the chain through {loop.via!r} loops back to "
                                  f"{cur:#x} after {len(seen)} entries: stopped there")
                return
            if len(seen) >= MAX_ITERATIONS:
                self.notes.append(f"{self.path}:{loop.line}: more than {MAX_ITERATIONS} entries: stopped")
                return
            seen.add(cur)
            yield Loc(cur, scope.var_type)
            cur = self._pointer(cur + link, scope.btf, f"line {loop.line} {loop.via}")
            if cur == first:  # a circular list, as makedumpfile ends it
                return

    def _iterate_array(self, scope: _Scope, loop: Loop, loc: Loc) -> Iterator[Loc]:
        t = loc.type
        assert t.target is not None and loc.addr is not None
        e = t.target
        if t.nelems > MAX_ITERATIONS:
            self.notes.append(f"{self.path}:{loop.line}: array of {t.nelems} elements: only the first "
                              f"{MAX_ITERATIONS}")
        for i in range(min(t.nelems, MAX_ITERATIONS)):
            at = loc.addr + i * e.size
            if e.kind != "ptr":
                yield Loc(at, e)
                continue
            p = self._pointer(at, scope.btf, f"line {loop.line} array element")
            if p == 0:  # makedumpfile skips null elements of a pointer array
                continue
            pointee = e.target is not None and e.target.kind in ("struct", "union")
            yield Loc(p, e.target) if pointee and e.target is not None else Loc(at, e)

    # ---- the two passes -------------------------------------------------------------------

    def _scope(self, module: str) -> _Scope | None:
        if not self.module_loaded(module):
            return None
        return _Scope(self.btf(module), module)

    def check(self, config: Config) -> None:
        """Check every command against the types; nothing is read but symbols and BTF.

        :raises ScrubConfigError: the first problem, as ``FILE:LINE: ...``
        """
        skipped: set[str] = set()
        for cmd in config.commands:
            line = cmd.line
            try:
                scope = self._scope(cmd.module)
                if scope is None:
                    if cmd.module not in skipped:
                        skipped.add(cmd.module)
                        self.notes.append(f"{config.path}:{line}: module {cmd.module} is not loaded: "
                                          "its section is skipped")
                    continue
                if isinstance(cmd, Loop):
                    scope.var, scope.var_type = cmd.var, self.loop_type(scope, cmd)
                    for body in cmd.body:
                        line = body.line
                        self._check_erase(scope, body)
                else:
                    self._check_erase(scope, cmd)
            except TypeMismatch as exc:
                raise ScrubConfigError(f"{config.path}:{line}: {exc}") from None
            except KdumpToolError as exc:
                raise ScrubConfigError(f"{config.path}:{line}: {exc}") from None

    def targets(self, config: Config) -> list[EraseTarget]:
        """The ranges the (checked) configuration erases, in makedumpfile's order."""
        self.path = config.path
        out: list[EraseTarget] = []
        for cmd in config.commands:
            scope = self._scope(cmd.module)
            if scope is None:
                continue
            if isinstance(cmd, Loop):
                scope.var, scope.var_type = cmd.var, self.loop_type(scope, cmd)
                try:
                    for value in self.iterate(scope, cmd):
                        for body in cmd.body:
                            out.extend(self._erase(scope, body, config.path, value))
                except KdumpToolError as exc:
                    self.notes.append(f"{config.path}:{cmd.line}: loop stopped: {exc}")
            else:
                out.extend(self._erase(scope, cmd, config.path, None))
        return out

    def _erase(self, scope: _Scope, cmd: Erase, path: str, value: Loc | None) -> list[EraseTarget]:
        where = f"{path}:{cmd.line}"
        try:
            found = self.walk(scope, self._start(scope, cmd.target, False, value), cmd.target.members,
                              f"{where} {cmd.target.text}")
            if found is None:
                return []  # a null pointer on the way: nothing there to erase
            loc = found[0]
            assert loc.addr is not None
            t = loc.type
            if cmd.nullify:
                return [self._target(loc.addr, t.size, True, cmd, where)]
            addr, size = loc.addr, t.size
            if t.kind == "ptr":
                addr = self._pointer(loc.addr, scope.btf, f"{where} {cmd.target.text}")
                if addr == 0:
                    return []
                assert t.target is not None
                size = t.target.size
                if t.is_char_pointer and cmd.size is None and cmd.size_expr is None:
                    size = len(self.kernel.mem.cstr(addr, MAX_STRING, f"{where} string"))
            if cmd.size is not None:
                size = cmd.size
            elif cmd.size_expr is not None:
                size = self._size_value(scope, cmd, value, where)
            if size <= 0:
                return []
            return [self._target(addr, size, False, cmd, where)]
        except KdumpToolError as exc:
            self.notes.append(f"{where}: {cmd.target.text} skipped: {exc}")
            return []

    def _size_value(self, scope: _Scope, cmd: Erase, value: Loc | None, where: str) -> int:
        assert cmd.size_expr is not None
        found = self.walk(scope, self._start(scope, cmd.size_expr, False, value), cmd.size_expr.members,
                          f"{where} size")
        if found is None:
            return 0
        loc = found[0]
        assert loc.addr is not None
        raw = self.kernel.mem.read(loc.addr, loc.type.size, f"{where} size {cmd.size_expr.text}")
        size = int.from_bytes(raw, "little" if self.kernel.mem.endian == "<" else "big")
        if size > MAX_SIZE_FROM_MEMORY:
            self.notes.append(f"{where}: size {cmd.size_expr.text} reads {size} bytes (over "
                              f"{MAX_SIZE_FROM_MEMORY}): skipped as corrupt")
            return 0
        return size

    def _target(self, addr: int, size: int, nullify: bool, cmd: Erase, where: str) -> EraseTarget:
        return EraseTarget(addr, size, nullify, cmd.target.text, self.command_base + cmd.index, where)


def _is_list_head(t: CType) -> bool:
    return t.kind == "struct" and t.name == "list_head"




def resolve_config(kernel: Kernel, config: Config, *,
                   command_base: int = 0) -> tuple[list[EraseTarget], list[str]]:
    """Check then resolve a configuration: ``(targets, notes)``.

    :raises ScrubConfigError: a symbol, member or type problem, with its line
    """
    resolver = Resolver(kernel, command_base=command_base)
    resolver.check(config)
    targets = resolver.targets(config)
    return targets, resolver.notes
