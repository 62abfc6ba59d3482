"""From a recipe document to a `Plan`: params applied, expressions evaluated, every block
checked against the vocabulary and the shapes followed from input to output.

Everything that can be wrong with a recipe is found here, before a layer is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.document import Document
from cnnbuilder.recipe.fields import (ParamValues, raw_fields, resolve_defaults, resolve_fields,
                                     substitute_all, traced)
from cnnbuilder.recipe.params import BUILD_NAMES, RESERVED_NAMES, resolve_params
from cnnbuilder.recipe.rows import BlockItem, expand_row
from cnnbuilder.recipe.vocabulary import BLOCKS, ShapeError, did_you_mean
from cnnbuilder.recipe.vocabulary.decoder import skip_shape

SECTIONS = ("stem", "stages", "head")
STAGE_KEYS = ("name", "residual", "blocks", "repeat")
# The cost of the network a recipe plans is bounded: at most MAX_STEPS block applications
# and about MAX_LAYERS Keras layers (ResNet-1202, the deepest network of the papers, has
# about 4,200; DenseNet-264 about 900). Past them `repeat: 1000000` or `layers: 100000`
# is a RecipeError, not an hour of graph building.
MAX_STEPS = 5_000
MAX_LAYERS = 20_000


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
    raw: dict = field(default_factory=dict, compare=False, repr=False)  # fields as written
    counted_by: tuple = field(default=(), compare=False, repr=False)  # a row's count as written


@dataclass
class Plan:
    """The resolved network: params, the steps in order with their shapes, layer defaults."""

    name: str
    params: dict
    steps: list[Step]
    input_shape: tuple
    defaults: dict = field(default_factory=dict)
    # A `backbone:` recipe's encoder: the backbone recipe's name and its feature maps
    # (`cnnbuilder.recipe.backbone.EncoderTap`), the deepest last; the steps are the decoder.
    backbone: str | None = None
    encoder: tuple = ()

    @property
    def stages(self) -> list[str]:
        seen = []
        for step in self.steps:
            if step.section == "stage" and step.stage not in seen:
                seen.append(step.stage)
        return seen


def _split_block(document, path, item) -> BlockItem:
    """`- conv: {...}`, `- conv: 64` or `- flatten` -> the block and its raw fields."""
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
    return BlockItem(kind, raw_fields(document, path + (kind,), BLOCKS[kind], raw), path + (kind,))


def _block_items(document, path, items, names) -> list[BlockItem]:
    if not isinstance(items, list):
        raise document.error(path, "expected a list of blocks.")
    return [_split_block(document, path + (i,), item) for i, item in enumerate(items)]


def _stage_items(document, path, stage, names) -> list[BlockItem]:
    """A stage's blocks: the units of its `residual:` row, then its `blocks:`."""
    items = []
    if "residual" in stage:
        items += expand_row(document, path + ("residual",), stage["residual"], names)
    if "blocks" in stage:
        items += _block_items(document, path + ("blocks",), stage["blocks"], names)
    return items


def _sections(document, include_head: bool):
    """Yield (section, stage name, path, repeat, items(names)) in network order."""
    data = document.data
    for key in SECTIONS:
        if key in data and data[key] is not None and not isinstance(data[key], list):
            raise document.error((key,), f"expected a list, got {type(data[key]).__name__}.")
    stem = data.get("stem") or []
    yield "stem", "stem", ("stem",), 1, lambda names: _block_items(document, ("stem",), stem, names)
    for index, stage in enumerate(data.get("stages") or []):
        path = ("stages", index)
        unknown = [key for key in stage if key not in STAGE_KEYS] if isinstance(stage, dict) else []
        if unknown:
            raise document.error(
                path + (unknown[0],), f"unknown stage key {unknown[0]!r}; a stage has "
                f"{', '.join(STAGE_KEYS)}." + did_you_mean(unknown[0], STAGE_KEYS)
            )
        if not isinstance(stage, dict) or not ("blocks" in stage or "residual" in stage):
            raise document.error(
                path, "a stage is a mapping with `blocks:` (a list of blocks) and/or `residual:` "
                      f"(a row [unit, count, filters, stride]), and optional `name:`, `repeat:`; got {stage!r}."
            )
        name = stage.get("name", f"stage{index + 1}")
        if not isinstance(name, str) or not name.isidentifier():
            raise document.error(path + ("name",), f"a stage name must be an identifier, got {name!r}.")
        yield ("stage", name, path, stage.get("repeat", 1),
               lambda names, path=path, stage=stage: _stage_items(document, path, stage, names))
    if include_head:
        head = data.get("head") or []
        yield "head", "head", ("head",), 1, lambda names: _block_items(document, ("head",), head, names)


