"""Block fields: `${...}` evaluated, defaults applied, every value checked against the
vocabulary, with the file, line and field of the value in every message."""

from __future__ import annotations

from typing import Any

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.document import Document
from cnnbuilder.recipe.expressions import ExpressionError, has_expression, names_used, substitute
from cnnbuilder.recipe.vocabulary import BLOCKS, BlockSpec, did_you_mean


class ParamValues(dict):
    """The names expressions use (params and build values), with where each param got its
    value: `origins[name]` ('file, line N, field params.name' or '--set name=12') and
    `sources[name]`, the plain params a derived one is computed from."""

    origins: dict = {}
    sources: dict = {}


def traced(document: Document, path: tuple, message: str, raw, names) -> RecipeError:
    """The error of a value computed from params, told first from where the user set them:
    `child.yaml, line 4, field params.growth_rate (growth_rate=-4) gives, at parent.yaml,
    line 29, field stem[1].conv.filters: conv.filters = -8 ...`."""
    base = f"{document.where(path)}: {message}"
    blamed = blame(raw, names)
    return RecipeError(f"{blamed} gives, at {base}" if blamed else base)


def blame(raw, names) -> str:
    """Where the plain params behind the expressions of `raw` got their values ('' if none):
    the overrides first, then the params in the order of their names."""
    origins, sources = getattr(names, "origins", {}), getattr(names, "sources", {})
    used = set()
    for name in _expression_names(raw):
        used |= set(sources.get(name, ()))
    used = sorted((n for n in used if n in origins), key=lambda n: (", line " in origins[n], n))
    parts = []
    for name in used:
        origin = origins[name]
        parts.append(origin if ", line " not in origin and "field params." not in origin
                     else f"{origin} ({name}={names.get(name)!r})")
    return " and ".join(parts)


def _expression_names(raw) -> set:
    if isinstance(raw, str):
        return names_used(raw) if has_expression(raw) else set()
    if isinstance(raw, (list, tuple)):
        return set().union(*map(_expression_names, raw)) if raw else set()
    if isinstance(raw, dict):
        return set().union(*map(_expression_names, raw.values())) if raw else set()
    return set()


def substitute_all(document: Document, path: tuple, value: Any, names: dict) -> Any:
    """`value` with every `${...}` in it (in lists and maps too) evaluated over `names`."""
    try:
        if isinstance(value, str) and "${" in value:
            return substitute(value, names)
        if isinstance(value, (list, tuple)):
            return [substitute_all(document, path + (i,), v, names) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: substitute_all(document, path + (k,), v, names) for k, v in value.items()}
    except ExpressionError as exc:
        raise traced(document, path, f"bad expression {value!r}: {exc}.", value, names) from None
    return value


def origin(raw, names) -> str:
    """' (from "${2 * growth_rate}" with growth_rate=0)' for values computed from params."""
    if not has_expression(raw):
        return ""
    used = sorted(n for n in names_used(raw) if n in names)
    values = ", ".join(f"{n}={names[n]!r}" for n in used)
    return f" (from {raw!r}" + (f" with {values})" if values else ")")


def raw_fields(document: Document, path: tuple, spec: BlockSpec, raw) -> dict:
    """The fields as written: `{...}`, a shorthand value (`- conv: 64`) or nothing."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return dict(raw)
    if spec.shorthand is None:
        raise document.error(
            path,
            f"block {spec.name!r} takes a mapping of fields "
            f"({', '.join(f.name for f in spec.fields) or 'no fields'}), got {raw!r}.",
        )
    return {spec.shorthand: raw}


def resolve_fields(document: Document, path: tuple, spec: BlockSpec, raw: dict, names: dict,
                   defaults: dict, paths: dict | None = None) -> dict:
    """Evaluate, default and check every field of one block.

    `paths` maps a field to where it was written when that is not `path + (field,)` (the
    fields of a residual row's units are written in the row)."""
    paths = paths or {}

    def where(key):
        return paths.get(key, path + (key,))

    fields = {}
    for key, value in raw.items():
        if spec.field(key) is None:
            options = [f.name for f in spec.fields] + ["name", "repeat"]
            raise document.error(
                where(key),
                f"block {spec.name!r} has no field {key!r}. Its fields: {', '.join(options)}."
                + did_you_mean(key, options),
            )
        fields[key] = substitute_all(document, where(key), value, names)
    for field_spec in spec.field_map.values():
        if field_spec.name in fields:
            continue
        if field_spec.name in defaults:
            fields[field_spec.name] = defaults[field_spec.name]
        elif field_spec.required:
            raise document.error(
                path,
                f"block {spec.name!r} needs field {field_spec.name!r} "
                f"({field_spec.describe_type()}: {field_spec.doc}).",
            )
        else:
            fields[field_spec.name] = field_spec.default
    for key, value in fields.items():
        problem = spec.field(key).check(value)
        if problem:
            at = where(key) if key in raw else path
            raise traced(document, at, f"{spec.name}.{key} = {value!r}{origin(raw.get(key), names)}: "
                                       f"{problem}.", raw.get(key), names)
    if "kernel" in fields and isinstance(fields["kernel"], list):
        fields["kernel"] = tuple(fields["kernel"])
    return fields


def resolve_defaults(document: Document, names: dict) -> dict:
    """The recipe's `defaults:` section, checked like block fields."""
    raw = document.data.get("defaults") or {}
    if not isinstance(raw, dict):
        raise document.error(("defaults",), f"expected a mapping of block name: fields, got {raw!r}.")
    resolved = {}
    for kind, fields in raw.items():
        path = ("defaults", kind)
        if kind not in BLOCKS:
            raise document.error(
                path, f"unknown block {kind!r} in defaults. Known blocks: {', '.join(BLOCKS)}."
                + did_you_mean(kind, BLOCKS),
            )
        spec = BLOCKS[kind]
        fields = raw_fields(document, path, spec, fields)
        values = {}
        for key, value in fields.items():
            field_spec = spec.field(key)
            if field_spec is None or key in ("name", "repeat"):
                options = [f.name for f in spec.fields]
                raise document.error(
                    path + (key,),
                    f"block {kind!r} has no field {key!r} to default. Its fields: "
                    f"{', '.join(options)}." + did_you_mean(key, options),
                )
            value = substitute_all(document, path + (key,), value, names)
            problem = field_spec.check(value)
            if problem:
                raise document.error(path + (key,), f"{kind}.{key} = {value!r}: {problem}.")
            values[key] = value
        resolved[kind] = values
    return resolved
