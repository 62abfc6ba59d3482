"""`RunSettings`: everything a training run is, checked before anything is written.

The settings come from the recipe's `training:` section (the paper's training) with the
caller's overrides on top; the dataset decides the default augmentation only where the
recipe's would be wrong for it (see `DATASET_AUGMENTATION`). The input normalization
(`run_normalization`) is the one the starting weights were trained with, else the
recipe's ``metadata.preprocessing: dataset`` (the training split's channel statistics,
computed once and recorded), else [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras

from cnnbuilder.data import Dataset
from cnnbuilder.data import preprocessing_config
from cnnbuilder.data.pipeline import batch_count
from cnnbuilder.data.preprocess import DATASET
from cnnbuilder.data.statistics import channel_statistics
from cnnbuilder.errors import DataError, RecipeError, WeightsError
from cnnbuilder.model import cost
from cnnbuilder.model.pretrained.sources import is_pytorch_weights
from cnnbuilder.recipe.presets import fit_problem
from cnnbuilder.recipe.training import (MIXING, SEGMENTATION_LOSSES, TrainingConfig, augment_item,
                                        training_config)
from cnnbuilder.recipe.training_plan import dataset_augment, describe
from cnnbuilder.training.freeze import FineTuning
from cnnbuilder.zoo import load_recipe


# Augmentations that act on whole images or their labels (mixing, RandAugment's
# geometric ops on the image alone): not taken by a segmentation run.
SEGMENTATION_UNSUPPORTED = (*MIXING, "randaugment")


def default_augment(dataset_name: str, config: TrainingConfig) -> tuple:
    """The augmentation of a run whose caller did not choose one (the dataset's own geometric
    augmentation where the paper's would be wrong for it, and the rest of the config's)."""
    return dataset_augment(dataset_name, config.augment)


def steps_per_epoch(data: Dataset, batch_size: int, devices: int = 1) -> int:
    """Optimizer steps in one epoch over the training split (the last batch may be
    partial; over several `devices` it must hold at least one row per device, see
    `cnnbuilder.data.pipeline.shard_batches`); 1000 where a streamed split does not know
    its size."""
    size = data.sizes["train"]
    if not size:
        return 1000
    return max(1, batch_count(size, batch_size, devices))


@dataclass(frozen=True)
class RunSettings:
    """A checked training run: the network, its data and how it is trained.

    Resolved once, at the edge (`RunSettings.resolve`, called by `train`, `prepare` and
    every tuning trial), and passed down whole: the recipe is loaded and planned here and
    nowhere after, and deeper code reads these fields rather than deriving them again.
    """

    recipe: Any                  # the loaded `Recipe`; None for a caller's Keras model
    model: Any                   # the caller's `keras.Model`; None for a recipe
    plan: Any                    # the recipe's `Plan` at this input shape and class count
    recipe_name: str
    recipe_params: dict          # every param as resolved (defaults included)
    params_given: dict           # the params the caller changed (`--set`, params=)
    input_shape: tuple
    classes: int
    config: TrainingConfig
    augment: tuple
    dataset: str
    class_names: tuple
    seed: int
    mixed_precision: bool
    jit: bool
    fine_tuning: FineTuning
    overrides: dict              # the caller's training overrides, as given
    data_options: dict           # how the dataset was loaded (run.json: export reloads it)
    # How pixels are scaled after resizing (cnnbuilder.data.preprocess): the training
    # pipeline and the exported signature both read it from here; `mean` and `std` are
    # the `dataset` mode's channel statistics of the training split.
    normalization: str = "unit"
    mean: tuple | None = None
    std: tuple | None = None
    # The shorter side `preprocess` resizes to before the centre crop: the evaluation
    # transform of the starting weights (torchvision's 256 → 224), scaled to the run's
    # input; None resizes straight (every run without such weights, and segmentation).
    crop_from: int | None = None

    @classmethod
    def resolve(cls, recipe_or_model, data: Dataset, *, params: dict | None = None,
                input_shape=None, training: dict | None = None, seed: int = 0,
                mixed_precision: bool = False, jit: bool = False, weights=None, freeze=None,
                statistics=None, data_options: dict | None = None) -> "RunSettings":
        """Check a recipe (or a Keras model) against the data, the training overrides and
        the fine-tuning request, before anything is built or written.

        `training` overrides the recipe's `training:` section (None values are ignored);
        an ``augment`` among them replaces the dataset's default augmentation. The input
        normalization follows the weights, else the recipe (`run_normalization`); a
        ``dataset`` normalization reads the training split once for its channel
        statistics unless the weights' run or `statistics` (mean, std) give them.
        """
        training = {k: v for k, v in (training or {}).items() if v is not None}
        params = dict(params or {})
        model = recipe_or_model if isinstance(recipe_or_model, keras.Model) else None
        recipe = plan = None
        if model is not None:
            shape = tuple(model.inputs[0].shape[1:])
            outputs = model.outputs[0].shape[-1]
            if outputs != data.num_classes:
                raise DataError(f"the model {model.name} has {outputs} outputs but the dataset "
                                f"{data.name} has {data.num_classes} classes.")
            name = model.name
            config = training_config({}, where=f"training overrides of {name}", **training)
            for key in ("dropout", "drop_path"):
                if (config.dropout is not None) if key == "dropout" else config.drop_path:
                    raise RecipeError(f"training overrides of {name}: {key} = {getattr(config, key)}: "
                                      f"a Keras model has no {key} layers to set; add them to it.")
            resolved = {}
        else:
            recipe = load_recipe(recipe_or_model)
            backbone = _backbone_of(recipe, params)
            if is_pytorch_weights(weights) and backbone:
                # A decoder over a backbone: the weights are the backbone's, and may need
                # its variant (resnet50's torchvision weights: resnet50_tv).
                params = {**params, "backbone": pytorch_network(load_recipe(backbone), weights, {})[0].name}
            elif is_pytorch_weights(weights):
                # PyTorch-world weights need their network (resnet50's torchvision weights:
                # resnet50_tv) and its params; the file must be there before a byte is written.
                recipe, params = pytorch_network(recipe, weights, params)
            shape = tuple(input_shape) if input_shape else recipe.default_input_shape
            name = recipe.name
            config = training_config(recipe.training, where=f"training overrides of {name}",
                                     **training)
            if training.get("preset") and fit_problem(training["preset"], recipe.family, name):
                raise RecipeError(f"training overrides of {name}: "
                                  + fit_problem(training["preset"], recipe.family, name))
            # Checks params and shapes before anything is written.
            plan = recipe.plan(input_shape=shape, classes=data.num_classes,
                               **_with_dropout(recipe, config, params))
            plan = _with_drop_path(recipe, plan, config)
            resolved = plan.params
            # The model's cost against the bound, before the data is read at its size.
            with cost.batch_size_for_bound(config.batch_size):
                cost.check_plan(recipe, plan, params=resolved)
        augment = config.augment if "augment" in training else default_augment(data.name, config)
        _check_task(recipe, model, data, config, augment, name)
        fine_tuning = FineTuning.create(recipe, plan, weights, freeze, keras_model=model)
        normalization = run_normalization(recipe, data, shape, weights_mode=fine_tuning.normalization,
                                          statistics=fine_tuning.statistics or statistics)
        crop_from = None
        if fine_tuning.crop_fraction and network_task(recipe, model) == "classification" \
                and None not in shape[:2]:
            # timm's rule (resolve_data_config: scale_size = floor(size / crop_pct)).
            # (The 1e-9: a fraction read back from a record, 224 / 256, divides exactly.)
            crop_from = int(math.floor(max(shape[:2]) / fine_tuning.crop_fraction + 1e-9))
        return cls(recipe, model, plan, name, dict(resolved), params, shape, data.num_classes,
                   config, tuple(augment), data.name, tuple(data.class_names), seed,
                   mixed_precision, jit, fine_tuning, training, dict(data_options or {}),
                   **normalization, crop_from=crop_from)

    @property
    def task(self) -> str:
        """``classification`` or ``segmentation``: the recipe's `task:` (a Keras model's
        from its output: per-pixel classes are rank 4)."""
        return network_task(self.recipe, self.model)

    def pipeline_augment(self) -> list:
        """The training pipeline's augmentation entries: the mixing ones (mixup, CutMix)
        with the class count their soft targets are one-hot over."""
        entries = []
        for item in self.augment:
            name, options = augment_item(item)
            entries.append({name: {**options, "classes": self.classes}} if name in MIXING else item)
        return entries

    def identity(self) -> dict:
        """What must match for a rerun to continue this run rather than start over."""
        return {
            "recipe": self.recipe_name, "params": self.recipe_params,
            "input_shape": list(self.input_shape), "dataset": self.dataset,
            "training": self.config.to_dict(), "augment": list(self.augment), "seed": self.seed,
            "normalization": self.normalization_args(), **self.fine_tuning.identity(),
        }

    def normalization_args(self) -> dict:
        """The normalization keywords of `make_pipeline` and `preprocess` for this run
        (with ``crop_from`` where the starting weights' evaluation transform crops)."""
        crop = {} if self.crop_from is None else {"crop_from": self.crop_from}
        if self.normalization != DATASET:
            return {"normalization": self.normalization, **crop}
        return {"normalization": self.normalization, "mean": list(self.mean),
                "std": list(self.std), **crop}

    def resolved_training(self, steps_per_epoch: int) -> dict:
        """The training as this run does it (`show --training`'s form: every setting with
        its source, and each departure from the paper's)."""
        return describe(self.recipe.training if self.recipe else {}, name=self.recipe_name,
                        overrides=self.overrides, dataset=self.dataset,
                        steps_per_epoch=steps_per_epoch, normalization=self.normalization)

    def record(self) -> dict:
        """What run.json holds besides the identity: what serving and resuming need."""
        return {
            "task": self.task,
            "class_names": list(self.class_names),
            "classes": self.classes,
            "params_given": self.params_given,
            # Everything serving needs to turn a raw uint8 image into this model's input
            # (read back by cnnbuilder.data.preprocess_from_config).
            "preprocessing": preprocessing_config(self.input_shape, **self.normalization_args()),
            "data_options": self.data_options,
            "mixed_precision": self.mixed_precision,
            "jit": self.jit,
            "backend": keras.backend.backend(),
            "versions": _versions(),
        }


def network_task(recipe, model=None) -> str:
    """The task of a recipe (its `task:`) or of a Keras model (segmentation when its
    output is a per-pixel map, rank 4)."""
    if recipe is not None:
        return getattr(recipe, "task", "classification")
    return "segmentation" if len(model.outputs[0].shape) == 4 else "classification"


def _check_task(recipe, model, data: Dataset, config: TrainingConfig, augment, name: str) -> None:
    """The network's task against the dataset's (DataError: a classifier on masks) and the
    training's loss and augmentation against the task (RecipeError)."""
    task, data_task = network_task(recipe, model), getattr(data, "task", "classification")
    if task != data_task:
        hint = ("e.g. --dataset digits-seg, or a folder of images/ and masks/"
                if task == "segmentation" else "e.g. --dataset digits, or a folder of class folders")
        raise DataError(f"{name} is a {task} network but the dataset {data.name} is a "
                        f"{data_task} dataset; give it {task} data ({hint}).")
    where = f"training of {name}"
    if task == "segmentation":
        if config.loss not in SEGMENTATION_LOSSES:
            raise RecipeError(f"{where}: loss = {config.loss!r} is a classification loss; a "
                              f"segmentation network trains with {', '.join(SEGMENTATION_LOSSES)}.")
        whole_image = [augment_item(a)[0] for a in augment
                       if augment_item(a)[0] in SEGMENTATION_UNSUPPORTED]
        if whole_image:
            raise RecipeError(f"{where}: augment {', '.join(whole_image)} mixes or re-labels whole "
                              "images and has no per-pixel form here; a segmentation run takes "
                              "the geometric (applied to image and mask together) and colour ones.")
        if config.warmup_until_error is not None:
            raise RecipeError(f"{where}: warmup_until_error ends the warm-up on the training "
                              "error of a classifier (He et al.'s ResNet-110); a segmentation "
                              "run has no such error: give the warm-up a length alone.")
        if config.class_weights and len(config.class_weights) != data.num_classes:
            raise RecipeError(f"{where}: class_weights has {len(config.class_weights)} values but "
                              f"the dataset {data.name} has {data.num_classes} classes.")
    elif config.loss not in ("ce", "sparse_ce", "bce") or config.class_weights:
        key = "loss" if config.loss not in ("ce", "sparse_ce", "bce") else "class_weights"
        raise RecipeError(f"{where}: {key} = {getattr(config, key)!r} is for segmentation "
                          "networks (per-pixel losses); a classifier takes loss ce, sparse_ce or bce.")


def _versions() -> dict:
    """The versions of the libraries a run trained with (JAX's where it ran on JAX)."""
    import tensorflow as tf

    versions = {"keras": keras.__version__, "tensorflow": tf.__version__}
    if keras.backend.backend() == "jax":
        import jax

        versions["jax"] = jax.__version__
    return versions


def run_normalization(recipe, data: Dataset, input_shape, *, weights_mode=None,
                      statistics=None) -> dict:
    """The `RunSettings` fields normalization, mean and std of a run.

    `weights_mode` is the normalization the starting weights were trained with
    (`FineTuning.normalization`); without one, a `recipe` whose ``metadata.preprocessing`` is
    ``dataset`` normalizes with the training split's channel statistics, anything else
    (a Keras model: `recipe` None; a recipe of pretrained weights trained from scratch)
    keeps [0, 1].
    `statistics` (mean, std), where known (the weights' run, the run being resumed), are
    reused rather than computed again from `data`.
    """
    mode = weights_mode
    if mode is None and recipe is not None:
        mode = recipe.scratch_normalization
    if mode != DATASET:
        return {"normalization": mode or "unit", "mean": None, "std": None}
    if statistics is not None and len(statistics[0]) != input_shape[2]:
        statistics = None  # recorded for another input (the resume is then refused)
    if statistics is None:
        if data.train is None:
            raise DataError(f"the dataset {data.name} has no training split.")
        statistics = channel_statistics(data.train, input_shape)
    mean, std = statistics
    return {"normalization": DATASET, "mean": tuple(mean), "std": tuple(std)}


def _with_drop_path(recipe, plan, config: TrainingConfig):
    """`plan` with stochastic depth in its layer defaults (the `LayerFactory` reads them):
    the rate, the rule and the number of units it spreads over (residual units, dense
    layers); a RecipeError where the network has none."""
    if not config.drop_path:
        return plan
    # A unit without a shortcut (the plain nets) has no branch to drop: the whole path would go.
    units = sum(1 for step in plan.steps if step.block in ("identity", "convolutional", "bottleneck")
                and step.fields.get("shortcut") != "none")
    units += sum(int(step.fields.get("layers", 0)) for step in plan.steps if step.block == "dense")
    if not units:
        where = (recipe.document.where(("training", "drop_path")) if "drop_path" in recipe.training
                 else f"training overrides of {recipe.name}")
        raise RecipeError(f"{where}: drop_path = {config.drop_path}: {recipe.name} has no residual "
                          "units or dense layers whose branch stochastic depth could drop.")
    drop_path = {"rate": config.drop_path, "rule": config.drop_path_rule, "units": units}
    return replace(plan, defaults={**plan.defaults, "drop_path": drop_path})


def _backbone_of(recipe, params: dict) -> str | None:
    """The backbone recipe a decoder recipe's encoder is (``params["backbone"]`` or its
    `backbone:`); None for a network with its own encoder."""
    spec = getattr(recipe, "backbone", None)
    if spec is None or (spec.recipe is None and not params.get("backbone")):
        return None
    return params.get("backbone") or spec.recipe


def pytorch_network(recipe, weights, params: dict) -> tuple:
    """(the recipe PyTorch-world `weights` need, `params` with theirs) for a run starting
    from them; the weights' file located (downloaded when online) or a WeightsError saying
    where to put it."""
    from cnnbuilder.model.pretrained.fetch import locate
    from cnnbuilder.model.pretrained.load import pytorch_target, with_needed

    target, needed, source, label = pytorch_target(recipe, weights)
    if source is not None:
        locate(source)
    elif not Path(weights).is_file():
        raise WeightsError(f"weights file {weights} not found.")
    return target, with_needed(params, needed, label)


def _with_dropout(recipe, config: TrainingConfig, params: dict) -> dict:
    """`params` with the training setting `dropout` as the recipe's `dropout` param (the
    DenseNets' after each convolution, AlexNet's and GoogLeNet's before the classifier);
    a RecipeError where the recipe has no such param or `--set` gives another value."""
    if config.dropout is None:
        return params
    declared = recipe.document.data.get("params") or {}
    if "dropout" not in declared:
        where = (recipe.document.where(("training", "dropout")) if "dropout" in recipe.training
                 else f"training overrides of {recipe.name}")
        raise RecipeError(f"{where}: dropout = {config.dropout}: {recipe.name} has no dropout "
                          f"param to set (its params: {', '.join(sorted(declared)) or 'none'}).")
    if "dropout" in params and params["dropout"] != config.dropout:
        raise RecipeError(f"{recipe.name}: the param dropout = {params['dropout']} and the training "
                          f"setting dropout = {config.dropout} disagree; give one of them.")
    return {**params, "dropout": config.dropout}
