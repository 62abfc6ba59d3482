"""The recipe's `training:` section: the paper's optimizer, schedule and augmentation.

Pure Python (no TensorFlow), so recipes can be validated and documented cheaply. One table,
`CHECKS`, says what each setting accepts; `check_settings` applies it (and the rules between
settings, `combination_problem`), for the section when `load_recipe` reads a recipe
(messages with file, line and field) and for the overrides of `train(training=...)`,
`--training k=v` and the tuner (`training_config`); the `tune:` section checks its ranges
of training settings with the same table.

A run's length is counted in the paper's unit: ``epochs: 300`` (Huang et al.) or
``iterations: 64000`` (He et al.); step boundaries and warm-up are in the same unit. An
override of the length (``--epochs 20``) keeps the schedule's shape: the recipe's
boundaries and warm-up move to the same fractions of the new length.

Beyond the papers (docs/training.md): ``ema`` (a moving average of the weights),
``drop_path`` (stochastic depth), ``loss`` (``bce``), the ``lamb`` optimizer, the
augmentations ``randaugment``, ``mixup``, ``cutmix`` and ``random_erasing`` (written as a
name, or a one-key mapping of their options: ``{mixup: {alpha: 0.2}}``), and ``preset``, a
named procedure applied on top of the paper's section (`cnnbuilder.recipe.presets`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Callable

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.augment_spec import (AUGMENT_OPTIONS, AUGMENTATIONS, MIXING, augment_item,
                                             augment_label, augment_problem)
from cnnbuilder.recipe.presets import PRESETS, apply_preset, preset_problem
from cnnbuilder.recipe.vocabulary import did_you_mean

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "lamb")
SCHEDULES = ("cosine", "step", "exponential", "constant", "plateau")
# ce: cross-entropy (integer labels, or the soft targets of mixup/cutmix); sparse_ce:
# Keras' sparse cross-entropy, integer labels only; bce: binary cross-entropy per class
# (Wightman et al. 2021, the RSB procedures).
# ce, sparse_ce and bce for classification; dice and ce+dice for segmentation only (a
# segmentation run's ce is per pixel: cnnbuilder.training.segmentation_losses).
LOSSES = ("ce", "sparse_ce", "bce", "dice", "ce+dice")
SEGMENTATION_LOSSES = ("ce", "dice", "ce+dice")
# Stochastic depth's drop rate of unit l of L: linear (Huang et al. 2016, §3: the survival
# probability falls linearly to 1 - drop_path at the last unit) or uniform (all the same).
DROP_PATH_RULES = ("linear", "uniform")
WEIGHT_DECAY_MODES = ("l2", "decoupled")
UNITS = ("epochs", "iterations")
# Settings that are laid out along the run and move with its length.
SCALED = ("boundaries", "step_every", "warmup")


@dataclass(frozen=True)
class TrainingConfig:
    """The resolved training settings of one run (defaults where the recipe gives none).

    The run is `length` long in `unit` (the recipe's ``epochs:`` or ``iterations:``);
    `boundaries`, `step_every` and `warmup` count in the same unit.
    """

    source: str = ""
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    # l2: wd·w added to the gradient before momentum (Torch/Caffe, the papers' code);
    # decoupled: w -= lr·wd·w beside the update (Keras' weight_decay, AdamW).
    weight_decay_mode: str = "decoupled"
    batch_size: int = 128
    unit: str = "epochs"
    length: float = 20
    schedule: str = "cosine"
    boundaries: tuple = ()
    # For `step` without boundaries: fractions of training at which the rate is multiplied
    # by `step_factor` (Huang et al. 2017: divide by 10 at 50% and 75%).
    step_at: tuple = (0.5, 0.75)
    step_every: float = 0
    step_factor: float = 0.1
    warmup: float = 0
    warmup_learning_rate: float | None = None  # None: a linear ramp from 0
    warmup_until_error: float | None = None
    plateau_patience: int = 5
    plateau_reductions: int = 3
    label_smoothing: float = 0.0
    dropout: float | None = None
    augment: tuple = ("crop", "flip")
    loss: str = "ce"
    # Segmentation: each class's weight in the per-pixel loss (empty: all 1), as PyTorch's
    # CrossEntropyLoss(weight=...): the pipeline folds them into the pixel weights.
    class_weights: tuple = ()
    # {"decay": d, "warmup": bool}: the weights' exponential moving average (None: none).
    ema: dict | None = None
    drop_path: float = 0.0
    drop_path_rule: str = "linear"
    preset: str = ""
    dataset: str = ""
    dataset_size: int = 0
    departures: tuple = ()
    # (unit, length) of the recipe when an override changed the run's length.
    scaled_from: tuple = ()

    @property
    def epochs(self) -> int:
        """The run's length in epochs (iterations at the paper's batch over its dataset,
        rounded; 1000 steps an epoch when the recipe does not give the dataset size)."""
        if self.unit == "epochs":
            return int(math.ceil(self.length))
        per_epoch = self.dataset_size / self.batch_size if self.dataset_size else 1000
        return max(1, int(round(self.length / per_epoch)))

    @property
    def iterations(self) -> int | None:
        """The run's length in iterations when the recipe counts in iterations."""
        return int(self.length) if self.unit == "iterations" else None

    def to_dict(self) -> dict:
        """The settings as the recipe writes them (the run's identity, resume compares it)."""
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        unit, length = data.pop("unit"), data.pop("length")
        data.pop("scaled_from")
        return {**data, unit: length}


