"""`Recipe`: a parsed, validated recipe document that can be planned for any input."""

from __future__ import annotations

from typing import Any

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe import checks
from cnnbuilder.recipe.backbone import BackboneSpec, backbone_spec, encoder_taps
from cnnbuilder.recipe.document import Document
from cnnbuilder.recipe.params import argument_label, argument_name
from cnnbuilder.recipe.presets import fit_problem
from cnnbuilder.recipe.resolve import Plan, resolve
from cnnbuilder.recipe.taps import Tap, feature_taps
from cnnbuilder.recipe.training import check_settings
from cnnbuilder.recipe.vocabulary import did_you_mean

# What a recipe's network predicts (`task:`): one class per image, or per pixel at the
# input's resolution (a segmentation recipe's head ends in `${classes}` channels).
TASKS = ("classification", "segmentation")
DEFAULT_INPUT_SHAPE = (224, 224, 3)
DEFAULT_CLASSES = 1000
METADATA_KEYS = {
    "family": str, "params": int, "trainable_params": int, "input_shape": list, "classes": int,
    "source": str, "keras_application": str, "keras_weights": dict, "macs": (int, float),
    "min_input": int, "notes": str, "preprocessing": str,
    # The paper's published error: {dataset, error (%), top5_error (%), source, notes}.
    "reported": dict,
}
# Keys with a fixed set of values. preprocessing: the modes of cnnbuilder.data.preprocess
# (NORMALIZATIONS; recipe/ imports nothing from data/, a test keeps the two equal): the
# keras.applications module's for recipes with its weights, `dataset` for the rest.
METADATA_CHOICES = {"preprocessing": ("unit", "tf", "torch", "caffe", "dataset")}
# The numbers have a least value: a count is >= 0, a number of classes or pixels >= 1.
METADATA_MINIMUM = {"params": 0, "trainable_params": 0, "macs": 0, "classes": 1, "min_input": 1}

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}


