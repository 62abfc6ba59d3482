"""A run's schedule laid out in optimizer steps, and where the run departs from the paper.

Pure Python: `layout` turns a `TrainingConfig` (counted in the paper's unit) into steps for
one dataset; `departures` lists every place a run differs from the recipe's paper (the
recipe's own notes, the caller's overrides, the dataset's adaptations, a shorter run).
`cnnbuilder show --training` prints both; the training engine builds its schedule and
callbacks from the layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnnbuilder.recipe.presets import PRESETS
from cnnbuilder.recipe.training import TrainingConfig, augment_item, training_config

# Where a dataset needs other augmentation than the paper's. Digits are handwriting: flips
# would turn them into other symbols, and the 4-pixel crop of CIFAR moves an 8x8 digit
# (upscaled to 32x32) too far; small shifts only.
DATASET_AUGMENTATION = {"digits": ("translate",), "digits-seg": ("translate",)}
# The augmentations a dataset's own replaces (the geometric ones of the paper's data); the
# others (RandAugment, mixing, erasing) are kept.
_GEOMETRIC = ("crop", "flip", "translate")


def dataset_augment(dataset: str, augment) -> tuple:
    """The augmentation a run on `dataset` uses when the caller did not choose one: the
    dataset's own geometric augmentation (DATASET_AUGMENTATION) in place of the paper's,
    followed by the paper's (or preset's) other augmentations."""
    if dataset not in DATASET_AUGMENTATION:
        return tuple(augment)
    rest = [a for a in augment if (augment_item(a) or (a,))[0] not in _GEOMETRIC]
    return tuple(DATASET_AUGMENTATION[dataset]) + tuple(rest)


@dataclass(frozen=True)
class Layout:
    """The schedule of one run in optimizer steps.

    `unit`/`length` are what the run counts in (the recipe's, or epochs where an
    iterations-long recipe runs on another dataset); `total_steps` is where training
    stops, `epochs` how many (the last maybe partial) epochs `model.fit` runs.
    """

    unit: str
    length: float
    steps_per_epoch: int
    total_steps: int
    epochs: int
    boundaries: tuple  # steps at which a step schedule multiplies the rate by its factor
    warmup_steps: int
    unit_boundaries: tuple = ()  # the same boundaries in `unit`
    warmup: float = 0  # the warm-up in `unit`
    notes: tuple = ()

    def to_steps(self, amount: float) -> int:
        """`amount` in the run's unit, in optimizer steps."""
        return int(round(amount * (self.steps_per_epoch if self.unit == "epochs" else 1)))


def same_dataset(name: str, paper_dataset: str) -> bool:
    """Whether the run's dataset (``tfds:cifar10``, ``digits``) is the paper's (``cifar10``)."""
    base = name.split(":", 1)[-1].split("/")[0].split(":")[0].lower()
    return bool(paper_dataset) and base == paper_dataset.lower()


def layout(config: TrainingConfig, steps_per_epoch: int, dataset: str = "") -> Layout:
    """The run of `config` over epochs of `steps_per_epoch` steps on `dataset`.

    An iterations-long recipe runs its iterations on its own dataset; on another one it
    runs as many epochs as the paper did (iterations · batch / the paper's training
    images) with the boundaries and warm-up at the same fractions of training.
    """
    notes = []
    unit, length = config.unit, config.length
    boundaries, warmup, every = list(config.boundaries), config.warmup, config.step_every
    if unit == "iterations" and config.dataset and not same_dataset(dataset, config.dataset):
        epochs = length * config.batch_size / config.dataset_size
        scale = epochs / length
        boundaries, warmup, every = [b * scale for b in boundaries], warmup * scale, every * scale
        notes.append(
            f"length: {length:g} iterations of {config.dataset} ({config.dataset_size:,} training "
            f"images at batch {config.batch_size}) are {epochs:.4g} epochs; on {dataset or 'this data'} "
            f"the run is {epochs:.4g} epochs, the schedule at the same fractions of training")
        unit, length = "epochs", epochs
    per_unit = steps_per_epoch if unit == "epochs" else 1
    total = max(1, int(round(length * per_unit)))
    if config.schedule == "exponential":  # ×step_factor after every unit (Jégou et al.: 0.995 per epoch)
        every = 1 if unit == config.unit else length / config.length  # one recipe unit
        boundaries = [every * i for i in range(1, int(math.ceil(length / every)))]
    elif config.schedule == "step":
        if every:
            boundaries = [every * i for i in range(1, int(math.ceil(length / every)))]
        elif not boundaries:
            boundaries = [f * length for f in config.step_at]
    else:
        boundaries = []
    steps = tuple(sorted({min(total - 1, max(1, int(round(b * per_unit)))) for b in boundaries}))
    warmup_steps = int(round(warmup * per_unit))
    if warmup and not warmup_steps:
        warmup_steps = 1
        notes.append(f"warm-up: {warmup:.3g} {unit} is under one step here; it lasts one step")
    return Layout(unit, length, steps_per_epoch, total, int(math.ceil(total / steps_per_epoch)),
                  steps, warmup_steps, tuple(round(b, 6) for b in boundaries), round(warmup, 6),
                  tuple(notes))


def _length_of(section: dict) -> tuple:
    """(unit, length) a `training:` section gives (the default 20 epochs without one)."""
    for unit in ("epochs", "iterations"):
        if unit in section:
            return unit, section[unit]
    return "epochs", TrainingConfig.length