def _number(value) -> bool:
    """A finite int or float: `.inf` (YAML) or `inf` would train to a NaN loss."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(value, accepts) -> bool:
    return isinstance(value, (list, tuple)) and all(_number(x) and accepts(x) for x in value)


def _optional(accepts):
    return lambda v: v is None or accepts(v)


def _ema_problem(value) -> str | None:
    """None when `value` is a good `ema` setting (None, or {decay, warmup?})."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"decay", "warmup"} or "decay" not in value:
        return (f"ema = {value!r}: expected {{decay: d}} with d in (0, 1), optionally "
                "warmup: true (or null for none).")
    if not (_number(value["decay"]) and 0 < value["decay"] < 1):
        return f"ema.decay = {value['decay']!r}: expected a number in (0, 1) (e.g. 0.9998)."
    if not isinstance(value.get("warmup", False), bool):
        return f"ema.warmup = {value['warmup']!r}: expected true or false."
    return None


def soft_targets(config: "TrainingConfig") -> bool:
    """Whether the run's training batches carry soft (mixed) targets."""
    return any((augment_item(item) or ("",))[0] in MIXING for item in config.augment)


# setting -> (accepts(value) -> bool, what it expects). The docs generator prints the second.
CHECKS: dict[str, tuple[Callable, str]] = {
    "source": (lambda v: isinstance(v, str), "a string (the paper and section)"),
    "optimizer": (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "learning_rate": (lambda v: _number(v) and v > 0, "a number > 0"),
    "momentum": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "nesterov": (lambda v: isinstance(v, bool), "true or false"),
    "weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "weight_decay_mode": (lambda v: v in WEIGHT_DECAY_MODES, f"one of {', '.join(WEIGHT_DECAY_MODES)}"),
    "batch_size": (lambda v: _integer(v) and v >= 1, "a positive integer"),
    "epochs": (lambda v: _integer(v) and v >= 1, "a positive integer"),
    "iterations": (lambda v: _integer(v) and v >= 1, "a positive integer"),
    "schedule": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
    "boundaries": (lambda v: _numbers(v, lambda x: x > 0) and list(v) == sorted(set(v)),
                   "an increasing list of numbers > 0 (in the run's unit)"),
    "step_at": (lambda v: _numbers(v, lambda x: 0 < x < 1), "a list of fractions in (0, 1)"),
    "step_every": (lambda v: _number(v) and v >= 0, "a number >= 0 (in the run's unit)"),
    "step_factor": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "warmup": (lambda v: _number(v) and v >= 0, "a number >= 0 (in the run's unit)"),
    "warmup_learning_rate": (_optional(lambda v: _number(v) and v > 0), "a number > 0"),
    "warmup_until_error": (_optional(lambda v: _number(v) and 0 < v < 1), "a number in (0, 1)"),
    "plateau_patience": (lambda v: _integer(v) and v >= 1, "a positive integer (epochs)"),
    "plateau_reductions": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "label_smoothing": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "dropout": (_optional(lambda v: _number(v) and 0 <= v < 1), "a number in [0, 1)"),
    "augment": (lambda v: augment_problem(v) is None,
                f"a list of {', '.join(AUGMENTATIONS)}, each a name or a one-key mapping of its "
                "options ({randaugment: {n: 2, m: 9}}, {mixup: {alpha: 0.2}}, "
                "{cutmix: {alpha: 1.0, switch: 0.5}}, {random_erasing: {p: 0.25}})"),
    "loss": (lambda v: v in LOSSES, f"one of {', '.join(LOSSES)}"),
    "class_weights": (lambda v: _numbers(v, lambda x: x >= 0) and any(x > 0 for x in v),
                      "a list of numbers >= 0, one per class, not all 0"),
    "ema": (lambda v: _ema_problem(v) is None,
            "{decay: d} with d in (0, 1), optionally warmup: true; or null"),
    "drop_path": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "drop_path_rule": (lambda v: v in DROP_PATH_RULES, f"one of {', '.join(DROP_PATH_RULES)}"),
    "preset": (lambda v: v == "" or preset_problem(v) is None, f"one of {', '.join(PRESETS)}"),
    "dataset": (lambda v: isinstance(v, str), "a string (the paper's dataset, e.g. cifar10)"),
    "dataset_size": (lambda v: _integer(v) and v >= 1,
                     "a positive integer (training images of the paper's dataset)"),
    "departures": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
                   "a list of strings"),
}
_CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "weight_decay_mode": WEIGHT_DECAY_MODES,
            "loss": LOSSES, "drop_path_rule": DROP_PATH_RULES, "preset": tuple(PRESETS)}