class Recipe:
    """A recipe after `extends` is applied, its `metadata:` and `training:` checked and every
    block checked with its default params: a broken recipe fails when it is loaded, with file,
    line and field."""

    def __init__(self, document: Document):
        self.document = document
        data = document.data
        self.name: str = data.get("name") or "model"
        if not isinstance(self.name, str) or not self.name.replace("-", "_").isidentifier():
            raise document.error(("name",), f"a recipe name must be an identifier, got {self.name!r}.")
        self.description: str = data.get("description", "")
        self.reference: str = data.get("reference", "")
        task = data.get("task", "classification")
        if task not in TASKS:
            raise document.error(("task",), f"task = {task!r}: expected one of {', '.join(TASKS)}."
                                 + did_you_mean(task, TASKS))
        self._task: str = task
        self.backbone: BackboneSpec | None = backbone_spec(document)
        if self.backbone is not None and task != "segmentation":
            raise document.error(("backbone",), "a backbone: is for a decoder: the recipe needs "
                                 "`task: segmentation`.")
        for section in ("metadata", "training", "tune"):
            if not isinstance(data.get(section) or {}, dict):
                raise document.error((section,), f"expected a mapping, got {data[section]!r}.")
        # A child recipe removes an inherited entry by setting it to null.
        self.metadata: dict = {k: v for k, v in (data.get("metadata") or {}).items() if v is not None}
        self._check_metadata()
        self.training: dict = check_settings(
            {k: v for k, v in (data.get("training") or {}).items() if v is not None},
            lambda key, message: document.error(("training", key), message),
        )
        preset = self.training.get("preset")
        if preset and fit_problem(preset, self.family, self.name):
            raise document.error(("training", "preset"), fit_problem(preset, self.family, self.name))
        self.tune: dict = data.get("tune") or {}
        # Validate now, with the defaults, so a broken recipe fails when it is loaded.
        self.default_plan = self.plan()
        # `features:` is checked on the default plan here; a build with features_only checks
        # it on its own plan (params may change the steps) before any layer is built.
        self.feature_taps(self.default_plan)

    def _check_metadata(self) -> None:
        meta = self.metadata
        for key, value in meta.items():
            if key not in METADATA_KEYS:
                raise self.document.error(
                    ("metadata", key),
                    f"unknown metadata key {key!r}. Known: {', '.join(METADATA_KEYS)}."
                    + did_you_mean(key, METADATA_KEYS),
                )
            expected = METADATA_KEYS[key]
            types = expected if isinstance(expected, tuple) else (expected,)
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                names = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
                raise self.document.error(("metadata", key), f"{key} = {value!r}: expected {names}.")
            if key in METADATA_CHOICES and value not in METADATA_CHOICES[key]:
                raise self.document.error(("metadata", key), f"{key} = {value!r}: expected one of "
                                                              f"{', '.join(METADATA_CHOICES[key])}.")
            if key in METADATA_MINIMUM and value < METADATA_MINIMUM[key]:
                raise self.document.error(("metadata", key), f"{key} = {value!r}: expected a number "
                                                              f">= {METADATA_MINIMUM[key]}.")
        shape = meta.get("input_shape")
        if shape is not None and not (
            len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape)
        ):
            raise self.document.error(
                ("metadata", "input_shape"), f"expected [height, width, channels] of positive integers, got {shape!r}."
            )

    @property
    def task(self) -> str:
        """``"classification"`` (the default: one class per image) or ``"segmentation"``
        (per-pixel class probabilities at the input's resolution), from the recipe's
        top-level `task:`."""
        return self._task

    @property
    def default_input_shape(self) -> tuple:
        return tuple(self.metadata.get("input_shape", DEFAULT_INPUT_SHAPE))

    @property
    def default_classes(self) -> int:
        return int(self.metadata.get("classes", DEFAULT_CLASSES))

    @property
    def params(self) -> dict:
        """The declared params with their defaults resolved."""
        return dict(self.default_plan.params)

    @property
    def scratch_normalization(self) -> str:
        """How a run of this recipe from random weights scales its inputs: ``dataset``
        (the training split's channel statistics) where ``metadata.preprocessing`` says
        so, else ``unit`` ([0, 1]; the keras.applications modes belong to their weights)."""
        return "dataset" if self.metadata.get("preprocessing") == "dataset" else "unit"

    @property
    def family(self) -> str:
        return self.metadata.get("family", "")

    def plan(self, *, input_shape=None, include_top: bool = True, classes: int | None = None,
             classifier_activation: Any = "softmax", backbone: str | None = None, **overrides) -> Plan:
        """Resolve params and blocks for one build; raises RecipeError on any problem.

        `backbone` names the encoder of a recipe with a `backbone:` (default: its own
        `backbone.recipe`); the plan's steps are then the decoder over its feature maps."""
        shape = (checks.input_shape(input_shape, argument_name("input_shape")) if input_shape is not None
                 else self.default_input_shape)
        classes = checks.classes(classes, argument_name("classes"))
        # A shape the user chose (not the recipe's own) is named when the map shrinks to nothing.
        given = shape != self.default_input_shape and input_shape is not None
        input_label = argument_label("input_shape", shape) if given else None
        minimum = self.metadata.get("min_input")
        if minimum and any(d is not None and d < minimum for d in shape[:2]):
            raise RecipeError(
                (f"{input_label}: " if input_label else "")
                + f"{self.document.where(('metadata', 'min_input'))}: input size must be at least "
                f"{minimum}x{minimum} for {self.name}; received input_shape={shape}."
            )
        name, label = self.backbone.recipe if self.backbone else None, None
        if name is not None:
            label = self.document.where(("backbone",))
        if backbone is not None:
            if name is None:
                decoder = self.backbone.decoder if self.backbone else None
                raise RecipeError(
                    f"{argument_label('backbone', backbone)}: {self.name} has its own encoder"
                    + (f"; with a backbone it is built as {decoder!r}: build({self.name!r}, backbone=...) "
                       f"does that through cnnbuilder.build." if decoder else
                       " and no `backbone:`; a backbone takes a decoder recipe such as unet_backbone or fpn."))
            name, label = backbone, argument_label("backbone", backbone)
        encoder = encoder_taps(name, shape, label) if name is not None else ()
        plan = resolve(
            self.document,
            overrides=overrides,
            input_shape=shape,
            include_head=include_top,
            classes=self.default_classes if classes is None else classes,
            classifier_activation=classifier_activation,
            input_label=input_label,
            backbone=name,
            encoder=encoder,
        )
        if self.task == "segmentation" and include_top and self.document.data.get("head"):
            self._check_per_pixel(plan, self.default_classes if classes is None else classes)
        return plan

    def _check_per_pixel(self, plan: Plan, classes: int) -> None:
        """A segmentation network's head ends at the input's height and width with `classes`
        channels; RecipeError naming its last block otherwise (a recipe without a head is a
        decoder for `include_top=False`: not checked)."""
        last = plan.steps[-1]
        out, size = last.output_shape, plan.input_shape[:2]
        same_size = len(out) == 3 and all(a is None or b is None or a == b for a, b in zip(out[:2], size))
        if not same_size or out[-1] != classes:
            raise self.document.error(
                last.path, f"a segmentation network gives {classes} class scores per pixel at the "
                f"input's size, {(*size, classes)}; its last block ({last.name}) gives {out}. End "
                "the head with a 1×1 conv of ${classes} filters at the input's resolution.")

    def feature_taps(self, plan: Plan | None = None) -> list[Tap]:
        """The feature maps `features_only=True` returns, in network order: the recipe's
        `features:` entries, or the ends of its stages (`cnnbuilder.recipe.taps`).

        Args:
            plan: a plan of this recipe (default: `default_plan`).
        """
        return feature_taps(self.document, self.default_plan if plan is None else plan)

    def __repr__(self) -> str:
        return f"Recipe({self.name!r}, source={self.document.source!r})"
