"""From a recipe document to a `Plan`: params applied, expressions evaluated, every block
checked against the vocabulary and the shapes followed from input to output.

Everything that can be wrong with a recipe is found here, before a layer is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnnbuilder.recipe.document import Document
from cnnbuilder.recipe.expressions import ExpressionError, has_expression, names_used, substitute
from cnnbuilder.recipe.vocabulary import (
    ACTIVATIONS,
    BLOCKS,
    INITIALIZERS,
    BlockSpec,
    Field,
    ShapeError,
    did_you_mean,
)

# Names every expression may use besides the recipe's own params.
BUILD_NAMES = ("classes", "classifier_activation")
# build() keyword arguments: a param with one of these names could never be overridden.
RESERVED_NAMES = BUILD_NAMES + ("include_top", "weights", "input_tensor", "input_shape",
                                "pooling", "name", "features_only", "recipe")
SECTIONS = ("stem", "stages", "head")


@dataclass(frozen=True)
class Step:
    """One block application in the network, fully resolved."""

    block: str
    fields: dict
    name: str
    section: str  # stem | stage | head
    stage: str  # stage name ("stem", "conv2", "head", ...)
    path: tuple  # where it was written, for messages
    input_shape: tuple = ()
    output_shape: tuple = ()


@dataclass
class Plan:
    name: str
    params: dict
    steps: list[Step]
    input_shape: tuple
    defaults: dict = field(default_factory=dict)

    @property
    def stages(self) -> list[str]:
        seen = []
        for step in self.steps:
            if step.section == "stage" and step.stage not in seen:
                seen.append(step.stage)
        return seen


# ----------------------------------------------------------------------------- params


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
            value = _substitute_all(document, ("params", name), value, values)
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
            f"param {name!r} expects {_type_name(default)} (default {default!r}), "
            f"got {value!r}.",
        )


def _type_name(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _substitute_all(document, path, value, names):
    try:
        if isinstance(value, str) and "${" in value:
            return substitute(value, names)
        if isinstance(value, (list, tuple)):
            return [_substitute_all(document, path + (i,), v, names) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: _substitute_all(document, path + (k,), v, names) for k, v in value.items()}
    except ExpressionError as exc:
        raise document.error(path, f"bad expression {value!r}: {exc}.") from None
    return value


# ----------------------------------------------------------------------------- blocks


def check_field(spec: Field, value: Any) -> str | None:
    """None when `value` suits the field, else what was expected."""
    if value is None:
        return None if spec.optional else f"expected {spec.describe_type()}"
    kind = spec.kind
    expected = f"expected {spec.describe_type()}"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return expected
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return expected
    elif kind == "bool":
        if not isinstance(value, bool):
            return expected
    elif kind == "choice":
        if not any(value == c and type(value) is type(c) for c in spec.choices):
            return expected
    elif kind == "size":
        if not _is_size(value):
            return expected + " (positive)"
        return None
    elif kind == "padding":
        if not _is_padding(value):
            return expected + " (non-negative)"
        return None
    elif kind == "activation":
        if not isinstance(value, str) or value not in ACTIVATIONS:
            return expected + f" (one of {', '.join(sorted(ACTIVATIONS))})" + did_you_mean(value, ACTIVATIONS)
        return None
    elif kind == "initializer":
        if not isinstance(value, str) or value not in INITIALIZERS:
            return expected + f" (one of {', '.join(sorted(INITIALIZERS))})" + did_you_mean(value, INITIALIZERS)
        return None
    elif kind == "str":
        if not isinstance(value, str) or not value:
            return expected
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            return expected
        if spec.maximum is not None and value > spec.maximum:
            return expected
        if spec.below is not None and value >= spec.below:
            return expected
        if spec.above is not None and value <= spec.above:
            return expected
    return None


def _is_int(v, minimum):
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _is_size(v):
    if _is_int(v, 1):
        return True
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(x, 1) for x in v)


def _is_padding(v):
    if _is_int(v, 0):
        return True
    if isinstance(v, (list, tuple)) and len(v) == 2:
        if all(_is_int(x, 0) for x in v):
            return True
        return all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_int(x, 0) for x in p) for p in v)
    return False


def _split_block(document, path, item) -> tuple[str, Any]:
    """`- conv: {...}`, `- conv: 64` or `- flatten` -> (block name, raw fields)."""
    if isinstance(item, str) and "${" not in item:
        kind, raw = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        (kind, raw), = item.items()
    else:
        raise document.error(
            path,
            f"expected a block such as `- conv: {{filters: 64}}` or `- flatten` "
            f"(a mapping with exactly one block name), got {item!r}.",
        )
    if kind not in BLOCKS:
        raise document.error(
            path,
            f"unknown block {kind!r}. Known blocks: {', '.join(BLOCKS)}." + did_you_mean(kind, BLOCKS),
        )
    return kind, raw


def _raw_fields(document, path, spec: BlockSpec, raw) -> dict:
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


def resolve_fields(document, path, spec: BlockSpec, raw: dict, names: dict, defaults: dict) -> dict:
    """Evaluate, default and check every field of one block."""
    fields = {}
    for key, value in raw.items():
        field_spec = spec.field(key)
        if field_spec is None:
            options = [f.name for f in spec.fields] + ["name", "repeat"]
            raise document.error(
                path + (key,),
                f"block {spec.name!r} has no field {key!r}. Its fields: {', '.join(options)}."
                + did_you_mean(key, options),
            )
        fields[key] = _substitute_all(document, path + (key,), value, names)
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
        problem = check_field(spec.field(key), value)
        if problem:
            where = path + (key,) if key in raw else path
            origin = _origin(raw.get(key), names)
            raise document.error(where, f"{spec.name}.{key} = {value!r}{origin}: {problem}.")
    if "kernel" in fields and isinstance(fields["kernel"], list):
        fields["kernel"] = tuple(fields["kernel"])
    return fields


def _origin(raw, names) -> str:
    """' (from "${2 * growth_rate}" with growth_rate=0)' for values computed from params."""
    if not has_expression(raw):
        return ""
    used = sorted(n for n in names_used(raw) if n in names)
    values = ", ".join(f"{n}={names[n]!r}" for n in used)
    return f" (from {raw!r}" + (f" with {values})" if values else ")")


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
        fields = _raw_fields(document, path, spec, fields)
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
            value = _substitute_all(document, path + (key,), value, names)
            problem = check_field(field_spec, value)
            if problem:
                raise document.error(path + (key,), f"{kind}.{key} = {value!r}: {problem}.")
            values[key] = value
        resolved[kind] = values
    return resolved


def _block_lists(document, include_head: bool):
    """Yield (section, stage name, path of the list, items) in network order."""
    data = document.data
    for key in SECTIONS:
        if key in data and data[key] is not None and not isinstance(data[key], list):
            raise document.error((key,), f"expected a list, got {type(data[key]).__name__}.")
    yield "stem", "stem", ("stem",), data.get("stem") or [], 1
    for index, stage in enumerate(data.get("stages") or []):
        path = ("stages", index)
        if not isinstance(stage, dict) or "blocks" not in stage:
            raise document.error(
                path, f"a stage is a mapping with `blocks:` (and optional `name:`, `repeat:`), got {stage!r}."
            )
        unknown = set(stage) - {"name", "blocks", "repeat"}
        if unknown:
            key = sorted(unknown)[0]
            raise document.error(
                path + (key,), f"unknown stage key {key!r}; a stage has name, blocks and repeat."
                + did_you_mean(key, ["name", "blocks", "repeat"])
            )
        name = stage.get("name", f"stage{index + 1}")
        if not isinstance(name, str) or not name.isidentifier():
            raise document.error(path + ("name",), f"a stage name must be an identifier, got {name!r}.")
        if not isinstance(stage["blocks"], list):
            raise document.error(path + ("blocks",), "expected a list of blocks.")
        yield "stage", name, path + ("blocks",), stage["blocks"], stage.get("repeat", 1)
    if include_head:
        yield "head", "head", ("head",), data.get("head") or [], 1


def expand_steps(document, names: dict, defaults: dict, include_head: bool) -> list[Step]:
    steps: list[Step] = []
    used_names: dict[str, tuple] = {}
    for section, stage, list_path, items, stage_repeat in _block_lists(document, include_head):
        stage_repeat = _substitute_all(document, list_path[:-1] + ("repeat",), stage_repeat, names)
        if not isinstance(stage_repeat, int) or isinstance(stage_repeat, bool) or stage_repeat < 0:
            raise document.error(list_path[:-1] + ("repeat",), f"repeat must be an integer >= 0, got {stage_repeat!r}.")
        composite_count = 0
        primitive_counts: dict[str, int] = {}
        for _ in range(stage_repeat):
            for index, item in enumerate(items):
                path = list_path + (index,)
                kind, raw = _split_block(document, path, item)
                spec = BLOCKS[kind]
                raw = _raw_fields(document, path + (kind,), spec, raw)
                fields = resolve_fields(document, path + (kind,), spec, raw, names, defaults.get(kind, {}))
                repeat, explicit = fields.pop("repeat"), fields.pop("name")
                for r in range(repeat):
                    if spec.composite:
                        composite_count += 1
                        auto = f"{stage}_block{composite_count}"
                    else:
                        primitive_counts[kind] = primitive_counts.get(kind, 0) + 1
                        auto = f"{stage}_{kind}{primitive_counts[kind]}"
                    name = auto if explicit is None else (explicit if repeat == 1 else f"{explicit}_{r + 1}")
                    if name in used_names:
                        raise document.error(
                            path, f"layer name {name!r} is used twice (also at {document.where(used_names[name])})."
                        )
                    used_names[name] = path
                    steps.append(Step(kind, dict(fields), name, section, stage, path + (kind,)))
    return steps


def propagate_shapes(document, steps: list[Step], input_shape: tuple) -> list[Step]:
    """Follow the tensor shape through the plan; reject blocks that cannot take it."""
    shape = tuple(input_shape)
    result = []
    for step in steps:
        spec = BLOCKS[step.block]
        try:
            output = tuple(spec.shape(shape, step.fields))
        except ShapeError as exc:
            raise document.error(step.path, f"block {step.block!r} ({step.name}) {exc}.") from None
        if any(d is not None and d < 1 for d in output):
            raise document.error(
                step.path,
                f"the input {tuple(input_shape)} is too small for this network: block "
                f"{step.block!r} ({step.name}) turns a {shape} tensor into {output}. "
                "Use a larger input_shape or remove a downsampling block.",
            )
        result.append(Step(**{**step.__dict__, "input_shape": shape, "output_shape": output}))
        shape = output
    return result


def resolve(document: Document, *, overrides: dict, input_shape: tuple, include_head: bool,
            classes: int, classifier_activation) -> Plan:
    build_values = {"classes": classes, "classifier_activation": classifier_activation}
    params = resolve_params(document, overrides, build_values)
    names = {**build_values, **params}
    defaults = resolve_defaults(document, names)
    steps = expand_steps(document, names, defaults, include_head)
    if not any(s.section == "stage" for s in steps) and not steps:
        raise document.error((), "the recipe has no blocks: give at least one of stem, stages, head.")
    steps = propagate_shapes(document, steps, input_shape)
    return Plan(document.data.get("name", "model"), params, steps, tuple(input_shape), defaults)
