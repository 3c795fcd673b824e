"""Loaded modules of the dumped kernel, their symbols, and the taint flags.

Modules (SPEC.md, "Modules"): the ring ``modules`` links ``struct module.list``; each has
``name`` (char array), its memory as ``mem[MOD_TEXT..]`` (Linux 6.4+: ``struct
module_memory {base, size}``) or ``core_layout`` (before), its own taint bits ``taints``,
and its symbols in ``kallsyms`` (``struct mod_kallsyms``: ``symtab`` of ``Elf64_Sym``,
``num_symtab``, ``strtab``, ``typetab`` with each symbol's ``nm`` letter, Linux 5.x+).

Taint (``kernel/panic.c``): ``tainted_mask`` holds one bit per flag; the kernel's own
table ``taint_flags`` (``struct taint_flag {c_true, c_false, module, ...}``) gives each
bit's letter, read from the dump with its BTF layout so new flags need no code here.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import asdict, dataclass

from kdumptool.errors import KdumpToolError, KernelDataError
from kdumptool.kernel.kallsyms import Symbol
from kdumptool.kernel.structs import Fields, walk_list

MAX_MODULES = 8192
#: A module's symbol table larger than this is taken as corrupt.
MAX_MODULE_SYMS = 1 << 20
#: Letters of the taint bits (``Documentation/admin-guide/tainted-kernels.rst``), used only
#: when the kernel's own ``taint_flags`` table cannot be read.
FALLBACK_TAINT_LETTERS = "PFSRMBUDAWCIOELKXTNJ"
_ELF64_SYM = struct.Struct("<IBBHQQ")


@dataclass(frozen=True)
class Module:
    """One loaded module: ``name``, ``base`` and ``size`` of its core text (``size`` the sum
    of its core memory regions, as ``lsmod`` shows), ``taint`` letters, ``address`` of its
    ``struct module``."""

    name: str
    base: int
    size: int
    taint: str
    address: int

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, addresses in hex."""
        d = asdict(self)
        d["base"], d["address"] = f"{self.base:#x}", f"{self.address:#x}"
        return d


def _module_fields(kernel: object) -> Fields:
    return Fields(kernel.btf, "module", ("list", "name"))  # type: ignore[attr-defined]


def _addresses(kernel: object, f: Fields) -> list[int]:
    head = kernel.symbol("modules")  # type: ignore[attr-defined]
    link = f.offset("list")
    return [n - link for n in walk_list(kernel.mem, head, what="modules",  # type: ignore[attr-defined]
                                        limit=MAX_MODULES)]


def _memory(kernel: object, f: Fields, raw: bytes) -> tuple[int, int]:
    """``(base of the text, total core size)``."""
    btf = kernel.btf  # type: ignore[attr-defined]
    if f.has("mem"):
        mm = Fields(btf, "module_memory", ("base", "size"))
        kinds = dict(btf.find("mod_mem_type").enumerators)
        core = [kinds[k] for k in ("MOD_TEXT", "MOD_DATA", "MOD_RODATA", "MOD_RO_AFTER_INIT") if k in kinds]
        start = f.offset("mem")
        regions = [raw[start + i * mm.size:start + (i + 1) * mm.size] for i in core]
        return mm.int(regions[0], "base"), sum(mm.int(r, "size") for r in regions)
    return f.int(raw, "core_layout.base"), f.int(raw, "core_layout.size")


