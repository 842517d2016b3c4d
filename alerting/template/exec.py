"""The executor: walks the syntax tree against data and variables, Go's truthiness, variable scopes,
field lookups and function calls, within the expansion's budgets (deadline, output, iterations, steps)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from alerting.template.errors import TemplateError
from alerting.template.format import to_text
from alerting.template.limits import ACTIVE, DEFAULT_LIMITS, TemplateLimits
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


def truth(v: Any) -> bool:
    """Go's truth of a value: false, 0, nil and empty strings, lists and maps are false."""
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v != 0
    if isinstance(v, str | list | tuple | dict):
        return len(v) > 0
    return True



class _Exec:
    """One expansion: its output, its budgets' counters and deadline."""

    def __init__(self, name: str, funcs: dict[str, Callable[..., Any]], limits: TemplateLimits) -> None:
        self.name = name
        self.funcs = funcs
        self.out: list[str] = []
        self.size = 0
        self.limits = limits
        self.steps = 0
        self.iterations = 0
        self.deadline = time.monotonic() + limits.timeout_s

    def err(self, line: int, msg: str) -> TemplateError:
        return TemplateError(self.name, line, msg)

    def tick(self, line: int) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise self.err(line, f"template over its budget of {self.limits.max_steps} steps")
        if not self.steps & 0xFF and time.monotonic() > self.deadline:
            raise self.err(line, f"template expansion over its time budget of {self.limits.timeout_s:g}s")

    def iterate(self, count: int, line: int) -> None:
        self.iterations += count
        if self.iterations > self.limits.max_iterations:
            raise self.err(line, f"range over the budget of {self.limits.max_iterations} loop iterations")

    def emit(self, s: str, line: int) -> None:
        self.size += len(s)
        if self.size > self.limits.max_output:
            raise self.err(line, f"template output over its budget of {self.limits.max_output} characters")
        self.out.append(s)

    def walk(self, node: Node, dot: Any, vars_: list[dict[str, Any]]) -> None:
        self.tick(node.line)
        if isinstance(node, TextNode):
            self.emit(node.text, node.line)
        elif isinstance(node, ListNode):
            for n in node.nodes:
                self.walk(n, dot, vars_)
        elif isinstance(node, ActionNode):
            v = self.pipeline(node.pipe, dot, vars_)
            if not node.pipe.decl:
                self.emit(to_text(v), node.line)
        elif isinstance(node, BranchNode):
            self.branch(node, dot, vars_)

    def branch(self, node: BranchNode, dot: Any, vars_: list[dict[str, Any]]) -> None:
        scope: dict[str, Any] = {}
        vars_.append(scope)
        try:
            if node.kind == "range":
                self.range_(node, dot, vars_)
                return
            decl = node.pipe.decl
            node.pipe.decl = []  # evaluate value, then bind ourselves
            try:
                v = self.pipeline(node.pipe, dot, vars_)
            finally:
                node.pipe.decl = decl
            if decl:
                scope[decl[0]] = v
            if truth(v):
                self.walk(node.body, v if node.kind == "with" else dot, vars_)
            elif node.else_body is not None:
                self.walk(node.else_body, dot, vars_)
        finally:
            vars_.pop()

    def range_(self, node: BranchNode, dot: Any, vars_: list[dict[str, Any]]) -> None:
        decl = node.pipe.decl
        node.pipe.decl = []
        try:
            v = self.pipeline(node.pipe, dot, vars_)
        finally:
            node.pipe.decl = decl
        items: Iterable[tuple[Any, Any]]
        if isinstance(v, dict):
            count, items = len(v), ((k, v[k]) for k in sorted(v))
        elif isinstance(v, list | tuple):
            count, items = len(v), enumerate(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            count, items = max(v, 0), ((i, i) for i in range(v))
        elif v is None:
            count, items = 0, ()
        else:
            raise self.err(node.line, f"range can't iterate over {to_text(v)}")
        if not count:
            if node.else_body is not None:
                self.walk(node.else_body, dot, vars_)
            return
        self.iterate(count, node.line)  # the whole loop is counted before it starts
        for k, item in items:
            if len(decl) == 1:
                vars_[-1][decl[0]] = item
            elif len(decl) == 2:
                vars_[-1][decl[0]] = k
                vars_[-1][decl[1]] = item
            self.walk(node.body, item, vars_)

    def lookup(self, name: str, vars_: list[dict[str, Any]], line: int) -> Any:
        for scope in reversed(vars_):
            if name in scope:
                return scope[name]
        raise self.err(line, f'undefined variable "{name}"')

    def setvar(self, name: str, value: Any, vars_: list[dict[str, Any]]) -> None:
        for scope in reversed(vars_):
            if name in scope:
                scope[name] = value
                return
        vars_[-1][name] = value

    def pipeline(self, pipe: Pipeline, dot: Any, vars_: list[dict[str, Any]]) -> Any:
        value: Any = None
        has_value = False
        for cmd in pipe.cmds:
            value = self.command(cmd, dot, vars_, value, has_value)
            has_value = True
        for nm in pipe.decl:
            if pipe.is_assign:
                self.setvar(nm, value, vars_)
            else:
                vars_[-1][nm] = value
        return value

    def command(self, cmd: Command, dot: Any, vars_: list[dict[str, Any]], prev: Any, has_prev: bool) -> Any:
        first = cmd.args[0]
        self.tick(cmd.line)
        if first.kind == "ident":
            fn = self.funcs[first.value]
            args = [self.operand(a, dot, vars_) for a in cmd.args[1:]]
            if has_prev:
                args.append(prev)
            try:
                result = fn(*args)
            except TemplateError:
                raise
            except (TypeError, ValueError, KeyError, IndexError, OverflowError, re.error) as exc:
                raise self.err(cmd.line, f"error calling {first.value}: {exc}") from None
            if isinstance(result, str) and len(result) > self.limits.max_output:
                raise self.err(cmd.line, f"error calling {first.value}: result over the output budget of "
                                         f"{self.limits.max_output} characters")
            return result
        if len(cmd.args) > 1 or has_prev:
            raise self.err(cmd.line, f"can't give argument to non-function {self._name(first)}")
        return self.operand(first, dot, vars_)

    @staticmethod
    def _name(op: Operand) -> str:
        if op.kind == "var":
            return str(op.value) + "".join("." + f for f in op.fields)  # a variable's value is its name
        return "." + ".".join(op.fields)

    def operand(self, op: Operand, dot: Any, vars_: list[dict[str, Any]]) -> Any:
        if op.kind == "literal":
            base = op.value
        elif op.kind == "var":
            base = self.lookup(op.value, vars_, op.line)
        elif op.kind == "dot":
            base = dot
        elif op.kind == "pipe":
            base = self.pipeline(op.value, dot, vars_)
        else:  # a bare function name used as an argument: call with no args
            try:
                return self.funcs[op.value]()
            except (TypeError, ValueError, KeyError, IndexError, OverflowError, re.error) as exc:  # as in command()
                raise self.err(op.line, f"error calling {op.value}: {exc}") from None
        for f in op.fields:
            base = self.field(base, f, op.line)
        return base

    def field(self, base: Any, name: str, line: int) -> Any:
        if isinstance(base, dict):
            if name in base:
                return base[name]
            return ""  # missingkey=zero, as Prometheus expands alert templates
        if base is None:
            raise self.err(line, f"nil pointer evaluating .{name}")
        raise self.err(line, f"can't evaluate field {name} in type {type(base).__name__}")


@dataclass
class Template:
    """A parsed template; ``expand`` runs it against data and variables."""

    name: str
    text: str
    root: ListNode
    predefined: tuple[str, ...]
    funcs: dict[str, Callable[..., Any]]

    def expand(self, data: Any = None, variables: dict[str, Any] | None = None,
               limits: TemplateLimits = DEFAULT_LIMITS) -> str:
        """Run the template; TemplateError when it fails or goes over one of ``limits``."""
        ex = _Exec(self.name, self.funcs, limits)
        scope = {"$": data}
        scope.update(variables or {})
        token = ACTIVE.set((limits, ex.deadline))
        try:
            ex.walk(self.root, data, [scope])
        except RecursionError:
            raise TemplateError(self.name, 0, "template nested too deeply") from None
        finally:
            ACTIVE.reset(token)
        return "".join(ex.out)

