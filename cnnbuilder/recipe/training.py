"""The recipe's `training:` section: the paper's optimizer, schedule and augmentation.

Pure Python (no TensorFlow), so recipes can be validated and documented cheaply. One table,
`CHECKS`, says what each setting accepts; `check_settings` applies it, for the section when
`load_recipe` reads a recipe (messages with file, line and field) and for the overrides of
`train(training=...)`, `--training k=v` and the tuner (`training_config`), and the `tune:`
section checks its ranges of training settings with the same table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Callable

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.vocabulary import did_you_mean

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("cosine", "step", "constant")
AUGMENTATIONS = ("crop", "flip", "translate")


@dataclass(frozen=True)
class TrainingConfig:
    """The resolved training settings of one run (defaults where the recipe gives none)."""

    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    # For `step`: fractions of training at which the rate is multiplied by `step_factor`
    # (He et al. 2015 divide by 10 at 32k and 48k of 64k iterations: [0.5, 0.75]).
    step_at: tuple = (0.5, 0.75)
    step_factor: float = 0.1
    warmup_epochs: int = 0
    batch_size: int = 128
    epochs: int = 20
    label_smoothing: float = 0.0
    augment: tuple = ("crop", "flip")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["step_at"], data["augment"] = list(self.step_at), list(self.augment)
        return data


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# setting -> (accepts(value) -> bool, what it expects). The docs generator prints the second.
CHECKS: dict[str, tuple[Callable, str]] = {
    "optimizer": (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "learning_rate": (lambda v: _number(v) and v > 0, "a number > 0"),
    "momentum": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "nesterov": (lambda v: isinstance(v, bool), "true or false"),
    "weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "schedule": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
    "step_at": (lambda v: isinstance(v, (list, tuple)) and all(_number(x) and 0 < x < 1 for x in v),
                "a list of fractions in (0, 1)"),
    "step_factor": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "warmup_epochs": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "batch_size": (lambda v: _integer(v) and v >= 1, "a positive integer"),
    "epochs": (lambda v: _integer(v) and v >= 1, "a positive integer"),
    "label_smoothing": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "augment": (lambda v: isinstance(v, (list, tuple)) and all(a in AUGMENTATIONS for a in v),
                f"a list of {', '.join(AUGMENTATIONS)}"),
}
_CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}
assert set(CHECKS) == {f.name for f in fields(TrainingConfig)}


def setting_problem(key: str, value) -> str | None:
    """None when `value` suits the training setting `key`, else the message body."""
    if key not in CHECKS:
        return (f"unknown training setting {key!r}. Known: {', '.join(CHECKS)}."
                + did_you_mean(key, CHECKS))
    accepts, expected = CHECKS[key]
    try:
        ok = accepts(value)
    except TypeError:  # e.g. a mapping tested for membership
        ok = False
    if ok:
        return None
    hint = did_you_mean(value, _CHOICES[key]) if key in _CHOICES and isinstance(value, str) else ""
    return f"{key} = {value!r}: expected {expected}.{hint}"


def normalize(values: dict) -> dict:
    """`augment: crop` means `[crop]`, `augment: none` means `[]` (as `--training augment=none`)."""
    values = dict(values)
    if isinstance(values.get("augment"), str):
        values["augment"] = [values["augment"]] if values["augment"] != "none" else []
    return values


def check_settings(values: dict, error: Callable[[str, str], Exception]) -> dict:
    """The settings normalized; raises `error(key, message)` for the first bad one."""
    values = normalize(values)
    for key, value in values.items():
        problem = setting_problem(key, value)
        if problem:
            raise error(key, problem)
    return values


def training_config(section: dict | None, *, where: str = "training", **overrides) -> TrainingConfig:
    """A checked `TrainingConfig` from a recipe's `training:` section and overrides
    (None values are ignored, so CLI flags that were not given change nothing)."""
    values = {k: v for k, v in (section or {}).items() if v is not None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values = check_settings(values, lambda key, message: RecipeError(f"{where}: {message}"))
    config = replace(TrainingConfig(), **values)
    return replace(config, step_at=tuple(config.step_at), augment=tuple(config.augment))


__all__ = ["AUGMENTATIONS", "CHECKS", "OPTIMIZERS", "SCHEDULES", "TrainingConfig",
           "check_settings", "setting_problem", "training_config"]
