"""Generate the registry-driven parts of the recipe-language reference (`docs/recipes.md`).

The reference is hand-written prose with generated sections between marker comments::

    <!-- generated:blocks start -->
    ...  (written by this module: do not edit by hand)
    <!-- generated:blocks end -->

Every generated section is rendered from the code the recipe resolver itself uses — the
block vocabulary (`cnnbuilder.recipe.vocabulary.BLOCKS`, each field with its type, default
and description), the residual-row units, the expression functions, the top-level keys,
the metadata keys, the training settings and the `tune:` forms — so the reference cannot drift from the
language: `tests/test_docs.py` fails when the committed file differs from what this module
renders.

    python -m tools.docgen            # rewrite the generated sections of docs/recipes.md
    python -m tools.docgen --check    # exit 1 (and name them) if any section is stale
    python -m tools.docgen --print blocks   # print one section

Pure Python: importing this module does not import TensorFlow.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from cnnbuilder.recipe import expressions as expression_limits
from cnnbuilder.recipe import source as source_limits
from cnnbuilder.recipe.declarations import KEY_DOCS as DECLARATION_DOCS
from cnnbuilder.recipe.declarations import KEYS as DECLARATION_KEYS
from cnnbuilder.recipe.document import MAX_EXTENDS, TOP_LEVEL_KEYS
from cnnbuilder.recipe.expressions import FUNCTIONS
from cnnbuilder.recipe.params import MAX_PARAM_DEPTH
from cnnbuilder.recipe.resolve import MAX_LAYERS, MAX_STEPS
from cnnbuilder.recipe.recipe import METADATA_KEYS
from cnnbuilder.recipe.resolve import BUILD_NAMES, RESERVED_NAMES
from cnnbuilder.recipe.rows import ROW, STRIDE_AT, UNITS
from cnnbuilder.recipe.vocabulary import (
    ACTIVATIONS,
    BLOCKS,
    COMMON_FIELDS,
    INITIALIZERS,
    BlockSpec,
    Field,
)
from cnnbuilder.recipe.training import CHECKS as TRAINING_CHECKS
from cnnbuilder.recipe.training import TrainingConfig
from cnnbuilder.recipe.search_space import KINDS, OPTIONS, UNTUNABLE_TRAINING

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "recipes.md"
MARKER = re.compile(
    r"(<!-- generated:(?P<name>[a-z_]+) start -->\n)(?P<body>.*?)(<!-- generated:(?P=name) end -->)",
    re.DOTALL,
)

FAMILIES = {
    "basic": ("Primitives", "One Keras layer each (a convolution may bring its own padding layer)."),
    "residual": (
        "Residual units (ResNet, ResNet v2, ResNeXt, wide ResNets, plain networks)",
        "Each unit is a composite block: its layers are named `<stage>_block<k>_...`. A stage "
        "of them is usually written as one row of the paper's table "
        "(see [residual rows](#residual-stages-one-row-of-the-papers-table)).",
    ),
    "dense": (
        "DenseNet blocks",
        "Composite blocks named `<stage>_block<k>_...`; a dense block's i-th layer is "
        "`<name>_block<i>_...` (keras.applications' scheme: the DenseNet recipes name their "
        "dense blocks after the stage, `conv2_block1_0_bn`, and their transitions `pool2`).",
    ),
    "inception": ("Inception (GoogLeNet)", "A composite block named `<stage>_block<k>_...`."),
    "decoder": (
        "Decoder blocks (segmentation: U-Net, FC-DenseNet)",
        "Named `<stage>_<type><k>` or by their `name:`. `skip` reads an earlier output by its "
        "stage name (the stage's last output) or by a step's `name:`; the resolver checks that "
        "it exists, comes earlier and has the current tensor's height and width "
        "(see docs/segmentation.md).",
    ),
}

# Descriptions of the registries that carry none of their own. The generator refuses to
# render when a key is missing here, so a new key cannot go undocumented.
TOP_LEVEL_DOCS = {
    "name": "The model's name (an identifier; default `model`). Becomes the Keras model name.",
    "description": "One line saying what the network is.",
    "reference": "The paper and the table or figure the recipe follows.",
    "metadata": "Facts about the recipe: expected parameter count, default input shape, classes, "
                "where the numbers come from (see [metadata](#metadata)).",
    "extends": "A shipped recipe name or a path to a `.yaml` file (relative to this file) to "
               "inherit from (see [extends](#extends-inheriting-and-overriding)).",
    "params": "Named values the rest of the recipe refers to with `${...}`; overridable by "
              "`build(..., name=value)`, `train(params=...)` and `--set name=value`; each may "
              "declare what it accepts (`{default: 32, int: [1, 1024]}`).",
    "defaults": "Per-block-type field defaults and layer settings for the whole recipe "
                "(see [defaults](#defaults)).",
    "stem": "A list of blocks applied first (stage name `stem`).",
    "stages": "A list of stages, each `{name, residual, blocks, repeat}`.",
    "head": "A list of blocks applied last (stage name `head`); left out with `include_top=False`.",
    "tune": "The search space of `cnnbuilder tune` over params and training settings "
            "(see [tune](#tune-search-spaces)).",
    "training": "The paper's optimizer, schedule, batch size and augmentation "
                "(see [training](#training-settings)).",
    "features": "The feature maps `build(..., features_only=True)` returns, in network order: "
                "step names, stage names (the stage's last output), `{step: NAME}`, "
                "`{stage: NAME}`, `{stage: NAME, last: BLOCK}` or `{stage: NAME, index: N}`; default: the stage ends "
                "(see [features](#features-feature-taps)).",
    "task": "`classification` (default: one class per image) or `segmentation` (per-pixel class "
            "probabilities at the input's resolution: the head ends in `${classes}` channels; "
            "see docs/segmentation.md).",
    "backbone": "A segmentation recipe's encoder: a zoo recipe whose `features_only` feature maps the "
                "decoder reads as `backbone_r2` ... `backbone_r32` (by reduction); `build(..., backbone=NAME)` "
                "replaces it. `{recipe: null, decoder: NAME}`: the recipe has its own encoder and a "
                "backbone build uses recipe NAME (see docs/segmentation.md).",
}
METADATA_DOCS = {
    "family": "Groups recipes in `cnnbuilder list` (e.g. `resnet_cifar`, `densenet`).",
    "params": "Expected parameter count of the default build (checked by the zoo tests).",
    "trainable_params": "Expected trainable parameter count (papers often quote this one).",
    "input_shape": "Default `[height, width, channels]` when `build` gets none; default (224, 224, 3).",
    "classes": "Default number of classes when `build` gets none; default 1000.",
    "source": "Where `params` (and other numbers) come from.",
    "keras_application": "The `keras.applications` constructor this recipe reproduces.",
    "keras_weights": "Weight file names (`top`, `notop`) of that application, for `weights=\"imagenet\"`.",
    "macs": "Expected multiply-adds per image.",
    "min_input": "Smallest height and width `build` accepts (as `keras.applications`).",
    "notes": "Free text: deviations from the paper, implementation choices.",
    "preprocessing": "Input normalization: with pretrained weights the one they expect (`caffe`, `torch`, `tf`: the keras.applications module's `preprocess_input`), used by runs that start from them; without, `dataset` (the training split's per-channel mean and std, computed once and recorded in run.json) as the papers normalize; also `unit` ([0, 1]). Any other value is an error (docs/fine_tuning.md).",
    "reported": "The paper's published result: `{dataset, error, top5_error, source, notes}` "
                "(errors in %); `benchmarks/reproduce.py` prints it beside its own.",
}
FUNCTION_DOCS = {
    "min": "`min(a, b, ...)` or `min(list)`",
    "max": "`max(a, b, ...)` or `max(list)`",
    "int": "`int(x)`: truncate to an integer",
    "float": "`float(x)`",
    "round": "`round(x)` or `round(x, digits)`",
    "len": "`len(list)`",
    "sum": "`sum(list)`",
    "floor": "`floor(x)`: largest integer <= x",
    "ceil": "`ceil(x)`: smallest integer >= x",
    "error": "`error('message')`: reject the params with the recipe author's message "
             "(the error adds the values of the names the expression uses)",
}
TRAINING_DOCS = {
    "source": "The paper and section the settings come from (printed by `show --training`).",
    "optimizer": "Optimizer.",
    "learning_rate": "Initial (peak) learning rate.",
    "momentum": "Momentum of `sgd` and `rmsprop`.",
    "nesterov": "Nesterov momentum for `sgd`.",
    "weight_decay": "Weight decay wd (0 turns it off), in `weight_decay_mode`.",
    "weight_decay_mode": "`l2`: wd·w added to the gradient of every trainable variable before "
                         "momentum, as the papers' Torch and Caffe code (`sgd` is then "
                         "`torch.optim.SGD` exactly); `decoupled`: Keras' `weight_decay` "
                         "(w -= lr·wd·w beside the update, AdamW's). At momentum 0.9, l2 acts "
                         "about 10× as strongly. `adamw` is decoupled only.",
    "batch_size": "Batch size.",
    "epochs": "Length of the run in epochs (give `epochs` or `iterations`; `--epochs` overrides it "
              "and the schedule keeps its shape: boundaries and warm-up at the same fractions).",
    "iterations": "Length of the run in optimizer steps, the paper's unit for He et al.; on "
                  "another dataset than `dataset` the run lasts as many epochs as the paper's "
                  "(iterations · batch_size / dataset_size).",
    "schedule": "`cosine` decay to 0 over the run, `step` (multiply by `step_factor` at each "
                "boundary), `exponential` (multiply by `step_factor` after every unit of the recipe: "
                "Jégou et al.'s 0.995 per epoch), `constant`, or `plateau` (multiply by `step_factor` when the "
                "validation accuracy has not improved for `plateau_patience` epochs, at most "
                "`plateau_reductions` times: Keras' `ReduceLROnPlateau`).",
    "boundaries": "Where a `step` schedule decays, in the run's unit (He et al.: `[32000, 48000]` "
                  "iterations).",
    "step_at": "Where a `step` schedule decays, as fractions of the run (Huang et al.: "
               "`[0.5, 0.75]`); used when there are no `boundaries`.",
    "step_every": "A `step` schedule that decays every so many units (Szegedy et al.: 4% every 8 "
                  "epochs); 0: off.",
    "step_factor": "Factor a `step`, `exponential` or `plateau` schedule multiplies the rate by.",
    "warmup": "Length of the warm-up, in the run's unit: a linear ramp from 0, or "
              "`warmup_learning_rate` until it ends.",
    "warmup_learning_rate": "The rate during the warm-up (He et al.'s ResNet-110: 0.01); "
                            "empty: the linear ramp.",
    "warmup_until_error": "End the warm-up early once the training error of the last 10 "
                          "batches is below this (He et al.: 0.8); `warmup` is then the "
                          "longest it lasts.",
    "plateau_patience": "Epochs without a better validation accuracy before a `plateau` "
                        "schedule decays.",
    "plateau_reductions": "How many times a `plateau` schedule decays at most (Krizhevsky et "
                          "al., Simonyan & Zisserman: 3).",
    "label_smoothing": "Label smoothing of the cross-entropy (one-hot targets (1 - s) + s/classes).",
    "dropout": "Sets the recipe's `dropout` param (DenseNet, AlexNet, GoogLeNet); an error for a "
               "recipe without one.",
    "augment": "Training augmentation: `crop` (pad 4 and random crop), `flip` (horizontal), "
               "`translate` (random shift), `randaugment`, `mixup`, `cutmix`, `random_erasing` "
               "(docs/training.md), each a name or a one-key mapping of its options. Unless the "
               "run chooses its own, `digits` uses `translate` in place of crop and flip, since "
               "flips turn digits into other symbols.",
    "loss": "`ce` (cross-entropy, of the soft targets too when mixing), `sparse_ce` (integer "
            "labels only), `bce` (binary cross-entropy per class, the RSB procedures'); for "
            "segmentation, per pixel: `ce` (ignored pixels left out), `dice` (soft Dice) or "
            "`ce+dice` (their sum).",
    "class_weights": "Segmentation: the weight of each class's pixels in the loss (PyTorch's "
                     "`CrossEntropyLoss(weight=...)`: a weighted mean); empty: all 1.",
    "ema": "An exponential moving average of the weights, updated every step: `{decay: d}` "
           "(optionally `warmup: true`); validation, the best epoch, evaluation and model.keras "
           "use the averaged weights.",
    "drop_path": "Stochastic depth (Huang et al. 2016): the drop probability of the last "
                 "residual branch (or dense layer's new features), per example.",
    "drop_path_rule": "`linear`: unit l of L drops with drop_path·l/L (Huang et al.); "
                      "`uniform`: every unit with drop_path.",
    "preset": "A named procedure applied on top of the paper's training: `rsb_a1`, `rsb_a2`, "
              "`rsb_a3` (Wightman et al. 2021, Table 1); docs/training.md.",
    "dataset": "The dataset the paper trained on (`cifar10`), for an `iterations`-long run.",
    "dataset_size": "Training images of `dataset` the paper's iterations count over (He et al.: "
                    "45000 of the 45k/5k split).",
    "departures": "Where this training cannot be the paper's (a Keras limit, a missing detail), "
                  "printed by `show --training`.",
}
TUNE_FORM_DOCS = {
    "choice": ("`{choice: [a, b, ...]}`", "one of the listed values (numbers, booleans, strings or lists)"),
    "int": ("`{int: [low, high]}`", "integers from low to high, both included"),
    "float": ("`{float: [low, high]}`", "numbers in [low, high]"),
}
TUNE_OPTION_DOCS = {
    "step": "grid step (`int`, `float`)",
    "log": "`true`: sample uniformly in log space (`int`, `float`; not with `step`; low > 0)",
    "default": "the value a tuner tries first (must be a value of the range or list)",
}


# ----------------------------------------------------------------------------- helpers


def _code(value) -> str:
    """A value as YAML writes it, in backticks."""
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, (list, tuple)):
        return "`[" + ", ".join(_plain(v) for v in value) + "]`"
    return f"`{_plain(value)}`"


def _plain(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _missing(registry, docs: dict, what: str) -> None:
    missing = [k for k in registry if k not in docs]
    extra = [k for k in docs if k not in registry]
    if missing or extra:
        raise RuntimeError(
            f"tools.docgen: the {what} descriptions are out of date "
            f"(undocumented: {missing or 'none'}; no longer exist: {extra or 'none'})."
        )


def field_default(spec: Field) -> str:
    return "required" if spec.required else _code(spec.default)


def field_row(spec: Field) -> list[str]:
    return [f"`{spec.name}`", spec.describe_type(), field_default(spec), spec.doc]


# ----------------------------------------------------------------------------- sections


def render_block(spec: BlockSpec) -> str:
    parts = [f"#### `{spec.name}`", "", spec.doc, ""]
    forms = []
    required = [f for f in spec.fields if f.required]
    if not required:
        forms.append(f"`- {spec.name}` (all defaults)")
    if spec.shorthand:
        example = next(f for f in spec.fields if f.name == spec.shorthand)
        forms.append(f"`- {spec.name}: VALUE` sets `{example.name}`")
    forms.append(f"`- {spec.name}: {{field: value, ...}}`")
    naming = (f"`<stage>_block<k>`" if spec.composite else f"`<stage>_{spec.name}<k>`")
    parts.append("Written as " + "; ".join(forms) + f". Layers are named {naming}.")
    parts.append("")
    if spec.fields:
        parts.append(_table(["field", "type", "default", "description"],
                            [field_row(f) for f in spec.fields]))
    else:
        parts.append("No fields besides `name` and `repeat`.")
    return "\n".join(parts)


def render_blocks() -> str:
    out = []
    families = {}
    for spec in BLOCKS.values():
        families.setdefault(spec.family, []).append(spec)
    _missing(families, FAMILIES, "block family")
    summary = [[f"[`{s.name}`](#{s.name})", FAMILIES[s.family][0].split(" (")[0], s.doc]
               for s in BLOCKS.values()]
    out.append(_table(["block", "family", "what it is"], summary))
    out.append("")
    out.append("Every block also takes these fields:")
    out.append("")
    out.append(_table(["field", "type", "default", "description"],
                      [field_row(f) for f in COMMON_FIELDS]))
    for family, specs in families.items():
        title, text = FAMILIES[family]
        out += ["", f"### {title}", "", text]
        for spec in specs:
            out += ["", render_block(spec)]
    return "\n".join(out)


def render_top_level() -> str:
    _missing(TOP_LEVEL_KEYS, TOP_LEVEL_DOCS, "top-level key")
    return _table(["key", "meaning"], [[f"`{k}`", TOP_LEVEL_DOCS[k]] for k in TOP_LEVEL_KEYS])


def render_metadata() -> str:
    _missing(METADATA_KEYS, METADATA_DOCS, "metadata key")
    def type_name(t):
        types = t if isinstance(t, tuple) else (t,)
        names = {int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
        return " or ".join(names.get(x, x.__name__) for x in types)
    return _table(["key", "type", "meaning"],
                  [[f"`{k}`", type_name(t), METADATA_DOCS[k]] for k, t in METADATA_KEYS.items()])


def render_functions() -> str:
    _missing(FUNCTIONS, FUNCTION_DOCS, "expression function")
    return _table(["function", "meaning"], [[f"`{k}`", FUNCTION_DOCS[k]] for k in FUNCTIONS])


def render_names() -> str:
    return "\n".join([
        "Names every expression may use besides the recipe's params (the arguments of `build`): "
        + ", ".join(f"`{n}`" for n in BUILD_NAMES) + ".",
        "",
        "Param names must be identifiers other than the `build()` arguments: "
        + ", ".join(f"`{n}`" for n in RESERVED_NAMES) + ".",
    ])


def render_declarations() -> str:
    _missing(DECLARATION_KEYS, DECLARATION_DOCS, "param declaration key")
    return _table(["key", "meaning"], [[f"`{k}`", DECLARATION_DOCS[k]] for k in DECLARATION_KEYS])


def render_limits() -> str:
    rows = [
        ["file", f"{source_limits.MAX_BYTES:,} bytes of UTF-8 text"],
        ["nesting", f"{source_limits.MAX_DEPTH} levels of lists and mappings"],
        ["values", f"{source_limits.MAX_NODES:,} scalars, lists and mappings"],
        ["string", f"{source_limits.MAX_STRING:,} characters"],
        ["number as written", f"{source_limits.MAX_NUMBER_TEXT} characters; finite (no `.inf`, `.nan`)"],
        ["anchors and aliases", "none (`&name`, `*name` and merge keys `<<` are refused)"],
        ["`extends` chain", f"{MAX_EXTENDS} recipes"],
        ["params referring to params", f"{MAX_PARAM_DEPTH} levels"],
        ["one `${...}`", f"{expression_limits.MAX_SOURCE:,} characters, {expression_limits.MAX_TREE_DEPTH} "
                         f"levels, {expression_limits.MAX_TREE_NODES} parts"],
        ["numbers computed by expressions", "at most 10**15 in magnitude"],
        ["lists and strings computed by expressions",
         f"{expression_limits.MAX_LIST_LENGTH:,} values (nested lists counted in full), "
         f"{expression_limits.MAX_NESTING} levels"],
        ["planned network", f"{MAX_STEPS:,} block applications (`repeat:` included), about "
                            f"{MAX_LAYERS:,} Keras layers"],
    ]
    return _table(["what", "at most"], rows)


def render_training() -> str:
    settings = list(TRAINING_CHECKS)
    _missing(settings, TRAINING_DOCS, "training setting")
    defaults = TrainingConfig().to_dict()
    rows = [[f"`{name}`", TRAINING_CHECKS[name][1],
             _code(defaults[name]) if name in defaults else "", TRAINING_DOCS[name]]
            for name in settings]
    return _table(["setting", "type", "default", "meaning"], rows)


def render_tune() -> str:
    _missing(KINDS, TUNE_FORM_DOCS, "tune form")
    options = sorted({o for opts in OPTIONS.values() for o in opts})
    _missing(options, TUNE_OPTION_DOCS, "tune option")
    rows = [[TUNE_FORM_DOCS[k][0], TUNE_FORM_DOCS[k][1], ", ".join(f"`{o}`" for o in OPTIONS[k])]
            for k in KINDS]
    table = _table(["form", "values", "optional keys"], rows)
    option_rows = [[f"`{o}`", TUNE_OPTION_DOCS[o]] for o in options]
    untunable = "; ".join(f"`{k}`: {v}" for k, v in UNTUNABLE_TRAINING.items())
    return "\n".join([table, "", _table(["option", "meaning"], option_rows), "",
                      f"Not tunable: {untunable}."])


def render_residual_rows() -> str:
    rows = [[f"`{unit}`", text] for unit, text in UNITS.items()]
    return "\n".join([
        "`residual: [" + ", ".join(ROW) + "]` or `residual: [" + ", ".join(ROW) + ", {field: value, ...}]`:",
        "",
        _table(["unit", "units built"], rows),
        "",
        "`stride_at`: " + " or ".join(f"`{s}`" for s in STRIDE_AT) + " (default `first`).",
    ])


def render_layer_names() -> str:
    return "\n".join([
        "Activation names: " + ", ".join(f"`{a}`" for a in sorted(ACTIVATIONS)) + ".",
        "",
        "Initializer names: " + ", ".join(f"`{i}`" for i in sorted(INITIALIZERS)) + ".",
    ])


SECTIONS = {
    "top_level": render_top_level,
    "metadata": render_metadata,
    "functions": render_functions,
    "names": render_names,
    "residual_rows": render_residual_rows,
    "blocks": render_blocks,
    "layer_names": render_layer_names,
    "declarations": render_declarations,
    "limits": render_limits,
    "training": render_training,
    "tune": render_tune,
}


# ----------------------------------------------------------------------------- the file


def sections_in(text: str) -> dict[str, str]:
    """{name: body} of the generated sections of a document."""
    return {m.group("name"): m.group("body") for m in MARKER.finditer(text)}


def update(text: str) -> str:
    """`text` with every generated section re-rendered; raises on an unknown section."""
    def replace(match):
        name = match.group("name")
        if name not in SECTIONS:
            raise KeyError(f"unknown generated section {name!r} (known: {', '.join(SECTIONS)})")
        return match.group(1) + SECTIONS[name]() + "\n" + match.group(4)

    return MARKER.sub(replace, text)


def stale_sections(text: str) -> list[str]:
    """Names of the sections that differ from what the registry renders, plus those missing."""
    found = sections_in(text)
    stale = [name for name, body in found.items() if SECTIONS.get(name, lambda: None)() != body.rstrip("\n")]
    return stale + [name for name in SECTIONS if name not in found]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the generated sections of docs/recipes.md.")
    parser.add_argument("path", nargs="?", default=str(DEFAULT_PATH))
    parser.add_argument("--check", action="store_true", help="exit 1 if a section is stale")
    parser.add_argument("--print", dest="section", choices=list(SECTIONS), help="print one section")
    args = parser.parse_args(argv)
    if args.section:
        print(SECTIONS[args.section]())
        return 0
    path = Path(args.path)
    text = path.read_text(encoding="utf-8")
    if args.check:
        stale = stale_sections(text)
        if stale:
            print(f"{path}: stale generated sections: {', '.join(stale)}; run "
                  "`python -m tools.docgen`.", file=sys.stderr)
            return 1
        return 0
    new = update(text)
    missing = [name for name in SECTIONS if name not in sections_in(new)]
    if missing:
        print(f"{path}: no markers for sections {', '.join(missing)}", file=sys.stderr)
    if new != text:
        path.write_text(new, encoding="utf-8")
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
