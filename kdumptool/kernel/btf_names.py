"""C-like names of BTF types, for messages and dumps: ``struct task_struct *``, ``char [16]``.

The name is built as C declarators are read, from the outside in: a pointer adds ``*`` to the
declarator, an array appends ``[n]``, a function prototype appends its parameter list, and
a pointer to an array or a function is parenthesised (``int (*)(void *)``). Qualifiers are
written before the type they qualify, or after the ``*`` of a qualified pointer
(``char *const``). Chains longer than :data:`~kdumptool.kernel.btf.MAX_DEPTH` (only a
corrupt blob has them) end in ``...`` instead of failing, and so does a name that would
take more than :data:`MAX_PARTS` steps to write (a corrupt blob can make prototypes whose
parameters are prototypes, doubling at each level): a name is for a message.
"""

from __future__ import annotations

from kdumptool.kernel.btf_layout import MAX_DEPTH
from kdumptool.kernel.btf_types import BtfType, TypeTable

#: The most types one name visits.
MAX_PARTS = 4096

_TAGGED = {"struct": "struct", "union": "union", "enum": "enum", "enum64": "enum"}


def format_type(btf: TypeTable, t: BtfType) -> str:
    """The C-like name of ``t`` (an abstract declarator: no variable name)."""
    return _Namer(btf).declare(t, "", 0)


def _join(base: str, decl: str) -> str:
    return f"{base} {decl}" if decl else base


def _base_name(t: BtfType) -> str:
    if t.kind in _TAGGED:
        return f"{_TAGGED[t.kind]} {t.name or '{...}'}"
    if t.kind == "fwd":
        return f"{'union' if t.kind_flag else 'struct'} {t.name}"
    return t.name or f"<anonymous {t.kind}>"


class _Namer:
    """One name being written: the BTF and how many steps are left."""

    def __init__(self, btf: TypeTable) -> None:
        self.btf = btf
        self.left = MAX_PARTS

    def declare(self, t: BtfType, decl: str, depth: int) -> str:
        """``t`` declared with the declarator ``decl`` (``""`` for an abstract one)."""
        self.left -= 1
        if depth > MAX_DEPTH or self.left < 0:
            return _join("...", decl)
        btf = self.btf
        kind = t.kind
        if kind == "ptr":
            inner = btf.type(t.ref)
            star = "*" + decl
            wrapped = f"({star})" if inner.kind in ("array", "func_proto") else star
            return self.declare(inner, wrapped, depth + 1)
        if kind in ("const", "volatile", "restrict"):
            inner = btf.type(t.ref)
            if inner.kind == "ptr":
                return self.declare(inner, kind + (" " + decl if decl else ""), depth + 1)
            return f"{kind} {self.declare(inner, decl, depth + 1)}"
        if kind == "type_tag":
            return self.declare(btf.type(t.ref), decl, depth + 1)
        if kind == "array" and t.array is not None:
            return self.declare(btf.type(t.array.type), f"{decl}[{t.array.nelems}]", depth + 1)
        if kind == "func_proto":
            params = [("..." if not p.type else self.declare(btf.type(p.type), "", depth + 1))
                      for p in t.params]
            return self.declare(btf.type(t.ref), f"{decl}({', '.join(params) or 'void'})", depth + 1)
        if kind == "func":
            return self.declare(btf.type(t.ref), decl or t.name, depth + 1)
        if kind == "var":
            return self.declare(btf.type(t.ref), decl or t.name, depth + 1)
        if kind == "datasec":
            return _join(f"section {t.name}", decl)
        if kind == "decl_tag":
            return _join(f"decl_tag {t.name}", decl)
        return _join(_base_name(t), decl)
