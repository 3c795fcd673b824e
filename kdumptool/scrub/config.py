r"""makedumpfile's filter configuration (``makedumpfile.conf(5)``), parsed.

Spec: SPEC.md §19.2; upstream makedumpfile ``makedumpfile.conf.5.in`` and ``erase_info.c``
(``get_config_token``, ``read_erase_cmd_entry``, ``read_iteration_entry``,
``create_config_entry``).

The file is a stream of space-separated tokens; ``#`` starts a comment, tabs count as spaces,
and a command may continue on the next line. A line that starts with ``[`` opens a section
named by the text up to ``]`` (``vmlinux`` or a module); commands before any section belong to
``vmlinux``. The commands::

    erase EXPR [size N[K|M] | size EXPR | nullify]
    for ID in EXPR [via MEMBER | within STRUCT[:MEMBER]]
        erase ID[.member...] [size N | size ID.member | size EXPR | nullify]
        ...
    endfor

``EXPR`` is ``SYMBOL[.member...]``. kdumptool adds one form, for globals whose type the
dump's BTF does not give: ``SYMBOL:TYPE`` where ``TYPE`` is ``struct NAME``, ``union NAME``
or a type name, then optionally ``*``\ s and ``[N]`` (``init_uts_ns:struct
uts_namespace.name.nodename``). Keywords (``erase size nullify for in within endfor``)
cannot be names. This module only parses; :mod:`kdumptool.scrub.resolve` gives the names
meaning.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from kdumptool.errors import ScrubConfigError

KEYWORDS = frozenset({"erase", "size", "nullify", "for", "in", "within", "endfor"})
#: A config file larger than this is refused (a real one is a few hundred lines).
MAX_CONFIG_BYTES = 1 << 20
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME_RE = re.compile(_NAME)
_TYPE_RE = re.compile(rf"(?:(struct|union|enum) )?({_NAME})(\**)((?:\[\d+\])?)")
_SIZE_RE = re.compile(r"(0[xX][0-9a-fA-F]+|\d+)([kKmM]?)")


@dataclass(frozen=True)
class Expr:
    """``SYMBOL[:TYPE][.member...]``.

    :ivar symbol: the first name (a symbol, or a loop's variable)
    :ivar members: the member names after it
    :ivar type_hint: the ``:TYPE`` annotation, or None
    :ivar text: the expression as makedumpfile writes it in ERASEINFO (without the annotation)
    """

    symbol: str
    members: tuple[str, ...] = ()
    type_hint: str | None = None

    @property
    def text(self) -> str:
        """The expression as written: ``symbol.member.member``."""
        return ".".join((self.symbol, *self.members))


@dataclass(frozen=True)
class Erase:
    """One ``erase`` command.

    :ivar size: a byte count (``size 25``, ``size 1K``), or None
    :ivar size_expr: ``size EXPR``: the integer the expression reads, or None
    :ivar nullify: ``nullify``: write zeros over the pointer itself
    :ivar index: the command's number in the file (0, 1...): ERASEINFO groups by it
    """

    target: Expr
    line: int
    module: str = "vmlinux"
    size: int | None = None
    size_expr: Expr | None = None
    nullify: bool = False
    index: int = 0


@dataclass(frozen=True)
class Loop:
    """A ``for`` loop: over an array (``via``/``within`` None), a chain of structs linked by
    pointer member ``via``, or a ``list_head`` ring of ``within = (STRUCT, MEMBER)``."""

    var: str
    source: Expr
    line: int
    body: tuple[Erase, ...]
    module: str = "vmlinux"
    via: str | None = None
    within: tuple[str, str] | None = None


Command = Erase | Loop


@dataclass(frozen=True)
class Config:
    """A parsed filter configuration: its commands in file order."""

    path: str
    commands: tuple[Command, ...]

    def erases(self) -> Iterator[Erase]:
        """Every ``erase`` command, loops' bodies included, in file order."""
        for cmd in self.commands:
            if isinstance(cmd, Loop):
                yield from cmd.body
            else:
                yield cmd


@dataclass(frozen=True)
class _Token:
    text: str
    line: int
    module: str
    section_start: bool  # the first token of a section


def _tokens(text: str, path: str) -> list[_Token]:
    """The token stream, with each token's line and section."""
    out: list[_Token] = []
    module, fresh = "vmlinux", False
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.split("#", 1)[0].replace("\t", " ").replace("\r", " ")
        stripped = line.strip()
        if stripped.startswith("["):
            end = stripped.find("]")
            name = stripped[1:end] if end > 0 else ""
            if end < 0 or not _NAME_RE.fullmatch(name.replace("-", "_")):
                raise ScrubConfigError(f"{path}:{number}: invalid module section {stripped!r} "
                                       "(expected [vmlinux] or [MODULE])")
            if stripped[end + 1:].strip():
                raise ScrubConfigError(f"{path}:{number}: text after the section name: "
                                       f"{stripped[end + 1:].strip()!r}")
            module, fresh = name, True
            continue
        words = stripped.split()
        i = 0
        while i < len(words):
            word = words[i]
            # SYM:struct NAME...: the type's second word belongs to the token
            if i + 1 < len(words) and word.endswith((":struct", ":union", ":enum")):
                i += 1
                word += " " + words[i]
            out.append(_Token(word, number, module, fresh))
            fresh = False
            i += 1
    return out


def parse_expr(text: str, *, path: str = "<config>", line: int = 0) -> Expr:
    """Parse ``SYMBOL[:TYPE][.member...]``.

    :raises ScrubConfigError: not of that form
    """
    where = f"{path}:{line}"
    head, sep, annotated = text.partition(":")
    rest = ""
    hint = None
    if sep:
        m = _TYPE_RE.match(annotated)
        if m is None or not m.group(0) or m.group(2) in ("struct", "union", "enum"):
            raise ScrubConfigError(f"{where}: invalid type after ':' in {text!r} (expected "
                                   "'struct NAME', 'union NAME' or a type name)")
        hint = m.group(0)
        rest = annotated[m.end():]
        if rest and not rest.startswith("."):
            raise ScrubConfigError(f"{where}: invalid type after ':' in {text!r}")
        names = [head, *rest[1:].split(".")] if rest else [head]
    else:
        names = text.split(".")
    for name in names:
        if not _NAME_RE.fullmatch(name):
            raise ScrubConfigError(f"{where}: invalid name {name!r} in {text!r} (expected "
                                   "SYMBOL[.member...])")
        if name in KEYWORDS:
            raise ScrubConfigError(f"{where}: keyword {name!r} used as a name in {text!r}")
    return Expr(names[0], tuple(names[1:]), hint)


def parse_size(text: str, *, path: str = "<config>", line: int = 0) -> int | None:
    """A size value ``N``, ``0xN``, ``NK``, ``NM`` (K and M: powers of 1024, either case), or
    None when ``text`` is not a number (then it is a size expression).

    :raises ScrubConfigError: zero, or a number followed by other text
    """
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        if text[:1].isdigit() or text[:1] == "-":
            raise ScrubConfigError(f"{path}:{line}: invalid size {text!r} (expected a positive "
                                   "number of bytes, with K or M)")
        return None
    value = int(m.group(1), 0) << {"": 0, "k": 10, "m": 20}[m.group(2).lower()]
    if value <= 0:
        raise ScrubConfigError(f"{path}:{line}: size must be positive, got {text!r}")
    return value


class _Parser:
    def __init__(self, tokens: list[_Token], path: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.path = path
        self.index = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, what: str, line: int) -> _Token:
        tok = self.peek()
        if tok is None or tok.text in KEYWORDS or (tok.section_start and self.pos):
            got = "the end of the file" if tok is None else (
                "a new section" if tok.section_start else repr(tok.text))
            raise ScrubConfigError(f"{self.path}:{tok.line if tok else line}: expected {what}, "
                                   f"got {got}")
        self.pos += 1
        return tok

    def accept(self, keyword: str) -> _Token | None:
        tok = self.peek()
        if tok is not None and tok.text == keyword and not tok.section_start:
            self.pos += 1
            return tok
        return None

    def command(self) -> Command:
        tok = self.tokens[self.pos]
        self.pos += 1
        if tok.text == "erase":
            return self.erase(tok, None)
        if tok.text == "for":
            return self.loop(tok)
        raise ScrubConfigError(f"{self.path}:{tok.line}: invalid token {tok.text!r} (expected "
                               "'erase' or 'for')")

    def erase(self, start: _Token, var: str | None) -> Erase:
        tok = self.take("a symbol after 'erase'", start.line)
        target = parse_expr(tok.text, path=self.path, line=tok.line)
        if var is not None and target.symbol != var:
            raise ScrubConfigError(f"{self.path}:{tok.line}: 'erase {target.text}' inside the loop "
                                   f"over {var!r} must start with {var!r}")
        size = size_expr = None
        nullify = False
        if self.accept("nullify"):
            nullify = True
        elif self.accept("size"):
            stok = self.take("a size after 'size'", tok.line)
            size = parse_size(stok.text, path=self.path, line=stok.line)
            if size is None:
                size_expr = parse_expr(stok.text, path=self.path, line=stok.line)
        index = self.index
        self.index += 1
        return Erase(target, start.line, start.module, size, size_expr, nullify, index)

    def loop(self, start: _Token) -> Loop:
        vtok = self.take("a loop variable after 'for'", start.line)
        if not _NAME_RE.fullmatch(vtok.text):
            raise ScrubConfigError(f"{self.path}:{vtok.line}: invalid loop variable {vtok.text!r}")
        if not self.accept("in"):
            tok = self.peek()
            raise ScrubConfigError(f"{self.path}:{tok.line if tok else vtok.line}: expected 'in' "
                                   f"after 'for {vtok.text}'")
        stok = self.take("an array, struct or list_head after 'in'", vtok.line)
        source = parse_expr(stok.text, path=self.path, line=stok.line)
        via = within = None
        nxt = self.peek()
        if nxt is not None and nxt.text == "via" and not nxt.section_start:
            self.pos += 1
            mtok = self.take("a member name after 'via'", nxt.line)
            if not _NAME_RE.fullmatch(mtok.text):
                raise ScrubConfigError(f"{self.path}:{mtok.line}: invalid member {mtok.text!r} after 'via'")
            via = mtok.text
        elif self.accept("within"):
            wtok = self.take("STRUCT:MEMBER after 'within'", stok.line)
            struct, _, member = wtok.text.partition(":")
            if wtok.text.endswith(":"):
                raise ScrubConfigError(f"{self.path}:{wtok.line}: expected a list_head member after ':'")
            member = member or "list"  # makedumpfile's default
            for name in (struct, member):
                if not _NAME_RE.fullmatch(name):
                    raise ScrubConfigError(f"{self.path}:{wtok.line}: invalid STRUCT:MEMBER "
                                           f"{wtok.text!r} after 'within'")
            within = (struct, member)
        body: list[Erase] = []
        while True:
            tok = self.peek()
            if tok is None or tok.section_start:
                raise ScrubConfigError(f"{self.path}:{start.line}: no 'endfor' for this 'for'")
            self.pos += 1
            if tok.text == "endfor":
                break
            if tok.text != "erase":
                raise ScrubConfigError(f"{self.path}:{tok.line}: invalid token {tok.text!r} in a loop "
                                       "(expected 'erase' or 'endfor')")
            body.append(self.erase(tok, vtok.text))
        if not body:
            raise ScrubConfigError(f"{self.path}:{start.line}: the loop erases nothing")
        return Loop(vtok.text, source, start.line, tuple(body), start.module, via, within)


def parse_config(text: str, path: str = "<config>") -> Config:
    """Parse a filter configuration.

    :param path: names the file in errors (``FILE:LINE: ...``)
    :raises ScrubConfigError: a syntax error, with its line
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ScrubConfigError(f"{path}:1: the file is larger than {MAX_CONFIG_BYTES} bytes")
    if "\0" in text:
        raise ScrubConfigError(f"{path}:{text[:text.index(chr(0))].count(chr(10)) + 1}: NUL byte "
                               "in the file")
    parser = _Parser(_tokens(text, path), path)
    commands: list[Command] = []
    while parser.peek() is not None:
        commands.append(parser.command())
    return Config(path, tuple(commands))


def read_config(path: str) -> Config:
    """Read and parse the filter configuration file ``path``.

    :raises ScrubConfigError: it cannot be read, is not text, or does not parse
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ScrubConfigError(f"{path}: cannot read the filter configuration: "
                               f"{exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ScrubConfigError(f"{path}:{line}: not UTF-8 text") from None
    return parse_config(text, path)
