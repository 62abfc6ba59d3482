"""A small, safe evaluator for `${...}` expressions in recipes.

Only numbers, strings, booleans, lists, the recipe's params, arithmetic
(+ - * / // %), comparisons, `a if cond else b`, indexing and a few pure functions
are allowed. Expressions are parsed with `ast` and walked node by node; nothing is ever
passed to `eval`, so a recipe cannot reach Python objects, attributes or imports.

`error('message')` rejects a param value on purpose, with the recipe author's words:
`"${(depth - 2) // 6 if (depth - 2) % 6 == 0 else error('depth must be 6n+2')}"`.

Recipes are untrusted, so every cost of an expression is bounded: its length and the depth
and size of its syntax tree, the magnitude of every number it computes (`MAX_MAGNITUDE`),
the size of every list or string (`MAX_LIST_LENGTH` values, `MAX_NESTING` levels). Past a
bound the evaluation stops with an `ExpressionError`, long before memory or time run out.
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


def _round(value, digits=None):
    """`round(x)` or `round(x, digits)`; `digits` is small, as Python would spend time and
    memory on `round(5, -10**15)`."""
    if digits is not None and (not isinstance(digits, int) or abs(digits) > 30):
        raise ValueError(f"round() takes at most 30 digits, got {digits!r}")
    return round(value) if digits is None else round(value, digits)


FUNCTIONS = {
    "min": min,
    "max": max,
    "int": int,
    "float": float,
    "round": _round,
    "len": len,
    "sum": sum,
    "floor": math.floor,
    "ceil": math.ceil,
    "error": _reject,
}
# `[x] * n` builds lists; bound them so a recipe cannot exhaust memory.
MAX_LIST_LENGTH = 10_000  # values in one list (nested lists counted in full) or characters of a string
MAX_NESTING = 32  # lists in lists
MAX_MAGNITUDE = 10**15  # of every number an expression computes (a layer count, a width...)
MAX_SOURCE = 1_000  # characters of one ${...}
MAX_TREE_DEPTH = 50  # of the parsed expression: ((((...)))) or 1+1+...+1
MAX_TREE_NODES = 300


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
    tree = _parse(source)
    return _Evaluator(names, tree).visit(tree.body)


def _parse(source: str) -> ast.Expression:
    """The syntax tree of an expression, refused when too long, deep or large to evaluate."""
    if len(source) > MAX_SOURCE:
        raise ExpressionError(f"an expression of {len(source):,} characters; at most {MAX_SOURCE:,}")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse ${{{source}}}: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError(f"cannot parse ${{{source[:60]}...}}: too deeply nested") from None
    nodes, stack = 0, [(tree.body, 1)]
    while stack:  # iteratively: the depth is what is being checked
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_TREE_DEPTH or nodes > MAX_TREE_NODES:
            raise ExpressionError(
                f"${{{source[:60]}...}} is too complex (at most {MAX_TREE_DEPTH} levels and "
                f"{MAX_TREE_NODES} parts); compute it in steps with params")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree


def check_size(value: Any) -> str | None:
    """None when `value` is within the bounds of a recipe value, else what is wrong."""
    count, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, int) and abs(item) > MAX_MAGNITUDE:
            return f"{_short(item)}, beyond the ±10**15 a recipe number may reach"
        if isinstance(item, float) and not (abs(item) <= MAX_MAGNITUDE):
            return f"{_short(item)}, beyond the ±10**15 a recipe number may reach"
        if isinstance(item, str) and len(item) > MAX_LIST_LENGTH:
            return f"a string of {len(item):,} characters; at most {MAX_LIST_LENGTH:,}"
        if isinstance(item, (list, tuple, dict)):
            if depth >= MAX_NESTING:
                return f"lists nested more than {MAX_NESTING} deep"
            count += len(item)
            if count > MAX_LIST_LENGTH:
                return f"more than {MAX_LIST_LENGTH:,} values in one list"
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return None


def _short(number) -> str:
    """A number for a message, never thousands of digits."""
    if isinstance(number, int) and abs(number) > 10**20:
        return f"a number of about 10**{int(number.bit_length() * math.log10(2))}"
    return f"{number:.6g}" if isinstance(number, float) else str(number)


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
        value = method(node)
        if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Call, ast.List, ast.Tuple, ast.Constant)):
            problem = check_size(value)
            if problem:
                raise ExpressionError(f"'{_text(node)}' gives {problem}")
        return value

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
            if isinstance(count, bool) or not isinstance(count, int) or (
                    (len(items) or 1) * max(count, 0) > MAX_LIST_LENGTH):
                raise ExpressionError(f"list repetition by {count!r} is not allowed "
                                      f"(a list has at most {MAX_LIST_LENGTH:,} values)")
        elif isinstance(node.op, ast.Add) and isinstance(left, list) and isinstance(right, list):
            pass
        elif isinstance(left, str) and isinstance(right, str) and isinstance(node.op, ast.Add):
            pass
        else:
            _number(left, ast.unparse(node)), _number(right, ast.unparse(node))
        try:
            return op(left, right)
        except ZeroDivisionError:
            raise ExpressionError(f"division by zero in '{_text(node)}'") from None
        except OverflowError:
            raise ExpressionError(f"'{_text(node)}' gives a number beyond the ±10**15 a recipe "
                                  "number may reach") from None

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
        except (TypeError, ValueError, OverflowError) as exc:
            raise ExpressionError(f"'{_text(node)}' failed: {exc}") from None

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


def _text(node) -> str:
    """The source of a node for a message (cut: a list in it may be long)."""
    text = ast.unparse(node)
    return text if len(text) <= 200 else text[:200] + "..."


def _number(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExpressionError(f"'{where}' needs numbers, got {value!r}")
    return value