# Settings whose own check writes the whole message (the option at fault, not the list).
_OWN_MESSAGE = {"augment": augment_problem, "ema": _ema_problem}


def setting_problem(key: str, value) -> str | None:
    """None when `value` suits the training setting `key`, else the message body."""
    if key not in CHECKS:
        return (f"unknown training setting {key!r}. Known: {', '.join(CHECKS)}."
                + did_you_mean(key, CHECKS))
    accepts, expected = CHECKS[key]
    if key in _OWN_MESSAGE:
        return _OWN_MESSAGE[key](value)
    try:
        ok = accepts(value)
    except TypeError:  # e.g. a mapping tested for membership
        ok = False
    if ok:
        return None
    hint = did_you_mean(value, _CHOICES[key]) if key in _CHOICES and isinstance(value, str) else ""
    return f"{key} = {value!r}: expected {expected}.{hint}"


def combination_problem(values: dict) -> tuple[str, str] | None:
    """(setting, message) for the first rule between settings that `values` breaks: one
    length, boundaries inside the run, a warm-up shorter than it, a weight-decay mode the
    optimizer can do. Settings that are absent take their defaults."""
    if "epochs" in values and "iterations" in values:
        return "iterations", ("give the run's length once, as epochs or as iterations "
                              "(a child recipe removes the inherited one with null).")
    if "boundaries" in values and "step_at" in values:
        return "step_at", "give step boundaries once, as boundaries (in the unit) or step_at (fractions)."
    defaults = TrainingConfig()
    unit = "iterations" if "iterations" in values else "epochs"
    length = values.get(unit, defaults.length)
    get = lambda key: values.get(key, getattr(defaults, key))  # noqa: E731
    boundaries = list(get("boundaries"))
    if boundaries and boundaries[-1] >= length:
        return "boundaries", (f"boundaries = {boundaries}: past the end of training "
                              f"({length} {unit}); each must be < {length}.")
    if get("warmup") >= length:
        return "warmup", f"warmup = {get('warmup')}: not shorter than the run ({length} {unit})."
    if (get("warmup_until_error") is not None or get("warmup_learning_rate") is not None) \
            and not get("warmup"):
        key = "warmup_until_error" if get("warmup_until_error") is not None else "warmup_learning_rate"
        return key, f"{key} needs a warmup length (the longest the warm-up may last, in {unit})."
    if get("warmup") and get("schedule") == "plateau":
        return "warmup", "a plateau schedule has no warm-up here (the rate is Keras' ReduceLROnPlateau's)."
    if get("weight_decay_mode") == "l2" and get("optimizer") in ("adamw", "lamb"):
        return "weight_decay_mode", (f"{get('optimizer')} decays the weights decoupled by definition; use "
                                     "optimizer adam for l2 decay, or weight_decay_mode decoupled.")
    mixing = [name for name in MIXING if any((augment_item(a) or ("",))[0] == name
                                             for a in get("augment"))]
    if mixing and get("loss") == "sparse_ce":
        return "loss", (f"augment {' and '.join(mixing)} gives soft (mixed) targets, which loss "
                        "sparse_ce (integer labels only) cannot take; use loss ce or bce.")
    if unit == "iterations" and bool(get("dataset")) != bool(get("dataset_size")):
        return "dataset_size", ("an iterations-long recipe gives its dataset and dataset_size "
                                "together (so a run on other data keeps the paper's epochs).")
    return None


