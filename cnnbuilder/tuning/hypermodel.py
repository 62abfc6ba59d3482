"""`HyperRecipe`: a recipe's `tune:` space as a `keras_tuner.HyperModel`.

A trial is a training job of the engine (`cnnbuilder.training.prepare`): its values become
the job's recipe params and training settings; `build(hp)` builds the job's network,
checks it against the parameter budget and compiles it once, with the learning-rate
schedule laid out over the data's steps; `fit(hp, model, data)` trains it through the same
job. Given its dataset (``data=``), a `HyperRecipe` compiles each model exactly once; a
plain KerasTuner tuner can use it too::

    tuner = keras_tuner.RandomSearch(hypermodel=HyperRecipe("densenet_bc100_k12", data=data),
                                     objective="val_accuracy", max_trials=10)
    tuner.search(data, epochs=5)
"""

from __future__ import annotations

import re
import weakref

import keras
import keras_tuner as kt
import numpy as np

from cnnbuilder import training as engine
from cnnbuilder.data import Dataset
from cnnbuilder.errors import DataError, RecipeError, TrialSkipped
from cnnbuilder.model import cost
from cnnbuilder.recipe import checks
from cnnbuilder.recipe.search_space import SearchSpace, check_reachable, recipe_space
from cnnbuilder.zoo import load_recipe

# `Job.fit` takes these `model.fit` arguments; KerasTuner passes them to `HyperModel.fit`.
FIT_ARGUMENTS = ("callbacks", "initial_epoch", "epochs", "verbose")


