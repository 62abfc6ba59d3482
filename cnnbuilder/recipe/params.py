"""A recipe's `params:`: declared defaults, overrides (keyword, `--set`) and `${...}` between
params, resolved in dependency order with cycles and wrong types reported."""

from __future__ import annotations

from cnnbuilder.recipe.document import Document
from cnnbuilder.recipe.expressions import has_expression, names_used
from cnnbuilder.recipe.fields import substitute_all
from cnnbuilder.recipe.vocabulary import did_you_mean

# Names every expression may use besides the recipe's own params.
BUILD_NAMES = ("classes", "classifier_activation")
# build() keyword arguments: a param with one of these names could never be overridden.
RESERVED_NAMES = BUILD_NAMES + ("include_top", "weights", "input_tensor", "input_shape",
                                "pooling", "name", "features_only", "recipe")


def resolve_params(document: Document, overrides: dict, build_values: dict) -> dict:
    """Recipe params with `overrides` applied and every `${...}` evaluated."""
    declared = document.data.get("params") or {}
    if not isinstance(declared, dict):
        raise document.error(("params",), f"expected a mapping of name: default, got {declared!r}.")
    for name in overrides:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise document.error(
                ("params",),
                f"unknown param {name!r} (this recipe's params: {known})."
                + did_you_mean(name, declared),
            )
    for name in declared:
        if not isinstance(name, str) or not name.isidentifier() or name in RESERVED_NAMES:
            raise document.error(
                ("params", name),
                f"{name!r} cannot be a param name (params are identifiers other than the "
                f"build() arguments {', '.join(RESERVED_NAMES)}).",
            )
    raw = dict(declared)
    for name, value in overrides.items():
        _check_override(document, name, declared[name], value)
        raw[name] = value
    values = dict(build_values)
    resolving: list[str] = []

    def get(name):
        if name in values:
            return values[name]
        if name in resolving:
            cycle = " -> ".join(resolving[resolving.index(name):] + [name])
            raise document.error(("params", name), f"params refer to each other in a cycle: {cycle}.")
        resolving.append(name)
        value = raw[name]
        if name not in overrides or has_expression(value):
            for used in _names_in(value):
                if used in raw:
                    get(used)
            value = substitute_all(document, ("params", name), value, values)
        resolving.pop()
        values[name] = value
        return value

    for name in raw:
        get(name)
    return {name: values[name] for name in raw}


def _names_in(value) -> set[str]:
    if isinstance(value, str):
        return names_used(value)
    if isinstance(value, list):
        return set().union(*(_names_in(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(_names_in(v) for v in value.values())) if value else set()
    return set()


def _check_override(document, name, default, value):
    """An override keeps the type of the declared default (ints may stand for floats)."""
    if has_expression(default):
        return
    expected = type(default)
    ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if isinstance(default, list) and isinstance(value, (list, tuple)):
        ok = True
    if not ok:
        raise document.error(
            ("params", name),
            f"param {name!r} expects {type_name(default)} (default {default!r}), "
            f"got {value!r}.",
        )


def type_name(value) -> str:
    """'an integer', 'a list'... for messages."""
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)
