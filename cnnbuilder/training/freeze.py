"""Fine-tuning a run: the weights it starts from, the stages it freezes, their preprocessing.

`FineTuning.create` checks `train(..., weights=, freeze=)` before anything is written:
the weights exist, the frozen stages are the recipe's, and the input normalization is
the one the weights were trained with (`cnnbuilder.model.loading.weights_normalization`:
the recipe's `metadata.preprocessing` for ImageNet weights, the run's record for a run
directory, with the run's recorded channel statistics when that is ``dataset``), which
then goes into `RunSettings.normalization` and from there into the training and
evaluation pipelines, run.json and the exported signature. Its `identity`
joins the run's settings, so a rerun resumes only with the same weights and freezing.

The two-phase recipe of Keras' transfer-learning guide is two runs::

    train("resnet50", data, weights="imagenet", freeze="backbone", output="runs/a")
    train("resnet50", data, weights="runs/a", freeze="stem,conv2", output="runs/b",
          training={"learning_rate": 0.001})
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnbuilder import runs
from cnnbuilder.errors import RecipeError, RunError, WeightsError
from cnnbuilder.model.freeze import check_freeze, freeze, parse_freeze
from cnnbuilder.model.loading import imagenet_file, weights_normalization
from cnnbuilder.model.pretrained.sources import is_pytorch_weights
from cnnbuilder.zoo import load_recipe


@dataclass(frozen=True)
class FineTuning:
    """Where a run's weights come from and what it freezes (both None: from scratch)."""

    weights: str | None = None
    freeze: tuple | None = None
    # The normalization the weights expect; None: the run's own default.
    normalization: str | None = None
    # (mean, std) of a `dataset` normalization: the weights' run's, never recomputed.
    statistics: tuple | None = None
    # The centre crop's share of the resized image the weights were evaluated at (PyTorch
    # world: 224 of 256 = 0.875; a run's recorded one); None: resized straight.
    crop_fraction: float | None = None

    @classmethod
    def create(cls, recipe, plan, weights=None, freeze=None, *,
               keras_model=None) -> "FineTuning":
        """Check `weights` and `freeze` for the loaded `recipe` and its `plan` (the run's;
        both None for a caller's `keras_model`); see the module docstring.

        Raises:
            RecipeError: weights for a Keras model, or a frozen stage the recipe lacks.
            WeightsError: weights that do not exist.
        """
        names = parse_freeze(freeze)
        if weights is None and names is None:
            return cls()
        if keras_model is not None:
            if weights is not None:
                raise RecipeError(f"`weights` are loaded into a recipe build; {keras_model.name} "
                                  "is a Keras model already (load its weights yourself).")
            return cls(None, names)
        pytorch = is_pytorch_weights(weights)
        # A decoder over a backbone (plan.encoder): the weights and the freezing's
        # "backbone" are its encoder's, the backbone recipe's.
        owner = load_recipe(plan.backbone) if plan.encoder else recipe
        if weights == "imagenet":  # the file must be in the Keras cache before a byte is written
            imagenet_file(owner, not plan.encoder, plan.input_shape)
        elif pytorch:  # located by RunSettings.resolve; a file's path made absolute
            weights = str(Path(weights).resolve()) if Path(str(weights)).is_file() else str(weights)
        elif weights is not None:
            if not isinstance(weights, (str, Path)) or not Path(weights).exists():
                raise WeightsError(f"weights {weights!r} not found: give 'imagenet', a weights "
                                   "file (.weights.h5, .h5, .keras) or a run directory.")
            weights = str(Path(weights).resolve())
        if names is not None:
            encoder = _sections(owner.plan(input_shape=plan.input_shape, include_top=False)) \
                if plan.encoder else []
            check_freeze(encoder + _sections(plan), names, recipe.name, encoder=encoder)
        if pytorch:
            normalization, crop_fraction = _pytorch_preprocessing(owner, weights)
        else:
            normalization = weights_normalization(weights, owner)
            crop_fraction = _recorded_crop_fraction(weights) if weights != "imagenet" else None
        statistics = _recorded_statistics(weights) if normalization == "dataset" else None
        return cls(weights, names, normalization, statistics, crop_fraction)

    def identity(self) -> dict:
        """What a rerun must match besides `RunSettings.identity` (None: not used)."""
        return {"weights": self.weights, "freeze": list(self.freeze) if self.freeze else None}

    def apply(self, model: keras.Model) -> tuple:
        """Freeze `model`'s stages (before it is compiled); the frozen stages."""
        return freeze(model, self.freeze)


def _sections(plan) -> list[str]:
    """The plan's sections in order: ``stem``, its stages, ``head``."""
    return list(dict.fromkeys(s.stage if s.section == "stage" else s.section for s in plan.steps))


def _pytorch_preprocessing(recipe, weights) -> tuple:
    """(normalization, crop fraction) PyTorch-world `weights` expect: their source's mean
    and std (``torch`` mode) and evaluation crop (224 of 256: 0.875); (None, None) where
    the recipe has no source to say it."""
    from cnnbuilder.model.pretrained.sources import weights_preprocessing

    preprocessing = weights_preprocessing(recipe.name, weights)
    if not preprocessing:
        return None, None
    return preprocessing["normalization"], preprocessing["crop"] / preprocessing["crop_from"]


def _recorded_crop_fraction(weights) -> float | None:
    """The crop fraction of the run `weights` names (its recorded ``crop_from``), so a
    second fine-tuning phase keeps the first's evaluation transform; None without one."""
    try:
        record = runs.recorded_preprocessing(runs.model_file(weights))
    except (RunError, OSError):  # a weights file, not a run: no record
        return None
    if not isinstance(record, dict) or not record.get("crop_from"):
        return None
    height, width = record["input_shape"][:2]
    return max(height, width) / record["crop_from"]


def _recorded_statistics(weights: str) -> tuple:
    """(mean, std) of the ``dataset`` preprocessing record of the run `weights` names (a
    run directory, or the model.keras inside one)."""
    from cnnbuilder.data.statistics import recorded_statistics

    try:
        return recorded_statistics(runs.recorded_preprocessing(runs.model_file(weights)))
    except Exception as exc:  # noqa: BLE001 - unreadable, or not a dataset record
        raise WeightsError(f"the dataset preprocessing record of the run {weights} cannot be "
                           f"read ({exc}).") from None


__all__ = ["FineTuning"]
