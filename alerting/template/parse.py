"""The parser: tokens to the syntax tree, with Go's scoping of variables and its errors (an undefined
variable or function is a parse error); ``parse_template`` lexes, parses and returns a Template."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alerting.template.errors import TemplateError
from alerting.template.exec import Template
from alerting.template.format import to_text
from alerting.template.functions import FUNCTIONS
from alerting.template.lex import Tok, lex
from alerting.template.nodes import (
    ActionNode,
    BranchNode,
    Command,
    ListNode,
    Node,
    Operand,
    Pipeline,
    TextNode,
)

# The variables an alert template may use without declaring them.
ALERT_VARIABLES = ("$labels", "$externalLabels", "$externalURL", "$value")


class Parser:
    """Recursive descent over the tokens; ``scopes`` holds the variables each block declares."""

    def __init__(self, toks: list[Tok], name: str, predefined: tuple[str, ...], funcs: dict[str, Any]) -> None:
        self.toks = toks
        self.i = 0
        self.name = name
        self.funcs = funcs
        self.scopes: list[list[str]] = [["$", *predefined]]

    # token helpers (spaces are significant only between operands)
    def peek(self, skip_space: bool = True) -> Tok:
        j = self.i
        while skip_space and self.toks[j].kind == "space":
            j += 1
        return self.toks[j]

    def next(self, skip_space: bool = True) -> Tok:
        while skip_space and self.toks[self.i].kind == "space":
            self.i += 1
        t = self.toks[self.i]
        self.i += 1
        return t

    def err(self, line: int, msg: str) -> TemplateError:
        return TemplateError(self.name, line, msg)

    def defined(self, var: str) -> bool:
        return any(var in s for s in self.scopes)

    def parse(self) -> ListNode:
        body, end = self.parse_list(top=True)
        return body

    def parse_list(self, top: bool = False) -> tuple[ListNode, str]:
        nodes: list[Node] = []
        line = self.toks[self.i].line
        while True:
            t = self.next(skip_space=False)
            if t.kind == "eof":
                if not top:
                    raise self.err(t.line, "unexpected EOF")
                return ListNode(line, nodes), "eof"
            if t.kind == "text":
                nodes.append(TextNode(t.line, t.value))
                continue
            assert t.kind == "open"
            head = self.peek()
            if head.kind == "ident" and head.value in ("end", "else"):
                self.next()
                if top:
                    raise self.err(head.line, f"unexpected {{{{{head.value}}}}}")
                if head.value == "end":
                    self.expect_close()
                return ListNode(line, nodes), head.value
            if head.kind == "ident" and head.value in ("if", "range", "with"):
                self.next()
                nodes.append(self.parse_branch(head.value, head.line))
                continue
            if head.kind == "ident" and head.value in ("define", "template", "block"):
                raise self.err(head.line, f"{{{{{head.value}}}}} is not supported in alert templates")
            if head.kind == "ident" and head.value in ("break", "continue"):
                raise self.err(head.line, f"{{{{{head.value}}}}} is not supported")
            pipe = self.parse_pipeline(head.line)
            nodes.append(ActionNode(head.line, pipe))

    def expect_close(self) -> None:
        t = self.next()
        if t.kind != "close":
            raise self.err(t.line, f"unexpected {self._desc(t)} in command")

    @staticmethod
    def _desc(t: Tok) -> str:
        return {"eof": "EOF", "close": "right delimiter"}.get(t.kind, f"<{t.value if t.value is not None else t.kind}>")

    def parse_branch(self, kind: str, line: int) -> BranchNode:
        self.scopes.append([])
        pipe = self.parse_pipeline(line, allow_two=kind == "range")
        if not pipe.cmds:
            raise self.err(line, f"missing value for {kind}")
        body, end = self.parse_list()
        else_body = None
        if end == "else":
            self.scopes[-1] = self.scopes[-1][: len(pipe.decl)] if pipe.decl else []
            nxt = self.peek()
            if nxt.kind == "ident" and nxt.value in ("if", "with") and kind in ("if", "with"):
                # {{else if ...}}: a nested branch that shares our {{end}}
                self.next()
                nested = self.parse_branch(nxt.value, nxt.line)
                else_body = ListNode(nxt.line, [nested])
            else:
                self.expect_close()
                else_body, end2 = self.parse_list()
                if end2 != "end":
                    raise self.err(line, "expected end; found {{else}}")
        self.scopes.pop()
        return BranchNode(line, kind, pipe, body, else_body)

    def parse_pipeline(self, line: int, allow_two: bool = False) -> Pipeline:
        """The pipeline of an action or branch, through its ``}}``; declared variables enter the scope."""
        decl, is_assign = self.parse_decl(allow_two=allow_two, allow_assign=True)
        cmds = self.parse_commands(line)
        end = self.next()
        if end.kind != "close":
            raise self.err(end.line, f"unexpected {self._desc(end)} in operand")
        if not cmds:
            raise self.err(line, "missing value for command")
        if decl and not is_assign:
            self.scopes[-1].extend(decl)
        return Pipeline(line, decl, is_assign, cmds)

    def parse_decl(self, allow_two: bool, allow_assign: bool) -> tuple[list[str], bool]:
        """A leading ``$x :=`` (``$x =`` when ``allow_assign``, ``$k, $v :=`` when ``allow_two``): its
        names and whether it assigns; without one, nothing is consumed."""
        save = self.i
        t = self.peek()
        if t.kind != "var":
            return [], False
        self.next()
        names = [t.value]
        nt = self.peek()
        if allow_two and nt.kind == "comma":
            self.next()
            t2 = self.next()
            if t2.kind != "var":
                raise self.err(t2.line, "range can only initialize variables")
            names.append(t2.value)
            nt = self.peek()
        if nt.kind == "decl" or (allow_assign and nt.kind == "assign"):
            self.next()
            if nt.kind == "assign":
                for nm in names:
                    if not self.defined(nm):
                        raise self.err(nt.line, f'undefined variable "{nm}"')
            return names, nt.kind == "assign"
        self.i = save
        return [], False

    def parse_commands(self, line: int) -> list[Command]:
        """``cmd | cmd ...`` up to the token that ends the pipeline (left for the caller)."""
        cmds: list[Command] = []
        while (cmd := self.parse_command(line)) is not None:
            cmds.append(cmd)
            if self.peek().kind != "pipe":
                break
            self.next()
        return cmds

    def parse_command(self, line: int) -> Command | None:
        args: list[Operand] = []
        while True:
            t = self.peek()
            if t.kind in ("close", "pipe", "rparen", "eof"):
                break
            if args and self.toks[self.i].kind != "space":
                raise self.err(t.line, f"missing space before {self._desc(t)}")
            op = self.parse_operand()
            args.append(op)
        if not args:
            t = self.peek()
            if t.kind == "pipe":
                raise self.err(t.line, "missing command")
            return None
        first = args[0]
        if first.kind == "literal" and len(args) > 1:
            raise self.err(first.line, f"can't give argument to non-function {to_text(first.value)}")
        return Command(line, args)

    def parse_operand(self) -> Operand:
        t = self.next()
        if t.kind == "var":
            if not self.defined(t.value):
                raise self.err(t.line, f'undefined variable "{t.value}"')
            op = Operand(t.line, "var", t.value)
        elif t.kind == "field":
            op = Operand(t.line, "dot", None, [t.value])
        elif t.kind == "dot":
            op = Operand(t.line, "dot")
        elif t.kind in ("string", "number", "bool"):
            op = Operand(t.line, "literal", t.value)
        elif t.kind == "nil":
            op = Operand(t.line, "literal", None)
        elif t.kind == "ident":
            if t.value not in self.funcs:
                raise self.err(t.line, f'function "{t.value}" not defined')
            op = Operand(t.line, "ident", t.value)
        elif t.kind == "lparen":
            inner = self._parse_paren(t.line)
            op = Operand(t.line, "pipe", inner)
        else:
            raise self.err(t.line, f"unexpected {self._desc(t)} in operand")
        # field chain directly attached (no space)
        while self.toks[self.i].kind == "field":
            ft = self.toks[self.i]
            self.i += 1
            if op.kind in ("ident", "literal"):
                raise self.err(ft.line, f"unexpected . after term {op.value!r}")
            op.fields.append(ft.value)
        return op

    def _parse_paren(self, line: int) -> Pipeline:
        decl, _ = self.parse_decl(allow_two=False, allow_assign=False)
        cmds = self.parse_commands(line)
        end = self.next()
        if end.kind != "rparen":
            raise self.err(end.line, f"unclosed left paren (found {self._desc(end)})")
        if not cmds:
            raise self.err(line, "missing value for parenthesized pipeline")
        if decl:
            self.scopes[-1].extend(decl)
        return Pipeline(line, decl, False, cmds)


def parse_template(
    text: str,
    name: str = "template",
    predefined: tuple[str, ...] = ALERT_VARIABLES,
    funcs: dict[str, Callable[..., Any]] | None = None,
) -> Template:
    """Parse ``text``; raises TemplateError (with the line) for syntax errors and undefined names."""
    fn = dict(FUNCTIONS)
    if funcs:
        fn.update(funcs)
    toks = lex(text, name)
    try:
        root = Parser(toks, name, predefined, fn).parse()
    except RecursionError:
        raise TemplateError(name, 0, "template nested too deeply") from None
    return Template(name, text, root, predefined, fn)