def expand_steps(document, names: dict, defaults: dict, include_head: bool) -> list[Step]:
    """Every block application in order, named `<stage>_block<k>` or `<stage>_<type><k>`."""
    steps: list[Step] = []
    used_names: dict[str, tuple] = {}
    for section, stage, path, stage_repeat, items in _sections(document, include_head):
        repeat_path = path + ("repeat",) if section == "stage" else path
        raw_repeat = stage_repeat
        stage_repeat = substitute_all(document, repeat_path, stage_repeat, names)
        if not isinstance(stage_repeat, int) or isinstance(stage_repeat, bool) or stage_repeat < 0:
            raise traced(document, repeat_path, f"repeat must be an integer >= 0, got {stage_repeat!r}.",
                         raw_repeat, names)
        if stage_repeat == 0:
            continue  # as a block with repeat: 0, a stage repeated 0 times is not resolved
        resolved = []
        for item in items(names):
            spec = BLOCKS[item.kind]
            fields = resolve_fields(document, item.path, spec, item.raw, names,
                                    defaults.get(item.kind, {}), item.paths)
            resolved.append((item, spec, fields))
        applications = stage_repeat * sum(fields["repeat"] for _, _, fields in resolved)
        if len(steps) + applications > MAX_STEPS:
            raise traced(document, repeat_path if stage_repeat > 1 else path,
                         f"the network would apply more than {MAX_STEPS:,} blocks ({len(steps):,} before "
                         f"this stage, {applications:,} in it); a recipe plans at most {MAX_STEPS:,}.",
                         [raw_repeat] + [(item.raw.get("repeat"), *item.counted_by) for item, _, _ in resolved],
                         names)
        composite_count = 0
        primitive_counts: dict[str, int] = {}
        for _ in range(stage_repeat):
            for item, spec, fields in resolved:
                fields = dict(fields)
                repeat, explicit = fields.pop("repeat"), fields.pop("name")
                for r in range(repeat):
                    if spec.composite:
                        composite_count += 1
                        auto = f"{stage}_block{composite_count}"
                    else:
                        primitive_counts[item.kind] = primitive_counts.get(item.kind, 0) + 1
                        auto = f"{stage}_{item.kind}{primitive_counts[item.kind]}"
                    name = auto if explicit is None else (explicit if repeat == 1 else f"{explicit}_{r + 1}")
                    if name in used_names:
                        raise document.error(
                            item.path, f"layer name {name!r} is used twice (also at {document.where(used_names[name])})."
                        )
                    used_names[name] = item.path
                    steps.append(Step(item.kind, dict(fields), name, section, stage, item.path,
                                      raw=item.raw, counted_by=item.counted_by))
    return steps


def layer_estimate(step: Step) -> int:
    """About how many Keras layers a step becomes (an upper bound of the builder's count)."""
    if step.block == "dense":
        return 8 * step.fields["layers"] + 1
    return 16 if BLOCKS[step.block].composite else 2


def check_cost(document, steps: list[Step], names) -> None:
    """Refuse a network of more than about MAX_LAYERS layers, at the step that crosses it."""
    total = 0
    for step in steps:
        total += layer_estimate(step)
        if total > MAX_LAYERS:
            raw = [step.raw.get("layers"), step.raw.get("repeat"), *step.counted_by]
            raise traced(
                document, step.path,
                f"the network would have more than {MAX_LAYERS:,} layers (about {total:,} up to "
                f"{step.name}, a {step.block} block); a recipe plans at most {MAX_LAYERS:,}.",
                raw, names)


