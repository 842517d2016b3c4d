"""The lexer: template text to tokens (text between actions, and the words, literals and punctuation
inside ``{{ }}``), with Go's ``{{-``/``-}}`` trimming and comments; string and number literals."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from alerting.template.errors import TemplateError


@dataclass(slots=True)
class Tok:
    kind: str  # text, open, close, ident, var, field, string, number, char, pipe, lparen, rparen, decl, assign, comma, bool, nil, dot, space, eof
    value: Any
    line: int


_NUM_RE = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?)")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMMENT_END = re.compile(r"\s*-}}|}}")
_CHAR_RE = re.compile(r"'(\\.|[^\\'])'")
_SPACE = " \t\r\n"
# Punctuation inside an action, in the order it is tried.
_PUNCT = (("|", "pipe"), ("(", "lparen"), (")", "rparen"), (",", "comma"), (":=", "decl"), ("=", "assign"))
_WORDS: dict[str, tuple[str, Any]] = {"true": ("bool", True), "false": ("bool", False), "nil": ("nil", None)}


def lex(text: str, name: str) -> list[Tok]:
    """The tokens of ``text`` ending with ``eof``; TemplateError (named ``name``) for a lexical error."""
    return _Lexer(text, name).run()


class _Lexer:
    """Go's text/template lexer states: text, comment, action; ``line`` is the line at ``pos``."""

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self.n = len(text)
        self.pos = 0
        self.line = 1
        self.toks: list[Tok] = []

    def err(self, reason: str) -> TemplateError:
        return TemplateError(self.name, self.line, reason)

    def emit(self, kind: str, value: Any = None) -> None:
        self.toks.append(Tok(kind, value, self.line))

    def run(self) -> list[Tok]:
        text = self.text
        while self.pos < self.n:
            start = text.find("{{", self.pos)
            if start < 0:
                self.emit("text", text[self.pos :])
                break
            chunk = text[self.pos : start]
            trim_left = text.startswith(("{{- ", "{{-\t", "{{-\n"), start)
            if trim_left:
                chunk = chunk.rstrip(_SPACE)
            if chunk:
                self.emit("text", chunk)
            self.line += text.count("\n", self.pos, start)
            self.pos = start + (3 if trim_left else 2)
            if not self.comment(trim_left):
                self.action()
        self.emit("eof")
        return self.toks

    def skip_space(self) -> None:
        """After ``-}}``: the spaces that follow are trimmed."""
        while self.pos < self.n and self.text[self.pos] in _SPACE:
            if self.text[self.pos] == "\n":
                self.line += 1
            self.pos += 1

    def comment(self, trim_left: bool) -> bool:
        """A ``{{/* ... */}}`` at ``pos`` skipped (True), or nothing done (False: an action follows)."""
        text, pos = self.text, self.pos
        cstart = pos
        if trim_left:
            while cstart < self.n and text[cstart] in _SPACE:
                cstart += 1
        if not text.startswith("/*", cstart):
            return False
        cend = text.find("*/", cstart + 2)
        if cend < 0:
            raise self.err("unclosed comment")
        after = cend + 2
        m = _COMMENT_END.match(text, after)
        if not m:
            raise self.err("comment ends before closing delimiter")
        self.line += text.count("\n", pos, m.end())
        self.pos = m.end()
        if m.group(0).endswith("-}}"):
            self.skip_space()
        return True

    def action(self) -> None:
        """The tokens of one action, from after ``{{`` to its ``}}`` (``open`` ... ``close``)."""
        text = self.text
        self.emit("open")
        while True:
            if self.pos >= self.n:
                raise self.err("unclosed action")
            if text.startswith((" -}}", "\t-}}", "\n-}}"), self.pos):
                self.line += text[self.pos] == "\n"
                self.pos += 4
                self.emit("close")
                self.skip_space()
                return
            if text.startswith("}}", self.pos):
                self.pos += 2
                self.emit("close")
                return
            self.token()

    def token(self) -> None:
        """One token inside an action at ``pos`` (runs of spaces make one ``space`` token)."""
        text, pos = self.text, self.pos
        ch = text[pos]
        if ch in _SPACE:
            self.line += ch == "\n"
            self.pos += 1
            if self.toks[-1].kind != "space":
                self.emit("space")
            return
        for punct, kind in _PUNCT:
            if text.startswith(punct, pos):
                self.emit(kind)
                self.pos += len(punct)
                return
        if ch == '"':
            self.quoted()
        elif ch == "`":
            self.raw_quoted()
        elif ch == "'":
            self.char_constant()
        elif ch == "$":
            m = _IDENT_RE.match(text, pos + 1)
            self.emit("var", "$" + (m.group(0) if m else ""))
            self.pos = m.end() if m else pos + 1
        elif ch == ".":
            self.dot()
        elif ch.isdigit() or (ch in "+-" and pos + 1 < self.n and (text[pos + 1].isdigit() or text[pos + 1] == ".")):
            self.number()
        elif ch.isalpha() or ch == "_":
            self.word()
        else:
            raise self.err(f"unexpected {ch!r} in command")

    def quoted(self) -> None:
        text, n = self.text, self.n
        end = self.pos + 1
        while end < n and text[end] != '"':
            if text[end] == "\\":
                end += 1
            if end < n and text[end] == "\n":
                raise self.err("unterminated quoted string")
            end += 1
        if end >= n:
            raise self.err("unterminated quoted string")
        try:
            value = _unquote(text[self.pos : end + 1])
        except ValueError as exc:
            raise self.err(str(exc)) from None
        self.emit("string", value)
        self.pos = end + 1

    def raw_quoted(self) -> None:
        end = self.text.find("`", self.pos + 1)
        if end < 0:
            raise self.err("unterminated raw quoted string")
        self.emit("string", self.text[self.pos + 1 : end])
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end + 1

    def char_constant(self) -> None:
        m = _CHAR_RE.match(self.text, self.pos)
        if not m:
            raise self.err("bad character constant")
        self.emit("number", ord(_unquote('"' + m.group(1) + '"')))
        self.pos = m.end()

    def dot(self) -> None:
        """``.Field``, a number such as ``.5``, or ``.`` itself."""
        text, pos = self.text, self.pos
        m = _IDENT_RE.match(text, pos + 1)
        if m:
            self.emit("field", m.group(0))
            self.pos = m.end()
        elif pos + 1 < self.n and text[pos + 1].isdigit():
            self.number()
        else:
            self.emit("dot")
            self.pos += 1

    def number(self) -> None:
        m = _NUM_RE.match(self.text, self.pos)
        if not m:  # also a non-ASCII digit (str.isdigit is wider than the number syntax)
            raise self.err(f"bad number syntax near {self.text[self.pos:self.pos + 10]!r}")
        try:
            self.emit("number", _number(m.group(0)))
        except ValueError:
            raise self.err(f"bad number syntax: {m.group(0)!r}") from None
        self.pos = m.end()

    def word(self) -> None:
        """A keyword (``true``, ``false``, ``nil``) or an identifier (a function or keyword)."""
        m = _IDENT_RE.match(self.text, self.pos)
        if not m:  # a non-ASCII letter (str.isalpha is wider than the identifier syntax)
            raise self.err(f"unexpected {self.text[self.pos]!r} in command")
        kind, value = _WORDS.get(m.group(0), ("ident", m.group(0)))
        self.emit(kind, value)
        self.pos = m.end()


def _unquote(raw: str) -> str:
    body = raw[1:-1]
    out = []
    i = 0
    esc = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        i += 1
        if i >= len(body):
            raise ValueError("bad escape at end of string")
        c = body[i]
        if c in esc:
            out.append(esc[c])
            i += 1
        elif c == "x":
            out.append(chr(int(body[i + 1 : i + 3], 16)))
            i += 3
        elif c == "u":
            out.append(chr(int(body[i + 1 : i + 5], 16)))
            i += 5
        elif c == "U":
            out.append(chr(int(body[i + 1 : i + 9], 16)))
            i += 9
        elif c.isdigit():
            out.append(chr(int(body[i : i + 3], 8)))
            i += 3
        else:
            raise ValueError(f"unknown escape sequence: \\{c}")
    return "".join(out)


def _number(s: str) -> int | float:
    t = s.replace("_", "")
    low = t.lower().lstrip("+-")
    if low.startswith(("0x", "0b", "0o")):
        return int(t, 0)
    if any(c in t for c in ".eE"):
        return float(t)
    return int(t)

