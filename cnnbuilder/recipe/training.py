"""The recipe's `training:` section: the paper's optimizer, schedule and augmentation.

Pure Python (no TensorFlow), so recipes can be validated and documented cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.vocabulary import did_you_mean

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("cosine", "step", "constant")
AUGMENTATIONS = ("crop", "flip", "translate")


@dataclass(frozen=True)
class TrainingConfig:
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


_NUMBER = (int, float)
_CHECKS = {
    "optimizer": (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "learning_rate": (lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool) and v > 0, "a number > 0"),
    "momentum": (lambda v: isinstance(v, _NUMBER) and 0 <= v < 1, "a number in [0, 1)"),
    "nesterov": (lambda v: isinstance(v, bool), "true or false"),
    "weight_decay": (lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool) and v >= 0, "a number >= 0"),
    "schedule": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
    "step_at": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, _NUMBER) and 0 < x < 1 for x in v), "a list of fractions in (0, 1)"),
    "step_factor": (lambda v: isinstance(v, _NUMBER) and 0 < v <= 1, "a number in (0, 1]"),
    "warmup_epochs": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "batch_size": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer"),
    "epochs": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer"),
    "label_smoothing": (lambda v: isinstance(v, _NUMBER) and 0 <= v < 1, "a number in [0, 1)"),
    "augment": (lambda v: isinstance(v, (list, tuple)) and all(a in AUGMENTATIONS for a in v), f"a list of {', '.join(AUGMENTATIONS)}"),
}
assert set(_CHECKS) == {f.name for f in fields(TrainingConfig)}


def training_config(section: dict | None, *, where: str = "training", **overrides) -> TrainingConfig:
    """A checked `TrainingConfig` from a recipe's `training:` section and overrides
    (None values are ignored, so CLI flags that were not given change nothing)."""
    values = dict(section or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(values.get("augment"), str):
        values["augment"] = [values["augment"]] if values["augment"] != "none" else []
    for key, value in values.items():
        if key not in _CHECKS:
            raise RecipeError(
                f"{where}: unknown training setting {key!r}. Known: {', '.join(_CHECKS)}."
                + did_you_mean(key, _CHECKS)
            )
        check, expected = _CHECKS[key]
        if not check(value):
            raise RecipeError(f"{where}.{key} = {value!r}: expected {expected}.")
    config = replace(TrainingConfig(), **values)
    return replace(config, step_at=tuple(config.step_at), augment=tuple(config.augment))