def propagate_shapes(document, steps: list[Step], input_shape: tuple,
                     input_label: str | None = None, sources: dict | None = None) -> list[Step]:
    """Follow the tensor shape through the plan; reject blocks that cannot take it.

    `input_label` names an input shape the user gave (`--input-shape 8,8,1`): a map that
    shrinks to nothing is then that argument's fault, not the recipe line's. `sources`
    gives the shapes of outputs made before the steps (an encoder's feature maps, by name)."""
    shape = tuple(input_shape)
    result = []
    sources = dict(sources or {})
    named: dict[str, tuple] = {}  # the outputs a `skip` can read: stage ends, step names
    for index, step in enumerate(steps):
        spec = BLOCKS[step.block]
        try:
            if step.block == "skip":
                output = tuple(skip_shape(shape, _skip_source(document, steps, index, named, sources),
                                          step.fields))
            elif step.block == "branch":
                output = tuple(_skip_source(document, steps, index, named, sources))
            else:
                output = tuple(spec.shape(shape, step.fields))
        except ShapeError as exc:
            raise document.error(step.path, f"block {step.block!r} ({step.name}) {exc}.") from None
        if any(d is not None and d < 1 for d in output) and input_label:
            raise RecipeError(
                f"{input_label}: the input is too small for {document.data.get('name', 'this network')}: "
                f"its block {step.block!r} ({step.name}) turns a {shape} tensor into {output}. "
                f"Give a larger input shape (the recipe's own is {document.data.get('metadata', {}).get('input_shape')}).")
        if any(d is not None and d < 1 for d in output):
            raise document.error(
                step.path,
                f"the input {tuple(input_shape)} is too small for this network: block "
                f"{step.block!r} ({step.name}) turns a {shape} tensor into {output}. "
                "Use a larger input_shape or remove a downsampling block.",
            )
        result.append(Step(**{**step.__dict__, "input_shape": shape, "output_shape": output}))
        shape = output
        named[step.name] = output
        if index + 1 == len(steps) or steps[index + 1].stage != step.stage:
            named[step.stage] = output  # the stage's end (a stage name wins over a step name)
    return result


def skip_target(steps: list[Step], index: int, name: str) -> str | None:
    """Which earlier output the skip at `steps[index]` reads by `name`: the stage `name`
    (its last step's output) when such a stage ended before it, else the step so named;
    None when neither comes before it. The builder reads the same."""
    earlier = steps[:index]
    ended = {s.stage for i, s in enumerate(earlier)
             if i + 1 == len(steps) or steps[i + 1].stage != s.stage}
    if name in ended:
        return "stage"
    if any(s.name == name for s in earlier):
        return "step"
    return None


def _skip_source(document, steps: list[Step], index: int, named: dict, sources: dict) -> tuple:
    """The shape of the output the skip (or branch) at `steps[index]` reads; RecipeError
    (the recipe line of its `from:`) when no stage or named step of that name comes before
    it and no encoder feature map (`sources`) has that name."""
    step = steps[index]
    name = step.fields["from"]
    if skip_target(steps, index, name) is not None:
        return named[name]
    if name in sources:
        return sources[name]
    later = [s for s in steps[index:] if name in (s.stage, s.name)]
    where = step.path + ("from",) if isinstance(step.raw, dict) and "from" in step.raw else step.path
    if later:
        raise document.error(
            where, f"skip ({step.name}) reads {name!r}, which is computed after it (at "
                   f"{document.where(later[0].path)}); a skip joins an earlier stage's end or named step.")
    stages = list(dict.fromkeys(s.stage for s in steps[:index] if s.section == "stage"))
    raise document.error(
        where, f"skip ({step.name}) reads {name!r}, but no stage or named step of that name comes "
               f"before it. Stages before it: {', '.join(stages) or 'none'}."
               + (f" The encoder's feature maps: {', '.join(sources)}." if sources else "")
               + did_you_mean(name, [*dict.fromkeys(s.stage for s in steps), *(s.name for s in steps),
                                     *sources]))


def resolve(document: Document, *, overrides: dict, input_shape: tuple, include_head: bool,
            classes: int, classifier_activation, override_source: str | None = None,
            input_label: str | None = None, backbone: str | None = None, encoder=()) -> Plan:
    """The `Plan` of one build; raises RecipeError (file, line, field) on any problem.

    `override_source` names the overrides in messages ("--set"; default: "keyword
    argument", or what `cnnbuilder.recipe.params.overrides_from` says). With a `backbone`,
    `encoder` lists its feature maps (`cnnbuilder.recipe.backbone.encoder_taps`): the steps
    start from the deepest and may read the others by name."""
    build_values = {"classes": classes, "classifier_activation": classifier_activation}
    params = resolve_params(document, overrides, build_values, override_source)
    names = ParamValues({**build_values, **params})
    names.origins, names.sources = params.origins, params.sources
    defaults = resolve_defaults(document, names)
    steps = expand_steps(document, names, defaults, include_head)
    if not steps:
        raise document.error((), "the recipe has no blocks: give at least one of stem, stages, head.")
    check_cost(document, steps, names)
    encoder = tuple(encoder)
    start = encoder[-1].shape if encoder else input_shape
    steps = propagate_shapes(document, steps, start, input_label, {tap.name: tap.shape for tap in encoder})
    return Plan(document.data.get("name", "model"), params, steps, tuple(input_shape), defaults,
                backbone, encoder)


__all__ = ["BUILD_NAMES", "RESERVED_NAMES", "Plan", "Step", "expand_steps", "propagate_shapes", "resolve"]
