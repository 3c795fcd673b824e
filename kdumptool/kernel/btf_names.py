"""C-like names of BTF types, for messages and dumps: ``struct task_struct *``, ``char [16]``.

The name is built as C declarators are read, from the outside in: a pointer adds ``*`` to the
declarator, an array appends ``[n]``, a function prototype appends its parameter list, and
a pointer to an array or a function is parenthesised (``int (*)(void *)``). Qualifiers are
written before the type they qualify, or after the ``*`` of a qualified pointer
(``char *const``). Chains longer than :data:`~kdumptool.kernel.btf.MAX_DEPTH` (only a
corrupt blob has them) end in ``...`` instead of failing: a name is for a message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kdumptool.kernel.btf import Btf, BtfType

_TAGGED = {"struct": "struct", "union": "union", "enum": "enum", "enum64": "enum"}


def format_type(btf: Btf, t: BtfType) -> str:
    """The C-like name of ``t`` (an abstract declarator: no variable name)."""
    return _declare(btf, t, "", 0)


def _join(base: str, decl: str) -> str:
    return f"{base} {decl}" if decl else base


def _base_name(t: BtfType) -> str:
    if t.kind in _TAGGED:
        return f"{_TAGGED[t.kind]} {t.name or '{...}'}"
    if t.kind == "fwd":
        return f"{'union' if t.kind_flag else 'struct'} {t.name}"
    return t.name or f"<anonymous {t.kind}>"


def _declare(btf: Btf, t: BtfType, decl: str, depth: int) -> str:
    from kdumptool.kernel.btf import MAX_DEPTH

    if depth > MAX_DEPTH:
        return _join("...", decl)
    kind = t.kind
    if kind == "ptr":
        inner = btf.type(t.ref)
        star = "*" + decl
        return _declare(btf, inner, f"({star})" if inner.kind in ("array", "func_proto") else star, depth + 1)
    if kind in ("const", "volatile", "restrict"):
        inner = btf.type(t.ref)
        if inner.kind == "ptr":
            return _declare(btf, inner, kind + (" " + decl if decl else ""), depth + 1)
        return f"{kind} {_declare(btf, inner, decl, depth + 1)}"
    if kind == "type_tag":
        return _declare(btf, btf.type(t.ref), decl, depth + 1)
    if kind == "array" and t.array is not None:
        return _declare(btf, btf.type(t.array.type), f"{decl}[{t.array.nelems}]", depth + 1)
    if kind == "func_proto":
        params = [("..." if not p.type else _declare(btf, btf.type(p.type), "", depth + 1))
                  for p in t.params]
        return _declare(btf, btf.type(t.ref), f"{decl}({', '.join(params) or 'void'})", depth + 1)
    if kind == "func":
        return _declare(btf, btf.type(t.ref), decl or t.name, depth + 1)
    if kind == "var":
        return _declare(btf, btf.type(t.ref), decl or t.name, depth + 1)
    if kind == "datasec":
        return _join(f"section {t.name}", decl)
    if kind == "decl_tag":
        return _join(f"decl_tag {t.name}", decl)
    return _join(_base_name(t), decl)
