"""A recipe's `params:`: declared defaults, overrides (keyword, `--set`) and `${...}` between
params, resolved in dependency order with cycles and wrong types reported.

Each param's value is checked against its declaration (`cnnbuilder.recipe.declarations`)
as soon as it is known, before any block is resolved, and reported where the user wrote
the value: the file and line of the `params:` entry that set it, or the override
(`--set NAME=VALUE`, a keyword argument). The resolved params remember that place
(`ParamValues.origins`) and the plain params each derived one comes from
(`ParamValues.sources`), so a block field that goes wrong anyway is reported from there too.
"""

from __future__ import annotations

import contextlib
import contextvars

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.document import Document
from cnnbuilder.recipe.expressions import ExpressionError, evaluate, has_expression, names_used
from cnnbuilder.recipe.fields import ParamValues, substitute_all
from cnnbuilder.recipe.vocabulary import did_you_mean

# Names every expression may use besides the recipe's own params.
BUILD_NAMES = ("classes", "classifier_activation")
# build() keyword arguments: a param with one of these names could never be overridden.
RESERVED_NAMES = BUILD_NAMES + ("include_top", "weights", "input_tensor", "input_shape",
                                "pooling", "name", "features_only", "recipe", "backbone")


# Params that refer to params that refer to params...: deeper than this is refused (the
# resolver recurses once per level).
MAX_PARAM_DEPTH = 64
# How overrides are named in messages: "keyword argument growth_rate=0" for build(...)
# and Recipe.plan(...); the command line says "--set" (`overrides_from("--set")`).
_OVERRIDE_SOURCE = contextvars.ContextVar("override_source", default="keyword argument")


@contextlib.contextmanager
def overrides_from(label: str):
    """Within the block, messages name an override as `{label} NAME=VALUE` (the CLI:
    `with overrides_from("--set"): ...`)."""
    token = _OVERRIDE_SOURCE.set(label)
    try:
        yield
    finally:
        _OVERRIDE_SOURCE.reset(token)


# How build arguments are named in messages: `input_shape=(8, 8, 1)` for build(...); the
# command line says `--input-shape 8,8,1` (`arguments_from({"input_shape": "--input-shape"})`).
_ARGUMENT_FLAGS = contextvars.ContextVar("argument_flags", default={})


@contextlib.contextmanager
def arguments_from(flags: dict):
    """Within the block, messages name the build argument `name` by its flag `flags[name]`
    (``{"input_shape": "--input-shape", "classes": "--classes"}``) instead of the keyword."""
    token = _ARGUMENT_FLAGS.set(dict(flags))
    try:
        yield
    finally:
        _ARGUMENT_FLAGS.reset(token)


def argument_label(name: str, value) -> str:
    """'--input-shape 8,8,1' on the command line, 'input_shape=(8, 8, 1)' in Python."""
    flag = _ARGUMENT_FLAGS.get().get(name)
    if flag is None:
        return f"{name}={value!r}"
    text = ",".join("none" if d is None else str(d) for d in value) if isinstance(value, tuple) else value
    return f"{flag} {text}"


def argument_name(name: str) -> str:
    """'--input-shape' on the command line, 'input_shape' (the keyword) in Python."""
    return _ARGUMENT_FLAGS.get().get(name, name)


def override_label(name: str, value, source: str | None = None) -> str:
    """'--set growth_rate=0' or 'keyword argument growth_rate=0'."""
    return f"{source or _OVERRIDE_SOURCE.get()} {name}={value!r}"