def taint_letters(kernel: object) -> tuple[list[tuple[str, str, bool]], str]:
    """The kernel's taint table as ``(c_true, c_false, module)`` per bit, and where it came
    from (``"taint_flags"`` in memory, or ``"fallback"``)."""
    try:
        btf = kernel.btf  # type: ignore[attr-defined]
        tf = Fields(btf, "taint_flag", ("c_true", "c_false", "module"))
        table = kernel.core_symbols  # type: ignore[attr-defined]
        start = kernel.symbol("taint_flags")  # type: ignore[attr-defined]
        found = table.symbolize(start)
        count = min(found[2] // tf.size, 64) if found is not None else 0
        raw = kernel.mem.read(start, count * tf.size, "taint_flags")  # type: ignore[attr-defined]
        rows = [raw[i * tf.size:(i + 1) * tf.size] for i in range(count)]
        flags = [(chr(tf.int(r, "c_true")), chr(tf.int(r, "c_false")), bool(tf.int(r, "module")))
                 for r in rows]
        # the symbol's extent may include alignment after the last flag: stop at a non-letter
        flags = list(itertools.takewhile(lambda f: f[0].isalpha(), flags))
        if len(flags) >= 16:
            return flags, "taint_flags"
    except KdumpToolError:
        pass
    return [(c, "G" if c == "P" else " ", c in "POEKTNJ") for c in FALLBACK_TAINT_LETTERS], "fallback"


def taint_string(mask: int, flags: list[tuple[str, str, bool]], *, module: bool = False) -> str:
    """Letters of the set bits (``"POE"``); for a module only module flags, no padding."""
    out = []
    for bit, (c_true, _c_false, is_module) in enumerate(flags):
        if mask >> bit & 1 and (is_module or not module):
            out.append(c_true)
    return "".join(out)


def list_modules(kernel: object) -> list[Module]:
    """Every loaded module, in the kernel's list order (newest first, as ``lsmod``).

    :raises BtfLookupError: a member the walk needs is not in the BTF
    :raises KernelDataError: a corrupt list
    """
    f = _module_fields(kernel)
    flags, _ = taint_letters(kernel)
    out = []
    for addr in _addresses(kernel, f):
        raw = kernel.mem.read(addr, f.size, "struct module")  # type: ignore[attr-defined]
        base, size = _memory(kernel, f, raw)
        taints = f.int(raw, "taints") if f.has("taints") else 0
        out.append(Module(f.cstr(raw, "name"), base, size, taint_string(taints, flags, module=True),
                          addr))
    return out


def module_symbols(kernel: object) -> list[Symbol]:
    """The symbols of every module, as ``/proc/kallsyms`` lists them (``\\t[name]``)."""
    f = _module_fields(kernel)
    mk = Fields(kernel.btf, "mod_kallsyms", ("symtab", "num_symtab", "strtab"))  # type: ignore[attr-defined]
    mem = kernel.mem  # type: ignore[attr-defined]
    out: list[Symbol] = []
    for addr in _addresses(kernel, f):
        raw = mem.read(addr, f.size, "struct module")
        name = f.cstr(raw, "name")
        where = f.int(raw, "kallsyms")
        ks = mem.read(where, mk.size, "mod_kallsyms")
        count = mk.int(ks, "num_symtab")
        if not 0 <= count <= MAX_MODULE_SYMS:
            raise KernelDataError(f"{mem.path}: module {name}: mod_kallsyms at {where:#x}: "
                                  f"{count} symbols")
        exported = _exported(kernel, f, raw)
        out.extend(_one_module(mem, mk, ks, name, count, exported))
    return out


def _exported(kernel: object, f: Fields, raw: bytes) -> set[int]:
    """Addresses of the symbols in the module's ``syms`` table (``struct kernel_symbol``,
    place-relative ``value_offset`` or an absolute ``value``): ``/proc/kallsyms`` calls a
    module symbol exported only when it is there (``is_exported`` in Linux
    ``kernel/module/kallsyms.c``), so ``EXPORT_SYMBOL_GPL`` ones of 6.1 show in lower case."""
    mem = kernel.mem  # type: ignore[attr-defined]
    ks = Fields(kernel.btf, "kernel_symbol")  # type: ignore[attr-defined]
    relative = ks.has("value_offset")
    out: set[int] = set()
    for table, count in (("syms", "num_syms"),):  # not gpl_syms: see above
        if not (f.has(table) and f.has(count)):
            continue
        at, n = f.int(raw, table), f.int(raw, count)
        if not at or not 0 < n <= MAX_MODULE_SYMS:
            continue
        blob = mem.read(at, n * ks.size, f"module {table}")
        for i in range(n):
            row = blob[i * ks.size:(i + 1) * ks.size]
            if relative:
                out.add((at + i * ks.size + ks.offset("value_offset") + ks.int(row, "value_offset"))
                        % (1 << 64))
            else:
                out.add(ks.int(row, "value"))
    return out


def _one_module(mem: object, mk: Fields, ks: bytes, name: str, count: int,
                exported: set[int]) -> list[Symbol]:
    """One module's symbols; the type letter is upper case when exported, lower case
    otherwise, as ``/proc/kallsyms`` shows them (``kernel/kallsyms.c`` ``s_show``)."""
    symtab = mem.read(mk.int(ks, "symtab"), count * _ELF64_SYM.size, "module symtab")  # type: ignore[attr-defined]
    types = (mem.read(mk.int(ks, "typetab"), count, "module typetab")  # type: ignore[attr-defined]
             if mk.has("typetab") else b"?" * count)
    strtab_at = mk.int(ks, "strtab")
    entries = list(_ELF64_SYM.iter_unpack(symtab))
    longest = max((e[0] for e in entries), default=0) + 512
    try:
        strtab = mem.read(strtab_at, longest, "module strtab")  # type: ignore[attr-defined]
    except KdumpToolError:  # the last name may end near the end of a mapping
        strtab = None
    out = []
    for i, (st_name, _info, _other, _shndx, value, _size) in enumerate(entries):
        if st_name == 0:
            continue
        if strtab is not None:
            raw = strtab[st_name:st_name + 512].split(b"\0", 1)[0]
        else:
            raw = mem.cstr(strtab_at + st_name, 512, "module strtab")  # type: ignore[attr-defined]
        if raw:
            letter = chr(types[i])
            letter = letter.upper() if value in exported else letter.lower()
            out.append(Symbol(value, letter, raw.decode("latin-1"), name))
    return out
