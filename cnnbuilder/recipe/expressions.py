"""A small, safe evaluator for `${...}` expressions in recipes.

Only numbers, strings, booleans, lists, the recipe's params, arithmetic
(+ - * / // %), comparisons, `a if cond else b`, indexing and a few pure functions
are allowed. Expressions are parsed with `ast` and walked node by node; nothing is ever
passed to `eval`, so a recipe cannot reach Python objects, attributes or imports.

`error('message')` rejects a param value on purpose, with the recipe author's words:
`"${(depth - 2) // 6 if (depth - 2) % 6 == 0 else error('depth must be 6n+2')}"`.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Mapping
from typing import Any

EXPRESSION = re.compile(r"\$\{([^{}]*)\}")

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


class ExpressionError(Exception):
    """An expression is malformed or refers to something it may not; the message says why."""


class RejectedValue(ExpressionError):
    """A recipe's own `error('...')` rejected the values it was given; the message is the
    recipe author's, followed by the values of the names the expression uses."""


def _reject(message):
    """`error(message)` in an expression: stop with the recipe author's message."""
    raise RejectedValue(str(message))


FUNCTIONS = {
    "min": min,
    "max": max,
    "int": int,
    "float": float,
    "round": round,
    "len": len,
    "sum": sum,
    "floor": math.floor,
    "ceil": math.ceil,
    "error": _reject,
}
# `[x] * n` builds lists; bound them so a recipe cannot exhaust memory.
MAX_LIST_LENGTH = 10_000


def has_expression(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def substitute(value: str, names: Mapping[str, Any]) -> Any:
    """Evaluate the `${...}` parts of a string.

    A string that is exactly one expression yields the expression's value with its type
    (`"${blocks[2]}"` -> 24); otherwise each expression is formatted into the string
    (`"conv${i}"` -> "conv3").
    """
    whole = EXPRESSION.fullmatch(value.strip())
    if whole:
        return evaluate(whole.group(1), names)
    if "${" in EXPRESSION.sub("", value):
        raise ExpressionError(f"unbalanced '${{' in {value!r}")
    return EXPRESSION.sub(lambda m: str(evaluate(m.group(1), names)), value)


def evaluate(source: str, names: Mapping[str, Any]) -> Any:
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse ${{{source}}}: {exc.msg}") from None
    return _Evaluator(names, tree).visit(tree.body)


def names_used(source: str) -> set[str]:
    """The bare names an expression string refers to (for dependency ordering)."""
    found = set()
    for match in EXPRESSION.finditer(source):
        try:
            tree = ast.parse(match.group(1).strip(), mode="eval")
        except SyntaxError:
            continue
        found |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return found - set(FUNCTIONS)


class _Evaluator:
    def __init__(self, names: Mapping[str, Any], tree: ast.AST | None = None):
        self.names = names
        self.tree = tree

    def visit(self, node: ast.AST) -> Any:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise ExpressionError(
                f"'{ast.unparse(node)}' is not allowed in a recipe expression "
                "(allowed: numbers, strings, lists, param names, + - * / // %, comparisons, "
                f"'a if c else b', indexing, {', '.join(sorted(FUNCTIONS))})"
            )
        return method(node)

    def visit_Constant(self, node):
        if isinstance(node.value, (int, float, str, bool)) or node.value is None:
            return node.value
        raise ExpressionError(f"constant {node.value!r} is not allowed")

    def visit_Name(self, node):
        if node.id in self.names:
            return self.names[node.id]
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        known = ", ".join(sorted(self.names)) or "none"
        raise ExpressionError(f"unknown name '{node.id}' (known params: {known})")

    def visit_List(self, node):
        return [self.visit(item) for item in node.elts]

    visit_Tuple = visit_List

    def visit_UnaryOp(self, node):
        value = self.visit(node.operand)
        if isinstance(node.op, ast.USub):
            return -_number(value, "-")
        if isinstance(node.op, ast.UAdd):
            return +_number(value, "+")
        if isinstance(node.op, ast.Not):
            return not value
        return self.visit_unsupported(node)

    def visit_BinOp(self, node):
        op = _BINARY.get(type(node.op))
        if op is None:
            return self.visit_unsupported(node)
        left, right = self.visit(node.left), self.visit(node.right)
        if isinstance(node.op, ast.Mult) and isinstance(left, list) != isinstance(right, list):
            count = right if isinstance(left, list) else left
            items = left if isinstance(left, list) else right
            if not isinstance(count, int) or len(items) * max(count, 0) > MAX_LIST_LENGTH:
                raise ExpressionError(f"list repetition by {count!r} is not allowed")
        elif isinstance(node.op, ast.Add) and isinstance(left, list) and isinstance(right, list):
            pass
        elif isinstance(left, str) and isinstance(right, str) and isinstance(node.op, ast.Add):
            pass
        else:
            _number(left, ast.unparse(node)), _number(right, ast.unparse(node))
        try:
            return op(left, right)
        except ZeroDivisionError:
            raise ExpressionError(f"division by zero in '{ast.unparse(node)}'") from None

    def visit_BoolOp(self, node):
        # Python's semantics, short-circuit included: `ok or error('...')` only fails when
        # `ok` is false.
        stop_when = not isinstance(node.op, ast.And)
        for value_node in node.values:
            value = self.visit(value_node)
            if bool(value) == stop_when:
                return value
        return value

    def visit_Compare(self, node):
        left = self.visit(node.left)
        for op_node, right_node in zip(node.ops, node.comparators):
            op = _COMPARE.get(type(op_node))
            if op is None:
                return self.visit_unsupported(node)
            right = self.visit(right_node)
            try:
                if not op(left, right):
                    return False
            except TypeError:
                raise ExpressionError(f"cannot compare in '{ast.unparse(node)}'") from None
            left = right
        return True

    def visit_IfExp(self, node):
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def visit_Subscript(self, node):
        container = self.visit(node.value)
        index = self.visit(node.slice)
        if not isinstance(container, (list, str)) or not isinstance(index, int):
            raise ExpressionError(f"'{ast.unparse(node)}' must index a list with an integer")
        try:
            return container[index]
        except IndexError:
            raise ExpressionError(
                f"index {index} is out of range in '{ast.unparse(node)}' "
                f"(the list has {len(container)} items)"
            ) from None

    def visit_Call(self, node):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            raise ExpressionError(
                f"call '{ast.unparse(node)}' is not allowed "
                f"(functions: {', '.join(sorted(FUNCTIONS))})"
            )
        args = [self.visit(a) for a in node.args]
        if node.func.id == "error":
            if len(args) != 1 or not isinstance(args[0], str):
                raise ExpressionError(f"'{ast.unparse(node)}': error() takes one message string")
            raise RejectedValue(args[0] + self._values_used())
        try:
            return FUNCTIONS[node.func.id](*args)
        except (TypeError, ValueError) as exc:
            raise ExpressionError(f"'{ast.unparse(node)}' failed: {exc}") from None

    def _values_used(self) -> str:
        """' (got depth=21)': the values behind a rejection, as the user set them."""
        if self.tree is None:
            return ""
        used = sorted({n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name)}
                      & set(self.names) - set(FUNCTIONS))
        if not used:
            return ""
        return " (got " + ", ".join(f"{n}={self.names[n]!r}" for n in used) + ")"

    def visit_unsupported(self, node):
        raise ExpressionError(f"'{ast.unparse(node)}' is not allowed in a recipe expression")


def _number(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExpressionError(f"'{where}' needs numbers, got {value!r}")
    return value