def normalize(values: dict) -> dict:
    """`augment: crop` means `[crop]`, `augment: none` means `[]` (as `--training augment=none`);
    each augmentation with options is a one-key mapping with every option filled in;
    `ema: 0.999` means `{decay: 0.999, warmup: false}`."""
    values = dict(values)
    if isinstance(values.get("augment"), str):
        values["augment"] = [values["augment"]] if values["augment"] != "none" else []
    if isinstance(values.get("augment"), (list, tuple)) and augment_problem(values["augment"]) is None:
        values["augment"] = [_canonical(item) for item in values["augment"]]
    ema = values.get("ema")
    if _number(ema):
        values["ema"] = {"decay": ema, "warmup": False}
    elif isinstance(ema, dict) and _ema_problem(ema) is None:
        values["ema"] = {"decay": ema["decay"], "warmup": bool(ema.get("warmup", False))}
    return values


def _canonical(item):
    """An `augment` entry as the run records it: a plain name for the option-less ones,
    else {name: {every option}}."""
    name, options = augment_item(item)
    return {name: options} if AUGMENT_OPTIONS[name] else name


def check_settings(values: dict, error: Callable[[str, str], Exception], *,
                   combined: bool = True) -> dict:
    """The settings normalized; raises `error(key, message)` for the first bad one (and,
    when `combined`, for the first rule between them that they break)."""
    values = normalize(values)
    for key, value in values.items():
        problem = setting_problem(key, value)
        if problem:
            raise error(key, problem)
    problem = combination_problem(values) if combined else None
    if problem:
        raise error(*problem)
    return values


def _length(values: dict) -> tuple[str, float]:
    for unit in UNITS:
        if unit in values:
            return unit, values[unit]
    return "epochs", TrainingConfig.length


def training_config(section: dict | None, *, where: str = "training", **overrides) -> TrainingConfig:
    """A checked `TrainingConfig` from a recipe's `training:` section and overrides
    (None values are ignored, so CLI flags that were not given change nothing).

    An override of the length (``epochs`` or ``iterations``) replaces the section's and
    moves the section's boundaries and warm-up to the same fractions of the new length.
    """
    def error(key, message):
        return RecipeError(f"{where}: {message}")

    values = {k: v for k, v in (section or {}).items() if v is not None}
    overrides = check_settings({k: v for k, v in overrides.items() if v is not None}, error,
                               combined=False)
    preset = overrides.pop("preset", None) or values.get("preset")
    if preset:  # the paper's section, then the preset, then the caller's overrides
        values = apply_preset(values, preset)
    scaled_from = ()
    if any(unit in overrides for unit in UNITS):
        old_unit, old_length = _length(values)
        new_unit, new_length = _length(overrides)
        for unit in UNITS:
            values.pop(unit, None)
        for key in SCALED:
            if key in values and key not in overrides:
                scale = new_length / old_length
                value = values[key]
                values[key] = [x * scale for x in value] if isinstance(value, list) else value * scale
        if (old_unit, old_length) != (new_unit, new_length):
            scaled_from = (old_unit, old_length)
    values.update(overrides)
    values = check_settings(values, error)
    unit, length = _length(values)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k not in UNITS}
    return replace(TrainingConfig(), **values, unit=unit, length=length, scaled_from=scaled_from)


__all__ = ["AUGMENTATIONS", "AUGMENT_OPTIONS", "CHECKS", "LOSSES", "MIXING", "OPTIMIZERS",
           "SCHEDULES", "TrainingConfig", "UNITS", "WEIGHT_DECAY_MODES", "augment_item", "augment_label",
           "check_settings", "combination_problem", "setting_problem", "soft_targets",
           "training_config"]
