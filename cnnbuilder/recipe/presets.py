"""Named training presets: modern procedures applied on top of a recipe's paper training.

A preset is data: the `training:` settings it sets, the recipe families it fits, and where
it departs from the procedure it names. ``training: {preset: rsb_a3}`` in a recipe,
``--training-preset rsb_a3`` or ``train(training={"preset": "rsb_a3"})`` apply it: the
paper's section, then the preset's settings, then the caller's overrides
(`recipe.training.training_config`). Pure Python.

The three "ResNet strikes back" procedures are Wightman, Touvron, Jégou 2021, "ResNet
strikes back: An improved training procedure in timm", arXiv 2110.00476, Table 1
(ResNet-50 on ImageNet). Each value below cites its row of that table.
"""

from __future__ import annotations

from cnnbuilder.recipe.vocabulary import did_you_mean

RSB = "Wightman, Touvron, Jégou 2021 (arXiv 2110.00476), Table 1"
# The families whose networks are residual: the RSB procedures were written for ResNet-50
# and stochastic depth needs residual branches (a plain or Inception network has none).
RESNET_FAMILIES = ("resnet", "resnet_cifar", "resnext")


def _rsb(*, epochs, learning_rate, weight_decay, label_smoothing, drop_path, magnitude, mixup):
    """One RSB column of Table 1 as `training:` settings (rows common to A1-A3 inline)."""
    return {
        "optimizer": "lamb",                 # Table 1 "Optimizer": LAMB (all three)
        "learning_rate": learning_rate,      # Table 1 "LR"
        "weight_decay": weight_decay,        # Table 1 "WD"
        "weight_decay_mode": "decoupled",    # LAMB's decay is decoupled from the gradient
        "batch_size": 2048,                  # Table 1 "Batch size": 2048 (all three)
        "epochs": epochs,                    # Table 1 "Epochs"
        "schedule": "cosine",                # Table 1 "LR decay": cosine (all three)
        "warmup": 5,                         # Table 1 "Warmup epochs": 5 (all three)
        "label_smoothing": label_smoothing,  # Table 1 "Label smoothing" (A1 only)
        "drop_path": drop_path,              # Table 1 "Stoch. Depth" (A1, A2: 0.05)
        "loss": "bce",                       # Table 1 "BCE loss" ✓, "CE loss" ✗
        "ema": None,                         # Table 1 "EMA" ✗ (all three)
        "augment": [
            "crop", "flip",                  # Table 1 "RRC" ✓, "H. flip" ✓ (here: pad-and-crop)
            # Table 1 "Rand Augment": 7/0.5 (A1, A2), 6/0.5 (A3): magnitude / its std
            # (timm's rand-m7-mstd0.5-inc1; two ops per image, each with probability 0.5).
            {"randaugment": {"n": 2, "m": magnitude, "std": 0.5, "p": 0.5}},
            {"mixup": {"alpha": mixup}},     # Table 1 "Mixup alpha": 0.2 (A1), 0.1 (A2, A3)
            # Table 1 "Cutmix alpha": 1.0 (all three); timm switches between the two per
            # batch with probability 0.5 (its --mixup-switch-prob default).
            {"cutmix": {"alpha": 1.0, "switch": 0.5}},
        ],                                   # Table 1 "Erasing prob." ✗: no random_erasing
    }


# Where every RSB preset here departs from Table 1.
RSB_DEPARTURES = (
    "repeated augmentation (Table 1 'Repeated Aug' ✓ for A1 and A2) is not done: each "
    "epoch shows every image once",
    "random-resized crops (Table 1 'RRC') are cnnbuilder's pad-and-crop (or the dataset's "
    "own augmentation, e.g. translate on digits); the A3 training resolution (160 px, "
    "test 224 px, crop ratio 0.95) is not applied: the run trains and tests at the recipe's input size",
    "binary cross-entropy is taken on the softmax outputs (the head stays softmax, so "
    "evaluation, export and predict are unchanged); timm's is on per-class sigmoids, with "
    "its targets thresholded at 0.2",
    "mixed precision (Table 1 ✓) is not switched on by the preset: pass --mixed-precision",
    "LAMB is Keras' (keras.optimizers.Lamb), its weight decay applied beside the update "
    "rather than inside the trust ratio",
    "RandAugment is cnnbuilder's (cnnbuilder.data.randaugment): timm's ops less equalize",
)

PRESETS: dict[str, dict] = {
    "rsb_a1": {
        "source": f"{RSB}, A1",
        "families": RESNET_FAMILIES,
        "settings": _rsb(epochs=600, learning_rate=5e-3, weight_decay=0.01, label_smoothing=0.1,
                         drop_path=0.05, magnitude=7, mixup=0.2),
        "departures": RSB_DEPARTURES,
    },
    "rsb_a2": {
        "source": f"{RSB}, A2",
        "families": RESNET_FAMILIES,
        "settings": _rsb(epochs=300, learning_rate=5e-3, weight_decay=0.02, label_smoothing=0.0,
                         drop_path=0.05, magnitude=7, mixup=0.1),
        "departures": RSB_DEPARTURES,
    },
    "rsb_a3": {
        "source": f"{RSB}, A3",
        "families": RESNET_FAMILIES,
        "settings": _rsb(epochs=100, learning_rate=8e-3, weight_decay=0.02, label_smoothing=0.0,
                         drop_path=0.0, magnitude=6, mixup=0.1),
        "departures": RSB_DEPARTURES,
    },
}

# Settings of the paper's section a preset makes meaningless: its schedule's shape and
# length (the preset gives its own), which would otherwise clash with the preset's.
_REPLACED = ("epochs", "iterations", "boundaries", "step_at", "step_every", "step_factor",
             "warmup", "warmup_learning_rate", "warmup_until_error", "plateau_patience",
             "plateau_reductions", "dataset", "dataset_size")


def preset_problem(name) -> str | None:
    """None when `name` is a known preset, else the message (with did-you-mean)."""
    if isinstance(name, str) and name in PRESETS:
        return None
    return (f"unknown training preset {name!r}. Known: {', '.join(PRESETS)}."
            + did_you_mean(str(name), PRESETS))


def fit_problem(name: str, family: str, recipe: str = "this recipe") -> str | None:
    """None when the preset `name` fits a recipe of `family`, else why it does not."""
    families = PRESETS[name]["families"]
    if family in families:
        return None
    return (f"the preset {name} is a training procedure for the residual families "
            f"({', '.join(families)}); {recipe} is {family or 'of no declared family'}.")


def apply_preset(section: dict, preset: str) -> dict:
    """`section` (the paper's settings) with the preset's settings on top; the section's
    schedule and length are replaced by the preset's (None settings are dropped)."""
    merged = {k: v for k, v in section.items() if k not in _REPLACED}
    merged.update(PRESETS[preset]["settings"])
    merged["preset"] = preset
    merged["source"] = PRESETS[preset]["source"]
    merged["departures"] = list(PRESETS[preset]["departures"])
    return {k: v for k, v in merged.items() if v is not None}


__all__ = ["PRESETS", "RESNET_FAMILIES", "apply_preset", "fit_problem", "preset_problem"]
