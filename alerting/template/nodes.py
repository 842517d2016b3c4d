"""The syntax tree of a parsed template: text, actions (pipelines of commands of operands) and
``if``/``range``/``with`` branches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    line: int


@dataclass
class TextNode(Node):
    text: str


@dataclass
class Operand(Node):
    kind: str  # var, field, dot, literal, ident, pipe
    value: Any = None
    fields: list[str] = field(default_factory=list)


@dataclass
class Command(Node):
    args: list[Operand]


@dataclass
class Pipeline(Node):
    decl: list[str]
    is_assign: bool
    cmds: list[Command]


@dataclass
class ActionNode(Node):
    pipe: Pipeline


@dataclass
class ListNode(Node):
    nodes: list[Node]


@dataclass
class BranchNode(Node):
    kind: str  # if, range, with
    pipe: Pipeline
    body: ListNode
    else_body: ListNode | None