def resolve_params(document: Document, overrides: dict, build_values: dict,
                   override_source: str | None = None) -> ParamValues:
    """Recipe params with `overrides` applied, checked and every `${...}` evaluated."""
    declared = document.data.get("params") or {}
    if not isinstance(declared, dict):
        raise document.error(("params",), f"expected a mapping of name: default, got {declared!r}.")
    for name in overrides:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise RecipeError(
                f"{override_label(name, overrides[name], override_source)}: unknown param "
                f"{name!r} ({document.where(('params',))}: this recipe's params: {known})."
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
    origins = {name: document.where(("params", name)) for name in raw}
    for name, value in overrides.items():
        origins[name] = override_label(name, value, override_source)
        _check_override(document, name, declared[name], value, origins[name])
        raw[name] = value
    values = ParamValues(build_values)
    values.origins, values.sources = origins, {}
    resolving: list[str] = []

    def get(name):
        if name in values:
            return values[name]
        if name in resolving:
            cycle = " -> ".join(resolving[resolving.index(name):] + [name])
            raise document.error(("params", name), f"params refer to each other in a cycle: {cycle}.")
        if len(resolving) >= MAX_PARAM_DEPTH:
            raise document.error(("params", name), f"params refer to params more than {MAX_PARAM_DEPTH} "
                                                   f"deep ({' -> '.join(resolving[:5])} -> ...).")
        resolving.append(name)
        value = raw[name]
        sources = {name}
        if name not in overrides or has_expression(value):
            used_params = [used for used in sorted(_names_in(value)) if used in raw]
            for used in used_params:
                get(used)
            if has_expression(value):
                sources = set().union(*(values.sources[u] for u in used_params)) if used_params else set()
            try:
                value = substitute_all(document, ("params", name), value, values)
            except RecipeError as exc:
                if name not in overrides:
                    raise
                # The expression is the override's (`--set x=${1/0}`): blame it, not the
                # recipe's params line.
                told = str(exc).removeprefix(f"{document.where(('params', name))}: ")
                raise RecipeError(f"{origins[name]}: {told}") from None
        resolving.pop()
        values[name] = value
        values.sources[name] = tuple(sorted(sources))
        _check_declared(document, name, value, origins[name], get, values)
        return value

    # Plain values first: what the user wrote is checked before anything derived from it.
    for name in sorted(raw, key=lambda n: has_expression(raw[n])):
        get(name)
    result = ParamValues({name: values[name] for name in raw})
    result.origins, result.sources = origins, values.sources
    return result


def _check_declared(document, name, value, origin, get, values):
    """Refuse a param value its declaration does not accept, where the value was set."""
    declaration = document.declaration(name)
    if declaration is None:
        return
    declared_at = f" (declared at {declaration.where})" if declaration.where and not origin.startswith(
        str(declaration.where)) else ""
    problem = declaration.problem(value)
    if problem:
        raise RecipeError(f"{origin}: param {name} = {value!r}: {problem}{declared_at}.")
    rule = declaration.checks.get("rule")
    if rule is None:
        return
    used = sorted(n for n in names_used(rule) if n != name)
    for other in used:
        if other in document.data.get("params", {}):
            get(other)
    try:
        text = rule.strip()
        ok = evaluate(text[2:-1], values) if text.startswith("${") and text.endswith("}") else None
    except ExpressionError as exc:
        where = declaration.where or document.source
        raise RecipeError(f"{where}, field params.{name}.rule: bad rule {rule!r}: {exc}.") from None
    if ok is None:
        where = declaration.where or document.source
        raise RecipeError(f"{where}, field params.{name}.rule: a rule is one ${{...}} expression, got {rule!r}.")
    if not ok:
        told = declaration.checks.get("message") or f"the rule {rule} is false"
        with_others = ", ".join(f"{n}={values[n]!r}" for n in used if n in values)
        raise RecipeError(f"{origin}: param {name} = {value!r}: {told}"
                          + (f" (with {with_others})" if with_others else "") + f"{declared_at}.")


def _names_in(value) -> set[str]:
    if isinstance(value, str):
        return names_used(value)
    if isinstance(value, list):
        return set().union(*(_names_in(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(_names_in(v) for v in value.values())) if value else set()
    return set()


def _check_override(document, name, default, value, origin):
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
        raise RecipeError(
            f"{origin}: param {name!r} expects {type_name(default)} (default {default!r} at "
            f"{document.where(('params', name))}), got {value!r}."
        )


def type_name(value) -> str:
    """'an integer', 'a list'... for messages."""
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)