def _number(value):
    """`value` as an int where it is a whole number (150.0 -> 150), for the printed settings."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def describe(section: dict, *, name: str = "", overrides: dict | None = None, dataset: str = "",
             steps_per_epoch: int | None = None, normalization: str = "unit",
             where: str = "training overrides") -> dict:
    """The resolved training of a run, with the source of each setting and every departure
    from the paper: the keys of DESIGN.md §5 (`cnnbuilder show --training --json`) plus
    `sources` (setting -> where its value comes from) and `departures`.

    Args:
        section: the recipe's checked `training:` section (`Recipe.training`).
        name: the recipe's name, for the messages.
        overrides: the caller's settings (`--training k=v`, `train(training=...)`).
        dataset: the run's dataset name ("" when not known: the paper's own).
        steps_per_epoch: optimizer steps an epoch over `dataset` (None: not known).
        normalization: how pixels are scaled (`RunSettings.normalization`).
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    config = training_config(section, where=where, **overrides)
    overrides = {k: config.to_dict().get(k, v) for k, v in overrides.items()}
    augment = config.augment
    adapted = "augment" not in overrides and dataset in DATASET_AUGMENTATION
    if adapted:
        augment = dataset_augment(dataset, config.augment)
    preset = config.preset
    from_preset = {k for k, v in PRESETS[preset]["settings"].items() if v is not None} if preset else set()
    if steps_per_epoch is None:  # the paper's data: epochs of its dataset, else no steps
        steps_per_epoch = -(-config.dataset_size // config.batch_size) if config.dataset_size else 1
    plan = layout(config, steps_per_epoch, dataset or config.dataset)
    paper = (section.get("source") if config.preset else config.source) or "the recipe"
    sources = {}
    for key in CHECKS_SHOWN:
        keys = ("epochs", "iterations") if key == "length" else (key,)
        if any(k in overrides for k in keys):
            sources[key] = "override"
        elif key == "augment" and adapted:
            sources[key] = f"dataset {dataset}" + (f" and preset {preset}" if "augment" in from_preset else "")
        elif any(k in from_preset for k in keys) or (key == "preset" and preset):
            sources[key] = f"preset {preset}"  # its paper and table: `source`
        elif any(k in section for k in keys):
            sources[key] = paper
        else:
            sources[key] = "default"
    departures = list(config.departures)
    if not section:
        departures.append(f"{name or 'this recipe'} has no training: section: cnnbuilder's "
                          "generic defaults, not a paper's training")
    defaults = TrainingConfig().to_dict()
    for key, value in overrides.items():
        if key in ("epochs", "iterations"):
            unit, length = _length_of(section)
            before, origin = f"{_number(length)} {unit}", "the recipe" if section else "default"
        else:
            before = section.get(key, defaults.get(key))
            before = repr(None if key == "preset" and not before else before)
            origin = "the recipe" if key in section else "default"
        departures.append(f"{key}: {value!r} (override; {origin}: {before})")
    if adapted and tuple(augment) != tuple(config.augment):
        departures.append(f"augment: {list(augment)} for {dataset} (the {'preset' if preset else 'recipe'}: "
                          f"{list(config.augment)}); flips and CIFAR's 4-pixel crops would turn "
                          "digits into other symbols")
    if config.scaled_from:
        unit, length = config.scaled_from
        departures.append(f"length: {_number(config.length)} {config.unit} instead of the recipe's "
                          f"{_number(length)} {unit}; boundaries and warm-up at the same fractions of training")
    departures.extend(plan.notes)
    warmup = 0
    if plan.warmup:
        warmup = {"length": _number(plan.warmup), "learning_rate": config.warmup_learning_rate,
                  "until_error": config.warmup_until_error}
    schedule = {"type": config.schedule, "boundaries": [_number(b) for b in plan.unit_boundaries],
                "factor": config.step_factor, "warmup": warmup}
    if config.schedule == "exponential":  # a decay after every unit: the rule, not the list
        schedule.update(boundaries=[], every=_number(plan.unit_boundaries[0] if plan.unit_boundaries else plan.length))
    if config.schedule == "plateau":
        schedule.update(patience=config.plateau_patience, reductions=config.plateau_reductions)
    return {
        "optimizer": config.optimizer, "learning_rate": config.learning_rate,
        "momentum": config.momentum, "nesterov": config.nesterov,
        "weight_decay": config.weight_decay, "weight_decay_mode": config.weight_decay_mode,
        "batch_size": config.batch_size, "unit": plan.unit, "length": _number(round(plan.length, 6)),
        "schedule": schedule, "augment": list(augment), "label_smoothing": config.label_smoothing,
        "dropout": config.dropout, "preprocessing": normalization, "source": config.source,
        "loss": config.loss, "ema": config.ema, "drop_path": config.drop_path,
        "drop_path_rule": config.drop_path_rule, "preset": config.preset or None,
        "sources": sources, "departures": departures,
    }


# The settings `describe` gives a source for (`length` is epochs or iterations).
CHECKS_SHOWN = ("optimizer", "learning_rate", "momentum", "nesterov", "weight_decay",
                "weight_decay_mode", "batch_size", "length", "schedule", "augment",
                "label_smoothing", "dropout", "loss", "ema", "drop_path", "drop_path_rule", "preset")


__all__ = ["DATASET_AUGMENTATION", "Layout", "dataset_augment", "describe", "layout", "same_dataset"]