class HyperRecipe(kt.HyperModel):
    """A recipe's search space as a `keras_tuner.HyperModel`.

    Args:
        recipe: a shipped name, a .yaml path, a dict or a `Recipe`.
        input_shape, classes: of the networks built (default: the recipe's, and the
            dataset's classes when `data` is given).
        data: the `cnnbuilder.data.Dataset` the trials train on; `build` then compiles
            with the schedule over its steps and `fit` trains without compiling again.
            Without it, `build` compiles for a dataset of unknown size (the engine's
            steps-per-epoch rule) and `fit` compiles again for the `Dataset` it is given.
        space: a search space in the `tune:` syntax, instead of the recipe's own section.
        params: recipe params held fixed (removed from the space when it tunes them).
        training: training settings held fixed (e.g. ``{"batch_size": 64}``), over the
            recipe's `training:` section; removed from the space when it tunes them.
        epochs: epochs of a trial (its learning-rate schedule spans them); default: the
            recipe's `training.epochs`.
        max_params: a model with more parameters is skipped (`TrialSkipped`) before it
            is compiled or trained.
        augment: augmentations of the training split (default: the engine's, as
            `cnnbuilder.train` chooses them for the dataset).
        seed: of the training pipeline's shuffling and augmentation.

    `build(hp)` raises `cnnbuilder.errors.TrialSkipped` when the recipe rejects the values
    or the model is over budget (the tuner records the trial as skipped).
    """

    def __init__(self, recipe, input_shape=None, classes=None, *, data: Dataset | None = None,
                 space=None, params=None, training=None, epochs=None, max_params=None,
                 augment=None, seed: int = 0, name=None, tunable=True):
        source, self.recipe = recipe, load_recipe(recipe)
        # The keywords checked as build's and the command line's are (`recipe.checks`).
        input_shape, classes = checks.input_shape(input_shape), checks.classes(classes)
        seed = checks.seed(seed)
        super().__init__(name=name or self.recipe.name, tunable=tunable)
        self.input_shape = (tuple(input_shape) if input_shape is not None
                            else self.recipe.default_input_shape)
        if data is not None and classes is not None and int(classes) != data.num_classes:
            raise DataError(f"classes={classes} but the dataset {data.name} has "
                            f"{data.num_classes} classes.")
        self.classes = (data.num_classes if data is not None else
                        int(classes) if classes is not None else self.recipe.default_classes)
        self.data = data if data is not None else _unknown_data(self.input_shape, self.classes)
        self.fixed_params = dict(params or {})
        self.fixed_training = {k: v for k, v in (training or {}).items() if v is not None}
        self._refuse_unknown_params()
        self.max_params = max_params
        self.augment = augment
        self.seed = seed
        self.epochs = None  # the recipe's until the fixed settings are checked
        self.epochs = int(epochs) if epochs is not None else self.job({}, {}).config.epochs
        self.full_space = recipe_space(source, space)
        self.space: SearchSpace = self.full_space.without(self.fixed_params, self.fixed_training)
        check_reachable(self.space, self.check)
        self._jobs = weakref.WeakKeyDictionary()  # compiled model -> the job it was compiled for

    def _refuse_unknown_params(self) -> None:
        declared = self.recipe.document.data.get("params") or {}
        unknown = [k for k in self.fixed_params if k not in declared]
        if unknown:
            from cnnbuilder.recipe.vocabulary import did_you_mean

            raise RecipeError(
                f"{self.recipe.name} has no param {unknown[0]!r} (its params: "
                f"{', '.join(sorted(declared)) or 'none'})." + did_you_mean(unknown[0], declared)
            )

    # -- values

    def declare_hyperparameters(self, hp) -> dict:
        """Register every dimension in `hp`; returns the values `hp` holds for them."""
        values = {}
        for dimension in self.space:
            method, kwargs = dimension.keras_tuner()
            values[dimension.key] = getattr(hp, method)(**kwargs)
        return values

    def values(self, hp) -> tuple[dict, dict]:
        """(recipe params, training settings) of one trial, decoded, fixed ones included."""
        params, training = self.space.split(self.declare_hyperparameters(hp))
        return {**self.fixed_params, **params}, {**self.fixed_training, **training}

    def hyperparameters(self, hp_or_values) -> dict:
        """The tuned values as the recipe writes them (params, then a `training` map)."""
        values = getattr(hp_or_values, "values", hp_or_values)
        return self.space.hyperparameters(values)

    def model_name(self, hyperparameters: dict) -> str:
        """The name of a trial's model: the recipe's, then the tuned values
        (`resnet20_depth38_width32`), in the characters Keras accepts in a name."""
        parts = [self.recipe.name]
        flat = dict(hyperparameters)
        flat.update(flat.pop("training", None) or {})
        for key, value in flat.items():
            text = "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            parts.append(re.sub(r"[^A-Za-z0-9_.-]", "-", f"{key}{text}"))
        return "_".join(parts)

    def training_settings(self, training: dict | None = None) -> dict:
        """The engine's `training` overrides of a trial: the fixed and tuned settings, the
        trial's epochs and the chosen augmentation."""
        settings = {**self.fixed_training, **(training or {})}
        if self.epochs is not None:
            settings["epochs"] = self.epochs
        if self.augment is not None:
            settings["augment"] = self.augment
        return settings

    def job(self, params: dict, training: dict, data: Dataset | None = None) -> engine.Job:
        """The engine's job of one trial (fixed values included), on `data` (default: the
        HyperRecipe's). Raises RecipeError when the recipe rejects the values."""
        data = data if data is not None else self.data
        # Without the data there are no statistics to normalize with: the stand-in job only
        # builds and compiles, and `fit` prepares the trial again on the real data.
        channels = int(self.input_shape[-1])
        neutral = ((0.0,) * channels, (1.0,) * channels) if data.name == _UNKNOWN else None
        return engine.prepare(self.recipe, data, params={**self.fixed_params, **params},
                              input_shape=self.input_shape,
                              training=self.training_settings(training), seed=self.seed,
                              statistics=neutral)

    def check(self, params: dict, training: dict | None = None) -> str | None:
        """None when the values give a valid network and settings, else the recipe's reason."""
        try:
            self.job(params, training or {})
        except RecipeError as exc:
            return str(exc)
        return None

    # -- HyperModel

    def build(self, hp):
        """The trial's network, compiled once for its job; TrialSkipped (nothing built)
        when the recipe rejects the values, or (nothing compiled) over `max_params`."""
        try:
            job = self.job(*self.values(hp))
        except RecipeError as exc:
            raise TrialSkipped(str(exc)) from None
        if self.max_params is not None:
            # Counted on a skeleton (no weight allocated): a trial over the budget costs
            # nothing but its graph.
            with cost.skeleton_scope():
                try:
                    count = int(job.build().count_params())
                finally:
                    cost.discard_skeleton()
            if count > self.max_params:
                raise TrialSkipped(f"{count:,} parameters, over the budget of {self.max_params:,} "
                                   "(max_params)", params=count)
        try:
            model = job.build()
        except RecipeError as exc:  # over cnnbuilder's bound on any model (model.cost)
            raise TrialSkipped(str(exc)) from None
        model.name = self.model_name(self.hyperparameters(hp))
        job.compile(model)
        self._jobs[model] = job
        return model

    def fit(self, hp, model, *args, **kwargs):
        """Train `model` on a `cnnbuilder.data.Dataset` through the trial's job (batch size
        and augmentation from the trial; compiled again only when `model` was compiled for
        other data), or on what `model.fit` accepts."""
        data = args[0] if args else kwargs.pop("x", None)
        job = self._jobs.get(model)
        if isinstance(data, Dataset):
            if job is None or job.data is not data:
                job = self.job(*self.values(hp), data=data)
                job.compile(model)  # the schedule over this dataset's steps
                self._jobs[model] = job
            unknown = sorted(set(kwargs) - set(FIT_ARGUMENTS))
            if unknown:
                raise TypeError(f"HyperRecipe.fit on a Dataset takes {', '.join(FIT_ARGUMENTS)}; "
                                f"got {', '.join(unknown)}.")
            return job.fit(model, **kwargs)
        config = (job or self.job(*self.values(hp))).config
        if data is not None:
            args = (data, *args[1:])
        if args and not _is_batched(args[0]):
            kwargs.setdefault("batch_size", config.batch_size)
        kwargs.setdefault("epochs", config.epochs)
        return model.fit(*args, **kwargs)


def _is_batched(x) -> bool:
    import tensorflow as tf

    return (isinstance(x, tf.data.Dataset) or hasattr(x, "__next__")
            or isinstance(x, keras.utils.PyDataset))


_UNKNOWN = "unknown"  # the name of the stand-in dataset of a HyperRecipe given no data


def _unknown_data(input_shape, classes: int) -> Dataset:
    """A dataset of `classes` classes and no examples: what the engine's settings need
    when the data is not known yet (its steps per epoch are the engine's default)."""
    height, width, channels = (int(d) if d else 1 for d in input_shape)
    empty = (np.zeros((0, height, width, channels), np.uint8), np.zeros((0,), np.int64))
    return Dataset(name=_UNKNOWN, class_names=[str(i) for i in range(classes)],
                   image_shape=(height, width, channels), train=empty, validation=empty,
                   test=empty)
