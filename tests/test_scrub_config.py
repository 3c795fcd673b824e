"""The filter-configuration parser (makedumpfile.conf(5) syntax): every form, every syntax
error with its line, and hypothesis: any text parses or raises ScrubConfigError, and
generated configurations survive print -> parse unchanged."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from kdumptool.errors import ScrubConfigError, UsageError
from kdumptool.scrub.config import KEYWORDS, Erase, Expr, Loop, parse_config, parse_size, read_config

MAN_PAGE_EXAMPLE = """\
[mymodule]
erase array_var
erase mystruct1.buffer size 25
erase mystruct1.name
erase mystruct1.addr1 nullify
# Assuming addr2 points to 1024 bytes
erase mystruct1.addr2 size 1K
erase mystruct2.addr size mystruct2.addr_size
"""

LOOPS = """\
[mymodule]
for mys1 in mystruct1 via next
\terase mys1.private
\terase mys1.key size mys1.key_size
endfor
for mys1 in s1_list_head.next within s1:list
\terase mys1.private
endfor
for mys1 in myarray
\terase mys1.private nullify
endfor
"""


def test_man_page_erase_example() -> None:
    c = parse_config(MAN_PAGE_EXAMPLE, "m.conf")
    cmds = list(c.commands)
    assert all(isinstance(x, Erase) and x.module == "mymodule" for x in cmds)
    assert [x.target.text for x in cmds] == ["array_var", "mystruct1.buffer", "mystruct1.name",
                                             "mystruct1.addr1", "mystruct1.addr2", "mystruct2.addr"]
    assert cmds[1].size == 25 and cmds[4].size == 1024 and cmds[3].nullify
    assert cmds[5].size_expr == Expr("mystruct2", ("addr_size",))
    assert [x.line for x in cmds] == [2, 3, 4, 5, 7, 8]
    assert [x.index for x in cmds] == list(range(6))


def test_loops_of_every_form() -> None:
    c = parse_config(LOOPS)
    via, within, array = c.commands
    assert isinstance(via, Loop) and via.via == "next" and via.within is None and via.var == "mys1"
    assert [b.target.text for b in via.body] == ["mys1.private", "mys1.key"]
    assert via.body[1].size_expr == Expr("mys1", ("key_size",))
    assert isinstance(within, Loop) and within.within == ("s1", "list")
    assert within.source == Expr("s1_list_head", ("next",))
    assert isinstance(array, Loop) and array.via is None and array.within is None and array.body[0].nullify
    assert [e.index for e in c.erases()] == [0, 1, 2, 3]


def test_defaults_and_forms() -> None:
    c = parse_config("erase a\nfor x in h within s\n erase x.b\nendfor\n[vmlinux]\nerase c size 2m\n")
    assert c.commands[0].module == "vmlinux"  # the unnamed section
    loop = c.commands[1]
    assert isinstance(loop, Loop) and loop.within == ("s", "list")  # makedumpfile's default member
    assert c.commands[2].size == 2 << 20  # suffixes in either case
    # a command may continue on the next line (makedumpfile reads a token stream)
    c = parse_config("erase a\n  size\n 0x10\n")
    assert c.commands[0].size == 16


def test_type_annotations() -> None:
    c = parse_config("erase init_uts_ns:struct uts_namespace.name.nodename\n"
                     "erase prb:struct printk_ringbuffer*.text_data_ring\n"
                     "erase __log_buf:char[4096]\nerase x:u32 size 4\n")
    a, b, d, e = c.commands
    assert a.target == Expr("init_uts_ns", ("name", "nodename"), "struct uts_namespace")
    assert a.target.text == "init_uts_ns.name.nodename"  # ERASEINFO names it without the type
    assert b.target.type_hint == "struct printk_ringbuffer*"
    assert d.target == Expr("__log_buf", (), "char[4096]")
    assert e.target.type_hint == "u32" and e.size == 4


@pytest.mark.parametrize("text, line, words", [
    ("erase\n", 1, "expected a symbol"),
    ("erase a size\n", 1, "expected a size"),
    ("erase a size -3\n", 1, "invalid size"),
    ("erase a size 0\n", 1, "must be positive"),
    ("erase a size 12Q\n", 1, "invalid size"),
    ("erase a..b\n", 1, "invalid name"),
    ("erase 9a\n", 1, "invalid name"),
    ("erase a.size\n", 1, "keyword"),
    ("\n\nfrobnicate a\n", 3, "invalid token 'frobnicate'"),
    ("for x of y\n", 1, "expected 'in'"),
    ("for x in y\nerase x.a\n", 1, "no 'endfor'"),
    ("for x in y\nerase x.a\n[mod]\nendfor\n", 1, "no 'endfor'"),
    ("for x in y\n\nerase z.a\nendfor\n", 3, "must start with 'x'"),
    ("for x in y\nendfor\n", 1, "erases nothing"),
    ("for x in y within\nerase x\nendfor\n", 2, "expected STRUCT:MEMBER"),
    ("for x in y within s:\nerase x\nendfor\n", 1, "list_head member"),
    ("for x in y via\nendfor\n", 2, "expected a member name"),
    ("for x in y\n size 3\nendfor\n", 2, "invalid token 'size'"),
    ("[bad name]\n", 1, "invalid module section"),
    ("[vmlinux\n", 1, "invalid module section"),
    ("[vmlinux] erase a\n", 1, "text after the section"),
    ("erase a:struct\n", 1, "invalid type"),
    ("erase a:struct x y\n", 1, "invalid token 'y'"),
    ("erase a\0\n", 1, "NUL"),
])
def test_syntax_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ScrubConfigError) as err:
        parse_config(text, "f.conf")
    assert str(err.value).startswith(f"f.conf:{line}: "), str(err.value)
    assert words in str(err.value)
    assert isinstance(err.value, UsageError) and err.value.exit_code == 2


def test_sizes() -> None:
    assert parse_size("7") == 7 and parse_size("1k") == 1024 and parse_size("3M") == 3 << 20
    assert parse_size("0x20") == 32 and parse_size("sym.len") is None


def test_read_config_errors(tmp_path: object) -> None:
    from pathlib import Path

    d = Path(str(tmp_path))
    with pytest.raises(ScrubConfigError, match="cannot read"):
        read_config(str(d / "missing.conf"))
    bad = d / "bin.conf"
    bad.write_bytes(b"erase a\n\xff\xfe\n")
    with pytest.raises(ScrubConfigError, match=r"bin.conf:2: not UTF-8"):
        read_config(str(bad))


# ---- hypothesis ---------------------------------------------------------------------------

_names = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True).filter(lambda s: s not in KEYWORDS)
_vocab = st.sampled_from(sorted(KEYWORDS) + ["via", "a", "a.b", "x:struct", "t", "[m]", "[vmlinux]", "#",
                                             "1K", "0", "-1", "x.y.z", "s:list", ":", ".", "\t", "\n",
                                             "a:char[3]", "]", "[", "\0", "é"])


@given(st.lists(_vocab, max_size=40), st.lists(st.sampled_from([" ", "\n", "\t"]), max_size=40))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_token_soup_parses_or_fails_cleanly(words: list[str], seps: list[str]) -> None:
    text = "".join(w + (seps[i] if i < len(seps) else " ") for i, w in enumerate(words))
    try:
        config = parse_config(text, "fuzz.conf")
    except ScrubConfigError as exc:
        assert str(exc).startswith("fuzz.conf:")
        return
    for cmd in config.erases():
        assert cmd.line >= 1 and cmd.target.symbol not in KEYWORDS


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        parse_config(text, "t.conf")
    except ScrubConfigError as exc:
        assert str(exc).startswith("t.conf:")


_expr = st.builds(lambda s, m: Expr(s, tuple(m)), _names, st.lists(_names, max_size=3))
_erase = st.tuples(_expr, st.one_of(st.none(), st.integers(1, 1 << 30), _expr, st.just("nullify")))


def _erase_text(expr: Expr, arg: object) -> str:
    tail = "" if arg is None else " nullify" if arg == "nullify" else (
        f" size {arg}" if isinstance(arg, int) else f" size {arg.text}")  # type: ignore[attr-defined]
    return f"erase {expr.text}{tail}"


@given(st.lists(st.one_of(
    st.tuples(st.just("erase"), _erase),
    st.tuples(st.just("for"), st.tuples(_names, _expr, st.sampled_from(["", "via next", "within s:link"]),
                                        st.lists(st.tuples(st.lists(_names, max_size=2), _erase),
                                                 min_size=1, max_size=3)))), max_size=8),
    st.sampled_from(["", "[vmlinux]\n", "[mod_a]\n"]))
@settings(max_examples=200, deadline=None)
def test_generated_configs_round_trip(commands: list[tuple[str, object]], section: str) -> None:
    lines = [section.rstrip("\n")] if section else []
    expected: list[tuple[str, object]] = []
    for kind, body in commands:
        if kind == "erase":
            expr, arg = body  # type: ignore[misc]
            lines.append(_erase_text(expr, arg))
            expected.append(("erase", expr.text))
        else:
            var, src, form, erases = body  # type: ignore[misc]
            lines.append(f"for {var} in {src.text} {form}".rstrip())
            for members, (_, arg) in erases:
                lines.append("\t" + _erase_text(Expr(var, tuple(members)), arg))
            lines.append("endfor")
            expected.append(("for", (var, src.text, form, len(erases))))
    config = parse_config("\n".join(lines) + "\n", "gen.conf")
    got: list[tuple[str, object]] = []
    for cmd in config.commands:
        if isinstance(cmd, Loop):
            form = "via next" if cmd.via else "within s:link" if cmd.within else ""
            got.append(("for", (cmd.var, cmd.source.text, form, len(cmd.body))))
        else:
            got.append(("erase", cmd.target.text))
    assert got == expected
    module = section.strip("[]\n") or "vmlinux"
    assert all(c.module == module for c in config.commands)
    assert [e.index for e in config.erases()] == list(range(len(list(config.erases()))))
